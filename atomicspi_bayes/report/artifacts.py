"""Read what a run directory holds, for the report: every part optional, every read checked.

A run directory (see ``atomicspi fit``) may hold, besides the fit's own outputs, the folders
written by later commands: ``landscape/``, ``kinetics/``, ``calibration/``, ``diagnostics/``.
:func:`scan_run` reads each part that exists into plain numpy arrays and dictionaries and
records the parts that do not. A part that exists but cannot be read raises
:class:`InputFormatError` naming the file: a report must not quietly drop a broken result.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atomicspi_bayes.errors import InputFormatError

log = logging.getLogger(__name__)

#: A REMARK that names a latent value (``z = 0.3``, ``z1=-1.2``) captions the next MODEL.
_LATENT_REMARK = re.compile(r"\bz\w*\s*=")

#: Files whose presence shows that ``atomicspi fit`` produced output in a folder.
FIT_OUTPUTS = ("elbo.npy", "latents.npz", "posterior.nc", "ensemble.pdb")

#: Column-name aliases for a landscape table: canonical name -> accepted spellings.
LANDSCAPE_COLUMNS = {
    "grid": ("grid", "z", "x", "latent"),
    "F_median": ("F_median", "F_50", "F_q50", "F", "F_mean"),
    "F_05": ("F_05", "F_q05", "F_lo", "F_lower", "F_5"),
    "F_95": ("F_95", "F_q95", "F_hi", "F_upper"),
    "F_true": ("F_true", "F_truth"),
}


@dataclass(frozen=True)
class DatasetSummary:
    """Counts and optics of the fitted particle set (from ``particles.star`` / ``config.toml``).

    Attributes:
        rows: ``(label, value)`` pairs in display order (values already formatted).
        source: the file the rows came from.
    """

    rows: list[tuple[str, str]]
    source: str


@dataclass(frozen=True)
class Latents:
    """Per-particle posterior summaries of the conformational latent.

    Attributes:
        z_mean: ``(N, D)`` posterior means (latent units).
        z_sd: ``(N, D)`` posterior standard deviations, or ``None`` if absent.
        particle_index: ``(N,)`` int, index of each particle in the dataset (and truth file).
    """

    z_mean: np.ndarray
    z_sd: np.ndarray | None
    particle_index: np.ndarray


@dataclass(frozen=True)
class Truth:
    """Ground truth of a synthetic dataset, aligned to :class:`Latents` rows.

    Attributes:
        values: ``(N,)`` true conformational coordinate of each fitted particle.
        name: ``"path_position"`` (fraction of the path, 0..1) or ``"frame_index"``.
        snr: the simulation SNR when recorded, else ``None``.
    """

    values: np.ndarray
    name: str
    snr: float | None


@dataclass(frozen=True)
class Landscape:
    """A free-energy profile with its credible band, in kT, on a 1-D latent grid.

    Attributes:
        grid: ``(G,)`` latent coordinate of each grid point.
        f_median, f_lo, f_hi: ``(G,)`` F in kT (median and lower/upper band edge); the
            band edges are ``None`` when the file has none.
        f_true: ``(G,)`` true F in kT when the landscape command recorded one, else ``None``.
        band_label: legend text of the band (e.g. ``"5-95 % band"``).
        states: parsed ``states.json`` (populations with intervals) or ``None``.
        source: the file it came from.
    """

    grid: np.ndarray
    f_median: np.ndarray
    f_lo: np.ndarray | None
    f_hi: np.ndarray | None
    f_true: np.ndarray | None
    band_label: str
    states: Any
    source: str


@dataclass(frozen=True)
class Ensemble:
    """Structures along the latent, from ``ensemble.pdb`` (one MODEL per structure).

    Attributes:
        coords: ``(K, N, 3)`` float32 coordinates in Å.
        elements: ``(N,)`` element symbols (``""`` where the file gives none).
        atom_names: ``(N,)`` atom names.
        labels: ``(K,)`` caption of each model.
    """

    coords: np.ndarray
    elements: np.ndarray
    atom_names: np.ndarray
    labels: list[str]


@dataclass(frozen=True)
class Calibration:
    """Simulation-based calibration results (written by the diagnostics helpers).

    Attributes:
        ranks: ``(S, D)`` int rank of the truth among ``n_draws`` posterior draws, or ``None``.
        n_draws: number of posterior draws per test (ranks lie in ``0..n_draws``).
        coverage: ``{nominal: empirical}`` interval coverage, possibly empty.
        summary: other scalar results (KS p-values, ...) as a flat ``{name: value}`` dict.
        sources: files read.
    """

    ranks: np.ndarray | None
    n_draws: int | None
    coverage: dict[float, float]
    summary: dict[str, Any]
    sources: list[str]


@dataclass(frozen=True)
class RunArtifacts:
    """Everything the report can show about one run; ``None`` marks a part that is absent.

    Attributes:
        run_dir: the run directory.
        dataset: dataset summary or ``None``.
        config: parsed ``config.toml`` or ``None``.
        elbo: ``(T,)`` ELBO per optimisation step (``elbo.npy``, = -loss) or ``None``.
        latents, truth, landscape, ensemble, calibration: see the classes above.
        kinetics: parsed ``kinetics/kinetics.json`` or ``None``.
        diagnostics: ``{file name: parsed JSON or CSV rows}`` from ``diagnostics/``.
        figures: ``{folder: [png paths]}`` figures saved by other commands, to embed.
        files: ``(relative path, size in bytes)`` of every file in the run (for the index).
    """

    run_dir: Path
    dataset: DatasetSummary | None = None
    config: dict[str, Any] | None = None
    elbo: np.ndarray | None = None
    latents: Latents | None = None
    truth: Truth | None = None
    landscape: Landscape | None = None
    kinetics: dict[str, Any] | None = None
    ensemble: Ensemble | None = None
    calibration: Calibration | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, list[Path]] = field(default_factory=dict)
    files: list[tuple[str, int]] = field(default_factory=list)


# ---- small readers ---------------------------------------------------------------------


def _bad(path: Path, problem: str, fix: str) -> InputFormatError:
    return InputFormatError(f"{path}: {problem}; {fix}")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: np.asarray(npz[k]) for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise _bad(path, f"not a readable .npz archive ({exc})", "re-create it") from None


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"not valid JSON ({exc})", "re-create it") from None


def _read_csv_table(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad(path, f"unreadable ({exc})", "re-create it") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    rows = list(csv.reader(lines))
    if not rows:
        raise _bad(path, "empty table", "re-create it")
    header = [h.strip() for h in rows[0]]
    body = [[c.strip() for c in r] for r in rows[1:]]
    if any(len(r) != len(header) for r in body):
        raise _bad(path, f"rows do not all have the {len(header)} header columns", "re-create it")
    return header, body


def _numeric_columns(path: Path) -> dict[str, np.ndarray]:
    header, body = _read_csv_table(path)
    cols: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        try:
            cols[name] = np.array([float(r[j]) for r in body], dtype=np.float64)
        except ValueError:
            continue  # a text column (e.g. a state label) is not plotted
    return cols


def _pick(cols: dict[str, np.ndarray], canonical: str) -> np.ndarray | None:
    for alias in LANDSCAPE_COLUMNS[canonical]:
        if alias in cols:
            return cols[alias]
    return None


# ---- parts -----------------------------------------------------------------------------


def _read_config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "config.toml"
    if not path.is_file():
        return None
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _bad(path, f"not valid TOML ({exc})", "re-run `atomicspi fit`") from None


def _first(table: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        if table is not None and name in table.columns and len(table) > 0:
            return table[name].to_numpy()
    return None


def _read_dataset(run_dir: Path, config: dict[str, Any] | None) -> DatasetSummary | None:
    path = run_dir / "particles.star"
    if path.is_file():
        import starfile

        try:
            blocks = starfile.read(path, always_dict=True)
        except (OSError, ValueError, KeyError, IndexError, UnicodeDecodeError) as exc:
            raise _bad(
                path, f"not a readable STAR file ({exc})", "re-run `atomicspi fit`"
            ) from None
        particles = blocks.get("particles")
        if particles is None:
            loops = [b for b in blocks.values() if hasattr(b, "columns")]
            particles = loops[-1] if loops else None
        optics = blocks.get("optics")
        if particles is None or not hasattr(particles, "columns"):
            raise _bad(path, "no particle table", "re-run `atomicspi fit`")
        rows: list[tuple[str, str]] = [("particles", f"{len(particles):,}")]
        box = _first(optics, ("rlnImageSize",))
        if box is None:
            box = _first(particles, ("rlnImageSize",))
        pix = _first(optics, ("rlnImagePixelSize", "rlnDetectorPixelSize"))
        if pix is None:
            pix = _first(particles, ("rlnImagePixelSize", "rlnDetectorPixelSize"))
        kv = _first(optics, ("rlnVoltage",))
        if kv is None:
            kv = _first(particles, ("rlnVoltage",))
        if box is not None:
            rows.append(("box size", ", ".join(f"{int(b)} px" for b in np.unique(box))))
        if pix is not None:
            rows.append(("pixel size", ", ".join(f"{p:.3g} Å" for p in np.unique(pix))))
        if box is not None and pix is not None and len(box) == 1 and len(pix) == 1:
            rows.append(("box edge", f"{float(box[0]) * float(pix[0]):.1f} Å"))
        if kv is not None:
            rows.append(("voltage", ", ".join(f"{v:g} kV" for v in np.unique(kv))))
        if optics is not None and hasattr(optics, "columns"):
            rows.append(("optics groups", str(len(optics))))
        du = _first(particles, ("rlnDefocusU",))
        if du is not None:
            du = np.asarray(du, dtype=float)
            rows.append(("defocus U", f"{du.min() / 1e4:.2f} – {du.max() / 1e4:.2f} µm"))
        has_pose = all(c in particles.columns for c in ("rlnAngleRot", "rlnAngleTilt"))
        rows.append(("poses in file", "yes" if has_pose else "no"))
        return DatasetSummary(rows=rows, source=str(path))
    if config is not None:
        flat = _flatten(config)
        keys = ("n", "n_particles", "box", "box_size", "pixel_size", "latent_dim", "particles")
        rows = [(k, _fmt(v)) for k, v in flat.items() if k.split(".")[-1] in keys]
        if rows:
            return DatasetSummary(rows=rows, source=str(run_dir / "config.toml"))
    return None


def _read_elbo(run_dir: Path) -> np.ndarray | None:
    path = run_dir / "elbo.npy"
    if not path.is_file():
        return None
    try:
        elbo = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise _bad(path, f"not a readable .npy array ({exc})", "re-run `atomicspi fit`") from None
    elbo = np.asarray(elbo, dtype=np.float64).reshape(-1)
    if elbo.size == 0:
        raise _bad(path, "empty ELBO trace", "re-run `atomicspi fit`")
    return elbo


def _read_latents(run_dir: Path) -> Latents | None:
    path = run_dir / "latents.npz"
    if not path.is_file():
        return None
    npz = _load_npz(path)
    if "z_mean" not in npz:
        raise _bad(path, f"no 'z_mean' array (has {sorted(npz)})", "re-run `atomicspi fit`")
    z_mean = np.asarray(npz["z_mean"], dtype=np.float64)
    if z_mean.ndim == 1:
        z_mean = z_mean[:, None]
    if z_mean.ndim != 2 or z_mean.shape[0] == 0:
        raise _bad(path, f"z_mean has shape {z_mean.shape}, expected (N, D)", "re-run fit")
    z_sd = npz.get("z_sd")
    if z_sd is not None:
        z_sd = np.asarray(z_sd, dtype=np.float64).reshape(z_mean.shape[0], -1)
        if z_sd.shape != z_mean.shape:
            raise _bad(path, f"z_sd shape {z_sd.shape} != z_mean {z_mean.shape}", "re-run fit")
    index = npz.get("particle_index")
    if index is None:
        index = np.arange(z_mean.shape[0])
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    if index.shape[0] != z_mean.shape[0]:
        raise _bad(path, f"particle_index has {index.shape[0]} rows, z_mean {z_mean.shape[0]}", "")
    return Latents(z_mean=z_mean, z_sd=z_sd, particle_index=index)


def _read_truth(run_dir: Path, latents: Latents | None) -> Truth | None:
    path = run_dir / "truth.npz"
    if not path.is_file() or latents is None:
        return None
    npz = _load_npz(path)
    snr = npz.get("snr")
    snr_value = float(np.asarray(snr).reshape(-1)[0]) if snr is not None and snr.size else None
    for name in ("path_position", "frame_index"):
        if name not in npz:
            continue
        values = np.asarray(npz[name], dtype=np.float64).reshape(-1)
        index = latents.particle_index
        if index.size and (index.min() < 0 or index.max() >= values.shape[0]):
            raise _bad(
                path,
                f"{name} has {values.shape[0]} particles but latents.npz refers to particle "
                f"{int(index.max())}",
                "copy the truth.npz of the simulated set that was fitted",
            )
        return Truth(values=values[index], name=name, snr=snr_value)
    log.info("%s has neither path_position nor frame_index; no latent-vs-truth plot", path)
    return None


def _read_landscape(run_dir: Path) -> Landscape | None:
    folder = run_dir / "landscape"
    csv_path, npz_path = folder / "landscape.csv", folder / "landscape.npz"
    if csv_path.is_file():
        cols, source = _numeric_columns(csv_path), csv_path
    elif npz_path.is_file():
        cols = {k: np.asarray(v, dtype=np.float64) for k, v in _load_npz(npz_path).items()}
        source = npz_path
    else:
        return None
    grid, f_med = _pick(cols, "grid"), _pick(cols, "F_median")
    if grid is None or f_med is None:
        raise _bad(
            source,
            f"needs a grid column and an F column (has {sorted(cols)})",
            "re-run `atomicspi landscape RUN`",
        )
    grid, f_med = grid.reshape(-1), f_med.reshape(-1)
    if grid.shape != f_med.shape:
        raise _bad(source, f"grid {grid.shape} and F {f_med.shape} differ in length", "re-run")
    f_lo, f_hi, f_true = _pick(cols, "F_05"), _pick(cols, "F_95"), _pick(cols, "F_true")
    band = "5–95 % credible band"
    if f_lo is None:
        for lo_name, hi_name, label in (("F_16", "F_84", "16–84 % band"),):
            if lo_name in cols and hi_name in cols:
                f_lo, f_hi, band = cols[lo_name], cols[hi_name], label
    states_path = folder / "states.json"
    states = _load_json(states_path) if states_path.is_file() else None
    return Landscape(
        grid=grid,
        f_median=f_med,
        f_lo=None if f_lo is None else f_lo.reshape(-1),
        f_hi=None if f_hi is None else f_hi.reshape(-1),
        f_true=None if f_true is None else f_true.reshape(-1),
        band_label=band,
        states=states,
        source=str(source),
    )


def _read_kinetics(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "kinetics" / "kinetics.json"
    if not path.is_file():
        return None
    data = _load_json(path)
    if not isinstance(data, dict):
        raise _bad(path, "top level is not a JSON object", "re-run `atomicspi kinetics RUN`")
    return data


def _read_ensemble(run_dir: Path) -> Ensemble | None:
    path = run_dir / "ensemble.pdb"
    if not path.is_file():
        return None
    coords, names, elements, labels = _parse_multimodel_pdb(path)
    return Ensemble(coords=coords, elements=elements, atom_names=names, labels=labels)


def _parse_multimodel_pdb(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Coordinates of every MODEL of a PDB file (fixed columns, as written by io).

    Returns ``coords (K, N, 3)`` Å, ``atom_names (N,)``, ``elements (N,)`` (from columns
    77-78, ``""`` when blank: never guessed from the atom name), and one caption per model
    (a ``REMARK`` line right before ``MODEL`` that mentions ``z`` becomes the caption).
    """
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad(path, f"unreadable ({exc})", "re-run `atomicspi fit`") from None
    models: list[list[tuple[float, float, float]]] = []
    names: list[str] = []
    elements: list[str] = []
    labels: list[str] = []
    remark = ""
    current: list[tuple[float, float, float]] | None = None
    for lineno, line in enumerate(lines, 1):
        rec = line[:6].strip()
        if rec == "REMARK" and _LATENT_REMARK.search(line[10:]):
            remark = line[10:].strip()
        elif rec == "MODEL":
            current = []
            labels.append(remark)
            remark = ""
        elif rec in ("ATOM", "HETATM"):
            if current is None:  # a single-model file without MODEL records
                current = []
                labels.append(remark)
            try:
                xyz = (float(line[30:38]), float(line[38:46]), float(line[46:54]))
            except ValueError:
                raise _bad(path, f"line {lineno}: bad coordinates {line[30:54]!r}", "") from None
            current.append(xyz)
            if not models:
                names.append(line[12:16].strip())
                elements.append(line[76:78].strip().capitalize() if len(line) >= 78 else "")
        elif rec in ("ENDMDL", "END") and current is not None:
            models.append(current)
            current = None
    if current:
        models.append(current)
    if not models or not models[0]:
        raise _bad(path, "no ATOM records", "re-run `atomicspi fit`")
    if any(len(m) != len(models[0]) for m in models):
        sizes = sorted({len(m) for m in models})
        raise _bad(path, f"models have different atom counts {sizes}", "re-run `atomicspi fit`")
    labels = [lab or f"model {k + 1}" for k, lab in enumerate(labels[: len(models)])]
    return (
        np.asarray(models, dtype=np.float32),
        np.asarray(names),
        np.asarray(elements),
        labels,
    )


