"""Rotations in the RELION convention (SCIENCE.md §3), pure JAX.

Every rotation matrix here is RELION's ``A``: it rotates the reference (model frame) into the
particle, ``r_particle = A @ r_model``, and the image is the projection of the rotated model
along z. With Euler angles ``[rot, tilt, psi]`` (φ, θ, ψ, radians, ZYZ)::

    A = [[ cψcθcφ - sψsφ,  cψcθsφ + sψcφ, -cψsθ],
         [-sψcθcφ - cψsφ, -sψcθsφ + cψcφ,  sψsθ],
         [ sθcφ,           sθsφ,           cθ ]]
      = scipy Rotation.from_euler("ZYZ", [rot, tilt, psi]).as_matrix().T

Quaternions are ``[w, x, y, z]`` (scalar first) and axis-angle vectors are ``axis * angle``
(radians); both describe the same matrix ``A`` (``quaternion_to_matrix(q) @ v`` rotates ``v``
by ``q``, and ``axis_angle_to_matrix(v) = expm([v]_x)``). cryoSPARC's ``alignments3D/pose`` is
an axis-angle vector of ``Aᵀ``; converting it is the job of ``io``.

All functions broadcast over leading axes and are jit/vmap/grad friendly.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import Array

__all__ = [
    "align_rotation_sets",
    "axis_angle_to_matrix",
    "euler_to_matrix",
    "geodesic_angle",
    "matrix_to_axis_angle",
    "matrix_to_euler",
    "matrix_to_quaternion",
    "matrix_to_sixd",
    "quaternion_to_matrix",
    "random_quaternions",
    "random_rotations",
    "sixd_to_matrix",
]

_GIMBAL_EPS = 1e-6


@jax.jit
def euler_to_matrix(angles: Array) -> Array:
    """RELION ZYZ Euler angles ``(..., 3)`` ``[rot, tilt, psi]`` (radians) -> ``(..., 3, 3)`` A."""
    angles = jnp.asarray(angles)
    phi, theta, psi = angles[..., 0], angles[..., 1], angles[..., 2]
    cf, sf = jnp.cos(phi), jnp.sin(phi)
    ct, st = jnp.cos(theta), jnp.sin(theta)
    cp, sp = jnp.cos(psi), jnp.sin(psi)
    row0 = jnp.stack([cp * ct * cf - sp * sf, cp * ct * sf + sp * cf, -cp * st], axis=-1)
    row1 = jnp.stack([-sp * ct * cf - cp * sf, -sp * ct * sf + cp * cf, sp * st], axis=-1)
    row2 = jnp.stack([st * cf, st * sf, ct], axis=-1)
    return jnp.stack([row0, row1, row2], axis=-2)


@jax.jit
def matrix_to_euler(matrix: Array) -> Array:
    """Rotation matrices ``(..., 3, 3)`` -> RELION Euler angles ``(..., 3)`` ``[rot, tilt, psi]``.

    Ranges: rot, psi in (-π, π], tilt in [0, π]. At the gimbal lock (tilt = 0 or π, where only
    rot ± psi is defined) psi is set to 0 and rot carries the whole in-plane angle.
    """
    m = jnp.asarray(matrix)
    cos_t = jnp.clip(m[..., 2, 2], -1.0, 1.0)
    sin_t = jnp.hypot(m[..., 2, 0], m[..., 2, 1])
    tilt = jnp.arctan2(sin_t, cos_t)
    regular = sin_t > _GIMBAL_EPS
    rot = jnp.arctan2(m[..., 2, 1], m[..., 2, 0])
    psi = jnp.arctan2(m[..., 1, 2], -m[..., 0, 2])
    # tilt = 0: A[:2,:2] = R(-(rot+psi)) -> rot+psi = atan2(A01, A00);
    # tilt = π: A00 = -cos(psi-rot), A01 = sin(psi-rot) -> with psi = 0, rot = atan2(-A01, -A00).
    rot_lock = jnp.where(
        cos_t > 0,
        jnp.arctan2(m[..., 0, 1], m[..., 0, 0]),
        jnp.arctan2(-m[..., 0, 1], -m[..., 0, 0]),
    )
    rot = jnp.where(regular, rot, rot_lock)
    psi = jnp.where(regular, psi, jnp.zeros_like(psi))
    return jnp.stack([rot, tilt, psi], axis=-1)


@jax.jit
def quaternion_to_matrix(quaternion: Array) -> Array:
    """Quaternions ``(..., 4)`` ``[w, x, y, z]`` (need not be normalised) -> ``(..., 3, 3)``."""
    q = jnp.asarray(quaternion)
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    row0 = jnp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1)
    row1 = jnp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1)
    row2 = jnp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)
    return jnp.stack([row0, row1, row2], axis=-2)


@jax.jit
def matrix_to_quaternion(matrix: Array) -> Array:
    """Rotation matrices ``(..., 3, 3)`` -> unit quaternions ``(..., 4)`` ``[w, x, y, z]``, w >= 0.

    Shepperd's method: of the four algebraically equivalent formulas the one with the largest
    pivot is used, so the result is accurate for every rotation (including angle π).
    """
    m = jnp.asarray(matrix)
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4 q_i^2 candidates (trace form) and the matching unnormalised quaternions.
    pivots = jnp.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22],
        axis=-1,
    )
    cands = jnp.stack(
        [
            jnp.stack([pivots[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
            jnp.stack([m21 - m12, pivots[..., 1], m01 + m10, m02 + m20], -1),
            jnp.stack([m02 - m20, m01 + m10, pivots[..., 2], m12 + m21], -1),
            jnp.stack([m10 - m01, m02 + m20, m12 + m21, pivots[..., 3]], -1),
        ],
        axis=-2,
    )
    best = jnp.argmax(pivots, axis=-1)
    q = jnp.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    return jnp.where(q[..., :1] < 0, -q, q)


@jax.jit
def axis_angle_to_matrix(rotvec: Array) -> Array:
    """Axis-angle vectors ``(..., 3)`` (axis × angle, radians) -> ``(..., 3, 3)`` = expm([v]_x).

    Rodrigues' formula with series expansions near angle 0, so values and gradients are finite
    at the identity.
    """
    v = jnp.asarray(rotvec)
    theta2 = jnp.sum(v * v, axis=-1)
    small = theta2 < 1e-6
    safe2 = jnp.where(small, 1.0, theta2)
    theta = jnp.sqrt(safe2)
    a = jnp.where(small, 1.0 - theta2 / 6.0, jnp.sin(theta) / theta)
    b = jnp.where(small, 0.5 - theta2 / 24.0, (1.0 - jnp.cos(theta)) / safe2)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = jnp.zeros_like(x)
    k = jnp.stack(
        [jnp.stack([zero, -z, y], -1), jnp.stack([z, zero, -x], -1), jnp.stack([-y, x, zero], -1)],
        axis=-2,
    )
    eye = jnp.eye(3, dtype=v.dtype)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


@jax.jit
def matrix_to_axis_angle(matrix: Array) -> Array:
    """Rotation matrices ``(..., 3, 3)`` -> axis-angle vectors ``(..., 3)``, angle in [0, π]."""
    q = matrix_to_quaternion(matrix)
    w, xyz = q[..., 0], q[..., 1:]
    n = jnp.linalg.norm(xyz, axis=-1)
    small = n < 1e-6
    safe_n = jnp.where(small, 1.0, n)
    scale = jnp.where(small, 2.0 / w, 2.0 * jnp.arctan2(n, w) / safe_n)
    return xyz * scale[..., None]


@partial(jax.jit, static_argnames=("n", "dtype"))
def random_quaternions(key: Array, n: int, dtype=jnp.float32) -> Array:
    """``(n, 4)`` unit quaternions ``[w, x, y, z]`` uniform (Haar) on SO(3), w >= 0."""
    q = jax.random.normal(key, (n, 4), dtype=dtype)
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    return jnp.where(q[..., :1] < 0, -q, q)


@partial(jax.jit, static_argnames=("n", "dtype"))
def random_rotations(key: Array, n: int, dtype=jnp.float32) -> Array:
    """``(n, 3, 3)`` rotation matrices drawn uniformly (Haar measure) on SO(3).

    A normalised 4D standard normal vector is uniform on S³, and S³ -> SO(3) is a double cover
    that pushes the uniform measure to the Haar measure.
    """
    return quaternion_to_matrix(random_quaternions(key, n, dtype))


@jax.jit
def geodesic_angle(r1: Array, r2: Array) -> Array:
    """Angle (radians, in [0, π]) of the rotation ``r1ᵀ r2`` between ``(..., 3, 3)`` matrices.

    Equal to ``arccos((tr(r1ᵀ r2) - 1) / 2)`` (SCIENCE.md §3) but evaluated as
    ``atan2(|sin|, cos)`` so it stays accurate near 0 and π.
    """
    m = jnp.swapaxes(r1, -1, -2) @ r2
    cos = (jnp.trace(m, axis1=-2, axis2=-1) - 1.0) / 2.0
    skew = jnp.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                      m[..., 1, 0] - m[..., 0, 1]], axis=-1)  # fmt: skip
    sin = jnp.linalg.norm(skew, axis=-1) / 2.0
    return jnp.arctan2(sin, cos)


@jax.jit
def align_rotation_sets(predicted: Array, true: Array) -> Array:
    """``G @ predicted`` for the one rotation G that best maps ``predicted`` onto ``true``.

    Poses inferred against a reference are defined up to that reference's frame; G maximises
    ``Σ_n tr(trueₙᵀ G predictedₙ)`` (orthogonal Procrustes with det G = +1). Shapes
    ``(N, 3, 3)``; compare afterwards with :func:`geodesic_angle`.
    """
    u, _, vt = jnp.linalg.svd(jnp.einsum("nij,nkj->ik", true, predicted))
    flip = jnp.sign(jnp.linalg.det(u @ vt))
    g = u @ jnp.diag(jnp.array([1.0, 1.0, 1.0]).at[2].set(flip)) @ vt
    return jnp.einsum("ij,njk->nik", g, predicted)


@jax.jit
def sixd_to_matrix(x: Array) -> Array:
    """Continuous 6D representation ``(..., 6)`` -> rotation ``(..., 3, 3)`` (Zhou et al. 2019).

    The two 3-vectors ``x[..., :3]``, ``x[..., 3:]`` are Gram-Schmidt orthonormalised into the
    first two ROWS of the matrix; the third row is their cross product (as PyTorch3D).
    Use it as the output head of pose encoders; :func:`matrix_to_sixd` is its inverse.
    """
    x = jnp.asarray(x)
    a1, a2 = x[..., :3], x[..., 3:]
    b1 = a1 / jnp.linalg.norm(a1, axis=-1, keepdims=True)
    a2 = a2 - jnp.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = a2 / jnp.linalg.norm(a2, axis=-1, keepdims=True)
    b3 = jnp.cross(b1, b2)
    return jnp.stack([b1, b2, b3], axis=-2)


@jax.jit
def matrix_to_sixd(matrix: Array) -> Array:
    """Rotation ``(..., 3, 3)`` -> its 6D representation ``(..., 6)`` (first two rows)."""
    m = jnp.asarray(matrix)
    return jnp.concatenate([m[..., 0, :], m[..., 1, :]], axis=-1)
