"""MRC stacks: every shared MRC/CCP4 file, header lies, round trips, flat memory."""

from __future__ import annotations

import gc
import os
import struct
import time
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from io_shared import CRYODRGN, SHARED

from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.io import ImageStack, new_stack, open_stack, read_mrc_header, write_stack

# name -> (n_images, box, pixel size Å) as stated in the SOURCES.md files / headers.
STACKS = {
    CRYODRGN / "hand.mrcs": (100, 64, 1.0),
    CRYODRGN / "hand.5.mrcs": (5, 64, 1.0),  # no "MAP " id, zero machine stamp
    CRYODRGN / "relion31.mrcs": (5, 256, 1.0),
    # cell = 1 Å with MX = 1: voxel = CELLA/MX = 1 Å (a naive CELLA/NX would give 1/30 Å)
    CRYODRGN / "toy_projections.mrcs": (1000, 30, 1.0),
    CRYODRGN / "toymodel_small_nocenter.mrc": (30, 30, 1.0),  # a volume with ISPG 0
    SHARED / "rosettasciio" / "HAADFscan.mrc": (1, 16, 908.661 / 16),  # FEI2 ext. header
}

REJECTED = {
    CRYODRGN / "hand-vol.mrc": "3D volume",
    SHARED / "mrcfile" / "EMD-3197.map": "3D volume",
    SHARED / "gemmi" / "5i55_tiny.ccp4": "3D volume",
    SHARED / "gemmi" / "1pfe_asu.msk": "3D volume",
    SHARED / "rosettasciio" / "Custom_movie.mrc": "3D volume",
    SHARED / "mrcfile" / "emd_3197.png.gz": "not an MRC file",
    SHARED / "mrcfile" / "EMD-3197.map.bz2": "not an MRC file",
    SHARED / "gemmi" / "1pfe_asu.msk.gz": "not an MRC file",
}


@pytest.mark.parametrize("path", list(STACKS), ids=lambda p: p.name)
def test_shared_stacks_match_mrcfile(path):
    n, box, px = STACKS[path]
    stack = open_stack(path)
    assert stack.shape == (n, box, box) and len(stack) == n
    assert stack.pixel_size == pytest.approx(px, rel=1e-5)
    with mrcfile.open(path, permissive=True) as ref:
        data = ref.data.reshape(n, box, box)
        idx = np.unique(np.linspace(0, n - 1, 7).astype(int))
        got = stack[idx]
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, data[idx].astype(np.float32))


def test_haadf_extended_header_is_skipped():
    path = SHARED / "rosettasciio" / "HAADFscan.mrc"
    h = read_mrc_header(path)
    assert h.nsymbt == 909312 and h.data_offset == 1024 + 909312 and h.mode == 6
    raw = np.fromfile(path, dtype="<u2", offset=1024 + 909312).reshape(16, 16)
    np.testing.assert_array_equal(open_stack(path)[0], raw.astype(np.float32))


def test_hand5_is_the_first_five_of_hand():
    np.testing.assert_array_equal(
        open_stack(CRYODRGN / "hand.5.mrcs")[:], open_stack(CRYODRGN / "hand.mrcs")[:5]
    )


def test_volume_and_movie_headers_parse():
    emd = read_mrc_header(SHARED / "mrcfile" / "EMD-3197.map")
    assert (emd.nx, emd.ny, emd.nz, emd.mode, emd.ispg, emd.nsymbt) == (20, 20, 20, 2, 1, 0)
    assert emd.pixel_size == pytest.approx(11.4)
    movie = read_mrc_header(SHARED / "rosettasciio" / "Custom_movie.mrc")
    assert (movie.nx, movie.ny, movie.nz, movie.mode, movie.ispg) == (16, 16, 30, 6, 1)
    assert movie.pixel_size is None  # CELLA is negative in this file: no usable pixel size


