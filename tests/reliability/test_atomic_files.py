"""The one atomic writer (atomicspi_bayes.atomic_files) that io, landscape, kinetics, report,
diagnostics and pipeline write their outputs with: all or nothing, no temporaries left,
OS errors as one line naming the file."""

from __future__ import annotations

import errno
import os
import stat

import numpy as np
import pytest

from atomicspi_bayes.atomic_files import (
    atomic_open,
    atomic_path,
    save_npz_atomic,
    write_bytes_atomic,
    write_text_atomic,
)
from atomicspi_bayes.errors import InputFormatError


def test_write_bytes_creates_folders_and_replaces_whole_file(tmp_path):
    target = tmp_path / "a" / "b" / "out.bin"
    assert write_bytes_atomic(target, b"first") == target
    write_bytes_atomic(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_text_and_npz_keep_the_given_name_and_leave_no_temporary(tmp_path):
    # numpy.savez appends ".npz" to a path without it: the writer must not let that happen
    npz = save_npz_atomic(tmp_path / "truth.data", a=np.arange(3), b=np.eye(2))
    text = write_text_atomic(tmp_path / "summary.json", '{"é": 1}')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json", "truth.data"]
    with np.load(npz) as loaded:
        np.testing.assert_array_equal(loaded["a"], np.arange(3))
        np.testing.assert_array_equal(loaded["b"], np.eye(2))
    assert text.read_text(encoding="utf-8") == '{"é": 1}'


def test_failure_mid_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_open(target, "w") as fh:
            fh.write("half of the new")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_os_errors_are_one_line_naming_the_file(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(InputFormatError, match="disk full") as info:
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            monkeypatch.setattr(os, "replace", full)
    monkeypatch.undo()
    assert str(target) in str(info.value) and "\n" not in str(info.value)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_missing_or_file_parent_is_one_line(tmp_path):
    with pytest.raises(InputFormatError, match="does not exist"):
        with atomic_open(tmp_path / "no" / "out.txt", "w") as fh:
            fh.write("x")
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputFormatError, match="cannot write"):
        write_bytes_atomic(tmp_path / "f" / "out.bin", b"y")
    assert (tmp_path / "f").read_text() == "x"
