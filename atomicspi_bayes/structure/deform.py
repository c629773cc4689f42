"""Deformation of a reference structure along normal modes: X(a) = X0 + Σ_k a_k u_k (+ δ).

Pure JAX, differentiable in every argument and batched over the leading dimensions of the
amplitudes (e.g. one row per particle).
"""

from __future__ import annotations

import jax.numpy as jnp

from atomicspi_bayes.errors import InputFormatError


def deform(x0, vectors, amplitudes, refinement=None):
    """Deformed coordinates ``X = x0 + Σ_k amplitudes[..., k] · vectors[k] (+ refinement)``.

    Args:
        x0: ``(R, 3)`` reference coordinates in Å.
        vectors: ``(K, R, 3)`` mode vectors. With unit vectors (``NormalModes.vectors``)
            amplitudes are in Å·sqrt(R) (RMSD = |a|/sqrt(R)); with
            ``NormalModes.rmsd_scaled_vectors()`` they are in Å of RMSD.
        amplitudes: ``(..., K)`` mode amplitudes.
        refinement: optional ``(..., R, 3)`` Å free per-bead displacement beyond the modes
            (broadcast against the batch shape of ``amplitudes``).

    Returns:
        ``(..., R, 3)`` coordinates in Å, same dtype promotion as the inputs.
    """
    x0 = jnp.asarray(x0)
    vectors = jnp.asarray(vectors)
    amplitudes = jnp.asarray(amplitudes)
    if vectors.ndim != 3 or vectors.shape[1:] != x0.shape:
        raise InputFormatError(
            f"vectors shape {vectors.shape} does not match x0 {x0.shape} as (K, R, 3)"
        )
    if amplitudes.shape[-1:] != vectors.shape[:1]:
        raise InputFormatError(
            f"amplitudes last axis {amplitudes.shape} does not match {vectors.shape[0]} modes"
        )
    x = x0 + jnp.einsum("...k,krc->...rc", amplitudes, vectors)
    if refinement is not None:
        x = x + jnp.asarray(refinement)
    return x
