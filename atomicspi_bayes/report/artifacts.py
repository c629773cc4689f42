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
    "grid": ("grid", "z", "z1", "x", "latent"),
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
    """A free-energy landscape with its credible band on a 1-D or 2-D latent grid.

    Attributes:
        centers: one ``(G_d,)`` array of bin centres per latent axis (latent units).
        f_quantiles: ``(3, *shape)`` F at the 5 / 50 / 95 % posterior quantiles (NaN where
            undefined); the band rows are NaN when the file has no band.
        f_aggregate: ``(*shape)`` F of the plain aggregate posterior, or ``None``.
        f_true: ``(*shape)`` true F when recorded (CSV column ``F_true``), else ``None``.
        state_labels: ``(*shape)`` int metastable-state label per bin (-1 = none) or ``None``.
        energy_unit: unit of F (``"kT"`` unless the landscape was made with another kT).
        axis_labels: name of each latent axis.
        band_label: legend text of the band.
        states: parsed ``states.json`` or ``None``.
        source: the file it came from.
    """

    centers: tuple[np.ndarray, ...]
    f_quantiles: np.ndarray
    f_aggregate: np.ndarray | None
    f_true: np.ndarray | None
    state_labels: np.ndarray | None
    energy_unit: str
    axis_labels: tuple[str, ...]
    band_label: str
    states: Any
    source: str

    @property
    def dim(self) -> int:
        return len(self.centers)

    @property
    def has_band(self) -> bool:
        return bool(np.any(np.isfinite(self.f_quantiles[0])))


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
    """One simulation-based calibration result (``calibration/PREFIX.npz`` / ``.json``).

    Attributes:
        name: the file prefix (``"sbc"``, ``"sbc_shrunk"``, ...).
        ranks: ``(S, C)`` int rank of the truth among ``n_draws`` posterior draws, or ``None``.
        n_draws: posterior draws per test (ranks lie in ``0..n_draws``), or ``None``.
        names: ``(C,)`` names of the ranked coordinates.
        coverage: ``{nominal level: empirical fraction}`` pooled over coordinates.
        per_coordinate: ``{column: {coordinate: value}}`` (KS / chi² p, coverage, ...).
        summary: the remaining scalar results as a flat ``{name: value}`` dict.
        figures: PNG files written with this prefix (``PREFIX_*.png``).
        sources: files read.
    """

    name: str
    ranks: np.ndarray | None
    n_draws: int | None
    names: list[str]
    coverage: dict[float, float]
    per_coordinate: dict[str, dict[str, Any]]
    summary: dict[str, Any]
    figures: list[Path]
    sources: list[str]


