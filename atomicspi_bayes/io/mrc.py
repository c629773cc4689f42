"""MRC/MRCS image stacks: validated header, memory-mapped lazy access, atomic writers.

The 1024-byte header is parsed and checked against the file length *before* anything is
mapped, so a lying header can neither allocate absurd memory nor crash the reader; data
start at ``1024 + NSYMBT`` (extended header honoured). Images are returned as float32
``(L, L)`` arrays in MRC order (numpy shape ``(NZ, NY, NX)``, x fastest; SCIENCE.md §5).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atomicspi_bayes.atomic_files import atomic_path
from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.io._errors import one_line

__all__ = ["ImageStack", "MrcHeader", "new_stack", "open_stack", "read_mrc_header", "write_stack"]

log = logging.getLogger(__name__)

HEADER_BYTES = 1024
# Supported real modes -> numpy dtype (native kind; byte order added per file).
_MODE_DTYPES = {0: "i1", 1: "i2", 2: "f4", 6: "u2", 12: "f2"}
_MODE_NAMES = {3: "complex int16", 4: "complex float32", 101: "packed 4-bit"}
_MAX_DIM = 1 << 24  # no detector/particle axis is longer than 16M pixels


def _header_dtype(byte_order: str) -> np.dtype:
    import mrcfile.dtypes

    return mrcfile.dtypes.HEADER_DTYPE.newbyteorder(byte_order)


@dataclass(frozen=True)
class MrcHeader:
    """The fields of an MRC header this package uses, already validated.

    Attributes:
        path: the file.
        nx, ny, nz: dimensions (x fastest; numpy shape ``(nz, ny, nx)``).
        mode: MRC data mode (0, 1, 2, 6, 12 supported).
        ispg: space group (0 image stack, 1-230 volume, 401 volume stack).
        nsymbt: extended header length in bytes.
        byte_order: ``"<"`` or ``">"``.
        data_offset: byte offset of the data, ``1024 + nsymbt``.
        dtype: on-disk numpy dtype of one value.
        voxel_size: ``(x, y, z)`` in Å from CELLA/M[XYZ]; entries are ``nan`` when unset.
    """

    path: str
    nx: int
    ny: int
    nz: int
    mode: int
    ispg: int
    nsymbt: int
    byte_order: str
    data_offset: int
    dtype: np.dtype
    voxel_size: tuple[float, float, float]

    @property
    def pixel_size(self) -> float | None:
        """In-plane pixel size in Å, or ``None`` when the header does not set a valid one."""
        px = self.voxel_size[0]
        return float(px) if np.isfinite(px) and px > 0 else None

    @property
    def data_bytes(self) -> int:
        return self.nx * self.ny * self.nz * self.dtype.itemsize


def _sniff_non_mrc(path: Path, head: bytes) -> None:
    if head[:2] == b"\x1f\x8b":
        raise InputFormatError(
            f"{path}: gzip-compressed, not an MRC file; decompress it first (gunzip) if it "
            "holds an MRC file"
        )
    if head[:3] == b"BZh":
        raise InputFormatError(f"{path}: bzip2-compressed, not an MRC file; decompress it first")
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        raise InputFormatError(f"{path}: a PNG picture, not an MRC file")
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        raise InputFormatError(f"{path}: a TIFF file, not an MRC file")


def _plausible(h: np.ndarray) -> bool:
    dims = [int(h["nx"]), int(h["ny"]), int(h["nz"])]
    return int(h["mode"]) in (*_MODE_DTYPES, *_MODE_NAMES) and all(0 < d < _MAX_DIM for d in dims)


def read_mrc_header(path: str | os.PathLike) -> MrcHeader:
    """Parse and validate the header of an MRC/MRCS/CCP4 file (reads 1024 bytes).

    Checks: file exists and is at least 1024 bytes; not a compressed/picture file; a known
    byte order (machine stamp, or the interpretation with sane dimensions); supported mode;
    ``1024 + NSYMBT + NX*NY*NZ*itemsize`` does not exceed the file length.

    Raises:
        InputFormatError: one line naming the file and what is wrong.
    """
    p = Path(path)
    if not p.exists():
        raise InputFormatError(f"{p}: image file not found")
    if not p.is_file():
        raise InputFormatError(f"{p}: not a regular file")
    size = p.stat().st_size
    try:
        with open(p, "rb") as fh:
            head = fh.read(HEADER_BYTES)
    except OSError as exc:
        raise InputFormatError(f"{p}: cannot read ({one_line(exc.strerror or exc)})") from exc
    _sniff_non_mrc(p, head)
    if size == 0:
        raise InputFormatError(f"{p}: empty file, not an MRC file")
    if size < HEADER_BYTES:
        raise InputFormatError(
            f"{p}: truncated: {size} bytes, shorter than the 1024-byte MRC header"
        )
    machst = head[212:214]
    if machst[:1] == b"\x44":
        orders = ["<"]
    elif machst == b"\x11\x11":
        orders = [">"]
    else:  # old writers leave the stamp empty: take the byte order that makes sense
        orders = ["<", ">"]
    h = None
    for order in orders:
        cand = np.frombuffer(head, dtype=_header_dtype(order), count=1)[0]
        if _plausible(cand):
            h, byte_order = cand, order
            break
    if h is None:
        cand = np.frombuffer(head, dtype=_header_dtype(orders[0]), count=1)[0]
        mode = int(cand["mode"])
        if mode in (*_MODE_DTYPES, *_MODE_NAMES) and bytes(cand["map"]) == b"MAP ":
            dims = (int(cand["nx"]), int(cand["ny"]), int(cand["nz"]))
            raise InputFormatError(
                f"{p}: header dimensions {dims} are invalid (must be 1..{_MAX_DIM - 1}); "
                "the file is corrupt"
            )
        raise InputFormatError(
            f"{p}: not an MRC file (header mode {mode}, no valid dimensions); check the path"
        )
    mode = int(h["mode"])
    if mode not in _MODE_DTYPES:
        raise InputFormatError(
            f"{p}: MRC mode {mode} ({_MODE_NAMES.get(mode, 'unknown')}) is not supported; "
            "convert the images to mode 2 (float32)"
        )
    nx, ny, nz = int(h["nx"]), int(h["ny"]), int(h["nz"])
    nsymbt = int(h["nsymbt"])
    if nsymbt < 0 or HEADER_BYTES + nsymbt > size:
        raise InputFormatError(
            f"{p}: extended header length NSYMBT={nsymbt} does not fit in the {size}-byte "
            "file; the header is corrupt"
        )
    dtype = np.dtype(_MODE_DTYPES[mode]).newbyteorder(byte_order)
    offset = HEADER_BYTES + nsymbt
    need = nx * ny * nz * dtype.itemsize
    have = size - offset
    if need > have:
        raise InputFormatError(
            f"{p}: truncated or lying header: {nz} x {ny} x {nx} mode-{mode} values need "
            f"{need} bytes after the header but the file holds {have}; the file is incomplete"
        )
    if need < have:
        log.warning("%s: %d bytes after the data are ignored", p, have - need)
    cella = h["cella"]
    m = (int(h["mx"]), int(h["my"]), int(h["mz"]))
    cell = (float(cella["x"]), float(cella["y"]), float(cella["z"]))
    voxel = tuple(
        c / mi if mi > 0 and np.isfinite(c) and c > 0 else np.nan
        for c, mi in zip(cell, m, strict=True)
    )
    return MrcHeader(
        path=str(p),
        nx=nx,
        ny=ny,
        nz=nz,
        mode=mode,
        ispg=int(h["ispg"]),
        nsymbt=nsymbt,
        byte_order=byte_order,
        data_offset=offset,
        dtype=dtype,
        voxel_size=voxel,  # type: ignore[arg-type]
    )


class ImageStack:
    """A lazy, memory-mapped ``(N, L, L)`` stack of images; indexing returns float32 arrays.

    Nothing is read until indexed; ``stack[idx]`` copies only the requested images (and
    converts them to native float32). ``len(stack)`` is N, ``stack.shape`` is ``(N, L, L)``.

    Attributes:
        path: the file.
        header: the validated :class:`MrcHeader`.
        pixel_size: Å per pixel from the header (CELLA/MX) or ``None`` when unset.
    """

    dtype = np.dtype(np.float32)
    ndim = 3

    def __init__(self, path: str | os.PathLike, header: MrcHeader | None = None):
        self.header = header if header is not None else read_mrc_header(path)
        self.path = self.header.path
        h = self.header
        self.shape = (h.nz, h.ny, h.nx)
        self._raw: np.memmap | None = None
        self._fd: int | None = None

    @property
    def raw(self) -> np.memmap:
        """The on-disk values as a read-only ``np.memmap`` (mapped on first use)."""
        if self._raw is None:
            h = self.header
            self._raw = np.memmap(
                h.path, dtype=h.dtype, mode="r", offset=h.data_offset, shape=self.shape
            )
            mm = getattr(self._raw, "_mmap", None)
            if mm is not None and hasattr(mmap, "MADV_RANDOM"):
                # Minibatches hit random images: no kernel read-ahead of neighbours.
                with contextlib.suppress(OSError):
                    mm.madvise(mmap.MADV_RANDOM)
        return self._raw

    @property
    def n_images(self) -> int:
        return self.shape[0]

    @property
    def box_size(self) -> int:
        return self.shape[1]

    @property
    def pixel_size(self) -> float | None:
        return self.header.pixel_size

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        return np.asarray(self.raw[key], dtype=np.float32)

    def read(self, indices) -> np.ndarray:
        """``(B, L, L)`` float32 copies of images ``indices`` (any order, repeats allowed).

        Reads with ``os.preadv`` into a fresh buffer (one read per run of consecutive
        images) instead of touching the memory map: nothing stays mapped, so streaming a
        stack larger than RAM keeps the process's resident memory at the batch size (pages
        touched through a map count in RSS until unmapped). Thread-safe (no file position).

        Raises:
            InputFormatError: an index outside ``[0, N)``, or the file became shorter than
                its header says since it was opened.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        h = self.header
        n = self.shape[0]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise InputFormatError(
                f"{self.path}: image indices must be in [0, {n}), got {idx.min()}..{idx.max()}"
            )
        uniq, inverse = np.unique(idx, return_inverse=True)
        raw = np.empty((uniq.size, h.ny, h.nx), dtype=h.dtype)
        if uniq.size:
            image_bytes = h.nx * h.ny * h.dtype.itemsize
            flat = raw.reshape(-1).view(np.uint8)
            breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
            starts = np.concatenate([[0], breaks])
            stops = np.concatenate([breaks, [uniq.size]])
            fd = self._file()
            for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
                _pread_into(
                    fd,
                    memoryview(flat[a * image_bytes : b * image_bytes]),
                    h.data_offset + int(uniq[a]) * image_bytes,
                    self.path,
                )
        return raw.astype(np.float32, copy=False)[inverse.reshape(-1)]

    def _file(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError as exc:
                raise InputFormatError(
                    f"{self.path}: cannot open ({one_line(exc.strerror or exc)})"
                ) from exc
        return self._fd

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.asarray(self.raw, dtype=np.float32)
        return out if dtype is None else out.astype(dtype)

    def close(self) -> None:
        """Unmap the file (the object can be indexed again: it re-maps lazily)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._raw is not None:
            mm = getattr(self._raw, "_mmap", None)
            self._raw = None
            if mm is not None:
                with contextlib.suppress(BufferError):
                    mm.close()

    def __enter__(self) -> ImageStack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ImageStack({self.path!r}, shape={self.shape}, pixel_size={self.pixel_size})"


_PREAD_CHUNK = 1 << 26  # bytes per system call (Linux caps one read at ~2 GB)


def _pread_into(fd: int, view: memoryview, offset: int, path: str) -> None:
    """Fill ``view`` (bytes) from ``fd`` at ``offset``; short reads are retried."""
    done, total = 0, len(view)
    while done < total:
        part = view[done : min(total, done + _PREAD_CHUNK)]
        if hasattr(os, "preadv"):
            got = os.preadv(fd, [part], offset + done)
        else:  # pragma: no cover - platforms without preadv (macOS < 11)
            data = os.pread(fd, len(part), offset + done)
            part[: len(data)] = data
            got = len(data)
        if got == 0:
            raise InputFormatError(
                f"{path}: ended at byte {offset + done}, before the images its header "
                "promises; the file was truncated after it was opened"
            )
        done += got


def open_stack(path: str | os.PathLike) -> ImageStack:
    """Open an MRC/MRCS image stack lazily as ``(N, L, L)`` float32 (never reads the data).

    A 2D MRC file is a stack of one image. 3D volumes (space group 1-230 in a file not
    named ``.mrcs``, or volume stacks, ISPG 401) and non-square images are refused.

    Raises:
        InputFormatError: missing, truncated, corrupt or non-MRC file, unsupported mode,
            a volume, or non-square images.
    """
    h = read_mrc_header(path)
    p = Path(h.path)
    if h.ispg == 401:
        raise InputFormatError(
            f"{p}: a stack of volumes (ISPG 401), not an image stack; pass 2D particle images"
        )
    if 1 <= h.ispg <= 230:
        if p.suffix.lower() != ".mrcs":
            raise InputFormatError(
                f"{p}: a 3D volume (ISPG {h.ispg}, {h.nx}x{h.ny}x{h.nz}), not an image stack; "
                "pass 2D particle images (.mrcs)"
            )
        log.warning("%s: .mrcs with volume space group %d read as an image stack", p, h.ispg)
    if h.nx != h.ny:
        raise InputFormatError(
            f"{p}: images are {h.nx}x{h.ny} pixels, not square; particle images must be LxL"
        )
    vx, vy = h.voxel_size[:2]
    if np.isfinite(vx) and np.isfinite(vy) and abs(vx - vy) > 1e-4 * max(vx, vy):
        log.warning("%s: anisotropic pixel %.4f x %.4f Å; using x", p, vx, vy)
    return ImageStack(p, h)


def _check_pixel_size(path, pixel_size: float) -> float:
    px = float(pixel_size)
    if not np.isfinite(px) or px <= 0:
        raise InputFormatError(f"{path}: pixel size must be a positive number of Å, got {px}")
    return px


@contextlib.contextmanager
def new_stack(
    path: str | os.PathLike, n_images: int, box_size: int, pixel_size: float
) -> Iterator[np.memmap]:
    """Create an ``(N, L, L)`` float32 MRC stack and yield its writable memmap (atomic).

    Fill the array in chunks (memory stays flat for stacks larger than RAM); on a clean
    exit the header statistics are computed chunk by chunk, the file is fsynced and renamed
    onto ``path``. On an exception nothing is left behind.

    Args:
        path: output ``.mrcs`` path.
        n_images, box_size: N and L.
        pixel_size: Å per pixel, stored as the voxel size (CELLA = L * pixel_size).
    """
    import mrcfile

    n, box = int(n_images), int(box_size)
    if n < 1 or box < 1:
        raise InputFormatError(f"{path}: stack shape ({n}, {box}, {box}) must be positive")
    px = _check_pixel_size(path, pixel_size)
    with atomic_path(path) as tmp:
        mrc = mrcfile.new_mmap(str(tmp), shape=(n, box, box), mrc_mode=2, overwrite=True)
        try:
            mrc.set_image_stack()
            mrc.voxel_size = px
            yield mrc.data
            data = mrc.data
            chunk = max(1, (1 << 24) // (box * box))  # ~64 MB of float32 per chunk
            lo, hi, total, total2 = np.inf, -np.inf, 0.0, 0.0
            for s in range(0, n, chunk):
                block = np.asarray(data[s : s + chunk], dtype=np.float64)
                lo, hi = min(lo, block.min()), max(hi, block.max())
                total += block.sum()
                total2 += np.square(block).sum()
            count = n * box * box
            mean = total / count
            h = mrc.header
            h.dmin, h.dmax, h.dmean = np.float32(lo), np.float32(hi), np.float32(mean)
            h.rms = np.float32(np.sqrt(max(total2 / count - mean * mean, 0.0)))
            mrc.flush()
        finally:
            mrc.close()


def write_stack(path: str | os.PathLike, images: np.ndarray, pixel_size: float) -> None:
    """Write ``(N, L, L)`` (or one ``(L, L)``) images as a mode-2 MRC stack (atomic).

    Args:
        path: output ``.mrcs`` path (temp file in the same folder, fsync, rename).
        images: real-space images, converted to float32; may be a memmap (copied in chunks).
        pixel_size: Å per pixel, stored as the header voxel size.
    """
    arr = images if isinstance(images, np.ndarray) else np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[0] == 0:
        raise InputFormatError(f"{path}: images must be (N, L, L) with N >= 1, got {arr.shape}")
    if np.iscomplexobj(arr):
        raise InputFormatError(f"{path}: images must be real, got {arr.dtype}")
    n, box = arr.shape[0], arr.shape[1]
    chunk = max(1, (1 << 24) // (box * box))
    with new_stack(path, n, box, pixel_size) as out:
        for s in range(0, n, chunk):
            out[s : s + chunk] = arr[s : s + chunk]
