"""Scored Fourier parts <-> images, and the deliberately miscalibrated guide wrapper."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers

from atomicspi_bayes.diagnostics import shrink_guide
from atomicspi_bayes.diagnostics.predictive import scored_to_images
from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.model import FourierWindow, TangentNormalSO3, observed_fourier, scored_sd


@pytest.mark.parametrize(("box", "pixel", "resolution"), [(32, 2.0, 6.0), (24, 1.5, 3.0)])
def test_scored_parts_round_trip_exactly(box, pixel, resolution):
    """observed_fourier(scored_to_images(y)) == y, also when the window reaches Nyquist."""
    window = FourierWindow.create(box, pixel, resolution)
    key = jax.random.PRNGKey(0)
    y = jax.random.normal(key, (3, window.n_scored)) * 5.0
    images = scored_to_images(jax.random.PRNGKey(1), y, window, jnp.ones(3))
    assert images.shape == (3, box, box) and images.dtype == jnp.float32
    back = observed_fourier(images, window)
    np.testing.assert_allclose(np.asarray(back), np.asarray(y), atol=2e-4 * 5.0)


def test_white_noise_images_match_the_model_noise():
    """Images built from Normal(0, scored_sd(σ)) parts have per-pixel variance σ²."""
    window = FourierWindow.create(32, 2.0, 4.0)  # the Nyquist window: every coefficient scored
    sigma = jnp.full(200, 0.7)
    sd = scored_sd(sigma, window)
    y = sd * jax.random.normal(jax.random.PRNGKey(2), sd.shape)
    images = scored_to_images(jax.random.PRNGKey(3), y, window, sigma)
    assert float(images.var()) == pytest.approx(0.49, rel=0.02)


def _toy_guide():
    with numpyro.plate("particles", 4):
        numpyro.sample("z", dist.Normal(jnp.arange(4.0)[:, None], 2.0).to_event(1))
        numpyro.sample("rotation", TangentNormalSO3(jnp.broadcast_to(jnp.eye(3), (4, 3, 3)),
                                                    jnp.full((4, 3), 0.2)))  # fmt: skip


def test_shrink_guide_scales_only_the_named_sites():
    tr = handlers.trace(handlers.seed(shrink_guide(_toy_guide, 0.5), 0)).get_trace()
    z_fn = tr["z"]["fn"].base_dist
    np.testing.assert_allclose(np.asarray(z_fn.scale), 1.0)
    np.testing.assert_allclose(np.asarray(z_fn.loc[:, 0]), np.arange(4.0))
    assert float(tr["rotation"]["fn"].scale[0, 0]) == pytest.approx(0.2)
    both = shrink_guide(_toy_guide, 2.0, sites=("z", "rotation"))
    tr = handlers.trace(handlers.seed(both, 0)).get_trace()
    assert float(tr["rotation"]["fn"].scale[0, 0]) == pytest.approx(0.4)
    with pytest.raises(ConfigError, match="> 0"):
        shrink_guide(_toy_guide, 0.0)
