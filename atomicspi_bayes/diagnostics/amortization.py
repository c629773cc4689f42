"""Amortization gap: the encoder's q(z | y) against per-particle reference posteriors.

The reference is the exact posterior of each particle under the fitted model (globals held
at their learned values): on a grid (``model.latent_grid_posterior``, D = 1 with known
poses: exact up to the grid) or by NUTS on the particles' latents (``inference.run_nuts``,
any D, known poses). Per particle and latent dimension:

- ``mean_shift_sd`` = (mean_q - mean_ref) / sd_ref: how far the encoder's mean is off, in
  units of the true posterior width (|.| < 0.3 is a small gap);
- ``sd_ratio`` = sd_q / sd_ref (< 1 over-confident, > 1 under-confident);
- ``ref_mass_in_q50`` / ``ref_mass_in_q90``: reference posterior mass inside q's central 50 /
  90 % interval (0.5 / 0.9 when q equals the reference): the coverage q's intervals
  actually have for this particle.

q's moments and intervals come from guide draws (any guide). The reference moments come
from the grid weights (trapezoid-accurate when the grid spacing is below sd_ref/2) or the
NUTS draws.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.diagnostics.predictive import FittedProblem, guide_draws
from atomicspi_bayes.diagnostics.reference import grid_posterior_weights, nuts_reference
from atomicspi_bayes.errors import ConfigError

__all__ = ["AmortizationGap", "amortization_gap", "write_amortization_gap"]

_LEVELS = (0.5, 0.9)


@dataclass(frozen=True)
class AmortizationGap:
    """Per particle × latent dimension comparison of q with the reference posterior.

    Attributes:
        table: ``{column: (n·D,) array}`` with columns ``particle_index``, ``position``,
            ``dim``, ``q_mean``, ``q_sd``, ``ref_mean``, ``ref_sd``, ``mean_shift_sd``,
            ``sd_ratio``, ``ref_mass_in_q50``, ``ref_mass_in_q90`` (+ ``truth`` when given).
        method: ``"grid"`` or ``"nuts"``.
        summary: medians and fractions over the table (for the JSON/report).
    """

    table: dict[str, np.ndarray]
    method: str
    summary: dict[str, float]


def _q_moments(key, problem, params, guide, batch, n_draws):
    z = guide_draws(key, guide, params, batch, n_draws)["z"]  # (S, B, D)
    lo = {lev: jnp.quantile(z, 0.5 - lev / 2, axis=0) for lev in _LEVELS}
    hi = {lev: jnp.quantile(z, 0.5 + lev / 2, axis=0) for lev in _LEVELS}
    return jnp.mean(z, axis=0), jnp.std(z, axis=0), lo, hi


def _grid_reference(problem, params, batch, z_grid):
    w = grid_posterior_weights(problem, params, batch, z_grid)
    mean = w @ z_grid
    sd = jnp.sqrt(jnp.maximum(w @ z_grid**2 - mean**2, 0.0))
    return w, mean[:, None], sd[:, None]


def _grid_mass(w: np.ndarray, z_grid: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Mass of grid weights ``(B, G)`` in ``[lo, hi]`` ``(B,)`` (piecewise-linear CDF)."""
    h = np.diff(z_grid)
    edges = np.concatenate([[z_grid[0] - h[0] / 2], z_grid[:-1] + h / 2, [z_grid[-1] + h[-1] / 2]])
    cdf = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(w, axis=1)], axis=1)
    at = lambda x: np.array([np.interp(x[i], edges, cdf[i]) for i in range(w.shape[0])])  # noqa: E731
    return at(hi) - at(lo)


