"""cryoSPARC ``.cs`` particle files (NumPy structured arrays), converted to RELION terms.

Fields (SCIENCE.md §5): ``blob/path`` (project-relative, leading ``>`` stripped),
``blob/idx`` (0-based), ``blob/shape``, ``blob/psize_A``; ``ctf/df1_A`` = defocus U,
``ctf/df2_A`` = V, ``ctf/df_angle_rad``, ``ctf/phase_shift_rad``, ``ctf/accel_kv``,
``ctf/cs_mm``, ``ctf/amp_contrast``, ``ctf/bfactor``, ``ctf/scale``; ``alignments3D/pose`` is
the rotation vector of R_cs = expm([pose]x) and RELION's A = R_csᵀ; ``alignments3D/shift``
is in pixels of ``alignments3D/psize_A`` with RELION's origin sign. Loaded without pickle,
and the array header is checked against the file length before anything is allocated.
"""

from __future__ import annotations

import logging
import os
import tokenize
from pathlib import Path

import numpy as np

from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.io._errors import one_line
from atomicspi_bayes.io._paths import dataset_folder, resolve_image_paths
from atomicspi_bayes.io._rotations import axis_angle_to_matrix
from atomicspi_bayes.io.metadata import ParticleMetadata

__all__ = ["load_cs_array", "read_cryosparc"]

log = logging.getLogger(__name__)


