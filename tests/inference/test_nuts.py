"""NUTS gold standard against the closed-form posterior of the linear-Gaussian toy."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from svi_toy import LATENT_DIM, NOISE_SD, make_data

from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.inference import run_nuts

N_SMALL = 32


def full_batch_model(y: jnp.ndarray) -> None:
    """The toy model without subsampling; W and sigma are param sites (fixed for NUTS)."""
    w = numpyro.param("W", jnp.zeros((LATENT_DIM, y.shape[1])))
    sigma = numpyro.param("sigma", 1.0, constraint=dist.constraints.positive)
    with numpyro.plate("items", y.shape[0]):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([LATENT_DIM]).to_event(1))
        numpyro.sample("y", dist.Normal(z @ w, sigma).to_event(1), obs=y)


@pytest.mark.slow
def test_nuts_matches_closed_form_posterior():
    w, _, y = make_data(0)
    y = y[:N_SMALL]
    result = run_nuts(
        0,
        full_batch_model,
        jnp.asarray(y),
        fixed_params={"W": jnp.asarray(w), "sigma": jnp.float32(NOISE_SD)},
        num_warmup=200,
        num_samples=300,
    )
    z = result.samples["z"]
    assert z.shape == (1, 300, N_SMALL, LATENT_DIM)
    assert set(result.samples) == {"z"}  # fixed params are not sampled
    # exact posterior: cov = (I + W W^T / s^2)^-1, mean = cov W y / s^2
    w64, y64 = w.astype(np.float64), y.astype(np.float64)
    cov = np.linalg.inv(np.eye(LATENT_DIM) + w64 @ w64.T / NOISE_SD**2)
    mean = y64 @ w64.T @ cov / NOISE_SD**2
    sd = np.sqrt(np.diag(cov))
    z_mean = z.reshape(-1, N_SMALL, LATENT_DIM).mean(0)
    z_sd = z.reshape(-1, N_SMALL, LATENT_DIM).std(0)
    err = np.abs(z_mean - mean) / sd  # in posterior sd; MC error ~ 1/sqrt(ESS) ~ 0.05
    assert err.max() < 0.35, err.max()
    assert np.median(err) < 0.1
    assert np.median(z_sd / sd) == pytest.approx(1.0, abs=0.1)
    assert result.num_divergences == 0
    assert 0.5 < result.accept_prob < 1.0
    assert result.mcmc is not None and result.wall_time_s > 0


def test_nuts_rejects_bad_settings():
    with pytest.raises(ConfigError):
        run_nuts(0, full_batch_model, jnp.zeros((2, 3)), num_samples=0)
    with pytest.raises(ConfigError):
        run_nuts(0, full_batch_model, jnp.zeros((2, 3)), target_accept_prob=1.5)