def amortization_gap(
    key: jax.Array,
    problem: FittedProblem,
    params: dict,
    positions: np.ndarray,
    *,
    method: str = "auto",
    z_grid: np.ndarray | None = None,
    n_q_draws: int = 4000,
    num_warmup: int = 300,
    num_samples: int = 1000,
    batch_size: int = 32,
    truth: np.ndarray | None = None,
    guide=None,
    nuts_draws: np.ndarray | None = None,
) -> AmortizationGap:
    """Compare q(z | y) with the per-particle reference posterior on ``positions``.

    Args:
        key: PRNG key.
        problem, params: the fitted problem and its SVI parameters.
        positions: dataset positions of the particles to compare.
        method: ``"grid"`` (D = 1, known poses), ``"nuts"`` (known poses) or ``"auto"``
            (grid when possible).
        z_grid: ``(G,)`` grid for ``"grid"`` (default ``linspace(-6, 6, 481)``: spacing
            0.025, accurate for reference sds above ~0.05).
        n_q_draws: guide draws per particle for q's moments and intervals.
        num_warmup, num_samples: NUTS settings (one chain over the subset's latents).
        batch_size: particles per compiled grid/guide call.
        truth: optional ``(n, D)`` true latents, added as a column.
        guide: another guide with the same params (default ``problem.guide``), or a
            sampler (``posterior.refined_sampler``) to measure the refined posterior's gap.
        nuts_draws: ``(S, n, D)`` NUTS draws of these particles already computed
            (:func:`.reference.nuts_reference`), reused instead of running NUTS again.

    Raises:
        ConfigError: unknown method, grid with D > 1, or latent poses.
    """
    cfg = problem.model_cfg
    if cfg.poses != "fixed":
        raise ConfigError("amortization gap needs known poses (poses='fixed')")
    if method == "auto":
        method = "grid" if cfg.latent_dim == 1 else "nuts"
    if method not in ("grid", "nuts"):
        raise ConfigError(
            f"amortization-gap method must be 'auto', 'grid' or 'nuts', got {method!r}"
        )
    if method == "grid" and cfg.latent_dim != 1:
        raise ConfigError(f"the grid reference needs latent_dim = 1, got {cfg.latent_dim}")
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size == 0:
        raise ConfigError("amortization gap: no particles selected")
    guide = guide if guide is not None else problem.guide
    z_grid = np.linspace(-6.0, 6.0, 481) if z_grid is None else np.asarray(z_grid, np.float64)
    k_q, k_nuts = jax.random.split(key)

    q_fn = jax.jit(lambda k, p, b: _q_moments(k, problem, p, guide, b, n_q_draws))
    grid_fn = jax.jit(lambda p, b: _grid_reference(problem, p, b, jnp.asarray(z_grid, jnp.float32)))
    bsz = min(batch_size, positions.size)
    cols: dict[str, list] = {"q_mean": [], "q_sd": [], "ref_mean": [], "ref_sd": []}
    for lev in _LEVELS:
        cols[f"q_lo{int(lev * 100)}"], cols[f"q_hi{int(lev * 100)}"] = [], []
        cols[f"ref_mass_in_q{int(lev * 100)}"] = []
    for i, start in enumerate(range(0, positions.size, bsz)):
        chunk = positions[start : start + bsz]
        padded = np.concatenate([chunk, np.full(bsz - chunk.size, chunk[-1])])
        batch = problem.batch(padded)
        mean, sd, lo, hi = jax.tree_util.tree_map(
            lambda x, n=chunk.size: np.asarray(x)[:n],
            q_fn(jax.random.fold_in(k_q, i), params, batch),
        )
        cols["q_mean"].append(mean)
        cols["q_sd"].append(sd)
        for lev in _LEVELS:
            cols[f"q_lo{int(lev * 100)}"].append(lo[lev])
            cols[f"q_hi{int(lev * 100)}"].append(hi[lev])
        if method == "grid":
            w, ref_mean, ref_sd = (np.asarray(x)[: chunk.size] for x in grid_fn(params, batch))
            cols["ref_mean"].append(ref_mean)
            cols["ref_sd"].append(ref_sd)
            for lev in _LEVELS:
                cols[f"ref_mass_in_q{int(lev * 100)}"].append(
                    _grid_mass(w, z_grid, lo[lev][:, 0], hi[lev][:, 0])[:, None]
                )
    arr = {k: np.concatenate(v) for k, v in cols.items() if v}
    if method == "nuts":
        draws = nuts_draws
        if draws is None:
            draws = nuts_reference(
                k_nuts, problem, params, positions, num_warmup=num_warmup,
                num_samples=num_samples,
            )  # fmt: skip
        draws = np.asarray(draws, np.float64)
        arr["ref_mean"], arr["ref_sd"] = draws.mean(axis=0), draws.std(axis=0)
        for lev in _LEVELS:
            tag = int(lev * 100)
            inside = (draws >= arr[f"q_lo{tag}"][None]) & (draws <= arr[f"q_hi{tag}"][None])
            arr[f"ref_mass_in_q{tag}"] = inside.mean(axis=0)
    n, d = arr["q_mean"].shape
    rows = getattr(problem, "rows", None)
    index = np.asarray(rows)[positions] if rows is not None else positions
    table = {
        "particle_index": np.repeat(index, d),
        "position": np.repeat(positions, d),
        "dim": np.tile(np.arange(1, d + 1), n),
    }
    for name in ("q_mean", "q_sd", "ref_mean", "ref_sd"):
        table[name] = arr[name].reshape(-1).astype(np.float64)
    table["mean_shift_sd"] = (table["q_mean"] - table["ref_mean"]) / table["ref_sd"]
    table["sd_ratio"] = table["q_sd"] / table["ref_sd"]
    for lev in _LEVELS:
        tag = int(lev * 100)
        table[f"ref_mass_in_q{tag}"] = arr[f"ref_mass_in_q{tag}"].reshape(-1).astype(np.float64)
    if truth is not None:
        table["truth"] = np.asarray(truth, np.float64).reshape(-1)
    shift, ratio = table["mean_shift_sd"], table["sd_ratio"]
    summary = {
        "method": method,
        "n_particles": int(n),
        "median_abs_mean_shift_sd": float(np.median(np.abs(shift))),
        "fraction_abs_shift_below_0.5": float(np.mean(np.abs(shift) < 0.5)),
        "median_sd_ratio": float(np.median(ratio)),
        "sd_ratio_q05": float(np.quantile(ratio, 0.05)),
        "sd_ratio_q95": float(np.quantile(ratio, 0.95)),
        "mean_ref_mass_in_q50": float(np.mean(table["ref_mass_in_q50"])),
        "mean_ref_mass_in_q90": float(np.mean(table["ref_mass_in_q90"])),
    }
    return AmortizationGap(table=table, method=method, summary=summary)


def write_amortization_gap(gap: AmortizationGap, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``amortization_gap.csv`` (one row per particle × dim), ``amortization_gap.json``
    (summary) and ``amortization_gap.png``."""
    import json

    from atomicspi_bayes.diagnostics.figures import amortization_figure, save_figure
    from atomicspi_bayes.diagnostics.ppc import _write_csv
    from atomicspi_bayes.io._atomic import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "amortization_gap.csv", out / "amortization_gap.json"]
    _write_csv(
        paths[0], gap.table,
        f"amortization gap: amortized q(z|y) vs {gap.method} reference posterior per particle",
    )  # fmt: skip
    with atomic_path(paths[1]) as tmp:
        Path(tmp).write_text(json.dumps(gap.summary, indent=2) + "\n")
    paths.append(save_figure(amortization_figure(gap.table), out / "amortization_gap.png"))
    return paths
