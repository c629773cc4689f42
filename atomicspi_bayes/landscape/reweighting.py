"""Population posterior over an external structural ensemble (Bayesian ensemble reweighting).

The caller computes, elsewhere (e.g. through the image simulator at each particle's pose),
the per-particle log-likelihood of every ensemble member, ``log_lik[n, m] = log p(y_n | X_m)``
for M structures (MD frames, cluster centres). The weights of the members get a Dirichlet
prior and are sampled with NUTS (:func:`~atomicspi_bayes.landscape.population_posterior`).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from atomicspi_bayes.landscape.populations import (
    PopulationPosterior,
    em_populations,
    population_posterior,
)

__all__ = ["EnsembleWeights", "reweight_ensemble"]


@dataclass(frozen=True)
class EnsembleWeights:
    """Posterior over ensemble weights.

    Attributes:
        posterior: the NUTS draws and diagnostics (weights (S, M)).
        quantiles: (3, M) 5/50/95 % of each member's weight.
        max_likelihood: (M,) EM maximum-likelihood weights.
        effective_size: (S,) Kish effective number of members 1 / sum_m w_m^2 per draw.
    """

    posterior: PopulationPosterior
    quantiles: np.ndarray
    max_likelihood: np.ndarray
    effective_size: np.ndarray


def reweight_ensemble(
    key: jax.Array,
    log_lik: np.ndarray,
    *,
    concentration: float = 1.0,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 2,
) -> EnsembleWeights:
    """Posterior of the weights of M ensemble members given a (N, M) log-likelihood matrix."""
    w_ml = em_populations(log_lik)
    post = population_posterior(
        key,
        log_lik,
        concentration=concentration,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        init_weights=w_ml,
    )
    return EnsembleWeights(
        posterior=post,
        quantiles=post.quantiles(),
        max_likelihood=w_ml,
        effective_size=1.0 / np.sum(post.weights**2, axis=1),
    )
