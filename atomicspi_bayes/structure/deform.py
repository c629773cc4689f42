"""Deformation of a reference structure along normal modes: X(a) = X0 + Σ_k a_k u_k (+ δ).

Pure JAX, differentiable in every argument and batched over the leading dimensions of the
amplitudes (e.g. one row per particle).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

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


def residue_frame_triples(bonded) -> tuple[np.ndarray, np.ndarray]:
    """Node triples ``(R, 3)`` int32 that define each residue's local frame, and a mask ``(R,)``.

    Residue i uses its bonded neighbours (i-1, i, i+1); a chain's first residue uses
    (i, i+1, i+2), its last (i-2, i-1, i). Residues of chains shorter than 3 have no frame
    (mask False: their points are only translated with the node).

    Args:
        bonded: ``(R-1,)`` bool, whether nodes i and i+1 are peptide-bonded.
    """
    bonded = np.asarray(bonded, dtype=bool).ravel()
    n = bonded.size + 1
    b = np.concatenate([[False], bonded, [False]])  # b[i] = bond (i-1, i); b[i+1] = (i, i+1)
    i = np.arange(n)
    left, right = b[i], b[i + 1]
    left2 = np.concatenate([[False, False], bonded])[i]  # bond (i-2, i-1)
    right2 = np.concatenate([bonded, [False, False]])[np.minimum(i + 1, n)]  # bond (i+1, i+2)
    centre = left & right
    first = ~left & right & right2
    last = left & ~right & left2
    start = np.where(centre, i - 1, np.where(first, i, np.where(last, i - 2, i)))
    mask = centre | first | last
    # residues without a frame borrow a valid triple (their rotation is masked to I; a
    # degenerate triple would give NaN gradients through the mask)
    start = np.where(mask, start, start[mask][0] if mask.any() else 0)
    triples = np.clip(start[:, None] + np.arange(3)[None, :], 0, n - 1).astype(np.int32)
    return triples, mask


def residue_frames(nodes, triples):
    """Orthonormal frames ``(..., R, 3, 3)`` (columns e1, e2, e3) of nodes ``(..., R, 3)``.

    For the triple (a, b, c): e1 along x_c - x_a, e2 along the bisector x_a + x_c - 2 x_b
    made orthogonal to e1, e3 = e1 × e2. A rigid motion of the nodes rotates every frame
    with it. (Cα-Cα-Cα angles are 80-150°, so the triples are never collinear.)
    """
    nodes = jnp.asarray(nodes)
    xa, xb, xc = (jnp.take(nodes, triples[:, k], axis=-2) for k in range(3))
    e1 = xc - xa
    e1 = e1 / jnp.linalg.norm(e1, axis=-1, keepdims=True)
    v = xa + xc - 2.0 * xb
    v = v - jnp.sum(v * e1, axis=-1, keepdims=True) * e1
    e2 = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
    e3 = jnp.cross(e1, e2)
    return jnp.stack([e1, e2, e3], axis=-1)


def transport_points(nodes, x0_nodes, points0, point_node, triples=None, mask=None):
    """Points ``(P, 3)`` carried rigidly with their residue's node and local frame.

    ``p = x_n + R_n (p0 - x0_n)`` with ``R_n = F_n(X) F_n(X0)^T`` the rotation of node n's
    local frame (:func:`residue_frames`); without ``triples`` (or where ``mask`` is False)
    ``R_n = I`` (pure translation with the node). Identity deformation leaves the points
    unchanged; a rigid motion of all nodes moves every point by the same motion.

    Args:
        nodes: ``(..., R, 3)`` deformed nodes, Å.  x0_nodes: ``(R, 3)`` reference nodes, Å.
        points0: ``(P, 3)`` reference points, Å.  point_node: ``(P,)`` int node of each point.
        triples, mask: from :func:`residue_frame_triples` (optional).

    Returns:
        ``(..., P, 3)`` Å.
    """
    nodes = jnp.asarray(nodes)
    x0_nodes = jnp.asarray(x0_nodes, dtype=nodes.dtype)
    points0 = jnp.asarray(points0, dtype=nodes.dtype)
    point_node = np.asarray(point_node)
    carrier = jnp.take(nodes, point_node, axis=-2)
    offset0 = points0 - x0_nodes[point_node]
    if triples is None or (mask is not None and not np.asarray(mask).any()):
        return carrier + offset0
    triples = np.asarray(triples)
    rot = jnp.einsum("...rij,rkj->...rik", residue_frames(nodes, triples),
                     residue_frames(x0_nodes, triples))  # fmt: skip
    if mask is not None:
        rot = jnp.where(np.asarray(mask)[:, None, None], rot, jnp.eye(3, dtype=nodes.dtype))
    return carrier + jnp.einsum("...pij,pj->...pi", jnp.take(rot, point_node, axis=-3), offset0)