def test_permuted_axes_and_int8_headers_parse():
    h = read_mrc_header(SHARED / "gemmi" / "5i55_tiny.ccp4")
    assert (h.nx, h.ny, h.nz, h.mode, h.ispg, h.nsymbt) == (8, 6, 10, 2, 4, 160)
    assert h.voxel_size == pytest.approx((29.45 / 60, 10.5 / 24, 29.7 / 60), rel=1e-5)
    m = read_mrc_header(SHARED / "gemmi" / "1pfe_asu.msk")
    assert (m.nx, m.ny, m.nz, m.mode, m.ispg, m.nsymbt) == (49, 50, 49, 0, 182, 960)


@pytest.mark.parametrize("path", list(REJECTED), ids=lambda p: p.name)
def test_shared_non_stacks_rejected_in_one_line(path):
    with pytest.raises(InputFormatError) as err:
        open_stack(path)
    msg = str(err.value)
    assert "\n" not in msg and path.name in msg
    assert REJECTED[path].split()[-1] in msg or "compressed" in msg


def _stack_bytes(tmp_path: Path, n=4, box=8, mode=2) -> Path:
    p = tmp_path / "s.mrcs"
    dtype = {0: np.int8, 1: np.int16, 2: np.float32, 6: np.uint16, 12: np.float16}[mode]
    data = (np.arange(n * box * box) % 100).reshape(n, box, box).astype(dtype)
    with mrcfile.new(p, overwrite=True) as m:
        m.set_data(data)
        m.set_image_stack()
        m.voxel_size = 2.0
    return p


@pytest.mark.parametrize("mode", [0, 1, 2, 6, 12])
def test_modes_are_converted_to_float32(tmp_path, mode):
    p = _stack_bytes(tmp_path, mode=mode)
    s = open_stack(p)
    assert s[1].dtype == np.float32
    np.testing.assert_array_equal(s[1], (np.arange(64, 128) % 100).reshape(8, 8))
    assert s.pixel_size == 2.0


def test_big_endian_stack(tmp_path):
    p = tmp_path / "be.mrcs"
    data = np.arange(2 * 4 * 4, dtype=">f4").reshape(2, 4, 4)
    with mrcfile.new(p, overwrite=True) as m:
        m.set_data(data)
        m.set_image_stack()
    s = open_stack(p)
    assert s.header.byte_order == ">"
    np.testing.assert_array_equal(s[:], data.astype(np.float32))


def _patch(path: Path, offset: int, fmt: str, value) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(struct.pack(fmt, value))


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "match"),
    [
        (8, "<i", 10**6, "truncated or lying header"),  # NZ lie: 1M images
        (0, "<i", 2**30, "invalid"),  # absurd NX
        (0, "<i", -5, "invalid"),
        (12, "<i", 4, "mode 4"),  # complex
        (12, "<i", 101, "mode 101"),
        (12, "<i", 77, "not an MRC file"),
        (92, "<i", 10**9, "NSYMBT"),
        (92, "<i", -1, "NSYMBT"),
    ],
)
def test_header_lies_are_refused_before_mapping(tmp_path, offset, fmt, value, match):
    p = _stack_bytes(tmp_path)
    _patch(p, offset, fmt, value)
    with pytest.raises(InputFormatError, match=match):
        open_stack(p)


def test_truncated_and_tiny_files(tmp_path):
    p = _stack_bytes(tmp_path)
    raw = p.read_bytes()
    p.write_bytes(raw[:-10])
    with pytest.raises(InputFormatError, match="truncated"):
        open_stack(p)
    p.write_bytes(raw[:500])
    with pytest.raises(InputFormatError, match="shorter than the 1024-byte"):
        open_stack(p)
    p.write_bytes(b"")
    with pytest.raises(InputFormatError, match="empty"):
        open_stack(p)
    with pytest.raises(InputFormatError, match="not found"):
        open_stack(tmp_path / "missing.mrcs")


