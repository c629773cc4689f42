"""Landscape outputs: CSV table, PNG figure, states JSON and the NPZ that kinetics reads.

Every file is written atomically (:mod:`atomicspi_bayes.atomic_files`), and
all results are computed before the first file is written, so a failure never leaves a
half-written output.

``landscape.npz`` (the contract with :mod:`atomicspi_bayes.kinetics`):
    bin_edges_0 [, bin_edges_1] (B_d + 1,) latent units; bin_centers_0 [, bin_centers_1];
    free_energy_samples (S, *bin_shape) (NaN = undefined); free_energy_quantiles
    (3, *bin_shape) 5/50/95 %; density (*bin_shape); state_labels (*bin_shape);
    kT () and energy_unit () (str); axis_labels (D,) (str).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np

from atomicspi_bayes.atomic_files import write_bytes_atomic
from atomicspi_bayes.landscape.estimator import Landscape, LandscapeConfig, LandscapeEstimator
from atomicspi_bayes.landscape.latents import read_latents
from atomicspi_bayes.landscape.plot import plot_landscape

__all__ = [
    "landscape_from_run",
    "landscape_table",
    "states_summary",
    "write_landscape",
]

logger = logging.getLogger(__name__)

OUTPUT_NAMES = ("landscape.csv", "landscape.png", "states.json", "landscape.npz")


def landscape_table(landscape: Landscape) -> str:
    """CSV text, one row per reported bin (C order).

    Columns: the bin-centre coordinates (latent units), F_median, F_05, F_95 (posterior,
    energy unit of the landscape), p (posterior-mean density per latent unit**D),
    F_aggregate, F_aggregate_05, F_aggregate_95 (plain aggregate posterior and its
    Bayesian-bootstrap band), state (label, -1 = undefined). Empty fields are NaN.
    """
    centers = landscape.grid.flat_bin_centers()
    q = landscape.free_energy_quantiles.reshape(3, -1)
    qb = landscape.free_energy_bootstrap_quantiles.reshape(3, -1)
    cols = {name: centers[:, d] for d, name in enumerate(landscape.axis_labels)}
    cols.update(
        F_median=q[1],
        F_05=q[0],
        F_95=q[2],
        p=landscape.density.ravel(),
        F_aggregate=landscape.free_energy_aggregate.ravel(),
        F_aggregate_05=qb[0],
        F_aggregate_95=qb[2],
    )
    labels = landscape.states.labels.ravel()
    lines = [",".join([*cols, "state"])]
    for i in range(len(labels)):
        vals = [f"{cols[c][i]:.6g}" if np.isfinite(cols[c][i]) else "" for c in cols]
        lines.append(",".join([*vals, str(int(labels[i]))]))
    return "\n".join(lines) + "\n"


def _interval(samples: np.ndarray) -> dict:
    q = np.quantile(samples, (0.05, 0.5, 0.95))
    return {
        "p05": float(q[0]),
        "p50": float(q[1]),
        "p95": float(q[2]),
        "mean": float(np.mean(samples)),
    }


def states_summary(landscape: Landscape) -> dict:
    """JSON-ready dict: state populations and free energies with 5/50/95 % intervals.

    A state's free energy is G_s = -kT ln P_s (populations P_s sum to 1), relative to the most
    populated state; also the aggregate-posterior Bayesian-bootstrap populations.
    """
    st = landscape.states
    pops = st.populations
    ref = int(np.argmax(np.median(pops, axis=0)))
    with np.errstate(divide="ignore"):
        g = -landscape.kT * (np.log(pops) - np.log(pops[:, [ref]]))
    states = []
    for s in range(st.n_states):
        states.append(
            {
                "id": s,
                "minimum": [float(v) for v in st.minima[s]],
                "n_bins": int(np.sum(st.labels == s)),
                "population": _interval(pops[:, s]),
                f"free_energy_vs_state_{ref}": _interval(g[:, s]),
                "population_bootstrap_aggregate": _interval(st.bootstrap_populations[:, s]),
                "mean_responsibility": float(np.mean(st.responsibilities[:, s])),
            }
        )
    return {
        "method": st.method,
        "kT": landscape.kT,
        "energy_unit": landscape.energy_unit,
        "axis_labels": list(landscape.axis_labels),
        "latent_units": "latent units of the fit",
        "intervals": "5/50/95 % posterior quantiles (NUTS, Dirichlet prior)",
        "states": states,
        "diagnostics": landscape.diagnostics,
    }


def _npz_bytes(landscape: Landscape) -> bytes:
    arrays = {
        "free_energy_samples": landscape.free_energy_samples.astype(np.float32),
        "free_energy_quantiles": landscape.free_energy_quantiles,
        "density": landscape.density,
        "free_energy_aggregate": landscape.free_energy_aggregate,
        "state_labels": landscape.states.labels,
        "kT": np.asarray(landscape.kT),
        "energy_unit": np.asarray(landscape.energy_unit),
        "axis_labels": np.asarray(landscape.axis_labels),
    }
    for d in range(landscape.dim):
        arrays[f"bin_edges_{d}"] = landscape.bin_edges[d]
        arrays[f"bin_centers_{d}"] = landscape.bin_centers[d]
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write_landscape(landscape: Landscape, out_dir: str | Path) -> dict[str, Path]:
    """Write landscape.csv, landscape.png, states.json and landscape.npz into ``out_dir``."""
    out = Path(out_dir)
    fig = plot_landscape(landscape)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    payload = {
        "landscape.csv": landscape_table(landscape).encode(),
        "landscape.png": png.getvalue(),
        "states.json": (json.dumps(states_summary(landscape), indent=2) + "\n").encode(),
        "landscape.npz": _npz_bytes(landscape),
    }
    return {name: write_bytes_atomic(out / name, data) for name, data in payload.items()}


def landscape_from_run(
    run: str | Path, out_dir: str | Path | None = None, config: LandscapeConfig | None = None
) -> tuple[Landscape, dict[str, Path]]:
    """Read ``RUN/latents.npz``, fit the landscape, write the outputs.

    The default output folder is ``RUN/landscape`` (where ``atomicspi kinetics`` and
    ``atomicspi report`` look first).
    """
    latents = read_latents(run)
    model = LandscapeEstimator(config).fit(latents).fetch_model()
    run_path = Path(run)
    run_dir = run_path if run_path.suffix != ".npz" else run_path.parent
    target = Path(out_dir) if out_dir is not None else run_dir / "landscape"
    return model, write_landscape(model, target)