def _read_calibration(run_dir: Path) -> Calibration | None:
    folder = run_dir / "calibration"
    if not folder.is_dir():
        return None
    ranks = None
    n_draws = None
    coverage: dict[float, float] = {}
    summary: dict[str, Any] = {}
    sources: list[str] = []
    for path in sorted(folder.glob("*.npz")):
        npz = _load_npz(path)
        sources.append(str(path))
        if "ranks" in npz and ranks is None:
            ranks = np.asarray(npz["ranks"]).astype(np.int64)
            if ranks.ndim == 1:
                ranks = ranks[:, None]
            for key in ("n_draws", "n_posterior_draws", "L"):
                if key in npz:
                    n_draws = int(np.asarray(npz[key]).reshape(-1)[0])
                    break
    for path in sorted(folder.glob("*.json")):
        data = _load_json(path)
        sources.append(str(path))
        if not isinstance(data, dict):
            continue
        cov = data.get("coverage")
        if isinstance(cov, dict):
            for k, v in cov.items():
                try:
                    coverage[_nominal(k)] = float(v)
                except (TypeError, ValueError):
                    summary[f"coverage.{k}"] = v
        if n_draws is None:
            for key in ("n_draws", "n_posterior_draws"):
                if isinstance(data.get(key), int | float):
                    n_draws = int(data[key])
        if ranks is None and isinstance(data.get("ranks"), list):
            ranks = np.asarray(data["ranks"], dtype=np.int64)
            if ranks.ndim == 1:
                ranks = ranks[:, None]
        rest = {x: y for x, y in data.items() if x not in ("coverage", "ranks")}
        summary.update(_flatten(rest))
    if ranks is not None and n_draws is None:
        n_draws = int(ranks.max())
    if ranks is None and not coverage and not summary:
        return None
    return Calibration(
        ranks=ranks, n_draws=n_draws, coverage=coverage, summary=summary, sources=sources
    )


