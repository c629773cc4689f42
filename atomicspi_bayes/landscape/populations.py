"""Posterior over state populations from per-particle state likelihoods.

Bayesian ensemble reweighting: each particle's conformation comes from one of K states
(grid bins, clusters, or the members of an external structural ensemble) with unknown
population weights w on the simplex,

    w ~ Dirichlet(alpha * 1_K),    log p(Y | w) = sum_n log sum_k w_k L[n, k],

where L[n, k] = p(y_n | state k) is given (up to per-particle constants) as the matrix
``log_lik`` (N, K). The posterior over w is sampled with NUTS (NumPyro). The Dirichlet is
written exactly as normalised Gamma variables, w = g / sum(g), g_k ~ Gamma(alpha, 1),
sampled in u = log g (no stick-breaking geometry, no underflow of small weights).

A Bayesian bootstrap over particles (Rubin 1981) is provided for comparison: particle weights
v ~ Dirichlet(1_N) reweight fixed per-particle state responsibilities.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer import MCMC, NUTS

from atomicspi_bayes.errors import ConfigError, InputFormatError

__all__ = [
    "PopulationPosterior",
    "PopulationSampler",
    "bayesian_bootstrap",
    "em_populations",
    "population_posterior",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PopulationPosterior:
    """Posterior draws of state population weights.

    Attributes:
        weights: (S, K) draws on the simplex (chains concatenated).
        r_hat: (K,) split R-hat of log weights (NaN with one chain).
        ess: (K,) effective sample size of log weights.
        num_divergences: number of divergent NUTS transitions after warm-up.
    """

    weights: np.ndarray
    r_hat: np.ndarray
    ess: np.ndarray
    num_divergences: int

    def quantiles(self, q=(0.05, 0.5, 0.95)) -> np.ndarray:
        """(len(q), K) posterior quantiles of the weights."""
        return np.quantile(self.weights, q, axis=0)


def _check_log_lik(log_lik: np.ndarray) -> np.ndarray:
    log_lik = np.asarray(log_lik, dtype=np.float64)
    if log_lik.ndim != 2 or min(log_lik.shape) < 1:
        raise InputFormatError(f"log_lik has shape {log_lik.shape}, expected (N, K) with N, K >= 1")
    if np.any(np.isnan(log_lik)) or np.any(log_lik == np.inf):
        raise InputFormatError("log_lik contains NaN or +inf; give finite log-likelihoods")
    row_max = np.max(log_lik, axis=1, keepdims=True)
    if not np.all(np.isfinite(row_max)):
        bad = int(np.sum(~np.isfinite(row_max)))
        raise InputFormatError(
            f"log_lik: {bad} particles have -inf log-likelihood for every state; drop them"
        )
    # Per-particle constants do not change the posterior; subtracting them keeps float32 sums
    # small.
    return log_lik - row_max


def _model(lik: jnp.ndarray, counts: jnp.ndarray, alpha: float) -> None:
    """lik: (N, K) likelihoods scaled so that each row's maximum is 1; counts (N,) the
    number of particles sharing each row."""
    k = lik.shape[1]
    gamma_log = dist.TransformedDistribution(
        dist.Gamma(alpha * jnp.ones(k)), dist.transforms.ExpTransform().inv
    )
    u = numpyro.sample("u", gamma_log.to_event(1))
    w = jax.nn.softmax(u)
    # A matrix-vector product instead of a logsumexp per particle: ~10x faster on CPU.
    numpyro.factor("particles", jnp.sum(counts * jnp.log(lik @ w)))


def _check_counts(counts: np.ndarray | None, n: int) -> np.ndarray:
    if counts is None:
        return np.ones(n)
    c = np.asarray(counts, dtype=np.float64)
    if c.shape != (n,) or np.any(c <= 0) or not np.all(np.isfinite(c)):
        raise InputFormatError(f"counts must be ({n},) positive numbers, got shape {c.shape}")
    return c


def em_populations(
    log_lik: np.ndarray,
    n_iter: int = 2000,
    tol: float = 1e-8,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """Maximum-likelihood weights (K,) by EM, w_k <- mean_n responsibility_nk.

    ``counts`` (N,) optionally weights each row (particles sharing a likelihood row).
    Stops when no weight changes by more than ``tol`` (absolute) in one iteration.
    """
    lik = np.exp(_check_log_lik(log_lik))
    k = lik.shape[1]
    c = _check_counts(counts, lik.shape[0])
    w = np.full(k, 1.0 / k)
    for _ in range(n_iter):
        new = w * (lik.T @ (c / (lik @ w))) / c.sum()
        done = np.max(np.abs(new - w)) < tol
        w = new
        if done:
            break
    return w / w.sum()


class PopulationSampler:
    """Reusable NUTS sampler of population weights (compiled once per (N, K) shape).

    ``PopulationSampler(...).run(key, log_lik)`` returns a :class:`PopulationPosterior`;
    repeated runs on likelihood matrices of the same shape reuse the compiled sampler
    (NumPyro ``jit_model_args``), which matters for calibration studies over many data sets.

    Args:
        concentration: Dirichlet prior concentration alpha (> 0) for every state.
        num_warmup, num_samples, num_chains: NUTS settings (chains run vectorized).
        dense_mass: adapt a dense mass matrix (helps strongly correlated weights, K <~ 200).
    """

    def __init__(
        self,
        *,
        concentration: float = 1.0,
        num_warmup: int = 500,
        num_samples: int = 500,
        num_chains: int = 2,
        dense_mass: bool = False,
    ) -> None:
        if not concentration > 0:
            raise ConfigError(f"concentration={concentration}: Dirichlet concentration must be > 0")
        if min(num_warmup, num_samples, num_chains) < 1:
            raise ConfigError(
                f"num_warmup={num_warmup}, num_samples={num_samples}, num_chains={num_chains}: "
                "all must be >= 1"
            )
        self.concentration = float(concentration)
        self.num_chains = int(num_chains)
        self._mcmc = MCMC(
            NUTS(_model, dense_mass=dense_mass),
            num_warmup=int(num_warmup),
            num_samples=int(num_samples),
            num_chains=self.num_chains,
            chain_method="vectorized",
            progress_bar=False,
            jit_model_args=True,
        )

    def run(
        self,
        key: jax.Array,
        log_lik: np.ndarray,
        init_weights: np.ndarray | None = None,
        counts: np.ndarray | None = None,
    ) -> PopulationPosterior:
        """Sample the weights given (N, K) log-likelihoods.

        Optional (K,) start weights and (N,) row multiplicities ``counts`` (rows shared by
        several particles, e.g. after grouping near-identical particles).
        """
        lik = jnp.asarray(np.exp(_check_log_lik(log_lik)), dtype=jnp.float32)
        cnt = jnp.asarray(_check_counts(counts, lik.shape[0]), dtype=jnp.float32)
        k = lik.shape[1]
        if init_weights is None:
            init_weights = np.full(k, 1.0 / k)
        # Start near the given weights, mixed with uniform so no weight starts deep in a tail.
        w_init = np.asarray(init_weights, dtype=np.float64)
        w_init = 0.9 * w_init / w_init.sum() + 0.1 / k
        u0 = np.log(w_init) + np.log(k)
        c = self.num_chains
        init = {"u": jnp.asarray(np.broadcast_to(u0, (c, k)) if c > 1 else u0, jnp.float32)}
        mcmc = self._mcmc
        mcmc.run(key, lik, cnt, self.concentration, init_params=init, extra_fields=("diverging",))
        u = np.asarray(mcmc.get_samples(group_by_chain=True)["u"], dtype=np.float64)  # (C,S,K)
        log_w = u - np.logaddexp.reduce(u, axis=-1, keepdims=True)
        r_hat = np.asarray(split_gelman_rubin(log_w)) if c > 1 else np.full(k, np.nan)
        ess = np.asarray(effective_sample_size(log_w))
        div = int(np.sum(np.asarray(mcmc.get_extra_fields()["diverging"])))
        if c > 1 and np.nanmax(r_hat) > 1.05:
            logger.warning("population posterior: max R-hat %.3f > 1.05", float(np.nanmax(r_hat)))
        if div:
            logger.warning("population posterior: %d divergent transitions", div)
        return PopulationPosterior(
            weights=np.exp(log_w).reshape(-1, k), r_hat=r_hat, ess=ess, num_divergences=div
        )


def population_posterior(
    key: jax.Array,
    log_lik: np.ndarray,
    *,
    concentration: float = 1.0,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 2,
    init_weights: np.ndarray | None = None,
    counts: np.ndarray | None = None,
) -> PopulationPosterior:
    """NUTS samples of population weights w (K,) given per-particle log-likelihoods.

    Args:
        key: PRNG key.
        log_lik: (N, K) log p(y_n | state k), any per-particle offset; -inf allowed as long
            as every particle has one finite entry.
        concentration: Dirichlet prior concentration alpha (> 0) for every state.
        num_warmup, num_samples, num_chains: NUTS settings (chains run vectorized).
        init_weights: optional (K,) starting weights (e.g. from :func:`em_populations`).
        counts: optional (N,) multiplicity of each row (the likelihood is
            ``sum_n counts_n log sum_k w_k L[n, k]``).

    Returns:
        :class:`PopulationPosterior` with ``num_chains * num_samples`` draws.
    """
    sampler = PopulationSampler(
        concentration=concentration,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
    )
    return sampler.run(key, log_lik, init_weights, counts)


def bayesian_bootstrap(
    key: jax.Array, responsibilities: np.ndarray, n_samples: int = 200
) -> np.ndarray:
    """Bayesian bootstrap over particles: (n_samples, K) population draws.

    Each draw reweights particles by v ~ Dirichlet(1_N) and returns sum_n v_n r[n, k], with
    ``responsibilities`` (N, K) fixed per-particle state probabilities (rows sum to <= 1;
    mass outside the states is dropped and the result renormalised).
    """
    r = np.asarray(responsibilities, dtype=np.float64)
    if r.ndim != 2:
        raise InputFormatError(f"responsibilities shape {r.shape}, expected (N, K)")
    g = np.asarray(jax.random.exponential(key, (n_samples, r.shape[0])), dtype=np.float64)
    v = g / g.sum(axis=1, keepdims=True)
    pops = v @ r
    return pops / pops.sum(axis=1, keepdims=True)
