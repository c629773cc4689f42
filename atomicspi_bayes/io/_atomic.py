"""Kept for the modules that still import ``atomicspi_bayes.io._atomic`` (diagnostics,
pipeline): the one implementation is :mod:`atomicspi_bayes.atomic_files`."""

from __future__ import annotations

from atomicspi_bayes.atomic_files import atomic_open, atomic_path

__all__ = ["atomic_open", "atomic_path"]