def _nominal(key: Any) -> float:
    """Nominal coverage level from a key such as ``"0.9"``, ``"90"`` or ``"90%"``."""
    level = float(str(key).strip().rstrip("%"))
    return level / 100.0 if level > 1.0 else level


def _read_diagnostics(run_dir: Path) -> dict[str, Any]:
    folder = run_dir / "diagnostics"
    out: dict[str, Any] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.iterdir()):
        if path.suffix == ".json":
            out[path.name] = _load_json(path)
        elif path.suffix == ".csv":
            out[path.name] = _read_csv_table(path)
    return out


def _png_figures(run_dir: Path) -> dict[str, list[Path]]:
    figures: dict[str, list[Path]] = {}
    for folder in ("kinetics", "calibration", "diagnostics"):
        pngs = sorted((run_dir / folder).glob("*.png")) if (run_dir / folder).is_dir() else []
        good = []
        for png in pngs:
            with png.open("rb") as fh:
                if fh.read(8) == b"\x89PNG\r\n\x1a\n":
                    good.append(png)
                else:
                    raise _bad(png, "not a PNG image", "re-create it")
        if good:
            figures[folder] = good
    return figures


def _file_index(run_dir: Path) -> list[tuple[str, int]]:
    files = []
    for path in sorted(run_dir.rglob("*")):
        if path.is_file() and path.name != "report.html" and not path.name.startswith("."):
            rel = path.relative_to(run_dir)
            if rel.parts[0] == "checkpoints" and len(rel.parts) > 2:
                continue
            files.append((str(rel), path.stat().st_size))
    return files


