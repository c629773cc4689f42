"""Reference (exact) per-particle posteriors under a fitted model, globals held fixed.

- :func:`grid_posterior_weights`: D = 1, known poses: ``model.latent_grid_posterior`` on a
  grid (exact up to the grid spacing; the model's prior and physics factor included).
- :func:`grid_guide`: a NumPyro guide drawing z from those grid posteriors (piecewise
  constant density on the grid cells). It is the exact posterior to O(grid spacing), so
  SBC of it checks the SBC machinery itself on the real model, and it is the yardstick the
  amortized guide is compared with.
- :func:`nuts_reference`: NUTS on the latents of a set of particles (any D, known poses).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from atomicspi_bayes.diagnostics.predictive import FittedProblem, model_globals
from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.model import ParticleBatch

__all__ = ["grid_guide", "grid_posterior_weights", "nuts_reference"]


def _check_grid_model(problem: FittedProblem) -> None:
    cfg = problem.model_cfg
    if cfg.latent_dim != 1 or cfg.poses != "fixed":
        raise ConfigError(
            f"grid posteriors need latent_dim = 1 and poses = 'fixed'; got {cfg.latent_dim}, "
            f"{cfg.poses!r} (use NUTS)"
        )


def grid_posterior_weights(
    problem: FittedProblem, params: dict, batch: ParticleBatch, z_grid: jax.Array
) -> jax.Array:
    """``(B, G)`` posterior weights of z on ``z_grid`` ``(G,)`` for each particle of ``batch``."""
    from atomicspi_bayes.model import latent_grid_posterior

    _check_grid_model(problem)
    return latent_grid_posterior(
        batch, problem.model_cfg, problem.static, model_globals(params), jnp.asarray(z_grid)
    )


def grid_guide(problem: FittedProblem, params: dict, z_grid: np.ndarray) -> Callable:
    """A guide ``guide(batch)`` with site ``"z"`` drawn from the exact grid posterior.

    ``z_grid`` must be uniform; a draw picks a cell with the posterior weight and a uniform
    point inside it. The grid must cover the posterior mass (e.g. ``linspace(-5, 5, 201)``
    for posterior sds above ~0.1).
    """
    _check_grid_model(problem)
    grid = np.asarray(z_grid, np.float64)
    step = np.diff(grid)
    if grid.ndim != 1 or grid.size < 2 or not np.allclose(step, step[0], rtol=1e-6):
        raise ConfigError("grid_guide needs a uniform 1-D z grid with at least 2 points")
    h = float(step[0])
    grid_j = jnp.asarray(grid, jnp.float32)
    params = jax.tree_util.tree_map(jnp.asarray, model_globals(params))

    def guide(batch: ParticleBatch) -> None:
        w = grid_posterior_weights(problem, params, batch, grid_j)
        k_cell, k_jitter = jax.random.split(numpyro.prng_key())
        cell = jax.random.categorical(k_cell, jnp.log(jnp.maximum(w, 1e-30)), axis=-1)
        z = grid_j[cell] + h * (jax.random.uniform(k_jitter, cell.shape) - 0.5)
        numpyro.sample("z", dist.Delta(z[:, None], event_dim=1))

    return guide


def nuts_reference(
    key: jax.Array,
    problem: FittedProblem,
    params: dict,
    positions: np.ndarray,
    *,
    num_warmup: int = 300,
    num_samples: int = 1000,
) -> np.ndarray:
    """``(S, n, D)`` NUTS draws of z for the particles at ``positions`` (globals fixed).

    The model (``model.cryoem_model``) runs on a full plate of the n particles, so no
    likelihood scaling; known poses only.
    """
    from atomicspi_bayes.inference import run_nuts
    from atomicspi_bayes.model import cryoem_model

    if problem.model_cfg.poses != "fixed":
        raise ConfigError("NUTS reference posteriors need known poses (poses='fixed')")
    positions = np.asarray(positions, np.int64)
    n = positions.size
    static = dataclasses.replace(problem.static, n_particles=n)
    batch = problem.batch(positions)._replace(indices=jnp.arange(n, dtype=jnp.int32))
    result = run_nuts(
        key, cryoem_model, batch, problem.model_cfg, static, fixed_params=model_globals(params),
        num_warmup=num_warmup, num_samples=num_samples,
    )  # fmt: skip
    return np.asarray(result.samples["z"][0], dtype=np.float64)
