"""Resolving image paths of a metadata file safely (no escape from the dataset folder)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from atomicspi_bayes.errors import InputFormatError


def dataset_folder(metadata_path: Path, data_dir: str | os.PathLike | None) -> str:
    """Absolute, normalised folder image paths are relative to (``data_dir`` or the file's)."""
    base = Path(data_dir) if data_dir is not None else metadata_path.parent
    if data_dir is not None and not base.is_dir():
        raise InputFormatError(f"{base}: data folder not found")
    return os.path.normpath(os.path.abspath(base))


def resolve_image_paths(
    names: np.ndarray, metadata_path: Path, base: str, *, allow_outside_paths: bool
) -> np.ndarray:
    """Resolve ``(N,)`` image file names against ``base``; refuse escapes unless allowed.

    A name is refused when, after normalisation, it lies outside ``base`` (absolute paths
    elsewhere, ``..`` components) — a metadata file must not make us read arbitrary files.
    Resolution is lexical (symbolic links inside the folder are followed when opened, as
    RELION projects use them).
    """
    uniq, inverse = np.unique(np.asarray(names, dtype=str), return_inverse=True)
    resolved = []
    for name in map(str, uniq):
        if not name or not name.strip():
            raise InputFormatError(f"{metadata_path}: an image file name is empty")
        if "\x00" in name:
            raise InputFormatError(f"{metadata_path}: image file name {name!r} contains NUL")
        full = os.path.normpath(os.path.join(base, name))
        inside = os.path.commonpath([base, full]) == base if os.path.isabs(full) else False
        if not inside and not allow_outside_paths:
            raise InputFormatError(
                f"{metadata_path}: image path {name!r} points outside the dataset folder "
                f"{base}; move the images there, or allow it explicitly "
                "(allow_outside_paths=True / --allow-outside-paths) if you trust this file"
            )
        resolved.append(full)
    return np.asarray(resolved, dtype=str)[inverse.reshape(-1)]
