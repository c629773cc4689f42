"""Particle, image-stack and structure I/O; everything converted to one internal convention.

Public API (units: Å, radians, kV, mm for Cs; see SCIENCE.md §3, §5):

- ``load_structure(path, topology=None) -> AtomicModel``
- ``load_trajectory(traj_path, topology_path, stride=1) -> (AtomicModel, (F, N, 3) float32 Å)``
- ``write_multimodel_pdb(path, model, coords (K, N, 3) Å)``
"""

from atomicspi_bayes.io.metadata import ParticleMetadata
from atomicspi_bayes.io.structures import load_structure, load_trajectory, write_multimodel_pdb

__all__ = [
    "ParticleMetadata",
    "load_structure",
    "load_trajectory",
    "write_multimodel_pdb",
]