def load_cs_array(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a ``.cs``/``.npy`` structured array safely (no pickle, sizes checked).

    Raises:
        InputFormatError: missing file, not a NumPy array file, object (pickled) fields,
            not a structured array, or a header whose shape does not fit the file.
    """
    from numpy.lib import format as npformat

    p = Path(path)
    if not p.is_file():
        raise InputFormatError(f"{p}: particle file not found")
    size = p.stat().st_size
    try:
        with open(p, "rb") as fh:
            version = npformat.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = npformat.read_array_header_1_0(fh)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = npformat.read_array_header_2_0(fh)
            else:  # pragma: no cover - numpy rejects other versions in read_magic
                raise ValueError(f"unsupported .npy version {version}")
            offset = fh.tell()
    except (
        ValueError,
        OSError,
        EOFError,
        SyntaxError,
        TypeError,
        KeyError,
        MemoryError,
        OverflowError,
        RecursionError,
        tokenize.TokenError,
    ) as exc:  # numpy's header parser
        raise InputFormatError(
            f"{p}: not a cryoSPARC .cs (NumPy array) file ({one_line(exc)}); check the path"
        ) from exc
    if dtype.hasobject:
        raise InputFormatError(f"{p}: .cs file holds Python objects (pickle); refusing to load")
    if dtype.names is None:
        raise InputFormatError(f"{p}: not a cryoSPARC .cs file (no named fields)")
    if len(shape) != 1:
        raise InputFormatError(f"{p}: .cs array has shape {shape}; expected one row per particle")
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if need > size - offset:
        raise InputFormatError(
            f"{p}: truncated: header says {shape[0]} rows ({need} bytes) but the file holds "
            f"{size - offset}"
        )
    if shape[0] == 0:
        raise InputFormatError(f"{p}: no particles (0 rows)")
    order = "F" if fortran else "C"
    return np.memmap(p, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)


def _merge_passthrough(path: Path, main: np.ndarray, passthrough: str | os.PathLike) -> dict:
    """Fields of ``main``, completed with fields only the passthrough file has (by uid)."""
    fields = {name: main[name] for name in main.dtype.names}
    pt = load_cs_array(passthrough)
    if "uid" not in fields or "uid" not in pt.dtype.names:
        raise InputFormatError(f"{passthrough}: both .cs files need a 'uid' field to be merged")
    order = np.argsort(pt["uid"], kind="stable")
    sorted_uid = np.asarray(pt["uid"])[order]
    pos = np.searchsorted(sorted_uid, fields["uid"])
    pos = np.clip(pos, 0, len(sorted_uid) - 1)
    found = sorted_uid[pos] == np.asarray(fields["uid"])
    if not np.all(found):
        raise InputFormatError(
            f"{passthrough}: {int((~found).sum())} particle uids of {path} are missing; "
            "pass the passthrough file of the same job"
        )
    rows = order[pos]
    for name in pt.dtype.names:
        if name not in fields:
            fields[name] = np.asarray(pt[name])[rows]
    return fields


def _field(fields: dict, name: str, path: Path, *, required: bool = False) -> np.ndarray | None:
    if name not in fields:
        if required:
            raise InputFormatError(f"{path}: cryoSPARC field {name!r} is missing")
        return None
    arr = np.asarray(fields[name])
    if arr.dtype.kind in "fiu" and not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(arr.reshape(len(arr), -1)), axis=1))[0])
        raise InputFormatError(f"{path}: field {name!r} has NaN/inf (row {bad + 1})")
    return arr


def read_cryosparc(
    path: str | os.PathLike,
    *,
    passthrough: str | os.PathLike | None = None,
    allow_outside_paths: bool = False,
    data_dir: str | os.PathLike | None = None,
) -> ParticleMetadata:
    """Read a cryoSPARC ``.cs`` particle file into :class:`ParticleMetadata`.

    Args:
        path: the ``.cs`` file.
        passthrough: optional ``*_passthrough_particles.cs`` of the same job; fields the
            main file lacks are taken from it, matched by ``uid``.
        allow_outside_paths: accept ``blob/path`` values outside the dataset folder.
        data_dir: the cryoSPARC project folder ``blob/path`` is relative to (default: the
            ``.cs`` file's folder).
    """
    p = Path(path)
    main = load_cs_array(p)
    fields = (
        _merge_passthrough(p, main, passthrough)
        if passthrough is not None
        else {k: main[k] for k in main.dtype.names}
    )
    n = len(main)
    raw_paths = _field(fields, "blob/path", p, required=True)
    idx = _field(fields, "blob/idx", p, required=True).astype(np.int64)
    try:
        names = [
            (b.decode("utf-8") if isinstance(b, bytes) else str(b)).lstrip(">") for b in raw_paths
        ]
    except UnicodeDecodeError as exc:
        raise InputFormatError(f"{p}: blob/path is not valid UTF-8") from exc
    base = dataset_folder(p, data_dir)
    image_paths = resolve_image_paths(
        np.asarray(names, dtype=str), p, base, allow_outside_paths=allow_outside_paths
    )
    if np.any(idx < 0):
        raise InputFormatError(f"{p}: blob/idx has negative values")

    psize = _field(fields, "blob/psize_A", p, required=True).astype(np.float64)
    if np.any(psize <= 0):
        raise InputFormatError(f"{p}: blob/psize_A must be positive, got {psize.min()}")
    shape = _field(fields, "blob/shape", p)
    if shape is None:
        box = np.zeros(n, dtype=np.int64)
    else:
        shape = shape.reshape(n, -1).astype(np.int64)
        if shape.shape[1] != 2 or np.any(shape[:, 0] != shape[:, 1]) or np.any(shape <= 0):
            raise InputFormatError(f"{p}: blob/shape must be square (L, L) images")
        box = shape[:, 0]

    f32 = np.float32
    has_ctf = "ctf/df1_A" in fields
    nan = np.full(n, np.nan)

    def get(name: str, default) -> np.ndarray:
        v = _field(fields, name, p)
        return np.broadcast_to(np.asarray(default, dtype=np.float64), (n,)) if v is None else v

    if has_ctf:
        for need in ("ctf/accel_kv", "ctf/cs_mm", "ctf/amp_contrast"):
            _field(fields, need, p, required=True)
    dfu = get("ctf/df1_A", 0.0)
    dfv = get("ctf/df2_A", dfu)
    exp_group = _field(fields, "ctf/exp_group_id", p)
    if exp_group is None:
        optics_group = np.ones(n, dtype=np.int64)
    else:
        _, inverse = np.unique(exp_group, return_inverse=True)
        optics_group = inverse.reshape(-1).astype(np.int64) + 1

    rotations = shifts = None
    pose = _field(fields, "alignments3D/pose", p)
    if pose is not None:
        r_cs = axis_angle_to_matrix(pose.reshape(n, 3))
        rotations = np.ascontiguousarray(np.swapaxes(r_cs, -1, -2), dtype=np.float32)  # A = R_csᵀ
        shift_px = _field(fields, "alignments3D/shift", p)
        align_psize = _field(fields, "alignments3D/psize_A", p)
        align_psize = psize if align_psize is None else align_psize.astype(np.float64)
        if shift_px is None:
            shifts = np.zeros((n, 2), dtype=f32)
        else:
            shifts = (shift_px.reshape(n, 2) * align_psize[:, None]).astype(f32)

    import pandas as pd

    table = pd.DataFrame({"uid": np.asarray(fields["uid"])}) if "uid" in fields else None
    return ParticleMetadata(
        source=str(p.resolve()),
        image_paths=image_paths,
        image_indices=idx,
        pixel_size=psize.astype(f32),
        box_size=box,
        voltage_kv=get("ctf/accel_kv", nan).astype(f32),
        cs_mm=get("ctf/cs_mm", nan).astype(f32),
        amplitude_contrast=get("ctf/amp_contrast", nan).astype(f32),
        defocus_u=dfu.astype(f32),
        defocus_v=dfv.astype(f32),
        defocus_angle=get("ctf/df_angle_rad", 0.0).astype(f32),
        phase_shift=get("ctf/phase_shift_rad", 0.0).astype(f32),
        ctf_bfactor=get("ctf/bfactor", 0.0).astype(f32),
        ctf_scale=get("ctf/scale", 1.0).astype(f32),
        optics_group=optics_group,
        rotations=rotations,
        shifts=shifts,
        has_ctf=has_ctf,
        table=table,
    )