def test_non_square_refused(tmp_path):
    p = tmp_path / "rect.mrcs"
    with mrcfile.new(p) as m:
        m.set_data(np.zeros((2, 4, 6), np.float32))
        m.set_image_stack()
    with pytest.raises(InputFormatError, match="not square"):
        open_stack(p)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 6),
    box=st.integers(1, 24),
    px=st.floats(0.1, 20.0, allow_nan=False),
    seed=st.integers(0, 2**32 - 1),
)
def test_write_stack_roundtrip(tmp_path, n, box, px, seed):
    images = np.random.default_rng(seed).normal(size=(n, box, box)).astype(np.float32)
    out = tmp_path / "rt.mrcs"
    write_stack(out, images, px)
    s = open_stack(out)
    np.testing.assert_array_equal(s[:], images)
    assert s.pixel_size == pytest.approx(px, rel=1e-6)
    s.close()
    with mrcfile.open(out) as m:  # a valid MRC2014 file for other programs
        assert m.header.mode == 2 and m.header.ispg == 0
        assert m.voxel_size.x == pytest.approx(px, rel=1e-6)
        assert float(m.header.dmax) == pytest.approx(float(images.max()))
        assert float(m.header.dmean) == pytest.approx(float(images.mean()), abs=1e-5)


def test_writer_is_atomic_on_error(tmp_path):
    out = tmp_path / "a.mrcs"
    write_stack(out, np.ones((2, 4, 4), np.float32), 1.0)
    before = out.read_bytes()
    with pytest.raises(RuntimeError), new_stack(out, 3, 4, 1.0) as arr:
        arr[0] = 5.0
        raise RuntimeError("killed mid-write")
    assert out.read_bytes() == before  # old result intact
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.mrcs"]  # no temp file
    with pytest.raises(InputFormatError, match="pixel size"):
        write_stack(out, np.ones((2, 4, 4), np.float32), -1.0)
    with pytest.raises(InputFormatError, match=r"not writable|does not exist"):
        write_stack(tmp_path / "nope" / "x.mrcs", np.ones((1, 4, 4), np.float32), 1.0)


def _rss() -> dict[str, int]:
    """Resident memory of this process in bytes: total, anonymous and file-backed."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, val = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(val.split()[0]) * 1024
    return out


@pytest.mark.slow
def test_large_stack_memory_stays_flat(tmp_path):
    """20000 x 64 x 64 float32 (328 MB) written in chunks; open + random access is flat."""
    n, box = 20000, 64
    path = tmp_path / "big.mrcs"
    t0 = time.perf_counter()
    with new_stack(path, n, box, 1.3) as arr:
        for s in range(0, n, 1000):
            m = min(1000, n - s)
            arr[s : s + m] = np.arange(s, s + m, dtype=np.float32)[:, None, None]
    write_s = time.perf_counter() - t0
    del arr  # drop the writer's mapping so only open_stack's pages are counted
    gc.collect()
    assert path.stat().st_size == 1024 + n * box * box * 4
    # Drop the file's pages so the check measures what open_stack maps, not the writer.
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    gc.collect()
    rss0 = _rss()
    stack = open_stack(path)
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = np.sort(rng.choice(n, size=64, replace=False))
        batch = stack[idx]
        np.testing.assert_array_equal(batch[:, 5, 7], idx.astype(np.float32))
    del batch
    rss1 = _rss()
    growth = {k: rss1[k] - rss0[k] for k in rss0}
    touched = 50 * 64 * box * box * 4  # bytes the 50 batches needed: 52 MB of 328 MB
    print(
        f"large-stack: {n}x{box}x{box} float32 = {path.stat().st_size / 1e6:.0f} MB, "
        f"write {write_s:.1f} s, 50 random batches of 64: RSS growth "
        + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in growth.items())
    )
    assert growth["RssAnon"] < 16 * 2**20  # nothing of the file is copied into the heap
    # File-backed pages: only those of the requested images (no read-ahead of the rest).
    assert growth["VmRSS"] < touched + 32 * 2**20
    assert isinstance(stack, ImageStack)
