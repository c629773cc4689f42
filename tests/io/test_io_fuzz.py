"""Fuzzed readers: mutated copies of the shared files either read correctly or raise
InputFormatError (one line) — never another exception, never a huge allocation.

Mutations: truncation, bit flips, random byte runs, header-field lies (MRC), text edits
(STAR: NaN/inf, negative numbers, deleted/renamed columns, unicode and ``..`` paths). The
number of cases is set by ``ATOMICSPI_FUZZ_EXAMPLES`` (default 60 per reader, a few
hundred in all; the full run uses more).
"""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from io_shared import CRYODRGN, SHARED

from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.io import (
    ParticleDataset,
    load_cryodrgn_pickle,
    load_structure,
    open_stack,
    read_particles,
)

N = int(os.environ.get("ATOMICSPI_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=N,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

MRC_SOURCES = [
    CRYODRGN / "hand.5.mrcs",
    SHARED / "rosettasciio" / "HAADFscan.mrc",
    SHARED / "gemmi" / "5i55_tiny.ccp4",
    CRYODRGN / "toymodel_small_nocenter.mrc",
]
STAR_SOURCES = [
    CRYODRGN / "relion31.v2.star",
    CRYODRGN / "relion5.star",
    CRYODRGN / "FinalRefinement-OriginalParticles-PfCRT.star",
]
PKL_SOURCES = [CRYODRGN / "ctf1.pkl", CRYODRGN / "pose.star.pkl", CRYODRGN / "hand_rot_trans.pkl"]
PDB_SOURCE = SHARED / "gemmi" / "1orc.pdb"


def _mutate_bytes(data: bytes, draw) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "run", "empty", "append"]))
    buf = bytearray(data)
    if kind == "truncate":
        return bytes(buf[: draw(st.integers(0, len(buf)))])
    if kind == "empty":
        return b""
    if kind == "append":
        return bytes(buf) + draw(st.binary(min_size=1, max_size=64))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            pos = draw(st.integers(0, len(buf) - 1))
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        return bytes(buf)
    start = draw(st.integers(0, max(0, len(buf) - 1)))
    run = draw(st.binary(min_size=1, max_size=32))
    buf[start : start + len(run)] = run
    return bytes(buf)


def _read_or_refused(read, path, **kwargs):
    """``read(path)``, or None when it refused with one InputFormatError line (counted)."""
    try:
        result = read(path, **kwargs)
    except InputFormatError as exc:
        assert "\n" not in str(exc)
        event("refused: InputFormatError")
        return None
    event("read")
    return result


# MRC header words a liar would change: NX NY NZ MODE, MX, CELLA x, ISPG, NSYMBT, MACHST.
_WORDS = {0: "<i", 4: "<i", 8: "<i", 12: "<i", 28: "<i", 40: "<f", 88: "<i", 92: "<i"}


@FUZZ
@given(data=st.data())
def test_fuzz_mrc(tmp_path, data):
    src = data.draw(st.sampled_from(MRC_SOURCES), label="source")
    raw = bytearray(src.read_bytes())
    if data.draw(st.booleans(), label="header lie"):
        off = data.draw(st.sampled_from(sorted(_WORDS)))
        fmt = _WORDS[off]
        value = data.draw(
            st.sampled_from([0, -1, 1, 2, 3, 4, 6, 12, 101, 401, 2**31 - 1, -(2**31), 10**6])
            if fmt == "<i"
            else st.sampled_from([0.0, -1.0, float("nan"), float("inf"), 1e30])
        )
        raw[off : off + 4] = struct.pack(fmt, value)
    else:
        raw = bytearray(_mutate_bytes(bytes(raw), data.draw))
    p = tmp_path / ("f" + src.suffix)
    p.write_bytes(bytes(raw))
    stack = _read_or_refused(open_stack, p)
    if stack is None:
        return
    n = len(stack)
    assert stack.shape == (n, stack.box_size, stack.box_size) and n >= 1
    assert p.stat().st_size >= 1024 + n * stack.box_size**2 * stack.header.dtype.itemsize
    img = stack[[0, n - 1]]  # reading the claimed images works and stays in the file
    assert img.dtype == np.float32 and img.shape == (2, stack.box_size, stack.box_size)
    stack.close()


_STAR_EDITS = [
    ("13108.082418", "nan"),
    ("13108.082418", "inf"),
    ("13108.082418", "-1e400"),
    ("2.806000", "-2.806"),
    ("2.806000", "0"),
    ("0.890000", "abc"),
    ("_rlnImageName", "_rlnImageNameX"),
    ("_rlnOpticsGroup #23", "_rlnOpticsGroupZ #23"),
    ("_rlnVoltage", "_rlnVoltageQ"),
    ("000001@relion31.mrcs", "000001@../../etc/passwd"),
    ("000001@relion31.mrcs", "000001@/etc/passwd"),
    ("000001@relion31.mrcs", "000000@relion31.mrcs"),
    ("000001@relion31.mrcs", "-5@relion31.mrcs"),
    ("000001@relion31.mrcs", "000001@ünï çødé.mrcs"),
    ("000001@relion31.mrcs", "999999@relion31.mrcs"),
    ("1@toy_images_a.mrcs", "1@sub/../../x.mrcs"),
    ("data_optics", "data_opticz"),
    ("data_particles", "data_"),
    ("loop_", ""),
    ("           1 opticsGroup1", "           7 opticsGroup1"),
    ("opticsGroup1            1", "opticsGroup1            1.5"),
    ("10000.000000", "0.0"),
    ("10000.000000", "-10000"),
    ("1.035000", "nan"),
    ("87.629070", "1e309"),
]


