"""Particle, image-stack and structure I/O; everything converted to one internal convention.

Public API (units: Å, radians, kV, mm for Cs; see SCIENCE.md §3, §5):

- ``load_structure(path, topology=None) -> AtomicModel``
- ``load_trajectory(traj_path, topology_path, stride=1) -> (AtomicModel, (F, N, 3) float32 Å)``
- ``write_multimodel_pdb(path, model, coords (K, N, 3) Å)``
- ``open_stack(path) -> ImageStack``: lazy memory-mapped ``(N, L, L)``; ``stack[idx]`` gives
  float32 arrays; ``.pixel_size`` (Å, header CELLA/MX, or None), ``.box_size``, ``len()``
- ``write_stack(path, images (N, L, L), pixel_size)``: mode-2 MRC, atomic
- ``new_stack(path, n_images, box_size, pixel_size)``: context manager yielding a writable
  ``(N, L, L)`` float32 memmap for chunked writing; atomic on exit
- ``read_mrc_header(path) -> MrcHeader``: validated header (checked against file length)
"""

from atomicspi_bayes.io.metadata import ParticleMetadata
from atomicspi_bayes.io.mrc import (
    ImageStack,
    MrcHeader,
    new_stack,
    open_stack,
    read_mrc_header,
    write_stack,
)
from atomicspi_bayes.io.structures import load_structure, load_trajectory, write_multimodel_pdb

__all__ = [
    "ImageStack",
    "MrcHeader",
    "ParticleMetadata",
    "load_structure",
    "load_trajectory",
    "new_stack",
    "open_stack",
    "read_mrc_header",
    "write_multimodel_pdb",
    "write_stack",
]
