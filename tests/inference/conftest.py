"""Shared fixtures of the inference tests.

Every test builds a fresh SVI engine on the same toy model, so the XLA programs repeat;
a persistent compilation cache (a temporary folder, also handed to subprocesses through
``JAX_COMPILATION_CACHE_DIR`` and friends) turns the repeats into cache hits. The previous
settings are restored at the end of the session.
"""

from __future__ import annotations

import os

import jax
import pytest

_OPTIONS = {
    "jax_compilation_cache_dir": None,
    "jax_persistent_cache_min_compile_time_secs": 0.0,
    "jax_persistent_cache_min_entry_size_bytes": 0,
}


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("jax-cache"))
    previous = {name: getattr(jax.config, name) for name in _OPTIONS}
    previous_env = {name.upper(): os.environ.get(name.upper()) for name in _OPTIONS}
    for name, value in _OPTIONS.items():
        value = folder if value is None else value
        jax.config.update(name, value)
        os.environ[name.upper()] = str(value)
    yield folder
    for name, value in previous.items():
        jax.config.update(name, value)
    for name, value in previous_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
