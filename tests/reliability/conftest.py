"""Shared fixtures of the reliability tests: a persistent JAX compilation cache (the fuzz and
crash tests build the same small programs many times, in this process and in subprocesses)
and the fuzz workspace (a tiny simulated dataset and a finished run, made by the CLI)."""

from __future__ import annotations

import os

import jax
import pytest
from reliability_fuzz import build_workspace

_OPTIONS = {
    "jax_compilation_cache_dir": None,
    "jax_persistent_cache_min_compile_time_secs": 0.0,
    "jax_persistent_cache_min_entry_size_bytes": 0,
}


@pytest.fixture(scope="session")
def jax_cache_dir(tmp_path_factory):
    """A persistent compilation cache for this session (restored afterwards); its folder is
    also handed to CLI subprocesses (see ``reliability_harness.subprocess_env``)."""
    folder = str(tmp_path_factory.mktemp("jax-cache"))
    previous = {name: getattr(jax.config, name) for name in _OPTIONS}
    for name, value in _OPTIONS.items():
        jax.config.update(name, folder if value is None else value)
    yield folder
    for name, value in previous.items():
        jax.config.update(name, value)
    os.environ.pop("ATOMICSPI_TEST_JAX_CACHE", None)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, jax_cache_dir):
    return build_workspace(tmp_path_factory.mktemp("fuzz-workspace"))
