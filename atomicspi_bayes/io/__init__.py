"""Particle, image-stack and structure I/O; everything converted to one internal convention.

Public API (units: Å, radians, kV, mm for Cs; poses are RELION's A and origins in Å;
see SCIENCE.md §3, §5):

- ``read_particles(path, *, allow_outside_paths=False, data_dir=None, passthrough=None,
  fallback_pixel_size=None) -> ParticleMetadata`` (``.star`` RELION 3.0-5, ``.cs`` cryoSPARC)
- ``read_star(path, *, allow_outside_paths=False, data_dir=None, fallback_pixel_size=None)``
- ``read_cryosparc(path, *, passthrough=None, allow_outside_paths=False, data_dir=None)``
- ``write_star(path, metadata, extra_columns: dict[str, (N,) | (N, D) array] | None = None)``:
  RELION 3.1 (optics + particles), atomic
- ``subset_metadata(metadata, indices) -> ParticleMetadata``
- ``ParticleDataset(metadata, subset=None, *, max_open_stacks=64)``: ``len()``, ``box_size``,
  ``pixel_size``, ``metadata`` (CTF/pose arrays in dataset order), ``particle_index``,
  ``images(indices) -> (B, L, L) float32``, ``epoch_order(seed, epoch) -> (N,)``,
  ``batch_indices(seed, batch_size, step) -> (B,)`` (drop_last), ``steps_per_epoch(B)``,
  ``iter_batches(seed, batch_size, start_step=0, stop_step=None)`` -> (step, idx, images),
  ``find_bad_images(chunk_size=1024) -> BadImages``, ``without(positions)``, ``close()``
- ``open_stack(path) -> ImageStack``: lazy memory-mapped ``(N, L, L)``; ``stack[idx]`` gives
  float32 arrays; ``.pixel_size`` (Å, header CELLA/MX, or None), ``.box_size``, ``len()``
- ``write_stack(path, images (N, L, L), pixel_size)``: mode-2 MRC, atomic
- ``new_stack(path, n_images, box_size, pixel_size)``: context manager yielding a writable
  ``(N, L, L)`` float32 memmap for chunked writing; atomic on exit
- ``read_mrc_header(path) -> MrcHeader``: validated header (checked against file length)
- ``load_structure(path, topology=None) -> AtomicModel``
- ``load_trajectory(traj_path, topology_path, stride=1) -> (AtomicModel, (F, N, 3) float32 Å)``
- ``write_multimodel_pdb(path, model, coords (K, N, 3) Å)``: MODEL/ENDMDL, atomic
- ``load_cryodrgn_pickle(path, *, allow_pickle: bool)``: restricted unpickler (arrays only);
  ``cryodrgn_poses(obj, box_size, pixel_size)``, ``cryodrgn_ctf(arr)`` convert its contents
"""

from atomicspi_bayes.io.cryodrgn import cryodrgn_ctf, cryodrgn_poses, load_cryodrgn_pickle
from atomicspi_bayes.io.cryosparc import read_cryosparc
from atomicspi_bayes.io.dataset import BadImages, ParticleDataset
from atomicspi_bayes.io.metadata import ParticleMetadata
from atomicspi_bayes.io.mrc import (
    ImageStack,
    MrcHeader,
    new_stack,
    open_stack,
    read_mrc_header,
    write_stack,
)
from atomicspi_bayes.io.particles import read_particles, subset_metadata
from atomicspi_bayes.io.star import read_star, write_star
from atomicspi_bayes.io.structures import load_structure, load_trajectory, write_multimodel_pdb

__all__ = [
    "BadImages",
    "ImageStack",
    "MrcHeader",
    "ParticleDataset",
    "ParticleMetadata",
    "cryodrgn_ctf",
    "cryodrgn_poses",
    "load_cryodrgn_pickle",
    "load_structure",
    "load_trajectory",
    "new_stack",
    "open_stack",
    "read_cryosparc",
    "read_mrc_header",
    "read_particles",
    "read_star",
    "subset_metadata",
    "write_multimodel_pdb",
    "write_stack",
    "write_star",
]
