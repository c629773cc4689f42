"""Per-particle metadata in the one internal convention (SCIENCE.md §2-3).

Readers of RELION STAR, cryoSPARC .cs and cryoDRGN pickles all produce a
:class:`ParticleMetadata`; nothing downstream sees a source convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class ParticleMetadata:
    """Metadata of N particles, every array indexed by particle.

    Conventions: lengths in Å, angles in radians, voltage in kV, Cs in mm.
    Poses are RELION's: ``rotations[n]`` is the matrix A that rotates the reference into
    the particle (A = R_zyz(rot, tilt, psi) as in SCIENCE.md §3) and ``shifts[n]`` is the
    RELION origin (rlnOriginXAngst, rlnOriginYAngst) in Å: the particle centre sits at
    box_centre - shift.

    Attributes:
        source: path of the metadata file these particles came from.
        image_paths: ``(N,)`` str, path of the image stack of each particle, resolved
            relative to the metadata file's folder (absolute paths).
        image_indices: ``(N,)`` int64, 0-based slice of the particle in its stack.
        pixel_size: ``(N,)`` float32, Å per pixel.
        box_size: ``(N,)`` int64, image side length L in pixels.
        voltage_kv, cs_mm, amplitude_contrast: ``(N,)`` float32 optics.
        defocus_u, defocus_v: ``(N,)`` float32 in Å, positive = underfocus.
        defocus_angle: ``(N,)`` float32, azimuth of defocus U from +x in radians.
        phase_shift: ``(N,)`` float32 in radians.
        ctf_bfactor: ``(N,)`` float32 in Å² (0 when absent).
        ctf_scale: ``(N,)`` float32 (1 when absent).
        optics_group: ``(N,)`` int64, 1-based optics group (1 when absent).
        rotations: ``(N, 3, 3)`` float32 or ``None`` when the file has no poses.
        shifts: ``(N, 2)`` float32 in Å or ``None`` when the file has no poses.
        has_ctf: whether the file carried CTF parameters (defocus at least).
        table: the source table (pandas DataFrame, one row per particle) kept for
            pass-through columns when writing results back, or ``None``.
    """

    source: str
    image_paths: np.ndarray
    image_indices: np.ndarray
    pixel_size: np.ndarray
    box_size: np.ndarray
    voltage_kv: np.ndarray
    cs_mm: np.ndarray
    amplitude_contrast: np.ndarray
    defocus_u: np.ndarray
    defocus_v: np.ndarray
    defocus_angle: np.ndarray
    phase_shift: np.ndarray
    ctf_bfactor: np.ndarray
    ctf_scale: np.ndarray
    optics_group: np.ndarray
    rotations: np.ndarray | None = None
    shifts: np.ndarray | None = None
    has_ctf: bool = True
    table: object | None = None

    def __len__(self) -> int:
        return int(self.image_indices.shape[0])

    @property
    def has_poses(self) -> bool:
        return self.rotations is not None
