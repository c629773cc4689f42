"""White Gaussian noise at a given SNR and the matching Fourier-space likelihood (SCIENCE.md §4).

SNR definition (used everywhere in this project, including ``atomicspi simulate``)::

    SNR = Var(clean image) / σ²

where the variance is over ALL pixels of the box (L x L) of the noise-free, CTF-modulated image,
per image, and σ is the standard deviation of the per-pixel white noise. A particle occupying a
fraction of the box therefore has a higher SNR inside a mask (several-fold); real particle
images are around 0.01-0.1.

Fourier convention: the physics convention of ``cryoem`` (``image_to_fourier``:
``p² · rfft2(ifftshift(y))``). Real white noise of per-pixel variance σ² then has, per rfft2
coefficient, ``E|N_k|² = s = σ² L² p⁴`` (real and imaginary halves each s/2; the
self-conjugate DC/Nyquist entries are real with variance s).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from atomicspi_bayes.errors import ConfigError

__all__ = [
    "add_white_noise",
    "gaussian_loglik_fourier",
    "gaussian_loglik_real",
    "hermitian_weights",
    "noise_sigma_for_snr",
]


def noise_sigma_for_snr(clean: Array, snr: float | Array) -> Array:
    """Per-image noise standard deviation ``sqrt(Var(clean)/snr)``.

    Args:
        clean: ``(..., L, L)`` noise-free images.
        snr: target SNR (> 0), scalar or broadcastable to the batch shape ``(...)``.

    Returns:
        ``(...)`` σ in the units of ``clean``.
    """
    if isinstance(snr, int | float) and not snr > 0:
        raise ConfigError(f"SNR must be > 0, got {snr}; use noise-free images instead")
    return _sigma_for_snr(clean, snr)


@jax.jit
def _sigma_for_snr(clean: Array, snr: Array) -> Array:
    return jnp.sqrt(jnp.var(clean, axis=(-2, -1)) / snr)


@jax.jit
def add_white_noise(key: Array, images: Array, sigma: Array | float) -> Array:
    """``images + σ · N(0, 1)`` per pixel; ``sigma`` scalar or ``(...)`` per image."""
    sigma = jnp.asarray(sigma, dtype=images.dtype)
    noise = jax.random.normal(key, images.shape, dtype=images.dtype)
    return images + sigma[..., None, None] * noise


def hermitian_weights(box: int) -> np.ndarray:
    """``(L, L//2+1)`` float32 multiplicity of each rfft2 entry in the full 2D DFT.

    Interior columns stand for themselves and their conjugate partner (weight 2); the kx = 0
    column and, for even L, the kx = Nyquist column are their own partners (weight 1; their
    ky and -ky rows are conjugates of each other, both present). ``Σ weights = L²``, and for
    a real image ``Σ_full |F|² = Σ_rfft weights · |F|²`` (Parseval).
    """
    w = np.full((box, box // 2 + 1), 2.0, dtype=np.float32)
    w[:, 0] = 1.0
    if box % 2 == 0:
        w[:, -1] = 1.0
    return w


@jax.jit
def gaussian_loglik_fourier(
    obs_ft: Array,
    model_ft: Array,
    sigma: Array | float,
    freq_mask: Array | None = None,
    *,
    pixel_size: float,
) -> Array:
    """Log-likelihood of white Gaussian pixel noise, evaluated in Fourier space, per image.

    Args:
        obs_ft: ``(..., L, L//2+1)`` complex, ``image_to_fourier(observed, pixel_size)``.
        model_ft: same shape (broadcastable), e.g. ``simulate_batch(...)[0]``.
        sigma: real-space per-pixel noise standard deviation, scalar or ``(...)`` per image.
            For coloured noise whiten first (divide both transforms by sqrt(PSD/mean PSD)).
        freq_mask: optional ``(L, L//2+1)`` bool, frequencies to use (e.g. ``|k| <= k_max``).
        pixel_size: Å per pixel of the images (sets the Fourier normalisation).

    Returns:
        ``(...)`` log p(y | model): the exact Gaussian density of the real degrees of freedom
        of the selected Hermitian half plane, ``-½ Σ_k w_k |Y_k - M_k|² / s - (D/2) log(2π σ²)``
        with ``s = σ² L² p⁴``, ``w`` = :func:`hermitian_weights`, ``D = Σ_k w_k`` (the number
        of real degrees of freedom kept). With no mask it equals the real-space
        ``Σ_pixels log N(y | m, σ²)`` exactly (Parseval), see :func:`gaussian_loglik_real`.
    """
    box = obs_ft.shape[-2]
    w = hermitian_weights(box)
    if freq_mask is not None:
        w = jnp.where(freq_mask, w, 0.0)
    sigma = jnp.asarray(sigma)
    s = (sigma * sigma * (box * box) * pixel_size**4)[..., None, None]
    resid = obs_ft - model_ft
    r2 = jnp.real(resid) ** 2 + jnp.imag(resid) ** 2
    quad = -0.5 * jnp.sum(w * r2 / s, axis=(-2, -1))
    n_dof = jnp.sum(w)
    return quad - 0.5 * n_dof * jnp.log(2.0 * jnp.pi * sigma * sigma)


@jax.jit
def gaussian_loglik_real(observed: Array, model: Array, sigma: Array | float) -> Array:
    """Reference real-space ``Σ_pixels log N(y | m, σ²)`` over ``(..., L, L)`` images."""
    sigma = jnp.asarray(sigma)[..., None, None]
    z = (observed - model) / sigma
    return jnp.sum(-0.5 * z * z - jnp.log(sigma) - 0.5 * jnp.log(2.0 * jnp.pi), axis=(-2, -1))