@FUZZ
@given(data=st.data())
def test_fuzz_star(tmp_path, data):
    src = data.draw(st.sampled_from(STAR_SOURCES), label="source")
    text = src.read_text()
    if data.draw(st.booleans(), label="text edit"):
        edits = data.draw(st.lists(st.sampled_from(_STAR_EDITS), min_size=1, max_size=3))
        for old, new in edits:
            text = text.replace(old, new, data.draw(st.sampled_from([1, -1])))
        blob = text.encode("utf-8")
    else:
        blob = _mutate_bytes(text.encode("utf-8"), data.draw)
    p = tmp_path / "p.star"
    p.write_bytes(blob)
    if (tmp_path / "relion31.mrcs").exists() is False:
        (tmp_path / "relion31.mrcs").symlink_to(CRYODRGN / "relion31.mrcs")
    meta = _read_or_refused(read_particles, p)
    if meta is None:
        return
    assert len(meta) >= 1
    for field in ("defocus_u", "defocus_v", "voltage_kv", "cs_mm"):
        values = getattr(meta, field)
        assert values.shape == (len(meta),)
        if meta.has_ctf:
            assert np.all(np.isfinite(values))
    px = meta.pixel_size
    assert np.all(np.isnan(px) | (px > 0))
    assert all(str(q).startswith(str(tmp_path)) for q in meta.image_paths)  # no escape
    if meta.rotations is not None:
        assert np.all(np.isfinite(meta.rotations)) and np.all(np.isfinite(meta.shifts))
    try:
        ParticleDataset(meta)
    except InputFormatError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(data=st.data())
def test_fuzz_cs(tmp_path, data):
    src = CRYODRGN / "cryosparc_P12_J24_001_particles.cs"
    raw = src.read_bytes()
    p = tmp_path / "p.cs"
    # mutate mostly the header (first 2 kB) where lies matter, sometimes anywhere
    head = _mutate_bytes(raw[:2048], data.draw)
    p.write_bytes(head + raw[2048:] if data.draw(st.booleans()) else _mutate_bytes(raw, data.draw))
    meta = _read_or_refused(read_particles, p)
    if meta is None:
        return
    assert len(meta) >= 1 and np.all(meta.pixel_size > 0)


@FUZZ
@given(data=st.data())
def test_fuzz_pickle(tmp_path, data):
    src = data.draw(st.sampled_from(PKL_SOURCES), label="source")
    p = tmp_path / "x.pkl"
    p.write_bytes(_mutate_bytes(src.read_bytes(), data.draw))
    obj = _read_or_refused(load_cryodrgn_pickle, p, allow_pickle=True)
    if obj is None:
        return
    arrays = obj if isinstance(obj, tuple | list) else [obj]
    assert all(isinstance(a, np.ndarray | int | float | str | bytes) for a in arrays)


@FUZZ
@given(data=st.data())
def test_fuzz_pdb(tmp_path, data):
    lines = PDB_SOURCE.read_text().splitlines(keepends=True)
    if data.draw(st.booleans(), label="line edit"):
        for _ in range(data.draw(st.integers(1, 5))):
            i = data.draw(st.integers(0, len(lines) - 1))
            line = lines[i]
            if line.startswith(("ATOM", "HETATM")):
                col = data.draw(st.integers(0, max(0, len(line) - 2)))
                ch = data.draw(st.sampled_from(list("X9 -.*é\t")))
                lines[i] = line[:col] + ch + line[col + 1 :]
        blob = "".join(lines).encode("utf-8")
    else:
        blob = _mutate_bytes("".join(lines).encode(), data.draw)
    p = tmp_path / "m.pdb"
    p.write_bytes(blob)
    model = _read_or_refused(load_structure, p)
    if model is None:
        return
    assert model.n_atoms >= 1 and np.all(np.isfinite(model.coords))


def test_fuzz_case_count_is_meaningful():
    assert N * 5 >= 300 or N < 60  # default: 5 readers x 60 = 300 cases in CI


@pytest.mark.parametrize("source", MRC_SOURCES, ids=lambda p: p.name)
def test_unmutated_sources_are_fine(source):
    if source.name in ("5i55_tiny.ccp4", "toymodel_small_nocenter.mrc"):
        try:
            open_stack(source)
        except InputFormatError:
            pass
    else:
        assert len(open_stack(source)) >= 1
