"""One entry point for particle metadata files, dispatching on the extension."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.io.metadata import ParticleMetadata

__all__ = ["read_particles", "read_stack_list", "subset_metadata"]


def read_particles(
    path: str | os.PathLike,
    *,
    allow_outside_paths: bool = False,
    data_dir: str | os.PathLike | None = None,
    passthrough: str | os.PathLike | None = None,
    fallback_pixel_size: float | None = None,
) -> ParticleMetadata:
    """Read RELION ``.star``, cryoSPARC ``.cs`` (or a cryoDRGN ``.txt`` list of stacks).

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
    if suffix == ".txt":
        if passthrough is not None:
            raise InputFormatError(f"{p}: a passthrough file only applies to cryoSPARC .cs")
        return read_stack_list(
            p, allow_outside_paths=allow_outside_paths, data_dir=data_dir,
            fallback_pixel_size=fallback_pixel_size,
        )  # fmt: skip
    if not p.exists():
        raise InputFormatError(f"{p}: particle file not found")
    raise InputFormatError(
        f"{p}: unknown particle file extension {p.suffix!r}; use RELION .star, cryoSPARC .cs "
        "or a cryoDRGN .txt list of stacks"
    )


def read_stack_list(
    path: str | os.PathLike,
    *,
    allow_outside_paths: bool = False,
    data_dir: str | os.PathLike | None = None,
    fallback_pixel_size: float | None = None,
) -> ParticleMetadata:
    """A cryoDRGN ``.txt`` particle list: one MRC stack per line, every image a particle.

    The file has no CTF and no poses; box size comes from the stack headers and the pixel
    size from ``fallback_pixel_size`` or else the headers (CELLA/MX).
    """
    from atomicspi_bayes.io._paths import dataset_folder, resolve_image_paths
    from atomicspi_bayes.io.mrc import read_mrc_header

    p = Path(path)
    if not p.is_file():
        raise InputFormatError(f"{p}: particle file not found")
    try:
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise InputFormatError(f"{p}: not a text list of image stacks (not UTF-8)") from exc
    names = [ln for ln in lines if ln and not ln.startswith("#")]
    if not names:
        raise InputFormatError(f"{p}: lists no image stacks")
    base = dataset_folder(p, data_dir)
    stacks = resolve_image_paths(
        np.asarray(names, dtype=str), p, base, allow_outside_paths=allow_outside_paths
    )
    paths, indices, pixel, box = [], [], [], []
    for stack in stacks:
        h = read_mrc_header(stack)
        px = fallback_pixel_size if fallback_pixel_size is not None else h.pixel_size
        if px is None or not px > 0:
            raise InputFormatError(
                f"{stack}: header has no valid pixel size; pass fallback_pixel_size"
            )
        paths += [stack] * h.nz
        indices.append(np.arange(h.nz, dtype=np.int64))
        pixel += [float(px)] * h.nz
        box += [h.nx] * h.nz
    n = len(paths)
    f32 = np.float32
    nan = np.full(n, np.nan, f32)
    return ParticleMetadata(
        source=str(p.resolve()),
        image_paths=np.asarray(paths, dtype=str),
        image_indices=np.concatenate(indices),
        pixel_size=np.asarray(pixel, f32),
        box_size=np.asarray(box, np.int64),
        voltage_kv=nan,
        cs_mm=nan.copy(),
        amplitude_contrast=nan.copy(),
        defocus_u=np.zeros(n, f32),
        defocus_v=np.zeros(n, f32),
        defocus_angle=np.zeros(n, f32),
        phase_shift=np.zeros(n, f32),
        ctf_bfactor=np.zeros(n, f32),
        ctf_scale=np.ones(n, f32),
        optics_group=np.ones(n, np.int64),
        has_ctf=False,
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
