"""One entry point for particle metadata files, dispatching on the extension."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.io.metadata import ParticleMetadata

__all__ = ["read_particles", "subset_metadata"]


def read_particles(
    path: str | os.PathLike,
    *,
    allow_outside_paths: bool = False,
    data_dir: str | os.PathLike | None = None,
    passthrough: str | os.PathLike | None = None,
    fallback_pixel_size: float | None = None,
) -> ParticleMetadata:
    """Read RELION ``.star`` or cryoSPARC ``.cs`` particles into :class:`ParticleMetadata`.

    Image paths are resolved relative to ``data_dir`` (default: the metadata file's folder);
    a path that escapes that folder (absolute elsewhere, or ``..``) is refused unless
    ``allow_outside_paths=True``. ``passthrough`` applies to ``.cs`` only and
    ``fallback_pixel_size`` (Å) to ``.star`` files without a pixel size.

    Raises:
        InputFormatError: unknown extension, or any problem the readers detect.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".star":
        if passthrough is not None:
            raise InputFormatError(f"{p}: a passthrough file only applies to cryoSPARC .cs")
        from atomicspi_bayes.io.star import read_star

        return read_star(
            p,
            allow_outside_paths=allow_outside_paths,
            data_dir=data_dir,
            fallback_pixel_size=fallback_pixel_size,
        )
    if suffix == ".cs":
        from atomicspi_bayes.io.cryosparc import read_cryosparc

        return read_cryosparc(
            p, passthrough=passthrough, allow_outside_paths=allow_outside_paths, data_dir=data_dir
        )
    if not p.exists():
        raise InputFormatError(f"{p}: particle file not found")
    raise InputFormatError(
        f"{p}: unknown particle file extension {p.suffix!r}; use RELION .star or cryoSPARC .cs"
    )


def subset_metadata(metadata: ParticleMetadata, indices: np.ndarray) -> ParticleMetadata:
    """The particles ``indices`` (0-based rows, any order) of ``metadata`` as a new object."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    n = len(metadata)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise InputFormatError(
            f"{metadata.source}: subset index out of range [0, {n}): {idx.min()}..{idx.max()}"
        )
    changes = {}
    for f in dataclasses.fields(metadata):
        value = getattr(metadata, f.name)
        if isinstance(value, np.ndarray) and value.shape[:1] == (n,):
            changes[f.name] = value[idx]
    table = metadata.table
    if table is not None and hasattr(table, "iloc") and len(table) == n:
        changes["table"] = table.iloc[idx].reset_index(drop=True)
    return dataclasses.replace(metadata, **changes)