# ---- helpers shared with the HTML writer -----------------------------------------------


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}``; lists and scalars are leaves."""
    if not isinstance(data, dict):
        return {prefix or "value": data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if isinstance(value, float):
        if not np.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


# ---- entry point -----------------------------------------------------------------------


def scan_run(run_dir: str | Path) -> RunArtifacts:
    """Read every part of a run directory that the report can show.

    Args:
        run_dir: folder written by ``atomicspi fit`` (and later commands).

    Returns:
        :class:`RunArtifacts` with ``None`` / empty for absent parts.

    Raises:
        InputFormatError: the folder is missing, holds no fit output (none of
            :data:`FIT_OUTPUTS`), or a present file cannot be read.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputFormatError(f"{run_dir}: not a directory; pass the --out folder of `fit`")
    if not any((run_dir / name).is_file() for name in FIT_OUTPUTS):
        raise InputFormatError(
            f"{run_dir}: no fit output (none of {', '.join(FIT_OUTPUTS)}); "
            "run `atomicspi fit ... --out RUN` first"
        )
    config = _read_config(run_dir)
    latents = _read_latents(run_dir)
    return RunArtifacts(
        run_dir=run_dir,
        dataset=_read_dataset(run_dir, config),
        config=config,
        elbo=_read_elbo(run_dir),
        latents=latents,
        truth=_read_truth(run_dir, latents),
        landscape=_read_landscape(run_dir),
        kinetics=_read_kinetics(run_dir),
        ensemble=_read_ensemble(run_dir),
        calibration=_read_calibration(run_dir),
        diagnostics=_read_diagnostics(run_dir),
        figures=_png_figures(run_dir),
        files=_file_index(run_dir),
    )