@dataclass(frozen=True)
class RunArtifacts:
    """Everything the report can show about one run; ``None`` marks a part that is absent.

    Attributes:
        run_dir: the run directory.
        dataset: dataset summary or ``None``.
        config: parsed ``config.toml`` or ``None``.
        elbo: ``(T,)`` ELBO per optimisation step (``elbo.npy``, = -loss) or ``None``.
        latents, truth, landscape, ensemble: see the classes above.
        calibration: one :class:`Calibration` per result in ``calibration/``.
        kinetics: parsed ``kinetics.json`` or ``None``; kinetics_source: its path.
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
    kinetics_source: Path | None = None
    ensemble: Ensemble | None = None
    calibration: list[Calibration] = field(default_factory=list)
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
            # an empty field is a missing value (NaN), as the landscape command writes it
            cols[name] = np.array([float(r[j]) if r[j] else np.nan for r in body])
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


def _find_output(run_dir: Path, folder: str, names: tuple[str, ...]) -> Path | None:
    """First of ``RUN/folder/name`` then ``RUN/name`` that exists (commands write either)."""
    for base in (run_dir / folder, run_dir):
        for name in names:
            if (base / name).is_file():
                return base / name
    return None


def _landscape_from_npz(path: Path) -> dict[str, Any]:
    """Arrays of a ``landscape.npz`` (layout of :mod:`atomicspi_bayes.landscape.output`)."""
    arrays = _load_npz(path)
    centers = []
    for d in range(2):
        if f"bin_centers_{d}" in arrays:
            centers.append(np.asarray(arrays[f"bin_centers_{d}"], dtype=np.float64))
        elif f"bin_edges_{d}" in arrays:
            e = np.asarray(arrays[f"bin_edges_{d}"], dtype=np.float64)
            centers.append(0.5 * (e[1:] + e[:-1]))
    if "free_energy_quantiles" in arrays:
        q = np.asarray(arrays["free_energy_quantiles"], dtype=np.float64)
    elif "free_energy_samples" in arrays:
        f = np.asarray(arrays["free_energy_samples"], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            q = np.nanquantile(np.where(np.isfinite(f), f, np.nan), (0.05, 0.5, 0.95), axis=0)
    else:
        raise _bad(
            path,
            "needs free_energy_quantiles or free_energy_samples",
            "re-run `atomicspi landscape RUN`",
        )
    shape = tuple(len(c) for c in centers)
    if not centers or q.shape != (3, *shape):
        raise _bad(
            path,
            f"F quantiles of shape {q.shape} do not match the grid {shape}",
            "re-run `atomicspi landscape RUN`",
        )
    labels = arrays.get("axis_labels")
    unit = arrays.get("energy_unit")
    return {
        "centers": tuple(centers),
        "f_quantiles": q,
        "f_aggregate": arrays.get("free_energy_aggregate"),
        "f_true": arrays.get("free_energy_true"),
        "state_labels": arrays.get("state_labels"),
        "energy_unit": str(unit) if unit is not None else "kT",
        "axis_labels": tuple(str(x) for x in labels) if labels is not None else (),
    }


def _landscape_from_csv(path: Path) -> dict[str, Any]:
    """A 1-D landscape table (columns grid|z..., F_median, F_05, F_95, ...)."""
    cols = _numeric_columns(path)
    grid, f_med = _pick(cols, "grid"), _pick(cols, "F_median")
    if grid is None:
        header, _ = _read_csv_table(path)
        grid = cols.get(header[0]) if header else None
    if grid is None or f_med is None:
        raise _bad(
            path,
            f"needs a grid column and an F column (has {sorted(cols)})",
            "re-run `atomicspi landscape RUN`",
        )
    nan = np.full_like(f_med, np.nan)
    lo, hi = _pick(cols, "F_05"), _pick(cols, "F_95")
    agg = cols.get("F_aggregate")
    return {
        "centers": (grid,),
        "f_quantiles": np.stack([nan if lo is None else lo, f_med, nan if hi is None else hi]),
        "f_aggregate": agg,
        "f_true": _pick(cols, "F_true"),
        "state_labels": cols.get("state"),
        "energy_unit": "kT",
        "axis_labels": (),
    }


def _read_landscape(run_dir: Path) -> Landscape | None:
    path = _find_output(run_dir, "landscape", ("landscape.npz", "landscape.csv"))
    if path is None:
        return None
    parts = _landscape_from_npz(path) if path.suffix == ".npz" else _landscape_from_csv(path)
    dim = len(parts["centers"])
    if dim > 2:
        raise _bad(path, f"{dim}-D landscape; the report shows 1-D and 2-D ones", "")
    labels = parts["axis_labels"] or tuple(f"z{d + 1}" for d in range(dim))
    states_path = path.parent / "states.json"
    shape = parts["f_quantiles"].shape[1:]

    def grid_array(name: str) -> np.ndarray | None:
        value = parts[name]
        if value is None:
            return None
        value = np.asarray(value, dtype=np.float64)
        if value.size != int(np.prod(shape)):
            raise _bad(path, f"{name} has {value.size} values for a {shape} grid", "re-run")
        return value.reshape(shape)

    return Landscape(
        centers=parts["centers"],
        f_quantiles=parts["f_quantiles"],
        f_aggregate=grid_array("f_aggregate"),
        f_true=grid_array("f_true"),
        state_labels=grid_array("state_labels"),
        energy_unit=parts["energy_unit"],
        axis_labels=labels,
        band_label="90 % credible band (5–95 %)",
        states=_load_json(states_path) if states_path.is_file() else None,
        source=str(path),
    )


def _read_kinetics(run_dir: Path) -> tuple[dict[str, Any] | None, Path | None]:
    path = _find_output(run_dir, "kinetics", ("kinetics.json",))
    if path is None:
        return None, None
    data = _load_json(path)
    if not isinstance(data, dict):
        raise _bad(path, "top level is not a JSON object", "re-run `atomicspi kinetics RUN`")
    return data, path


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


def _read_calibration(run_dir: Path) -> list[Calibration]:
    """One :class:`Calibration` per ``PREFIX.npz`` / ``PREFIX.json`` in ``calibration/``."""
    folder = run_dir / "calibration"
    if not folder.is_dir():
        return []
    prefixes = sorted(
        {p.stem for p in folder.glob("*.npz")} | {p.stem for p in folder.glob("*.json")}
    )
    results = []
    for prefix in prefixes:
        npz_path, json_path = folder / f"{prefix}.npz", folder / f"{prefix}.json"
        npz = _load_npz(npz_path) if npz_path.is_file() else {}
        data = _load_json(json_path) if json_path.is_file() else {}
        if not isinstance(data, dict):
            raise _bad(json_path, "top level is not a JSON object", "re-run the calibration")
        ranks = npz.get("ranks")
        if ranks is None and isinstance(data.get("ranks"), list):
            ranks = np.asarray(data["ranks"])
        if ranks is not None:
            ranks = np.asarray(ranks).astype(np.int64)
            ranks = ranks[:, None] if ranks.ndim == 1 else ranks
            if ranks.ndim != 2 or ranks.min(initial=0) < 0:
                raise _bad(npz_path, f"ranks of shape {ranks.shape} / negative", "re-run")
        n_draws = None
        for key in ("n_draws", "n_posterior_draws", "L"):
            if key in npz:
                n_draws = int(np.asarray(npz[key]).reshape(-1)[0])
                break
            if isinstance(data.get(key), int | float):
                n_draws = int(data[key])
                break
        if ranks is not None and n_draws is None:
            n_draws = int(ranks.max())
        if ranks is not None and ranks.size and ranks.max() > n_draws:
            raise _bad(npz_path, f"rank {int(ranks.max())} > n_draws {n_draws}", "re-run")
        names = [str(x) for x in npz["names"]] if "names" in npz else data.get("names")
        if not names:
            names = [f"z{j + 1}" for j in range(ranks.shape[1] if ranks is not None else 0)]
        coverage: dict[float, float] = {}
        summary: dict[str, Any] = {}
        per_coord: dict[str, dict[str, Any]] = {}
        cov = data.get("coverage")
        if isinstance(cov, dict):
            for k, v in cov.items():
                if isinstance(v, int | float):
                    coverage[_nominal(k)] = float(v)
        for key, value in data.items():
            if key in ("coverage", "ranks", "names"):
                continue
            if isinstance(value, dict) and value and set(map(str, value)) <= set(names):
                per_coord[key] = value
            elif key == "coverage_by_coordinate" and isinstance(value, dict):
                for level, by_name in value.items():
                    if isinstance(by_name, dict):
                        per_coord[f"coverage {_nominal(level):.0%}"] = by_name
            else:
                summary.update(_flatten({key: value}))
        if ranks is None and not coverage and not summary and not per_coord:
            continue
        results.append(
            Calibration(
                name=prefix,
                ranks=ranks,
                n_draws=n_draws,
                names=list(names),
                coverage=coverage,
                per_coordinate=per_coord,
                summary=summary,
                figures=[
                    png
                    for png in sorted(folder.glob(f"{prefix}_*.png"))
                    if _owner(png.stem, prefixes) == prefix
                ],
                sources=[str(p) for p in (npz_path, json_path) if p.is_file()],
            )
        )
    return results


def _owner(stem: str, prefixes: list[str]) -> str | None:
    """Longest prefix ``p`` with ``stem == p + "_..."`` (``sbc_shrunk_ranks``: ``sbc_shrunk``)."""
    owners = [p for p in prefixes if stem.startswith(f"{p}_")]
    return max(owners, key=len) if owners else None


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


def _check_png(png: Path) -> Path:
    with png.open("rb") as fh:
        if fh.read(8) != b"\x89PNG\r\n\x1a\n":
            raise _bad(png, "not a PNG image", "re-create it")
    return png


def _png_figures(
    run_dir: Path, kinetics_source: Path | None, calibration: list[Calibration]
) -> dict[str, list[Path]]:
    """PNG figures saved by other commands, by section: kinetics, calibration, diagnostics."""
    figures: dict[str, list[Path]] = {}
    if kinetics_source is not None:
        figures["kinetics"] = sorted(kinetics_source.parent.glob("kinetics*.png"))
    claimed = {p for cal in calibration for p in cal.figures}
    folder = run_dir / "calibration"
    if folder.is_dir():
        figures["calibration"] = [p for p in sorted(folder.glob("*.png")) if p not in claimed]
    for cal in calibration:
        for png in cal.figures:
            _check_png(png)
    if (run_dir / "diagnostics").is_dir():
        figures["diagnostics"] = sorted((run_dir / "diagnostics").glob("*.png"))
    return {k: [_check_png(p) for p in v] for k, v in figures.items() if v}


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
        value += 0.0  # no "-0"
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
    kinetics, kinetics_source = _read_kinetics(run_dir)
    calibration = _read_calibration(run_dir)
    return RunArtifacts(
        run_dir=run_dir,
        dataset=_read_dataset(run_dir, config),
        config=config,
        elbo=_read_elbo(run_dir),
        latents=latents,
        truth=_read_truth(run_dir, latents),
        landscape=_read_landscape(run_dir),
        kinetics=kinetics,
        kinetics_source=kinetics_source,
        ensemble=_read_ensemble(run_dir),
        calibration=calibration,
        diagnostics=_read_diagnostics(run_dir),
        figures=_png_figures(run_dir, kinetics_source, calibration),
        files=_file_index(run_dir),
    )
