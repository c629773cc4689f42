"""Atomic file writes, for every package: a temp file in the target's folder, fsync, rename.

A reader never sees a half-written output: either the old file or the complete new one. An
interrupted or failed write leaves no temporary behind. ``OSError`` (disk full, read-only
or missing folder) becomes :class:`~atomicspi_bayes.errors.InputFormatError` with one line
naming the file.

Imports only :mod:`atomicspi_bayes.errors` (ARCHITECTURE.md: any package may import it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from atomicspi_bayes.errors import InputFormatError

__all__ = [
    "atomic_open",
    "atomic_path",
    "copy_file_atomic",
    "fsync_dir",
    "save_npy_atomic",
    "save_npz_atomic",
    "write_bytes_atomic",
    "write_text_atomic",
]


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def fsync_dir(folder: Path) -> None:
    """Make the rename durable (best effort: some filesystems refuse fsync on folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _os_error_message(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return f"{path}: disk full while writing; free space or choose another output folder"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = _one_line(exc.strerror)
        return f"{path}: output folder is not writable ({reason}); choose another folder"
    if exc.errno == errno.ENOENT:
        return f"{path}: output folder does not exist; create it first"
    return f"{path}: cannot write ({_one_line(exc.strerror or exc)})"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it to ``path``.

    The caller writes the whole file to the yielded path (any library may open it). On an
    exception the temp file is removed and ``path`` is left untouched. ``OSError`` (disk
    full, read-only folder) becomes :class:`InputFormatError` with one clear line.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise InputFormatError(_os_error_message(target, exc)) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputFormatError(_os_error_message(target, exc)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(folder)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temp file next to ``path`` for writing; renamed onto ``path`` on success."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating missing parent folders; returns ``path``."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputFormatError(_os_error_message(target, exc)) from exc
    with atomic_open(target, "wb") as fh:
        fh.write(data)
    return target


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`write_bytes_atomic`)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def save_npz_atomic(path: str | os.PathLike, **arrays) -> Path:
    """``numpy.savez`` of ``arrays`` to ``path`` atomically (the name is kept as given)."""
    import numpy as np

    target = Path(path)
    with atomic_open(target, "wb") as fh:
        np.savez(fh, **arrays)
    return target


def save_npy_atomic(path: str | os.PathLike, array) -> Path:
    """``numpy.save`` of ``array`` to ``path`` atomically (the name is kept as given)."""
    import numpy as np

    target = Path(path)
    with atomic_open(target, "wb") as fh:
        np.save(fh, array)
    return target


def copy_file_atomic(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy ``source`` to ``target`` atomically."""
    target = Path(target)
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return target
