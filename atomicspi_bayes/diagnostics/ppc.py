"""Posterior predictive checks of a fitted run (SCIENCE.md §8).

For every checked particle i: S posterior draws θ_s = (z, pose) from the guide q(θ | y_i);
for each, the model's image site (:mod:`.predictive`) gives the noise-free scored
coefficients M(θ_s) and their noise sds; ``R`` replicated images ``y_rep = M(θ_s) + sd·ε``
are drawn from the model's noise model. Discrepancy (whitened residual energy):

    T(y, θ) = Σ_m ((y_m - M_m(θ)) / sd_m)²        (M scored numbers; = -2 log p(y|θ) + const)

Per particle:

- ``loglik``: mean over draws of log p(y_i | θ_s) (nats), and ``loglik_rep`` of the replicas;
- ``chi2_per_dof``: mean_s T(y_i, θ_s) / M (1 under the noise model, plus a little for the
  posterior width);
- ``p_value``: posterior predictive p, P(T(y_rep, θ) >= T(y_i, θ)) over draws and replicas
  (near 0: the image has more residual than the model explains);
- ``outlier_score``: a signal-weighted discrepancy, standardised. Each scored number gets
  the weight w_m ∝ mean_s (M_m(θ_s)/sd_m)² (its expected signal-to-noise; Σ w = 1), and
  ``T_w = mean_s Σ_m w_m ((y_m - M_m(θ_s))/sd_m)²`` is compared with its distribution under
  the model's Gaussian noise (mean Σ w, sd sqrt(2 Σ w²), exact):
  ``score = (T_w - Σ w) / sqrt(2 Σ w²)``. A particle the model explains scores ~N(0, 1);
  junk (an empty or pure-noise image, a different structure, a wrong pose) leaves the
  model's signal in the residual exactly where the weights are large, so it scores
  ~sqrt(Σ SNR_m² / 2) and more: far more sensitive than the unweighted χ², whose excess is
  diluted by the noise-only coefficients. Users threshold it; the default flag is
  ``score > median + 5 × 1.4826 × MAD`` over the checked particles (robust to a global
  misfit that shifts everyone), stored with the results;
- residual radial power spectrum: ``(y - M)²/sd²`` averaged in shells of |k| (1 = noise
  model), summarised as ``resid_power_low`` / ``resid_power_high`` (lower / upper half of the
  shells) and plotted for all particles against the replicas;

Per defocus group (quantiles of the mean defocus): mean χ² per scored number, its
replicated expectation and sd, z-score and two-sided p-value.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.diagnostics.predictive import (
    FittedProblem,
    guide_draws,
    trace_image_site,
)
from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.model import FourierWindow

__all__ = ["PPCResult", "posterior_predictive_check", "write_ppc"]


@dataclass(frozen=True)
class PPCResult:
    """Outcome of :func:`posterior_predictive_check` (arrays over the N checked particles).

    Attributes:
        positions: ``(N,)`` dataset positions (0..n_particles-1) of the checked particles.
        particle_index: ``(N,)`` rows in the input particle file (= positions when unknown).
        defocus: ``(N,)`` mean defocus (dU + dV)/2 in Å.
        optics_group: ``(N,)`` 0-based optics group.
        loglik_obs, loglik_rep: ``(N,)`` mean log p(y | θ_s) of the observed / replicated
            images, nats.
        chi2_per_dof: ``(N,)`` mean discrepancy / M.
        p_value: ``(N,)`` posterior predictive p-value of the discrepancy.
        outlier_score: ``(N,)`` standardised signal-weighted discrepancy (module docstring).
        threshold: score above which a particle is flagged.
        shell_k: ``(K,)`` shell centres in Å⁻¹.
        shell_power, shell_power_rep: ``(N, K)`` whitened residual power per shell of the
            observed and of one replicated image (1 = noise model).
        n_scored: M, scored numbers per image.
        n_draws, n_replicas: S and R.
        groups: defocus-group table ``{column: (G,) array}``.
    """

    positions: np.ndarray
    particle_index: np.ndarray
    defocus: np.ndarray
    optics_group: np.ndarray
    loglik_obs: np.ndarray
    loglik_rep: np.ndarray
    chi2_per_dof: np.ndarray
    p_value: np.ndarray
    outlier_score: np.ndarray
    threshold: float
    shell_k: np.ndarray
    shell_power: np.ndarray
    shell_power_rep: np.ndarray
    n_scored: int
    n_draws: int
    n_replicas: int
    groups: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def flagged(self) -> np.ndarray:
        """``(N,)`` bool, outlier score above the threshold."""
        return self.outlier_score > self.threshold


def _shells(window: FourierWindow, n_shells: int) -> tuple[np.ndarray, np.ndarray]:
    """Shell index ``(M,)`` of every scored number and the ``(K,)`` shell centres (Å⁻¹)."""
    box, width = window.box, window.box // 2 + 1
    idx = np.concatenate([np.asarray(window.re_index), np.asarray(window.im_index)])
    rows, cols = idx // width, idx % width
    my = np.where(rows < (box + 1) // 2, rows, rows - box)
    k = np.hypot(my, cols) / (box * window.pixel_size)
    edges = np.linspace(0.0, window.k_max * (1 + 1e-6), n_shells + 1)
    shell = np.clip(np.searchsorted(edges, k, side="right") - 1, 0, n_shells - 1)
    return shell, 0.5 * (edges[:-1] + edges[1:])


def _check_batch(key, problem, params, guide, batch, n_draws, n_replicas, shell, n_shells):
    """Per-particle statistics of one batch (jit-compiled by the caller)."""
    k_guide, k_site, k_rep = jax.random.split(key, 3)
    draws = guide_draws(k_guide, guide, params, batch, n_draws)  # {site: (S, B, ...)}
    keys = jax.random.split(k_site, n_draws)
    site = jax.vmap(lambda k, lat: trace_image_site(k, problem, params, batch, lat))(keys, draws)
    resid = (site.observed - site.mean) / site.sd  # (S, B, M); observed repeats over S
    t_obs = jnp.sum(resid**2, axis=-1)  # (S, B)
    m = resid.shape[-1]
    log_norm = -jnp.sum(jnp.log(site.sd), axis=-1) - 0.5 * m * jnp.log(2 * jnp.pi)
    eps = jax.random.normal(k_rep, (n_replicas, *resid.shape))  # replicas: y_rep = M + sd·ε
    t_rep = jnp.sum(eps**2, axis=-1)  # (R, S, B)
    # signal-weighted discrepancy: weights = expected signal-to-noise of each coefficient
    w = jnp.mean((site.mean / site.sd) ** 2, axis=0)  # (B, M)
    w = w / jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), 1e-30)
    t_w = jnp.mean(jnp.sum(w[None] * resid**2, axis=-1), axis=0)  # (B,)
    w_mean, w_sd = jnp.sum(w, axis=-1), jnp.sqrt(2.0 * jnp.sum(w**2, axis=-1))  # E, sd of rep
    onehot = jax.nn.one_hot(shell, n_shells, dtype=resid.dtype)  # (M, K)
    counts = jnp.maximum(onehot.sum(axis=0), 1.0)
    power = jnp.mean(resid**2, axis=0) @ onehot / counts  # (B, K)
    power_rep = (eps[0, 0] ** 2) @ onehot / counts
    return {
        "t_obs": jnp.mean(t_obs, axis=0),
        "t_rep_sum": jnp.sum(t_rep, axis=(0, 1)),
        "t_rep_sq": jnp.sum(t_rep**2, axis=(0, 1)),
        "p_value": jnp.mean(t_rep >= t_obs[None], axis=(0, 1)),
        "loglik_obs": jnp.mean(log_norm - 0.5 * t_obs, axis=0),
        "loglik_rep": jnp.mean(log_norm[None] - 0.5 * t_rep, axis=(0, 1)),
        "power": power,
        "power_rep": power_rep,
        "score": (t_w - w_mean) / w_sd,
    }


def posterior_predictive_check(
    key: jax.Array,
    problem: FittedProblem,
    params: dict,
    *,
    positions: np.ndarray | None = None,
    n_draws: int = 16,
    n_replicas: int = 4,
    batch_size: int = 64,
    n_shells: int = 12,
    n_groups: int = 4,
    threshold: float | None = None,
    guide=None,
) -> PPCResult:
    """Posterior predictive checks of ``positions`` (default: every particle).

    Args:
        key: PRNG key.
        problem: the fitted problem (see :mod:`.predictive`).
        params: SVI parameters.
        positions: dataset positions to check.
        n_draws: S posterior draws per particle.
        n_replicas: R replicated noise draws per posterior draw.
        batch_size: particles per compiled call.
        n_shells: radial shells of the residual spectrum (up to the window's k_max).
        n_groups: defocus groups (quantiles), at most one per 2 particles.
        threshold: outlier-score threshold (default: median + 5 × 1.4826 × MAD).
        guide: the posterior the draws come from (default ``problem.guide``, the amortized
            q; e.g. ``posterior.refined_sampler(problem)`` for the refined posterior).
    """
    n_total = problem.n_particles
    positions = np.arange(n_total) if positions is None else np.asarray(positions, np.int64)
    if positions.size == 0 or positions.min() < 0 or positions.max() >= n_total:
        raise ConfigError(f"PPC positions must be in 0..{n_total - 1}, got {positions.size} values")
    if n_draws < 1 or n_replicas < 1 or n_shells < 1 or n_groups < 1:
        raise ConfigError("PPC needs n_draws, n_replicas, n_shells, n_groups >= 1")
    window = problem.static.window
    shell, shell_k = _shells(window, n_shells)
    guide = problem.guide if guide is None else guide
    fn = jax.jit(
        lambda k, p, b: _check_batch(
            k, problem, p, guide, b, n_draws, n_replicas, jnp.asarray(shell), n_shells
        )
    )
    bsz = min(batch_size, positions.size)
    outs, defocus, groups_opt = [], [], []
    for i, start in enumerate(range(0, positions.size, bsz)):
        chunk = positions[start : start + bsz]
        padded = np.concatenate([chunk, np.full(bsz - chunk.size, chunk[-1])])
        batch = problem.batch(padded)
        out = jax.tree_util.tree_map(np.asarray, fn(jax.random.fold_in(key, i), params, batch))
        outs.append(jax.tree_util.tree_map(lambda x, n=chunk.size: x[:n], out))
        defocus.append(0.5 * np.asarray(batch.ctf.defocus_u + batch.ctf.defocus_v)[: chunk.size])
        groups_opt.append(np.asarray(batch.optics_group)[: chunk.size])
    out = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    m = window.n_scored
    n_rep = positions.size * n_draws * n_replicas
    rep_mean = out["t_rep_sum"].sum() / n_rep
    rep_sd = float(np.sqrt(max(out["t_rep_sq"].sum() / n_rep - rep_mean**2, 1e-12)))
    score = out["score"]
    if threshold is None:
        med = float(np.median(score))
        threshold = med + 5.0 * 1.4826 * float(np.median(np.abs(score - med)))
    defocus = np.concatenate(defocus)
    rows = getattr(problem, "rows", None)
    particle_index = np.asarray(rows)[positions] if rows is not None else positions
    return PPCResult(
        positions=positions,
        particle_index=np.asarray(particle_index),
        defocus=defocus,
        optics_group=np.concatenate(groups_opt),
        loglik_obs=out["loglik_obs"],
        loglik_rep=out["loglik_rep"],
        chi2_per_dof=out["t_obs"] / m,
        p_value=out["p_value"],
        outlier_score=score,
        threshold=float(threshold),
        shell_k=shell_k,
        shell_power=out["power"],
        shell_power_rep=out["power_rep"],
        n_scored=int(m),
        n_draws=int(n_draws),
        n_replicas=int(n_replicas),
        groups=_defocus_groups(defocus, out["t_obs"], rep_mean, rep_sd, m, n_groups),
    )


def _defocus_groups(defocus, t_obs, rep_mean, rep_sd, m, n_groups) -> dict[str, np.ndarray]:
    """χ² per scored number in quantile groups of defocus, vs the replicated expectation."""
    from scipy import stats

    n_groups = max(1, min(n_groups, defocus.size // 2))
    edges = np.quantile(defocus, np.linspace(0, 1, n_groups + 1))
    group = np.clip(np.searchsorted(edges, defocus, side="right") - 1, 0, n_groups - 1)
    cols: dict[str, list] = {k: [] for k in (
        "group", "defocus_min", "defocus_max", "n", "chi2_per_dof", "expected", "expected_sd",
        "z", "p_value",
    )}  # fmt: skip
    for g in range(n_groups):
        sel = group == g
        n = int(sel.sum())
        if n == 0:
            continue
        value = float(t_obs[sel].mean() / m)
        sd = rep_sd / m / np.sqrt(n)
        z = (value - rep_mean / m) / sd
        for name, v in (
            ("group", g), ("defocus_min", float(defocus[sel].min())),
            ("defocus_max", float(defocus[sel].max())), ("n", n), ("chi2_per_dof", value),
            ("expected", float(rep_mean / m)), ("expected_sd", float(sd)), ("z", float(z)),
            ("p_value", float(2 * stats.norm.sf(abs(z)))),
        ):  # fmt: skip
            cols[name].append(v)
    return {k: np.asarray(v) for k, v in cols.items()}


# ---------------------------------------------------------------- output


def _write_csv(path: Path, columns: dict[str, np.ndarray], comment: str = "") -> None:
    from atomicspi_bayes.io._atomic import atomic_path

    names = list(columns)
    n = len(next(iter(columns.values())))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        if comment:
            fh.write("".join(f"# {line}\n" for line in comment.splitlines()))
        writer = csv.writer(fh)
        writer.writerow(names)
        for i in range(n):
            row = []
            for name in names:
                v = columns[name][i]
                row.append(f"{v:.6g}" if isinstance(v, float | np.floating) else str(v))
            writer.writerow(row)


def write_ppc(result: PPCResult, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``ppc.csv`` (per particle), ``ppc_groups.csv``, ``ppc.json`` and PNG figures."""
    from atomicspi_bayes.diagnostics.figures import ppc_figures, save_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    half = result.shell_k.size // 2
    low = result.shell_power[:, : max(half, 1)].mean(axis=1)
    high = result.shell_power[:, half:].mean(axis=1) if half else low
    per_particle = {
        "particle_index": result.particle_index.astype(np.int64),
        "position": result.positions.astype(np.int64),
        "defocus_A": result.defocus.astype(np.float64),
        "optics_group": result.optics_group.astype(np.int64),
        "loglik": result.loglik_obs.astype(np.float64),
        "loglik_rep": result.loglik_rep.astype(np.float64),
        "chi2_per_dof": result.chi2_per_dof.astype(np.float64),
        "p_value": result.p_value.astype(np.float64),
        "outlier_score": result.outlier_score.astype(np.float64),
        "flagged": result.flagged.astype(np.int64),
        "resid_power_low": low.astype(np.float64),
        "resid_power_high": high.astype(np.float64),
    }
    paths = [out / "ppc.csv", out / "ppc_groups.csv", out / "ppc.json"]
    _write_csv(
        paths[0], per_particle,
        "posterior predictive checks, one row per particle; flag junk with outlier_score > "
        f"threshold ({result.threshold:.4g} here; see ppc.json)",
    )  # fmt: skip
    _write_csv(paths[1], {k: np.asarray(v) for k, v in result.groups.items()})
    summary = {
        "n_particles": int(result.positions.size),
        "n_draws": result.n_draws,
        "n_replicas": result.n_replicas,
        "n_scored": result.n_scored,
        "outlier_threshold": result.threshold,
        "n_flagged": int(result.flagged.sum()),
        "median_chi2_per_dof": float(np.median(result.chi2_per_dof)),
        "median_p_value": float(np.median(result.p_value)),
        "fraction_p_below_0.01": float(np.mean(result.p_value < 0.01)),
        "score": "outlier_score = (T_w - sum w) / sqrt(2 sum w^2), signal-weighted residual",
    }
    from atomicspi_bayes.io._atomic import atomic_path

    with atomic_path(paths[2]) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2) + "\n")
    for name, fig in ppc_figures(result).items():
        paths.append(save_figure(fig, out / f"{name}.png"))
    return paths
