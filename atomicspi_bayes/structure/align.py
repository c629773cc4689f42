"""Rigid superposition (Kabsch) and RMSD of coordinate sets (SCIENCE.md §8)."""

from __future__ import annotations

import numpy as np

from atomicspi_bayes.errors import InputFormatError


def kabsch_align(mobile: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``mobile`` ``(N, 3)`` Å rigidly superposed onto ``target`` ``(N, 3)`` Å (least squares).

    Centres both sets, ``H = PᵀQ = USVᵀ``, ``R = V diag(1, 1, det(VUᵀ)) Uᵀ`` (proper rotation,
    no reflection), and returns ``(mobile - p̄) Rᵀ + q̄``.
    """
    rot, shift = kabsch_transform(mobile, target)
    return np.asarray(mobile, dtype=np.float64) @ rot.T + shift


def rmsd(a: np.ndarray, b: np.ndarray, *, superpose: bool = False) -> float:
    """Root mean square deviation (Å) of ``(N, 3)`` sets, optionally after Kabsch superposition."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if superpose:
        a = kabsch_align(a, b)
    return float(np.sqrt(np.mean(np.sum((a - b) ** 2, axis=-1))))


def kabsch_transform(mobile: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation ``(3, 3)`` and translation ``(3,)`` with ``mobile @ R.T + t`` ≈ ``target`` (Å).

    Apply the same rigid transform to other points of the mobile structure (e.g. all atoms
    after superposing on Cα).
    """
    p = np.asarray(mobile, dtype=np.float64)
    q = np.asarray(target, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 2 or p.shape[1] != 3:
        raise InputFormatError(f"kabsch needs two (N, 3) arrays, got {p.shape}, {q.shape}")
    pc, qc = p.mean(axis=0), q.mean(axis=0)
    u, _, vt = np.linalg.svd((p - pc).T @ (q - qc))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rot, qc - pc @ rot.T
