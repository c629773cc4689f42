"""JAX's persistent compilation cache for command-line runs (start-up of repeated fits).

Building a fit runs on the order of a hundred small XLA compilations (eager ops while the
model and guide are set up) plus the SVI step's; a repeated run of the same shapes finds
them all on disk. The cache is exact (XLA executables keyed by program, shapes, flags,
jax and backend version); it only saves compile time.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import jax

__all__ = ["OPT_OUT_ENV", "default_cache_dir", "enable_compilation_cache"]

logger = logging.getLogger(__name__)

OPT_OUT_ENV = "ATOMICSPI_NO_JAX_CACHE"
"""Set to a non-empty value other than ``0`` to run without the persistent cache."""

_MAX_BYTES = 2 << 30  # least recently used entries are evicted beyond 2 GiB


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/atomicspi/jax`` (``~/.cache/atomicspi/jax`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "atomicspi" / "jax"


def enable_compilation_cache(directory: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache; returns its folder (None: left off).

    Left as it is when ``ATOMICSPI_NO_JAX_CACHE`` is set (not ``0``) or when a cache folder
    is already configured (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``: the user's
    choice wins). Every compilation is cached (also the sub-second ones that dominate a
    fit's start-up), up to 2 GiB (least recently used evicted; needs ``filelock``). A
    folder that cannot be created leaves the cache off (logged), never fails the run.

    Args:
        directory: cache folder (default :func:`default_cache_dir`).
    """
    if os.environ.get(OPT_OUT_ENV, "") not in ("", "0"):
        return None
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return Path(configured)
    folder = Path(directory) if directory is not None else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.info("compilation cache off: cannot create %s (%s)", folder, exc.strerror)
        return None
    if not os.access(folder, os.W_OK):
        logger.info("compilation cache off: %s is not writable", folder)
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if importlib.util.find_spec("filelock") is not None:  # JAX's eviction needs it
        jax.config.update("jax_compilation_cache_max_size", _MAX_BYTES)
    logger.debug("persistent compilation cache in %s", folder)
    return folder
