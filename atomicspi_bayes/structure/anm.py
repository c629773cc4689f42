"""Anisotropic network model (ANM) normal modes (Atilgan et al. 2001; SCIENCE.md §6).

Nodes (normally Cα atoms or residue beads) within ``cutoff`` Å of each other (distance
≤ cutoff, inclusive as in ProDy) are joined by Hookean springs of constant ``gamma``:
``E = (γ/2) Σ (d_ij - d⁰_ij)²``. The Hessian at the reference has 3×3 blocks
``H_ij = -γ (r_j - r_i)(r_j - r_i)ᵀ / d⁰_ij²`` and ``H_ii = -Σ_{j≠i} H_ij``. A connected,
rigid 3D network has exactly six zero eigenvalues (three translations, three rotations);
:func:`anm_modes` removes them and refuses networks with more.

Units: coordinates in Å, ``gamma`` in energy/Å² (arbitrary energy unit, 1 by default), so
eigenvalues are in the same energy/Å² unit. Eigenvectors are unit ``3R`` vectors reshaped
to ``(R, 3)``; a displacement ``a·u_k`` has RMSD ``|a| / sqrt(R)`` Å over the R nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.structure.graph import connected_components, neighbour_pairs

#: Default ANM cutoff in Å (ProDy's default) and spring constant.
DEFAULT_CUTOFF = 15.0
DEFAULT_GAMMA = 1.0
#: Eigenvalues below this fraction of the mean diagonal of H count as zero.
ZERO_EIGENVALUE_RTOL = 1e-6


@dataclass(frozen=True, eq=False)
class NormalModes:
    """The lowest non-trivial ANM modes.

    Attributes:
        eigenvalues: ``(K,)`` float64, ascending, in γ-units of energy/Å² (all > 0).
        vectors: ``(K, R, 3)`` float64; each ``vectors[k].ravel()`` is a unit 3R vector and
            the K of them are mutually orthogonal (sign fixed so the largest-magnitude
            component is positive).
        cutoff: Å, network cutoff used.
        gamma: spring constant used.
    """

    eigenvalues: np.ndarray
    vectors: np.ndarray
    cutoff: float = DEFAULT_CUTOFF
    gamma: float = DEFAULT_GAMMA

    @property
    def n_modes(self) -> int:
        return int(self.eigenvalues.shape[0])

    @property
    def n_nodes(self) -> int:
        return int(self.vectors.shape[1])

    def rmsd_scaled_vectors(self) -> np.ndarray:
        """``(K, R, 3)`` vectors scaled by ``sqrt(R)``: amplitude 1 along one mode = 1 Å RMSD.

        For unit vectors the RMSD of ``a·u_k`` over R nodes is ``|a| / sqrt(R)``; more
        generally the RMSD of ``Σ a_k s_k`` with these scaled, orthogonal vectors ``s_k`` is
        ``|a|`` (Euclidean norm of the amplitude vector) in Å.
        """
        return self.vectors * np.sqrt(self.n_nodes)

    def amplitude_sd(self, kT: float = 1.0) -> np.ndarray:
        """``(K,)`` thermal standard deviation ``sqrt(kT / λ_k)`` of unit-vector amplitudes.

        The harmonic prior of SCIENCE.md §6 is ``z_k ~ N(0, kT/λ_k)`` with ``kT`` in the same
        energy unit as ``gamma``.
        """
        return np.sqrt(kT / self.eigenvalues)


def anm_hessian(
    coords: np.ndarray, cutoff: float = DEFAULT_CUTOFF, gamma: float = DEFAULT_GAMMA
) -> np.ndarray:
    """The ``(3R, 3R)`` float64 ANM Hessian of nodes ``coords`` ``(R, 3)`` Å (vectorised)."""
    x = _check_coords(coords)
    if not gamma > 0:
        raise ConfigError(f"ANM spring constant gamma must be > 0, got {gamma}")
    n = x.shape[0]
    pairs = neighbour_pairs(x, cutoff)
    i, j = pairs[:, 0], pairs[:, 1]
    d = x[j] - x[i]
    d2 = np.sum(d * d, axis=1)
    if np.any(d2 == 0.0):
        k = int(np.flatnonzero(d2 == 0.0)[0])
        raise InputFormatError(f"ANM nodes {i[k]} and {j[k]} have identical coordinates")
    blocks = -gamma * d[:, :, None] * d[:, None, :] / d2[:, None, None]
    h = np.zeros((n, n, 3, 3))
    h[i, j] = blocks
    h[j, i] = blocks
    diag = np.zeros((n, 3, 3))
    np.add.at(diag, i, -blocks)
    np.add.at(diag, j, -blocks)
    h[np.arange(n), np.arange(n)] = diag
    return h.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)


def anm_modes(
    coords: np.ndarray,
    n_modes: int = 20,
    cutoff: float = DEFAULT_CUTOFF,
    gamma: float = DEFAULT_GAMMA,
) -> NormalModes:
    """The ``n_modes`` lowest non-trivial ANM modes of nodes ``coords`` ``(R, 3)`` Å.

    Uses the symmetric eigensolver ``scipy.linalg.eigh`` on the dense Hessian (fine up to a
    few thousand nodes) and removes the six rigid-body modes.

    Raises:
        InputFormatError: no/too few nodes; the contact network within ``cutoff`` is
            disconnected (separate chains or cutoff too small); or the Hessian has a number of
            zero eigenvalues other than six (a floppy, non-rigid network).
        ConfigError: ``n_modes`` < 1 or more than ``3R - 6``, or bad cutoff/gamma.
    """
    x = _check_coords(coords)
    n = x.shape[0]
    if n < 3:
        raise InputFormatError(f"ANM needs at least 3 nodes (Cα atoms), got {n}")
    if not 1 <= n_modes <= 3 * n - 6:
        raise ConfigError(f"n_modes must be in [1, {3 * n - 6}] for {n} nodes, got {n_modes}")
    pairs = neighbour_pairs(x, cutoff)
    n_comp, labels = connected_components(n, pairs)
    if n_comp > 1:
        sizes = np.bincount(labels)
        raise InputFormatError(
            f"elastic network with cutoff {cutoff} Å splits into {n_comp} disconnected parts "
            f"(node counts {sorted(sizes.tolist(), reverse=True)[:5]}); increase the cutoff or "
            "model the chains separately"
        )
    hess = anm_hessian(x, cutoff, gamma)
    n_eig = min(6 + n_modes + 1, 3 * n)
    evals, evecs = scipy.linalg.eigh(hess, subset_by_index=[0, n_eig - 1])
    tol = ZERO_EIGENVALUE_RTOL * np.trace(hess) / (3 * n)
    n_zero = int(np.sum(evals < tol))
    if n_zero != 6:
        count = f"at least {n_zero}" if n_zero == n_eig else str(n_zero)
        raise InputFormatError(
            f"ANM Hessian (cutoff {cutoff} Å, {n} nodes) has {count} zero eigenvalues, "
            "expected exactly 6: the network is not rigid; increase the cutoff"
        )
    vals = evals[6 : 6 + n_modes]
    vecs = evecs[:, 6 : 6 + n_modes].T
    # Deterministic sign: largest-magnitude component positive.
    big = np.argmax(np.abs(vecs), axis=1)
    vecs = vecs * np.sign(vecs[np.arange(n_modes), big])[:, None]
    return NormalModes(
        eigenvalues=vals, vectors=vecs.reshape(n_modes, n, 3), cutoff=float(cutoff), gamma=gamma
    )


def cumulative_overlap(modes: NormalModes | np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """``(K,)`` cumulative overlap ``sqrt(Σ_{k≤K} (u_k · d / |d|)²)`` of a displacement with modes.

    Args:
        modes: :class:`NormalModes` or ``(K, R, 3)`` unit vectors.
        displacement: ``(R, 3)`` Å (e.g. closed minus superposed open coordinates).
    """
    vecs = modes.vectors if isinstance(modes, NormalModes) else np.asarray(modes)
    vecs = vecs.reshape(vecs.shape[0], -1)
    d = np.asarray(displacement, dtype=np.float64).ravel()
    norm = np.linalg.norm(d)
    if norm == 0.0:
        raise InputFormatError("displacement is zero; overlap is undefined")
    proj = vecs @ (d / norm)
    return np.sqrt(np.cumsum(proj**2))


def subspace_overlap(vectors_a: np.ndarray, vectors_b: np.ndarray) -> float:
    """Root mean square inner product (RMSIP) of two sets of K orthonormal vectors.

    ``sqrt(Σ_ij (a_i·b_j)² / K)`` = root mean squared cosine of the principal angles; 1 for
    identical subspaces. Inputs ``(K, R, 3)`` or ``(K, 3R)``.
    """
    a = np.asarray(vectors_a, dtype=np.float64)
    b = np.asarray(vectors_b, dtype=np.float64)
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    if a.shape != b.shape:
        raise ConfigError(f"subspace_overlap needs equal shapes, got {a.shape} and {b.shape}")
    return float(np.sqrt(np.sum((a @ b.T) ** 2) / a.shape[0]))


def _check_coords(coords: np.ndarray) -> np.ndarray:
    x = np.asarray(coords, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise InputFormatError(f"ANM node coordinates must have shape (R, 3), got {x.shape}")
    if x.shape[0] == 0:
        raise InputFormatError("ANM got no nodes: the structure has no Cα atoms")
    if not np.all(np.isfinite(x)):
        raise InputFormatError("ANM node coordinates contain NaN or inf")
    return x
