"""NUTS on a small fixed batch: the gold standard for the amortized posterior.

Typical use: fix the global parameters at the SVI point estimates and sample the per-item
latents of a few hundred items exactly, then compare with the guide's q(z | y).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from numpyro import handlers
from numpyro.infer import MCMC, NUTS

from atomicspi_bayes.errors import ConfigError

__all__ = ["NUTSResult", "run_nuts"]


@dataclass(frozen=True)
class NUTSResult:
    """Outcome of :func:`run_nuts`.

    Attributes:
        samples: ``{site: (num_chains, num_samples, *site_shape) ndarray}`` of the latent
            sample sites (and deterministic sites).
        num_divergences: divergent transitions after warm-up, all chains together.
        accept_prob: mean acceptance probability after warm-up.
        wall_time_s: seconds for warm-up plus sampling (including compilation).
        mcmc: the numpyro ``MCMC`` object (e.g. for ``arviz.from_numpyro`` in diagnostics/).
    """

    samples: dict
    num_divergences: int
    accept_prob: float
    wall_time_s: float
    mcmc: Any


def run_nuts(
    key: jax.Array | int,
    model: Callable[..., None],
    *model_args: Any,
    fixed_params: dict | None = None,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 1,
    chain_method: str = "sequential",
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    progress: bool = False,
    **model_kwargs: Any,
) -> NUTSResult:
    """Sample the posterior of ``model(*model_args, **model_kwargs)`` with NUTS.

    Args:
        key: PRNG key or int seed.
        model: a NumPyro model. Its plates must cover the whole (small) batch: no
            ``subsample_size`` smaller than the plate size.
        fixed_params: values substituted for ``numpyro.param`` sites (and any sample sites
            named here), e.g. ``SVIResult.params`` restricted to the model's globals; those
            sites are then not sampled.
        num_warmup, num_samples, num_chains, chain_method, target_accept_prob,
        max_tree_depth: as in ``numpyro.infer.MCMC`` / ``NUTS``.
        progress: numpyro's progress bar.

    Returns:
        :class:`NUTSResult` with samples grouped by chain.
    """
    if num_warmup < 0 or num_samples < 1 or num_chains < 1:
        raise ConfigError(
            f"num_warmup={num_warmup}, num_samples={num_samples}, num_chains={num_chains}: "
            "need warmup >= 0, samples >= 1, chains >= 1"
        )
    if not 0 < target_accept_prob < 1:
        raise ConfigError(f"target_accept_prob={target_accept_prob}: must be in (0, 1)")
    if isinstance(key, int | np.integer):
        key = jax.random.PRNGKey(int(key))
    if fixed_params:
        model = handlers.substitute(model, data=dict(fixed_params))
    kernel = NUTS(model, target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth)
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress,
    )
    t0 = time.perf_counter()
    mcmc.run(key, *model_args, extra_fields=("diverging", "accept_prob"), **model_kwargs)
    samples = jax.tree_util.tree_map(np.asarray, mcmc.get_samples(group_by_chain=True))
    extra = mcmc.get_extra_fields()
    wall = time.perf_counter() - t0
    return NUTSResult(
        samples=samples,
        num_divergences=int(np.sum(np.asarray(extra["diverging"]))),
        accept_prob=float(np.mean(np.asarray(extra["accept_prob"]))),
        wall_time_s=wall,
        mcmc=mcmc,
    )
