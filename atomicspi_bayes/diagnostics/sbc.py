"""Simulation-based calibration of a posterior (Talts et al. 2018, SCIENCE.md §8).

The posterior is the amortized guide's q(z | y) or, through a sampler with
``sample(key, params, batch, n)``, the refined per-particle posterior
(``atomicspi_bayes.posterior``) that ``atomicspi fit`` reports by default.

For s = 1..S: draw the latents θ̃_s of one particle from the fitted model's prior (z, and
the pose when poses are latent), simulate its image ỹ_s with the model's own image site
(:mod:`.predictive`: same simulator, same noise model, learned globals), run the guide on ỹ_s
for L posterior draws and record the rank ``r_s = #{l : θ_l < θ̃_s}`` of the truth in every
scalar latent coordinate. If q(θ | y) is the exact posterior, every rank is uniform on
``{0, ..., L}``.

Prior: the model multiplies p(z) by the physics factor ``exp(log p_phys(X(z)))`` (<= 1).
The latents are drawn from p(z) and accepted with probability
``exp(log p_phys - max log p_phys)``, the maximum taken over the whole proposal pool
(rejection sampling against the effective prior; the acceptance rate is reported).

Statistics, per coordinate (``z1..zD``, plus ``shift_x``/``shift_y`` with latent poses):

- randomized PIT ``u_s = (r_s + v_s) / (L + 1)``, ``v_s ~ U(0, 1)``: exactly U(0, 1) under
  calibration whatever L is, so the tests below are exact;
- chi-square test of ``n_bins`` equal bins of u, and Kolmogorov-Smirnov test of u against
  U(0, 1) (p-values);
- empirical coverage of the central α intervals of the posterior draws,
  ``mean(|u - 1/2| <= α/2)`` (α = 0.5, 0.9 by default);
- posterior contraction ``1 - mean Var_q / Var_prior``: SBC cannot tell an uninformative
  posterior (q = prior, contraction 0) from a good one; this number can.

A ∪-shaped rank histogram (coverage below nominal) means an over-confident posterior, a
∩-shape an under-confident one, ranks piled at one end a biased one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.diagnostics.predictive import (
    FittedProblem,
    guide_draws,
    latent_names,
    sample_prior,
    simulate_images,
)
from atomicspi_bayes.errors import ConfigError

__all__ = ["SBCResult", "rank_statistics", "sbc", "write_sbc"]

logger = logging.getLogger(__name__)

DEFAULT_LEVELS = (0.5, 0.9)


@dataclass(frozen=True)
class SBCResult:
    """Outcome of :func:`sbc` (or of :func:`rank_statistics` on given ranks).

    Attributes:
        ranks: ``(S, C)`` int ranks of the truth among ``n_draws`` draws (0..n_draws).
        pit: ``(S, C)`` randomized PIT values in (0, 1).
        n_draws: L, posterior draws per simulation.
        names: ``(C,)`` names of the ranked coordinates (``z1``, ..., ``shift_x``, ...).
        ks_pvalue, chi2_pvalue: ``{name: p}`` uniformity tests of the PIT values.
        coverage: ``{level: {name: fraction}}`` empirical coverage of central intervals.
        contraction: ``{name: 1 - mean posterior var / prior var}`` (NaN when unknown).
        n_bins: bins of the chi-square test and the histograms.
        acceptance_rate: fraction of prior proposals kept by the physics-factor rejection
            step (1.0 without a physics factor; NaN for ranks given directly).
        truth: ``(S, C)`` the simulated true values (None for ranks given directly).
        extra: other facts (guide scale factor, seeds, timings) for the JSON file.
    """

    ranks: np.ndarray
    pit: np.ndarray
    n_draws: int
    names: list[str]
    ks_pvalue: dict[str, float]
    chi2_pvalue: dict[str, float]
    coverage: dict[float, dict[str, float]]
    contraction: dict[str, float]
    n_bins: int
    acceptance_rate: float = float("nan")
    truth: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n_sims(self) -> int:
        return int(self.ranks.shape[0])

    def passes(self, *, alpha: float = 0.01, level: float = 0.9, tolerance: float = 0.05) -> bool:
        """Calibrated at this size: every KS p-value > ``alpha`` and the ``level`` coverage
        of every coordinate within ``level ± tolerance``."""
        ks_ok = all(p > alpha for p in self.ks_pvalue.values())
        cov = self.coverage.get(level)
        if cov is None:
            raise ConfigError(f"no coverage computed at level {level}; have {list(self.coverage)}")
        return ks_ok and all(abs(c - level) <= tolerance for c in cov.values())

    def to_json(self) -> dict:
        """The JSON summary (``RUN/calibration/sbc.json``)."""
        pooled = {str(lev): float(np.mean(list(c.values()))) for lev, c in self.coverage.items()}
        return {
            "n_sims": self.n_sims,
            "n_draws": self.n_draws,
            "n_bins": self.n_bins,
            "names": list(self.names),
            "coverage": pooled,
            "coverage_by_coordinate": {str(k): v for k, v in self.coverage.items()},
            "ks_pvalue": self.ks_pvalue,
            "chi2_pvalue": self.chi2_pvalue,
            "min_ks_pvalue": float(min(self.ks_pvalue.values())),
            "contraction": self.contraction,
            "acceptance_rate": self.acceptance_rate,
            "passed": bool(self.passes()),
            "criteria": "KS p > 0.01 for every coordinate and 90 % coverage in [0.85, 0.95]",
            **self.extra,
        }


def rank_statistics(
    key: jax.Array,
    ranks: np.ndarray,
    n_draws: int,
    *,
    names: list[str] | None = None,
    n_bins: int = 20,
    levels: tuple[float, ...] = DEFAULT_LEVELS,
    contraction: dict[str, float] | None = None,
) -> SBCResult:
    """Uniformity tests and coverage of SBC ranks.

    Args:
        key: PRNG key for the PIT randomization.
        ranks: ``(S,)`` or ``(S, C)`` ints in ``0..n_draws``.
        n_draws: L, posterior draws per simulation.
        names: coordinate names (default ``c1..cC``).
        n_bins: equal-probability bins of the chi-square test.
        levels: nominal central-interval levels for the coverage.
        contraction: optional ``{name: contraction}`` to carry along.

    Raises:
        ConfigError: ranks outside ``0..n_draws``, fewer than 2 simulations, bad bins.
    """
    from scipy import stats

    ranks = np.asarray(ranks)
    if ranks.ndim == 1:
        ranks = ranks[:, None]
    s, c = ranks.shape
    if s < 2:
        raise ConfigError(f"SBC needs at least 2 simulations, got {s}")
    if ranks.min() < 0 or ranks.max() > n_draws:
        raise ConfigError(f"SBC ranks must lie in 0..{n_draws}, got {ranks.min()}..{ranks.max()}")
    if n_bins < 2:
        raise ConfigError(f"n_bins must be >= 2, got {n_bins}")
    names = list(names) if names is not None else [f"c{j + 1}" for j in range(c)]
    v = np.asarray(jax.random.uniform(key, ranks.shape, dtype=jnp.float32), dtype=np.float64)
    pit = (ranks + v) / (n_draws + 1)
    ks, chi2 = {}, {}
    for j, name in enumerate(names):
        ks[name] = float(stats.kstest(pit[:, j], "uniform").pvalue)
        counts = np.bincount(
            np.minimum((pit[:, j] * n_bins).astype(int), n_bins - 1), minlength=n_bins
        )
        chi2[name] = float(stats.chisquare(counts).pvalue)
    coverage = {
        float(lev): {
            name: float(np.mean(np.abs(pit[:, j] - 0.5) <= lev / 2)) for j, name in enumerate(names)
        }
        for lev in levels
    }
    contraction = contraction or {name: float("nan") for name in names}
    return SBCResult(
        ranks=ranks.astype(np.int64), pit=pit, n_draws=int(n_draws), names=names,
        ks_pvalue=ks, chi2_pvalue=chi2, coverage=coverage, contraction=contraction,
        n_bins=int(n_bins),
    )  # fmt: skip


def _flat_latents(latents: dict) -> jax.Array:
    """``{"z": (..., B, D), "shift": (..., B, 2)}`` -> ``(..., B, C)`` ranked coordinates."""
    parts = [latents["z"]]
    if "shift" in latents:
        parts.append(latents["shift"])
    return jnp.concatenate(parts, axis=-1)


def sbc(
    key: jax.Array,
    problem: FittedProblem,
    params: dict,
    *,
    n_sims: int = 1000,
    n_draws: int = 99,
    batch_size: int = 64,
    n_bins: int = 20,
    levels: tuple[float, ...] = DEFAULT_LEVELS,
    guide: Callable | None = None,
    positions: np.ndarray | None = None,
    draw_scale: float = 1.0,
) -> SBCResult:
    """Simulation-based calibration of ``guide`` (default ``problem.guide``) under the model.

    Args:
        key: PRNG key.
        problem: the fitted problem (see :mod:`.predictive`).
        params: SVI parameters (globals + encoder).
        n_sims: S, simulated particles.
        n_draws: L, guide draws per simulated particle (L + 1 divisible by ``n_bins`` keeps
            the rank histogram bins equal; the tests use randomized PIT values and are exact
            for any L).
        batch_size: particles simulated per compiled call.
        n_bins: bins of the chi-square test.
        levels: central-interval levels for the coverage.
        guide: another guide with the same params (e.g. :func:`.predictive.shrink_guide`),
            or a sampler (``posterior.refined_sampler(problem)``: the refined posterior).
        positions: dataset particles whose poses, CTFs and optics groups the simulations
            reuse (cycled; default: all ``problem.n_particles``, shuffled by ``key``). With
            latent poses their poses are replaced by prior draws.
        draw_scale: rescale each particle's L draws about their mean (``0.5`` halves the
            posterior spread of any guide: a deliberately miscalibrated posterior; for a
            Normal guide the same as :func:`.predictive.shrink_guide`).

    Returns:
        :class:`SBCResult`.
    """
    if not draw_scale > 0:
        raise ConfigError(f"draw_scale must be > 0, got {draw_scale}")
    if n_sims < 2 or n_draws < 1 or batch_size < 1:
        raise ConfigError(
            f"sbc needs n_sims >= 2, n_draws >= 1, batch_size >= 1; got {n_sims}, {n_draws}, "
            f"{batch_size}"
        )
    guide = guide if guide is not None else problem.guide
    k_pos, k_prop, k_sim, k_stats = jax.random.split(key, 4)
    if positions is None:
        positions = np.asarray(jax.random.permutation(k_pos, problem.n_particles))
    positions = np.asarray(positions)
    bsz = min(batch_size, n_sims)
    n_batches = -(-n_sims // bsz)
    rows = np.resize(positions, n_batches * bsz).reshape(n_batches, bsz)
    templates = [problem.batch(r) for r in rows]
    templates = [t._replace(images=jnp.zeros_like(t.images)) for t in templates]

    latents, accept_rate = sample_prior(k_prop, problem, params, templates)
    simulate = jax.jit(
        lambda k, p, b, lat: _simulate_and_rank(k, problem, p, guide, b, lat, n_draws, draw_scale)
    )
    ranks, truth, post_var = [], [], []
    for i, template in enumerate(templates):
        lat = jax.tree_util.tree_map(lambda x, i=i: x[i * bsz : (i + 1) * bsz], latents)
        r, t, var = simulate(jax.random.fold_in(k_sim, i), params, template, lat)
        ranks.append(np.asarray(r))
        truth.append(np.asarray(t))
        post_var.append(np.asarray(var))
    ranks = np.concatenate(ranks)[:n_sims]
    truth = np.concatenate(truth)[:n_sims]
    post_var = np.concatenate(post_var)[:n_sims]
    names = latent_names(problem.model_cfg)
    prior_var = truth.var(axis=0)
    contraction = {
        name: float(1.0 - post_var[:, j].mean() / prior_var[j])
        if prior_var[j] > 0
        else float("nan")
        for j, name in enumerate(names)
    }
    result = rank_statistics(
        k_stats, ranks, n_draws, names=names, n_bins=n_bins, levels=levels,
        contraction=contraction,
    )  # fmt: skip
    return dataclasses.replace(result, acceptance_rate=accept_rate, truth=truth)


def _simulate_and_rank(key, problem, params, guide, template, latents, n_draws, draw_scale):
    """Simulate one batch from ``latents`` and rank them among ``n_draws`` guide draws."""
    k_sim, k_guide = jax.random.split(key)
    batch = template._replace(images=simulate_images(k_sim, problem, params, template, latents))
    if "rotation" in latents:  # the guide must not see the true pose
        batch = batch._replace(
            rotations=jnp.broadcast_to(jnp.eye(3), latents["rotation"].shape),
            shifts=jnp.zeros_like(latents["shift"]),
        )
    draws = guide_draws(k_guide, guide, params, batch, n_draws)
    truth = _flat_latents(latents)
    post = _flat_latents(draws)  # (L, B, C)
    if draw_scale != 1.0:
        centre = jnp.mean(post, axis=0, keepdims=True)
        post = centre + draw_scale * (post - centre)
    ranks = jnp.sum(post < truth[None], axis=0)
    return ranks, truth, jnp.var(post, axis=0)


# ---------------------------------------------------------------- output


def write_sbc(result: SBCResult, out_dir: str | os.PathLike, *, prefix: str = "sbc") -> list[Path]:
    """Write ``prefix.json``, ``prefix.npz`` (ranks, n_draws, pit, truth) and PNG figures.

    The layout is the one ``report.artifacts`` reads from ``RUN/calibration/``: ranks
    ``(S, C)`` and ``n_draws`` in the ``.npz``; ``coverage`` ``{level: fraction}`` (pooled
    over coordinates) and scalar results in the ``.json``. Returns the written paths.
    """
    from atomicspi_bayes.diagnostics.figures import save_figure, sbc_ecdf_figure, sbc_rank_figure
    from atomicspi_bayes.io._atomic import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{prefix}.json", out / f"{prefix}.npz"]
    with atomic_path(paths[0]) as tmp:
        Path(tmp).write_text(json.dumps(result.to_json(), indent=2, allow_nan=True) + "\n")
    arrays = {"ranks": result.ranks, "n_draws": np.asarray(result.n_draws), "pit": result.pit}
    if result.truth is not None:
        arrays["truth"] = result.truth
    arrays["names"] = np.asarray(result.names)
    with atomic_path(paths[1]) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    paths.append(save_figure(sbc_rank_figure(result), out / f"{prefix}_ranks.png"))
    paths.append(save_figure(sbc_ecdf_figure(result), out / f"{prefix}_ecdf.png"))
    return paths
