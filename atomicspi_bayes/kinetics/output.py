"""Read ``landscape.npz`` (written by ``atomicspi landscape``), write kinetics.json / .png.

``landscape.npz`` keys used here: ``free_energy_samples`` (S, *bin_shape), ``bin_edges_0``
[, ``bin_edges_1``] (latent units), ``kT`` and ``energy_unit``; optional ``axis_labels``.
Outputs are written atomically (temporary file + rename) after everything is computed.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from atomicspi_bayes.atomic_files import write_bytes_atomic
from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.kinetics.estimator import KineticsConfig, KineticsEstimator, KineticsModel

__all__ = [
    "LandscapeSamples",
    "find_landscape_npz",
    "kinetics_from_landscape",
    "kinetics_from_run",
    "kinetics_summary",
    "plot_kinetics",
    "read_landscape_npz",
    "write_kinetics",
]


@dataclass(frozen=True)
class LandscapeSamples:
    """Landscape draws on a grid: F (S, *shape), bin edges per axis, kT and unit."""

    free_energy_samples: np.ndarray
    bin_edges: tuple[np.ndarray, ...]
    kT: float
    energy_unit: str
    axis_labels: tuple[str, ...]
    source: str = "arrays"

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(e[1] - e[0]) for e in self.bin_edges)

    @property
    def bin_centers(self) -> tuple[np.ndarray, ...]:
        return tuple(0.5 * (e[1:] + e[:-1]) for e in self.bin_edges)


def read_landscape_npz(path: str | Path) -> LandscapeSamples:
    """Read a ``landscape.npz``; missing or malformed file -> InputFormatError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputFormatError(
            f"{path}: not found; run `atomicspi landscape RUN` first (or pass --landscape)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputFormatError(f"{path}: unreadable landscape file ({exc})") from exc
    missing = [k for k in ("free_energy_samples", "bin_edges_0", "kT") if k not in arrays]
    if missing:
        raise InputFormatError(f"{path}: missing {', '.join(missing)}; not a landscape.npz")
    f = arrays["free_energy_samples"]
    dim = f.ndim - 1
    edges = []
    for d in range(dim):
        key = f"bin_edges_{d}"
        if key not in arrays or arrays[key].shape != (f.shape[d + 1] + 1,):
            raise InputFormatError(f"{path}: {key} missing or inconsistent with F's grid shape")
        edges.append(arrays[key].astype(np.float64))
    labels = (
        tuple(str(x) for x in arrays["axis_labels"])
        if "axis_labels" in arrays
        else tuple(f"z{d + 1}" for d in range(dim))
    )
    return LandscapeSamples(
        free_energy_samples=f.astype(np.float64),
        bin_edges=tuple(edges),
        kT=float(arrays["kT"]),
        energy_unit=str(arrays.get("energy_unit", np.asarray("kT"))),
        axis_labels=labels,
        source=str(path),
    )


def _q(samples: np.ndarray) -> dict:
    v = np.asarray(samples, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"p05": None, "p50": None, "p95": None}
    q = np.quantile(v, (0.05, 0.5, 0.95))
    return {"p05": float(q[0]), "p50": float(q[1]), "p95": float(q[2])}


def kinetics_summary(model: KineticsModel, landscape: LandscapeSamples) -> dict:
    """JSON-ready dict of rates, MFPTs, timescales and populations with 5/50/95 %."""
    centers = np.stack(
        [m.ravel() for m in np.meshgrid(*landscape.bin_centers, indexing="ij")], axis=-1
    )
    n = model.n_states
    pairs = [(a, b) for a in range(n) for b in range(n) if a != b]
    return {
        "diffusion": model.diffusion,
        "time_unit": "(latent unit)^2 / D",
        "lag": model.lag,
        "kT": model.kT,
        "energy_unit": landscape.energy_unit,
        "n_landscape_draws": int(model.timescales.shape[0]),
        "n_cells": int(model.reference.n_cells),
        "intervals": "5/50/95 % over landscape posterior draws",
        "states": [
            {
                "id": j,
                "minimum": [float(v) for v in centers[model.state_minima[j]]],
                "n_cells": int(np.sum(model.assignments == j)),
                "n_core_cells": int(np.sum(model.cores[j])),
                "population": _q(model.populations[:, j]),
            }
            for j in range(n)
        ],
        "timescales": [
            {"index": i + 1, **_q(model.timescales[:, i])} for i in range(model.timescales.shape[1])
        ],
        "timescales_msm": [
            {"index": i + 1, **_q(model.timescales_msm[:, i])}
            for i in range(model.timescales_msm.shape[1])
        ],
        "mfpt": [{"from": a, "to": b, **_q(model.mfpt[:, a, b])} for a, b in pairs],
        "mfpt_msm": [{"from": a, "to": b, **_q(model.mfpt_msm[:, a, b])} for a, b in pairs],
        "rates": [{"from": a, "to": b, **_q(model.rates[:, a, b])} for a, b in pairs],
        "method": (
            "SqRA rate matrix (Lie, Fackeldey & Weber 2013) of overdamped diffusion on F; "
            "MFPT between PCCA+ cores by the linear system on Q; rate = 1/MFPT; "
            "mfpt_msm/timescales_msm from deeptime MarkovStateModel(expm(Q lag))"
        ),
    }


def plot_kinetics(model: KineticsModel, landscape: LandscapeSamples) -> Figure:
    """Left: median F coloured by metastable state; right: relaxation times with 90 % bars."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax = fig.add_subplot(1, 2, 1)
    unit = landscape.energy_unit
    samples = landscape.free_energy_samples
    finite = np.all(np.isfinite(samples), axis=0)
    f_med = np.where(finite, np.median(np.where(finite, samples, 0.0), axis=0), np.nan)
    state_grid = model.reference.to_grid(model.assignments.astype(float))
    if f_med.ndim == 1:
        x = landscape.bin_centers[0]
        ax.plot(x, f_med, color="0.3", lw=1.5)
        for j in range(model.n_states):
            sel = state_grid == j
            ax.scatter(x[sel], f_med[sel], s=18, label=f"state {j}")
        ax.set_xlabel(f"{landscape.axis_labels[0]} (latent units)")
        ax.set_ylabel(f"F ({unit})")
        ax.legend(frameon=False)
    else:
        ex, ey = landscape.bin_edges
        mesh = ax.pcolormesh(
            ex, ey, np.ma.masked_invalid(state_grid).T, cmap="tab10", vmin=0, vmax=9
        )
        fig.colorbar(mesh, ax=ax, label="metastable state")
        ax.set_xlabel(f"{landscape.axis_labels[0]} (latent units)")
        ax.set_ylabel(f"{landscape.axis_labels[1]} (latent units)")
    ax.set_title("metastable states (PCCA+)")
    ax2 = fig.add_subplot(1, 2, 2)
    q = np.nanquantile(model.timescales, (0.05, 0.5, 0.95), axis=0)
    idx = np.arange(1, q.shape[1] + 1)
    ax2.errorbar(idx, q[1], yerr=[q[1] - q[0], q[2] - q[1]], fmt="o", capsize=4)
    ax2.set_yscale("log")
    ax2.set_xticks(idx)
    ax2.set_xlabel("relaxation process index")
    ax2.set_ylabel("relaxation time (latent unit² / D)")
    ax2.set_title(f"implied timescales, D = {model.diffusion:g}")
    ax2.grid(alpha=0.3)
    return fig


def write_kinetics(
    model: KineticsModel, landscape: LandscapeSamples, out_dir: str | Path
) -> dict[str, Path]:
    """Write kinetics.json and kinetics.png into ``out_dir`` (atomically)."""
    out = Path(out_dir)
    png = io.BytesIO()
    plot_kinetics(model, landscape).savefig(png, format="png", dpi=120)
    payload = {
        "kinetics.json": (json.dumps(kinetics_summary(model, landscape), indent=2) + "\n").encode(),
        "kinetics.png": png.getvalue(),
    }
    return {name: write_bytes_atomic(out / name, data) for name, data in payload.items()}


def kinetics_from_landscape(
    landscape_path: str | Path,
    out_dir: str | Path,
    config: KineticsConfig | None = None,
) -> tuple[KineticsModel, dict[str, Path]]:
    """Read a landscape.npz, run :class:`KineticsEstimator`, write the outputs."""
    ls = read_landscape_npz(landscape_path)
    model = (
        KineticsEstimator(config).fit(ls.free_energy_samples, ls.spacing, kT=ls.kT).fetch_model()
    )
    return model, write_kinetics(model, ls, out_dir)


def find_landscape_npz(run: str | Path) -> Path:
    """``RUN/landscape/landscape.npz``, else ``RUN/landscape.npz`` (or RUN itself if a file).

    Raises:
        InputFormatError: neither exists (says to run ``atomicspi landscape RUN`` first).
    """
    run = Path(run)
    if run.is_file():
        return run
    if not run.is_dir():
        raise InputFormatError(f"{run}: run directory does not exist")
    for candidate in (run / "landscape" / "landscape.npz", run / "landscape.npz"):
        if candidate.is_file():
            return candidate
    raise InputFormatError(
        f"{run / 'landscape' / 'landscape.npz'}: not found; run `atomicspi landscape {run}` "
        "first (or pass --landscape PATH)"
    )


def kinetics_from_run(
    run: str | Path,
    out_dir: str | Path | None = None,
    config: KineticsConfig | None = None,
    landscape_path: str | Path | None = None,
) -> tuple[KineticsModel, dict[str, Path]]:
    """Kinetics of a run's landscape (see :func:`find_landscape_npz`); default output
    folder ``RUN/kinetics``."""
    path = Path(landscape_path) if landscape_path is not None else find_landscape_npz(run)
    run_dir = Path(run) if Path(run).is_dir() else path.parent
    target = Path(out_dir) if out_dir is not None else run_dir / "kinetics"
    return kinetics_from_landscape(path, target, config)
