"""One-object summaries of input files (what ``atomicspi inspect`` prints)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from atomicspi_bayes.errors import InputFormatError

__all__ = ["summarize"]

_PARTICLE_SUFFIXES = (".star", ".cs", ".txt")
_IMAGE_SUFFIXES = (".mrc", ".mrcs", ".map", ".ccp4", ".st", ".ali")
_STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".pdbx")


def _common(values: np.ndarray):
    """The most common value (ties: the smallest)."""
    uniq, counts = np.unique(values, return_counts=True)
    return uniq[int(np.argmax(counts))]


def summarize(path: str | os.PathLike, *, allow_outside_paths: bool = False) -> dict:
    """Summarise a particle, image-stack or structure file as a JSON-ready dict.

    Kinds (numbers are plain Python numbers; pixel size in Å; ``None`` when unknown):

    - particles (``.star``, ``.cs``): ``{"kind": "particles", "n_particles", "box_size",
      "pixel_size", "has_poses", "has_ctf", "n_optics_groups"}`` (box/pixel: the most common
      value over particles; box is ``None`` when neither the file nor a stack gives it);
    - images (``.mrc``, ``.mrcs``...): ``{"kind": "images", "n_images", "box_size",
      "pixel_size"}``;
    - structure (``.pdb``, ``.cif``...): ``{"kind": "structure", "n_atoms", "n_residues",
      "n_chains"}``.

    Raises:
        InputFormatError: missing file, unknown extension, or an unreadable file.
    """
    p = Path(path)
    name = p.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = os.path.splitext(name)[1]
    if not p.exists():
        raise InputFormatError(f"{p}: file not found")
    if p.is_dir():
        raise InputFormatError(f"{p}: is a folder; pass a particle, image or structure file")
    if suffix in _PARTICLE_SUFFIXES:
        from atomicspi_bayes.io.particles import read_particles

        meta = read_particles(p, allow_outside_paths=allow_outside_paths)
        box = int(_common(meta.box_size))
        pixel = float(_common(meta.pixel_size.astype(np.float64)))
        return {
            "kind": "particles",
            "n_particles": len(meta),
            "box_size": box if box > 0 else None,
            "pixel_size": round(pixel, 6) if np.isfinite(pixel) else None,
            "has_poses": bool(meta.has_poses),
            "has_ctf": bool(meta.has_ctf),
            "n_optics_groups": int(np.unique(meta.optics_group).size),
        }
    if suffix in _IMAGE_SUFFIXES:
        from atomicspi_bayes.io.mrc import open_stack

        stack = open_stack(p)
        px = stack.pixel_size
        return {
            "kind": "images",
            "n_images": len(stack),
            "box_size": stack.box_size,
            "pixel_size": None if px is None else round(float(px), 6),
        }
    if suffix in _STRUCTURE_SUFFIXES:
        from atomicspi_bayes.io.structures import load_structure

        model = load_structure(p)
        return {
            "kind": "structure",
            "n_atoms": model.n_atoms,
            "n_residues": model.n_residues,
            "n_chains": model.n_chains,
        }
    known = ", ".join(_PARTICLE_SUFFIXES + _IMAGE_SUFFIXES + _STRUCTURE_SUFFIXES)
    raise InputFormatError(f"{p}: unknown file extension {p.suffix!r}; expected one of {known}")
