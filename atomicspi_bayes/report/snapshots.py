"""Projection images of the structures along the latent, for the report's ensemble panel."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Relative splat weight by element (≈ electron scattering at low resolution; unknown -> C).
_ELEMENT_WEIGHT = {"H": 0.2, "C": 1.0, "N": 0.9, "O": 0.8, "P": 2.2, "S": 2.0}


@dataclass(frozen=True)
class SnapshotImages:
    """Projections of K structures seen from V views.

    Attributes:
        images: ``(V, K, L, L)`` float32 projected density (arbitrary units, row 0 = top).
        pixel_size: Å per pixel.
        view_labels: ``(V,)`` captions of the views.
        model_index: ``(K,)`` index of each shown model in the ensemble file.
    """

    images: np.ndarray
    pixel_size: float
    view_labels: list[str]
    model_index: np.ndarray


def principal_axes(coords: np.ndarray) -> np.ndarray:
    """Principal axes of a point cloud, as the rows of a ``(3, 3)`` rotation matrix.

    Row 0 is the axis of largest spread, row 2 of smallest; signs are fixed so that each
    axis's largest component is positive, and the result is a proper rotation (det +1).
    """
    x = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
    x = x - x.mean(axis=0)
    _, vecs = np.linalg.eigh(x.T @ x)
    axes = vecs[:, ::-1].T.copy()
    for i in range(3):
        if axes[i, np.argmax(np.abs(axes[i]))] < 0:
            axes[i] *= -1.0
    if np.linalg.det(axes) < 0:
        axes[2] *= -1.0
    return axes


def render_snapshots(
    coords: np.ndarray,
    elements: np.ndarray | None = None,
    *,
    max_models: int = 6,
    box: int = 96,
    blur_in_angstroms: float = 2.0,
) -> SnapshotImages:
    """Render each structure as a projected Gaussian density from two principal views.

    Every model is seen in the same frame (principal axes of the ensemble mean, centred on
    its centroid), so differences between panels are conformational motion. Each atom is a
    2-D Gaussian of width ``blur_in_angstroms`` weighted by element (H light, S/P heavy).

    Args:
        coords: ``(K, N, 3)`` coordinates in Å.
        elements: ``(N,)`` element symbols, or ``None`` (all carbon).
        max_models: at most this many models are shown, evenly spaced, ends included.
        box: image side length in pixels.
        blur_in_angstroms: Gaussian standard deviation per atom in Å.

    Returns:
        :class:`SnapshotImages` with views "face" (largest two axes) and "side".
    """
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 3 or coords.shape[-1] != 3:
        raise ValueError(f"coords must be (K, N, 3), got {coords.shape}")
    k_total = coords.shape[0]
    shown = np.unique(np.round(np.linspace(0, k_total - 1, min(max_models, k_total))).astype(int))
    xyz = coords[shown]
    mean = coords.mean(axis=0)
    centre = mean.mean(axis=0)
    axes = principal_axes(mean)
    local = (xyz - centre) @ axes.T  # (K, N, 3) in principal frame
    radius = float(np.max(np.linalg.norm(local, axis=-1))) + 3.0 * blur_in_angstroms
    pixel_size = 2.0 * radius / box
    if elements is None:
        weights = np.ones(coords.shape[1])
    else:
        weights = np.array([_ELEMENT_WEIGHT.get(str(e).capitalize(), 1.0) for e in elements])
    centres = (np.arange(box) - box / 2 + 0.5) * pixel_size  # pixel centres, Å
    views = {"face view (axes 1-2)": (0, 1), "side view (axes 1-3)": (0, 2)}
    images = np.empty((len(views), len(shown), box, box), dtype=np.float32)
    inv = 1.0 / (2.0 * blur_in_angstroms**2)
    for v, (ax_u, ax_v) in enumerate(views.values()):
        gu = np.exp(-((local[..., ax_u, None] - centres) ** 2) * inv)  # (K, N, L)
        gv = np.exp(-((local[..., ax_v, None] - centres) ** 2) * inv)
        # row = -v (up is +v), column = u
        images[v] = np.einsum(
            "kn,knr,knc->krc", np.broadcast_to(weights, gu.shape[:2]), gv[..., ::-1], gu
        )
    return SnapshotImages(
        images=images,
        pixel_size=pixel_size,
        view_labels=list(views),
        model_index=shown,
    )
