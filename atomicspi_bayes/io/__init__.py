"""Particle, image-stack and structure I/O; everything converted to one internal convention.

Public API (units: Å, radians, kV, mm for Cs; poses are RELION's A and origins in Å;
see SCIENCE.md §3, §5):

- ``read_particles(path, *, allow_outside_paths=False, data_dir=None, passthrough=None,
  fallback_pixel_size=None) -> ParticleMetadata`` (``.star`` RELION 3.0-5, ``.cs`` cryoSPARC,
  ``.txt`` cryoDRGN list of stacks via ``read_stack_list``)
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
- ``summarize(path, *, allow_outside_paths=False) -> dict``: what ``atomicspi inspect`` prints
"""

from __future__ import annotations

import importlib

# Submodules load on first use (PEP 562), so `atomicspi inspect x.mrcs` does not import JAX.
_EXPORTS = {
    "BadImages": "dataset",
    "ParticleDataset": "dataset",
    "ImageStack": "mrc",
    "MrcHeader": "mrc",
    "new_stack": "mrc",
    "open_stack": "mrc",
    "read_mrc_header": "mrc",
    "write_stack": "mrc",
    "ParticleMetadata": "metadata",
    "cryodrgn_ctf": "cryodrgn",
    "cryodrgn_poses": "cryodrgn",
    "load_cryodrgn_pickle": "cryodrgn",
    "read_cryosparc": "cryosparc",
    "read_particles": "particles",
    "read_stack_list": "particles",
    "subset_metadata": "particles",
    "read_star": "star",
    "write_star": "star",
    "load_structure": "structures",
    "load_trajectory": "structures",
    "write_multimodel_pdb": "structures",
    "summarize": "summary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'atomicspi_bayes.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"atomicspi_bayes.io.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
