"""SNR definition, white noise, Fourier likelihood == real-space likelihood."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.physics import cryoem as ce
from atomicspi_bayes.physics import noise as nz


@pytest.mark.parametrize("box", [16, 17])
def test_fourier_loglik_equals_real_space_loglik(box):
    with jax.enable_x64(True):
        k1, k2 = jax.random.split(jax.random.key(0))
        p = 1.7
        y = jax.random.normal(k1, (3, box, box), dtype=jnp.float64)
        m = jax.random.normal(k2, (3, box, box), dtype=jnp.float64) * 0.5
        sigma = jnp.array([0.7, 1.0, 2.5])
        real = nz.gaussian_loglik_real(y, m, sigma)
        four = nz.gaussian_loglik_fourier(
            ce.image_to_fourier(y, p), ce.image_to_fourier(m, p), sigma, pixel_size=p
        )
        np.testing.assert_allclose(four, real, rtol=1e-10)
        # a wrong weighting (all entries once) would not agree
        w = nz.hermitian_weights(box)
        assert float(w.sum()) == box * box
        y, m, sigma, real = (np.asarray(x) for x in (y, m, sigma, real))
    # float32 version agrees too
    y32, m32 = jnp.asarray(y, jnp.float32), jnp.asarray(m, jnp.float32)
    four32 = nz.gaussian_loglik_fourier(
        ce.image_to_fourier(y32, p), ce.image_to_fourier(m32, p), sigma, pixel_size=p
    )
    np.testing.assert_allclose(four32, real, rtol=1e-5)


def test_masked_loglik_counts_degrees_of_freedom():
    box, p = 16, 1.0
    y = jax.random.normal(jax.random.key(1), (box, box))
    mask = ce.frequency_mask(box, p, 0.25)
    ll = nz.gaussian_loglik_fourier(ce.image_to_fourier(y, p), 0.0, 1.0, mask, pixel_size=p)
    # expected value of the quadratic part is -D/2 for pure noise; here check the constant
    d = float(jnp.sum(jnp.where(mask, nz.hermitian_weights(box), 0)))
    assert 0 < d < box * box
    ll0 = nz.gaussian_loglik_fourier(
        ce.image_to_fourier(y, p), ce.image_to_fourier(y, p), 1.0, mask, pixel_size=p
    )
    np.testing.assert_allclose(ll0, -0.5 * d * np.log(2 * np.pi), rtol=1e-6)
    assert float(ll) < float(ll0)


def test_snr_and_white_noise():
    clean = (
        jax.random.normal(jax.random.key(2), (4, 64, 64))
        * jnp.array([1.0, 2.0, 3.0, 4.0])[:, None, None]
    )
    sigma = nz.noise_sigma_for_snr(clean, 0.1)
    np.testing.assert_allclose(
        sigma, np.sqrt(np.var(np.asarray(clean), axis=(1, 2)) / 0.1), rtol=1e-5
    )
    noisy = nz.add_white_noise(jax.random.key(3), clean, sigma)
    emp = np.var(np.asarray(noisy - clean), axis=(1, 2))
    np.testing.assert_allclose(np.var(np.asarray(clean), axis=(1, 2)) / emp, 0.1, rtol=0.05)
    again = nz.add_white_noise(jax.random.key(3), clean, sigma)
    np.testing.assert_array_equal(noisy, again)
    for bad in (0.0, -1.0):
        with pytest.raises(ConfigError, match="SNR"):
            nz.noise_sigma_for_snr(clean, bad)


def test_fourier_noise_power():
    """E|N_k|² = σ² L² p⁴ for white noise in the physics Fourier convention."""
    box, p, sigma = 32, 1.5, 0.8
    noise = sigma * jax.random.normal(jax.random.key(4), (400, box, box))
    ft = ce.image_to_fourier(noise, p)
    power = float(jnp.mean(jnp.abs(ft[:, 3:10, 2:8]) ** 2))
    np.testing.assert_allclose(power, sigma**2 * box**2 * p**4, rtol=0.03)
