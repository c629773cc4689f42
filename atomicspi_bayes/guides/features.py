"""What the encoders see: per-particle features computed from a :class:`ParticleBatch`.

* :func:`mode_sensitivity` -- for known poses: the score ``∂/∂a log p(y | a, pose, CTF)`` at
  the reference structure (a = 0), one number per ANM mode. It is the image projected onto
  how each mode would change this particle's view under this CTF, i.e. a pose- and
  CTF-aware linear summary of the image (a sufficient statistic of the linearised model),
  computed with one vector-Jacobian product of the simulator per particle.
* :func:`lowpass_images` -- the image Fourier-cropped to ``S x S`` px (a low-pass and a
  down-sampling at once), CTF phase-flipped and divided by the noise sd, for CNN encoders.
* :func:`pose_features` -- the 6D representation of the pose and the shift (Å/10) and mean
  defocus (µm) as a flat side vector.

All are pure JAX functions of the batch and fixed arrays; they carry no parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from atomicspi_bayes.model import (
    ModelStatic,
    ParticleBatch,
    nodes_from_amplitudes,
    observed_fourier,
    scored_sd,
    simulate_particles,
)
from atomicspi_bayes.physics.cryoem import rfft_frequencies
from atomicspi_bayes.physics.ctf import ctf
from atomicspi_bayes.physics.geometry import matrix_to_sixd

__all__ = ["lowpass_images", "mode_sensitivity", "pose_features"]


def mode_sensitivity(
    batch: ParticleBatch, static: ModelStatic, scale: Array, sigma: Array
) -> Array:
    """``(B, K)`` score of each mode amplitude at the reference, ``Jᵀ W (Y - M(0))``.

    Args:
        batch: the particles (poses and CTF are used).
        static: model arrays (reference, modes, Fourier window).
        scale, sigma: ``(G,)`` image scale and noise sd per optics group.

    Units: per Å of RMSD along each mode (log-likelihood / Å).
    """
    group = batch.optics_group
    observed = observed_fourier(batch.images, static.window)
    sd = scored_sd(sigma[group], static.window)

    def render(amplitudes: Array) -> Array:
        nodes = nodes_from_amplitudes(amplitudes, static)
        clean = simulate_particles(nodes, batch.rotations, batch.shifts, batch.ctf, static)
        return scale[group][:, None] * clean

    zero = jnp.zeros((batch.indices.shape[0], static.n_modes), dtype=jnp.float32)
    clean0, vjp = jax.vjp(render, zero)
    (score,) = vjp((observed - clean0) / sd**2)
    return score


def lowpass_images(batch: ParticleBatch, static: ModelStatic, size: int, sigma: Array) -> Array:
    """``(B, size, size)`` CTF phase-flipped, Fourier-cropped images in units of the noise sd.

    Cropping the transform to ``size`` keeps the frequencies ``m / (L p)`` with
    ``|m| < size/2`` (a low-pass to ``size / (2 L p)`` Å⁻¹ and a down-sampling to pixel
    ``p L / size``). ``sigma`` ``(G,)`` is the per-pixel noise sd of each optics group; white
    noise of sd σ becomes white noise of sd ``L σ / size``, so the output is divided by that
    and has unit noise sd per pixel.
    """
    images = batch.images
    box = images.shape[-1]
    if size > box or size % 2:
        raise ValueError(f"low-pass size {size} must be even and <= box {box}")
    ft = jnp.fft.rfft2(jnp.fft.ifftshift(images, axes=(-2, -1)))
    half = size // 2
    rows = jnp.concatenate([jnp.arange(half), jnp.arange(box - half, box)])
    ft = ft[:, rows, : half + 1]
    freqs = rfft_frequencies(size, static.window.pixel_size * box / size)
    ctf_b = jax.tree_util.tree_map(lambda x: x[:, None, None], batch.ctf)
    flip = jnp.sign(ctf(freqs[None], ctf_b))
    flip = jnp.where(flip == 0, 1.0, flip)
    small = jnp.fft.fftshift(jnp.fft.irfft2(ft * flip, s=(size, size)), axes=(-2, -1))
    noise_sd = box * sigma[batch.optics_group] / size
    return small / noise_sd[:, None, None]


def pose_features(batch: ParticleBatch) -> Array:
    """``(B, 9)``: 6D rotation, shift / 10 Å, mean defocus in µm."""
    defocus = 0.5 * (batch.ctf.defocus_u + batch.ctf.defocus_v) * 1e-4
    return jnp.concatenate(
        [matrix_to_sixd(batch.rotations), batch.shifts / 10.0, defocus[:, None]], axis=-1
    )
