"""Physics priors on bead (Cα) coordinates as pure-JAX log-densities (SCIENCE.md §6).

Each ``*_logprior`` returns ``log p = -E / kT_eff`` up to an additive constant (unnormalised,
which is what ``numpyro.factor(name, value)`` needs), batched over the leading dimensions
of ``coords`` ``(..., R, 3)`` Å, jit-able and differentiable. Pair lists are static-shape
:class:`~atomicspi_bayes.structure.graph.PairList` objects built once with the numpy
helpers here (``elastic_pairs``, ``clash_pairs``); padding rows are masked out and never
produce NaN gradients. This module imports no NumPyro.

Weights (all energies in units of kT_eff, so they add directly to a log-likelihood):

- elastic network: ``E = (γ/2) Σ_{d⁰ij ≤ Rc} (d_ij - d⁰_ij)²`` relative to the reference
  ``x0``, with ``γ`` in kT/Å² (default 1: a 1 Å stretch of one spring costs 0.5 kT; the ANM
  convention leaves the energy unit free, so treat ``gamma/kT`` as a hyperparameter or
  calibrate it with B-factors, B_i = (8π²/3) kT tr[(H⁺)_ii]).
- Cα–Cα virtual bonds: ``-Σ (d_{r,r+1} - ℓ_r)² / (2 σ²)``, ``ℓ`` = 3.80 Å (trans) or 2.90 Å
  (cis, detected in the reference as d⁰ < 3.35 Å), ``σ`` = 0.05 Å; only for bonded
  consecutive beads (same chain, no chain break).
- clash: ``-κ Σ relu(d_min - d_ij)²`` over non-bonded pairs (``|i - j| ≥ 3`` in one chain, or
  different chains), ``d_min`` = 4.0 Å, ``κ`` = 12.5 kT/Å² (a 0.2 Å overlap costs 0.5 kT, a
  1 Å overlap 12.5 kT).
- mode amplitudes: ``-Σ λ_k a_k² / (2 kT)`` (harmonic ANM prior, unit-vector amplitudes).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.structure.anm import DEFAULT_CUTOFF
from atomicspi_bayes.structure.graph import (
    PairList,
    neighbour_pairs,
    nonbonded_pairs,
    pad_pairs,
)

#: Trans and cis Cα–Cα virtual bond lengths (Å) and the bond-length prior width (Å).
CA_BOND_TRANS = 3.80
CA_BOND_CIS = 2.90
CA_BOND_SIGMA = 0.05
#: Reference Cα–Cα distance below which a peptide bond is taken as cis (Å).
CIS_THRESHOLD = 3.35
#: Clash distance (Å) and stiffness (kT/Å²).
CLASH_DISTANCE = 4.0
CLASH_KAPPA = 12.5


# ---------------------------------------------------------------- set-up (numpy, once)


def elastic_pairs(
    x0: np.ndarray, cutoff: float = DEFAULT_CUTOFF, size: int | None = None
) -> PairList:
    """Springs of the elastic network: pairs of ``x0`` ``(R, 3)`` within ``cutoff`` Å, padded."""
    return pad_pairs(neighbour_pairs(np.asarray(x0), cutoff), size)


def clash_pairs(
    n_beads: int,
    *,
    chain_index: np.ndarray | None = None,
    min_separation: int = 3,
    size: int | None = None,
) -> PairList:
    """All non-bonded bead pairs (``|i - j| ≥ min_separation`` or different chains), padded.

    The full O(R²) list stays valid for any deformation (≈ 23k pairs for 214 residues).
    """
    return pad_pairs(
        nonbonded_pairs(n_beads, min_separation=min_separation, chain_index=chain_index), size
    )


def ideal_bond_lengths(x0: np.ndarray, bonded: np.ndarray) -> np.ndarray:
    """``(R-1,)`` float32 ideal Cα–Cα lengths: 3.80 Å (trans) or 2.90 Å (cis, d⁰ < 3.35 Å).

    Entries where ``bonded`` is False are set to 3.80 and masked out by the prior.
    """
    x0 = np.asarray(x0, dtype=np.float64)
    d0 = np.linalg.norm(np.diff(x0, axis=0), axis=1)
    cis = np.asarray(bonded) & (d0 < CIS_THRESHOLD)
    return np.where(cis, CA_BOND_CIS, CA_BOND_TRANS).astype(np.float32)


# ---------------------------------------------------------------- log-densities (JAX)


def _pair_distances(coords, i, j, mask):
    """``(..., P)`` distances with a NaN-safe gradient on padding / coincident pairs."""
    diff = jnp.take(coords, i, axis=-2) - jnp.take(coords, j, axis=-2)
    d2 = jnp.sum(diff * diff, axis=-1)
    d2 = jnp.where(mask, d2, 1.0)
    return jnp.sqrt(d2 + 1e-12)


def elastic_energy(coords, x0, pairs: PairList, gamma: float = 1.0):
    """Elastic-network energy ``(γ/2) Σ (d - d⁰)²`` of ``coords`` ``(..., R, 3)`` vs ``x0``.

    Returns ``(...)`` in the unit of ``gamma`` × Å². Zero, with zero gradient, at ``x0``.
    """
    coords = jnp.asarray(coords)
    mask = jnp.asarray(pairs.mask)
    d = _pair_distances(coords, pairs.i, pairs.j, mask)
    d0 = _pair_distances(jnp.asarray(x0, dtype=coords.dtype), pairs.i, pairs.j, mask)
    return 0.5 * gamma * jnp.sum(jnp.where(mask, (d - d0) ** 2, 0.0), axis=-1)


def elastic_logprior(coords, x0, pairs: PairList, gamma: float = 1.0, kT: float = 1.0):
    """``-elastic_energy / kT`` ``(...)``: penalises deformation relative to ``x0`` ``(R, 3)``."""
    return -elastic_energy(coords, x0, pairs, gamma) / kT


def ca_bond_logprior(coords, bonded, lengths=CA_BOND_TRANS, sigma: float = CA_BOND_SIGMA):
    """``-Σ_r bonded_r (d_{r,r+1} - ℓ_r)² / (2σ²)`` ``(...)`` for Cα/bead coords ``(..., R, 3)``.

    Args:
        coords: ``(..., R, 3)`` Å.
        bonded: ``(R-1,)`` bool, which consecutive pairs are peptide bonds
            (``CATrace.bonded`` / ``BeadModel.bonded``).
        lengths: ideal length(s) in Å, scalar or ``(R-1,)`` (see :func:`ideal_bond_lengths`).
        sigma: Å, width of the Gaussian bond-length prior.
    """
    coords = jnp.asarray(coords)
    d = jnp.sqrt(jnp.sum(jnp.diff(coords, axis=-2) ** 2, axis=-1) + 1e-12)
    r = (d - jnp.asarray(lengths, dtype=coords.dtype)) / sigma
    return -0.5 * jnp.sum(jnp.where(jnp.asarray(bonded), r * r, 0.0), axis=-1)


def clash_logprior(
    coords, pairs: PairList, d_min: float = CLASH_DISTANCE, kappa: float = CLASH_KAPPA
):
    """``-κ Σ relu(d_min - d_ij)²`` ``(...)`` over the (non-bonded) ``pairs`` of ``coords``."""
    coords = jnp.asarray(coords)
    mask = jnp.asarray(pairs.mask)
    d = _pair_distances(coords, pairs.i, pairs.j, mask)
    overlap = jnp.where(mask, jnp.maximum(d_min - d, 0.0), 0.0)
    return -kappa * jnp.sum(overlap * overlap, axis=-1)


def mode_logprior(amplitudes, eigenvalues, kT: float = 1.0):
    """Harmonic ANM prior ``-Σ_k λ_k a_k² / (2kT)`` ``(...)``, amplitudes ``(..., K)``.

    ``eigenvalues`` ``(K,)`` in the unit of ``kT`` per Å².
    """
    a = jnp.asarray(amplitudes)
    return -0.5 * jnp.sum(jnp.asarray(eigenvalues, dtype=a.dtype) * a * a, axis=-1) / kT
