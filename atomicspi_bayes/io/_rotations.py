"""NumPy float64 versions of the RELION pose conversions used when reading/writing files.

Same formulas as :mod:`atomicspi_bayes.physics.geometry` (SCIENCE.md §3; the tests check
that both agree), in NumPy so that file I/O neither imports JAX nor compiles one kernel per
particle count, and converts in double precision before storing float32.
"""

from __future__ import annotations

import numpy as np

_GIMBAL_EPS = 1e-6  # as physics.geometry: float32 matrices carry ~1e-7 noise


def euler_to_matrix(angles: np.ndarray) -> np.ndarray:
    """RELION ZYZ ``(..., 3)`` [rot, tilt, psi] in radians -> ``(..., 3, 3)`` A (float64)."""
    a = np.asarray(angles, dtype=np.float64)
    cf, sf = np.cos(a[..., 0]), np.sin(a[..., 0])
    ct, st = np.cos(a[..., 1]), np.sin(a[..., 1])
    cp, sp = np.cos(a[..., 2]), np.sin(a[..., 2])
    row0 = np.stack([cp * ct * cf - sp * sf, cp * ct * sf + sp * cf, -cp * st], axis=-1)
    row1 = np.stack([-sp * ct * cf - cp * sf, -sp * ct * sf + cp * cf, sp * st], axis=-1)
    row2 = np.stack([st * cf, st * sf, ct], axis=-1)
    return np.stack([row0, row1, row2], axis=-2)


def matrix_to_euler(matrix: np.ndarray) -> np.ndarray:
    """``(..., 3, 3)`` A -> RELION [rot, tilt, psi] radians; at gimbal lock psi = 0."""
    m = np.asarray(matrix, dtype=np.float64)
    cos_t = np.clip(m[..., 2, 2], -1.0, 1.0)
    sin_t = np.hypot(m[..., 2, 0], m[..., 2, 1])
    tilt = np.arctan2(sin_t, cos_t)
    regular = sin_t > _GIMBAL_EPS
    rot = np.arctan2(m[..., 2, 1], m[..., 2, 0])
    psi = np.arctan2(m[..., 1, 2], -m[..., 0, 2])
    rot_lock = np.where(
        cos_t > 0,
        np.arctan2(m[..., 0, 1], m[..., 0, 0]),
        np.arctan2(-m[..., 0, 1], -m[..., 0, 0]),
    )
    return np.stack([np.where(regular, rot, rot_lock), tilt, np.where(regular, psi, 0.0)], axis=-1)


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """``(..., 3)`` rotation vectors (axis × angle, rad) -> ``expm([v]x)`` (Rodrigues)."""
    v = np.asarray(rotvec, dtype=np.float64)
    theta2 = np.sum(v * v, axis=-1)
    small = theta2 < 1e-12
    theta = np.sqrt(np.where(small, 1.0, theta2))
    a = np.where(small, 1.0 - theta2 / 6.0, np.sin(theta) / theta)
    b = np.where(small, 0.5 - theta2 / 24.0, (1.0 - np.cos(theta)) / np.where(small, 1.0, theta2))
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = np.zeros_like(x)
    k = np.stack(
        [np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)],
        axis=-2,
    )
    return np.eye(3) + a[..., None, None] * k + b[..., None, None] * (k @ k)
