"""Projection images of the structures along the latent, for the report's ensemble panel."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atomicspi_bayes.physics.cryoem import Scatterers, fourier_to_image, project_batch


@dataclass(frozen=True)
class SnapshotImages:
    """Projections of K structures seen from V views.

    Attributes:
        images: ``(V, K, L, L)`` float32 projected potential in V·Å per pixel (row 0 = top).
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
    """Projected Coulomb potential of each structure, seen from two principal views.

    Uses the simulator of the fit (:func:`atomicspi_bayes.physics.cryoem.project_batch`,
    Peng scattering factors, no CTF) with an extra B-factor ``8π² blur²`` so that the
    panels read as low-resolution density. Every model is seen in the same frame (principal
    axes of the ensemble mean, centred on its centroid), so differences between panels are
    conformational motion.

    Args:
        coords: ``(K, N, 3)`` coordinates in Å.
        elements: ``(N,)`` element symbols, or ``None`` (all carbon, e.g. Cα traces).
        max_models: at most this many models are shown, evenly spaced, ends included.
        box: image side length in pixels.
        blur_in_angstroms: extra Gaussian standard deviation per atom in Å.

    Returns:
        :class:`SnapshotImages`: projected potential in V·Å per pixel (row 0 = top, image up
        = principal axis 2 in the face view, axis 3 in the side view).
    """
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 3 or coords.shape[-1] != 3:
        raise ValueError(f"coords must be (K, N, 3), got {coords.shape}")
    k_total, n_atoms, _ = coords.shape
    shown = np.unique(np.round(np.linspace(0, k_total - 1, min(max_models, k_total))).astype(int))
    mean = coords.mean(axis=0)
    centre = mean.mean(axis=0)
    axes = principal_axes(mean)
    xyz = coords[shown] - centre
    radius = float(np.max(np.linalg.norm(xyz, axis=-1))) + 3.0 * blur_in_angstroms + 2.0
    pixel_size = 2.0 * radius / box
    if elements is None:
        elements = np.full(n_atoms, "C")
    b_extra = 8.0 * np.pi**2 * blur_in_angstroms**2
    scat = Scatterers.from_elements(np.asarray(elements), b_factors=b_extra)
    # RELION A: rows are the image x, image y and beam axes in the model frame
    views = {
        "face view (axes 1-2)": axes,
        "side view (axes 1-3)": np.stack([axes[0], axes[2], -axes[1]]),
    }
    k = len(shown)
    images = np.empty((len(views), k, box, box), dtype=np.float32)
    for v, rotation in enumerate(views.values()):
        ft, _ = project_batch(
            scat,
            xyz.astype(np.float32),
            np.broadcast_to(rotation.astype(np.float32), (k, 3, 3)),
            np.zeros((k, 2), np.float32),
            box=box,
            pixel_size=pixel_size,
        )
        images[v] = np.asarray(fourier_to_image(ft, box, pixel_size))[:, ::-1, :]
    return SnapshotImages(
        images=images,
        pixel_size=pixel_size,
        view_labels=list(views),
        model_index=shown,
    )
