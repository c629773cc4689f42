"""RELION STAR particle files: 3.0 (one block) and 3.1+/5 (data_optics + data_particles).

On import everything is converted to the internal convention (SCIENCE.md §2-3, §5): Euler
angles (degrees) -> RELION matrices A, origins -> Å (3.0 ``rlnOriginX/Y`` are pixels), CTF
angles and phase shift -> radians; optics values are merged into every particle through
``rlnOpticsGroup``. The writer produces RELION 3.1 files (``# version 30001``, optics block,
extra per-particle columns) atomically.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np

from atomicspi_bayes.atomic_files import atomic_open
from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.io._errors import one_line
from atomicspi_bayes.io._paths import dataset_folder, resolve_image_paths
from atomicspi_bayes.io._rotations import euler_to_matrix, matrix_to_euler
from atomicspi_bayes.io.metadata import ParticleMetadata

__all__ = ["read_star", "write_star"]

log = logging.getLogger(__name__)

# Columns the writer regenerates from ParticleMetadata (never passed through from .table).
_OPTICS_COLUMNS = {
    "rlnOpticsGroup",
    "rlnOpticsGroupName",
    "rlnVoltage",
    "rlnSphericalAberration",
    "rlnAmplitudeContrast",
    "rlnImagePixelSize",
    "rlnImageSize",
    "rlnImageDimensionality",
    "rlnDetectorPixelSize",
    "rlnMagnification",
}
_PARTICLE_COLUMNS = {
    "rlnImageName",
    "rlnOpticsGroup",
    "rlnDefocusU",
    "rlnDefocusV",
    "rlnDefocusAngle",
    "rlnPhaseShift",
    "rlnCtfBfactor",
    "rlnCtfScalefactor",
    "rlnAngleRot",
    "rlnAngleTilt",
    "rlnAnglePsi",
    "rlnOriginXAngst",
    "rlnOriginYAngst",
    "rlnOriginX",
    "rlnOriginY",
}
DEFAULT_AMPLITUDE_CONTRAST = 0.1  # used when a STAR file with defocus lacks it (logged)
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def _read_blocks(path: Path) -> dict:
    import starfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blocks = starfile.read(path, always_dict=True)
    except OSError as exc:
        raise InputFormatError(f"{path}: cannot read ({one_line(exc.strerror or exc)})") from exc
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise InputFormatError(
            f"{path}: not a readable STAR file ({type(e).__name__}: {one_line(e)}); check the file"
        ) from e
    if not blocks:
        raise InputFormatError(f"{path}: no data blocks; not a STAR file")
    return blocks


def _pick_blocks(path: Path, blocks: dict):
    """Return (particles DataFrame, optics DataFrame or None)."""
    import pandas as pd

    loops = {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}
    if "particles" in loops:
        particles = loops["particles"]
    else:
        cands = [k for k, v in loops.items() if "rlnImageName" in v.columns]
        if not cands:
            names = ", ".join(f"data_{k}" for k in blocks) or "none"
            raise InputFormatError(
                f"{path}: no particle table (no loop with rlnImageName; blocks: {names}); "
                "expected a RELION particles STAR file"
            )
        if len(cands) > 1:
            raise InputFormatError(
                f"{path}: {len(cands)} blocks list particles ({', '.join(cands)}); expected "
                "one data_particles block"
            )
        particles = loops[cands[0]]
    if "rlnImageName" not in particles.columns:
        raise InputFormatError(f"{path}: the particles block has no rlnImageName column")
    optics = loops.get("optics")
    for name, table in (("particles", particles), ("optics", optics)):
        repeated = [] if table is None else sorted(set(table.columns[table.columns.duplicated()]))
        if repeated:
            raise InputFormatError(f"{path}: the {name} block names column(s) {repeated} twice")
    if optics is not None and "rlnOpticsGroup" not in optics.columns:
        raise InputFormatError(f"{path}: data_optics has no rlnOpticsGroup column")
    if len(particles) == 0:
        raise InputFormatError(f"{path}: the particles block has no rows")
    return particles.reset_index(drop=True), optics


class _Columns:
    """Per-particle numeric columns from the particle block, else from its optics group."""

    def __init__(self, path: Path, particles, optics):
        self.path, self.particles, self.optics = path, particles, optics
        n = len(particles)
        if optics is not None:
            groups_o = self._numeric(optics["rlnOpticsGroup"], "rlnOpticsGroup (optics)")
            if np.any(groups_o != np.round(groups_o)):
                raise InputFormatError(f"{path}: rlnOpticsGroup values must be integers")
            if len(np.unique(groups_o)) != len(groups_o):
                raise InputFormatError(f"{path}: data_optics lists an optics group twice")
            if "rlnOpticsGroup" in particles.columns:
                g = self._numeric(particles["rlnOpticsGroup"], "rlnOpticsGroup")
            elif len(optics) == 1:
                g = np.full(n, groups_o[0])
            else:
                raise InputFormatError(
                    f"{path}: {len(optics)} optics groups but particles have no rlnOpticsGroup"
                )
            lookup = {int(v): i for i, v in enumerate(groups_o)}
            try:
                self.optics_row = np.array([lookup[int(x)] for x in g], dtype=np.int64)
            except KeyError as exc:
                raise InputFormatError(
                    f"{path}: particle optics group {exc.args[0]} is not in data_optics"
                ) from exc
            self.group = g.astype(np.int64)
        else:
            self.optics_row = None
            if "rlnOpticsGroup" in particles.columns:
                self.group = self._numeric(particles["rlnOpticsGroup"], "rlnOpticsGroup")
                self.group = self.group.astype(np.int64)
            else:
                self.group = np.ones(n, dtype=np.int64)

    def _numeric(self, series, name: str) -> np.ndarray:
        try:
            arr = np.asarray(series, dtype=np.float64)
        except (ValueError, TypeError) as exc:
            raise InputFormatError(
                f"{self.path}: column {name} has non-numeric values; fix the file"
            ) from exc
        if not np.all(np.isfinite(arr)):
            bad = int(np.flatnonzero(~np.isfinite(arr))[0])
            raise InputFormatError(
                f"{self.path}: column {name} has a NaN/inf value (row {bad + 1}); fix the file"
            )
        return arr

    def has(self, name: str) -> bool:
        return name in self.particles.columns or (
            self.optics is not None and name in self.optics.columns
        )

    def get(self, name: str) -> np.ndarray | None:
        if name in self.particles.columns:
            return self._numeric(self.particles[name], name)
        if self.optics is not None and name in self.optics.columns:
            return self._numeric(self.optics[name], name)[self.optics_row]
        return None


def _split_image_names(path: Path, names) -> tuple[np.ndarray, np.ndarray]:
    """``"000123@stack.mrcs"`` -> (0-based index 122, ``"stack.mrcs"``)."""
    idx = np.empty(len(names), dtype=np.int64)
    files = []
    for i, raw in enumerate(names):
        text = str(raw).strip()
        at, sep, file = text.partition("@")
        if not sep:
            idx[i], file = 0, text
        else:
            try:
                idx[i] = int(at) - 1
            except (ValueError, OverflowError) as exc:  # not a number, or beyond int64
                raise InputFormatError(
                    f"{path}: rlnImageName {text!r} (row {i + 1}) is not 'index@stack'"
                ) from exc
            if idx[i] < 0:
                raise InputFormatError(
                    f"{path}: rlnImageName {text!r} (row {i + 1}): indices are 1-based"
                )
        files.append(file)
    return idx, np.asarray(files, dtype=str)


def _stack_box_and_pixel(paths: np.ndarray) -> tuple[dict, dict]:
    """Box size and header pixel size of each distinct existing stack (headers only)."""
    from atomicspi_bayes.io.mrc import read_mrc_header

    box, pix = {}, {}
    for p in np.unique(paths):
        if os.path.isfile(p):
            h = read_mrc_header(p)
            box[p], pix[p] = h.nx, h.pixel_size
    return box, pix


def read_star(
    path: str | os.PathLike,
    *,
    allow_outside_paths: bool = False,
    data_dir: str | os.PathLike | None = None,
    fallback_pixel_size: float | None = None,
) -> ParticleMetadata:
    """Read a RELION particles STAR file (3.0, 3.1, 4, 5) into :class:`ParticleMetadata`.

    Args:
        path: the ``.star`` file.
        allow_outside_paths: accept image paths outside the dataset folder.
        data_dir: folder image paths are relative to (default: the STAR file's folder).
        fallback_pixel_size: Å per pixel when the file has none (3.0 files without
            rlnDetectorPixelSize/rlnMagnification); otherwise the stack header is used.

    Pixel size: rlnImagePixelSize, else rlnDetectorPixelSize[µm]·1e4/rlnMagnification, else
    ``fallback_pixel_size``, else the MRC header of the stack (CELLA/MX), else NaN. Box size:
    rlnImageSize, else the stack header, else 0 (unknown: stacks absent).

    Raises:
        InputFormatError: missing file, no particle table, non-numeric/NaN values, unknown
            optics group, defocus without voltage/Cs, unsafe image paths. A missing
            rlnAmplitudeContrast (RELION 3.0 refinements) becomes 0.1, with a warning.
    """
    p = Path(path)
    if not p.is_file():
        raise InputFormatError(f"{p}: particle file not found")
    particles, optics = _pick_blocks(p, _read_blocks(p))
    cols = _Columns(p, particles, optics)
    n = len(particles)

    image_indices, files = _split_image_names(p, particles["rlnImageName"].tolist())
    base = dataset_folder(p, data_dir)
    image_paths = resolve_image_paths(files, p, base, allow_outside_paths=allow_outside_paths)

    pixel = cols.get("rlnImagePixelSize")
    if pixel is None and cols.has("rlnDetectorPixelSize") and cols.has("rlnMagnification"):
        det, mag = cols.get("rlnDetectorPixelSize"), cols.get("rlnMagnification")
        if np.any(mag <= 0):
            raise InputFormatError(f"{p}: rlnMagnification must be positive")
        pixel = det * 1e4 / mag
    box = cols.get("rlnImageSize")
    stack_box, stack_pix = ({}, {})
    if box is None or (pixel is None and fallback_pixel_size is None):
        stack_box, stack_pix = _stack_box_and_pixel(image_paths)
    if pixel is None:
        if fallback_pixel_size is not None:
            pixel = np.full(n, float(fallback_pixel_size))
        else:
            hdr = [stack_pix.get(q) for q in image_paths]
            pixel = np.array([np.nan if v is None else v for v in hdr], dtype=np.float64)
            if np.all(np.isfinite(pixel)):
                log.info("%s: no pixel size in the file; using the stack header", p)
            else:
                log.warning("%s: no pixel size in the file or the stack headers", p)
    if np.any(np.isfinite(pixel) & (pixel <= 0)):
        raise InputFormatError(f"{p}: pixel size must be positive, got {float(np.min(pixel))}")
    if box is None:
        box = np.array([stack_box.get(q, 0) for q in image_paths], dtype=np.float64)
    if np.any(box < 0) or np.any(box != np.round(box)):
        raise InputFormatError(f"{p}: rlnImageSize must be a positive integer")

    has_ctf = cols.has("rlnDefocusU")
    amp_defaulted = False
    voltage, cs, amp = (
        cols.get(k) for k in ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast")
    )
    if has_ctf:
        missing = [
            k for k, v in (("rlnVoltage", voltage), ("rlnSphericalAberration", cs)) if v is None
        ]
        if missing:
            raise InputFormatError(
                f"{p}: CTF columns need {', '.join(missing)} (particles or data_optics)"
            )
        if amp is None:  # RELION 3.0 refinements may omit it; cryoDRGN's default (w=0.1)
            amp_defaulted = True
            amp = np.full(n, DEFAULT_AMPLITUDE_CONTRAST)
        dfu = cols.get("rlnDefocusU")
        dfv = cols.get("rlnDefocusV")
        dfv = dfu if dfv is None else dfv
    else:
        dfu = dfv = np.zeros(n)
    nan = np.full(n, np.nan)
    angle = cols.get("rlnDefocusAngle")
    phase = cols.get("rlnPhaseShift")
    bfac = cols.get("rlnCtfBfactor")
    scale = cols.get("rlnCtfScalefactor")

    rotations = shifts = None
    angle_cols = [cols.get(k) for k in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")]
    has_angles = any(a is not None for a in angle_cols)
    if has_angles:
        euler = np.stack([np.zeros(n) if a is None else a for a in angle_cols], axis=-1)
        rotations = np.asarray(euler_to_matrix(np.deg2rad(euler)), dtype=np.float32)
    ox, oy = cols.get("rlnOriginXAngst"), cols.get("rlnOriginYAngst")
    if ox is None and oy is None and (cols.has("rlnOriginX") or cols.has("rlnOriginY")):
        if not np.all(np.isfinite(pixel)):
            raise InputFormatError(
                f"{p}: rlnOriginX/Y are in pixels but the pixel size is unknown; pass "
                "fallback_pixel_size"
            )
        px_x, px_y = cols.get("rlnOriginX"), cols.get("rlnOriginY")
        ox = None if px_x is None else px_x * pixel
        oy = None if px_y is None else px_y * pixel
    if has_angles or ox is not None or oy is not None:
        shifts = np.stack([np.zeros(n) if o is None else o for o in (ox, oy)], axis=-1)
        shifts = shifts.astype(np.float32)
    if rotations is None and shifts is not None:
        rotations = None  # a pose needs angles; shifts alone (re-centring) are kept

    if amp_defaulted:  # logged last, so an error above stays the only line printed
        log.warning("%s: no rlnAmplitudeContrast; using %.2f", p, DEFAULT_AMPLITUDE_CONTRAST)
    table = particles
    table.attrs["optics"] = optics
    f32 = np.float32
    return ParticleMetadata(
        source=str(p.resolve()),
        image_paths=image_paths,
        image_indices=image_indices,
        pixel_size=pixel.astype(f32),
        box_size=box.astype(np.int64),
        voltage_kv=(nan if voltage is None else voltage).astype(f32),
        cs_mm=(nan if cs is None else cs).astype(f32),
        amplitude_contrast=(nan if amp is None else amp).astype(f32),
        defocus_u=dfu.astype(f32),
        defocus_v=dfv.astype(f32),
        defocus_angle=(np.zeros(n) if angle is None else np.deg2rad(angle)).astype(f32),
        phase_shift=(np.zeros(n) if phase is None else np.deg2rad(phase)).astype(f32),
        ctf_bfactor=(np.zeros(n) if bfac is None else bfac).astype(f32),
        ctf_scale=(np.ones(n) if scale is None else scale).astype(f32),
        optics_group=cols.group,
        rotations=rotations,
        shifts=shifts if rotations is not None else None,
        has_ctf=has_ctf,
        table=table,
    )


# ---- writer ------------------------------------------------------------------------------


def _fmt_column(values) -> list[str]:
    arr = np.asarray(values)
    if arr.dtype.kind in "iub":
        return [str(int(v)) for v in arr]
    if arr.dtype.kind == "f":
        # shortest text that reads back to the same float32 / float64 value
        return [str(v) for v in arr.astype(np.float32 if arr.dtype.itemsize <= 4 else np.float64)]
    out = []
    for v in arr:
        s = str(v)
        if (
            s == ""
            or any(c.isspace() for c in s)
            or s[0] in "_#'\""
            or s.startswith(("data_", "loop_", "save_", "stop_", "global_"))
        ):
            if '"' in s and "'" in s:
                raise InputFormatError(f"STAR value {s!r} contains both quote characters")
            q = "'" if '"' in s else '"'
            s = f"{q}{s}{q}"
        out.append(s)
    return out


def _write_loop(fh, name: str, columns: dict[str, np.ndarray]) -> None:
    fh.write(f"\n# version 30001\n\ndata_{name}\n\nloop_ \n")
    for i, label in enumerate(columns, 1):
        fh.write(f"_{label} #{i} \n")
    formatted = [_fmt_column(v) for v in columns.values()]
    fh.writelines(" ".join(row) + "\n" for row in zip(*formatted, strict=True))
    fh.write(" \n")


def _optics_groups(meta: ParticleMetadata) -> tuple[np.ndarray, list[int]]:
    """Per-particle optics group ids for writing, and the particle index of each group."""
    keys = np.stack(
        [
            meta.optics_group.astype(np.float64),
            meta.voltage_kv,
            meta.cs_mm,
            meta.amplitude_contrast,
            meta.pixel_size,
            meta.box_size.astype(np.float64),
        ],
        axis=1,
    )
    keys = np.where(np.isnan(keys), -1.0, keys)
    uniq, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if len(uniq) == len(np.unique(meta.optics_group)):  # groups are consistent: keep ids
        return meta.optics_group.astype(np.int64), [int(i) for i in first]
    log.info("optics values differ within an optics group: groups renumbered by value")
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return (rank[inverse] + 1).astype(np.int64), [int(first[j]) for j in order]


def write_star(
    path: str | os.PathLike,
    metadata: ParticleMetadata,
    extra_columns: dict[str, np.ndarray] | None = None,
) -> None:
    """Write particles as a RELION 3.1 STAR file (data_optics + data_particles), atomically.

    Image names are written relative to the output folder (``000123@stack.mrcs``); angles
    and phase shift in degrees, origins in Å (rlnOriginXAngst/YAngst). Columns of
    ``metadata.table`` that the writer does not regenerate are passed through.

    Args:
        path: output ``.star`` (temp file in the same folder + fsync + rename).
        metadata: the particles.
        extra_columns: more per-particle columns, ``name -> (N,)`` or ``(N, D)`` array
            (``(N, D)`` becomes ``name1..nameD``); names are STAR labels without ``_``
            (e.g. ``"atomicspiLatentMean"``).
    """
    import pandas as pd

    n = len(metadata)
    out_dir = os.path.abspath(os.path.dirname(os.fspath(path)) or ".")
    groups, group_rows = _optics_groups(metadata)

    optics: dict[str, np.ndarray] = {}
    rows = np.asarray(group_rows)
    src_optics = None
    if isinstance(metadata.table, pd.DataFrame):
        src_optics = metadata.table.attrs.get("optics")
    optics["rlnOpticsGroup"] = groups[rows]
    names = [f"opticsGroup{g}" for g in groups[rows]]
    keep_ids = np.array_equal(groups, metadata.optics_group)
    if keep_ids and isinstance(src_optics, pd.DataFrame) and "rlnOpticsGroupName" in src_optics:
        lut = dict(
            zip(
                src_optics["rlnOpticsGroup"].astype(int),
                src_optics["rlnOpticsGroupName"],
                strict=True,
            )
        )
        names = [str(lut.get(int(g), f"opticsGroup{g}")) for g in groups[rows]]
    optics["rlnOpticsGroupName"] = np.asarray(names, dtype=str)
    for label, arr in (
        ("rlnVoltage", metadata.voltage_kv),
        ("rlnSphericalAberration", metadata.cs_mm),
        ("rlnAmplitudeContrast", metadata.amplitude_contrast),
        ("rlnImagePixelSize", metadata.pixel_size),
    ):
        if np.all(np.isfinite(arr[rows])):
            optics[label] = arr[rows]
    if np.all(metadata.box_size[rows] > 0):
        optics["rlnImageSize"] = metadata.box_size[rows]
    optics["rlnImageDimensionality"] = np.full(len(rows), 2, dtype=np.int64)
    if keep_ids and isinstance(src_optics, pd.DataFrame):  # beam tilt, Zernike, MagMat...
        src = src_optics.set_index(src_optics["rlnOpticsGroup"].astype(int))
        extra = [c for c in src.columns if c not in _OPTICS_COLUMNS]
        if set(int(g) for g in groups[rows]) <= set(src.index):
            for c in extra:
                optics[c] = src.loc[groups[rows].astype(int), c].to_numpy()

    parts: dict[str, np.ndarray] = {}
    rel = np.array([os.path.relpath(q, out_dir) for q in np.unique(metadata.image_paths)])
    lut = dict(zip(np.unique(metadata.image_paths), rel, strict=True))
    parts["rlnImageName"] = np.array(
        [
            f"{i + 1:06d}@{lut[q]}"
            for i, q in zip(metadata.image_indices, metadata.image_paths, strict=True)
        ]
    )
    parts["rlnOpticsGroup"] = groups
    if metadata.has_ctf:
        parts["rlnDefocusU"] = metadata.defocus_u
        parts["rlnDefocusV"] = metadata.defocus_v
        parts["rlnDefocusAngle"] = np.rad2deg(metadata.defocus_angle).astype(np.float32)
        parts["rlnPhaseShift"] = np.rad2deg(metadata.phase_shift).astype(np.float32)
        parts["rlnCtfBfactor"] = metadata.ctf_bfactor
        parts["rlnCtfScalefactor"] = metadata.ctf_scale
    if metadata.rotations is not None:
        euler = np.rad2deg(matrix_to_euler(metadata.rotations)).astype(np.float32)
        parts["rlnAngleRot"], parts["rlnAngleTilt"], parts["rlnAnglePsi"] = euler.T
    if metadata.shifts is not None:
        parts["rlnOriginXAngst"] = metadata.shifts[:, 0]
        parts["rlnOriginYAngst"] = metadata.shifts[:, 1]
    if isinstance(metadata.table, pd.DataFrame) and len(metadata.table) == n:
        for c in metadata.table.columns:
            if (
                isinstance(c, str)
                and c.startswith("rln")
                and c not in _PARTICLE_COLUMNS
                and c not in _OPTICS_COLUMNS
                and c not in parts
            ):
                parts[c] = metadata.table[c].to_numpy()
    for name, values in (extra_columns or {}).items():
        arr = np.asarray(values)
        if not _LABEL.match(name):
            raise InputFormatError(f"{path}: extra column name {name!r} is not a STAR label")
        if arr.shape[:1] != (n,) or arr.ndim > 2:
            raise InputFormatError(
                f"{path}: extra column {name!r} has shape {arr.shape}; expected ({n},) or ({n}, D)"
            )
        if arr.ndim == 1:
            parts[name] = arr
        else:
            for d in range(arr.shape[1]):
                parts[f"{name}{d + 1}"] = arr[:, d]
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("# written by atomicspi_bayes (RELION 3.1 format)\n")
        _write_loop(fh, "optics", optics)
        _write_loop(fh, "particles", parts)
