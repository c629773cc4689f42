"""Streamed run outputs (pipeline.outputs) = the in-memory ones, number for number."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
import xarray as xr

from atomicspi_bayes.atomic_files import save_npz_atomic
from atomicspi_bayes.diagnostics.export import posterior_inference_data, write_posterior
from atomicspi_bayes.physics.geometry import random_rotations
from atomicspi_bayes.pipeline.outputs import (
    normal_rows,
    streamed_posterior,
    write_latents,
    write_posterior_nc,
)
from atomicspi_bayes.posterior import reported_posterior

DATA = Path(os.environ["ATOMICSPI_SHARED_DATA"]) / "cryodrgn"  # set by tests/conftest.py
GROUPS = ("posterior", "sample_stats", "constant_data")


@pytest.mark.parametrize("shape", [(7, 50, 2), (100, 3000, 1), (10, 1234, 3)])
def test_normal_rows_are_the_rows_of_jax_random_normal(shape):
    key = jax.random.split(jax.random.PRNGKey(5))[1]
    full = np.asarray(jax.random.normal(key, shape))
    for start, stop in [(0, 1), (2, 5), (0, shape[0]), (shape[0] - 1, shape[0])]:
        rows = normal_rows(key, shape, start, stop)
        assert rows.dtype == np.float32
        np.testing.assert_array_equal(rows, full[start:stop])


def _encoding(n: int, d: int, poses: bool) -> dict:
    rng = np.random.default_rng(1)
    enc = {
        "z_mean": rng.normal(size=(n, d)).astype(np.float32),
        "z_sd": rng.uniform(0.05, 0.5, size=(n, d)).astype(np.float32),
    }
    if poses:
        enc["rotation_mean"] = np.asarray(random_rotations(jax.random.PRNGKey(3), n))
        enc["rotation_sd"] = rng.uniform(0.01, 0.2, size=(n, 3)).astype(np.float32)
        enc["shift_mean"] = rng.normal(size=(n, 2)).astype(np.float32)
        enc["shift_sd"] = rng.uniform(0.1, 1.0, size=(n, 2)).astype(np.float32)
    return enc


@pytest.mark.parametrize("poses", [False, True])
def test_streamed_outputs_equal_the_in_memory_ones(tmp_path, poses):
    n, d, s = 257, 2, 11
    enc = _encoding(n, d, poses)
    problem = SimpleNamespace(model_cfg=SimpleNamespace(poses="amortized" if poses else "fixed"))
    key = jax.random.split(jax.random.PRNGKey(0), 3)[1]
    rows = np.arange(n, dtype=np.int64) * 3 + 1
    elbo = -np.linspace(100.0, 10.0, 17)

    # before: the whole posterior in memory (what pipeline.fit did)
    post = reported_posterior(key, problem, {}, enc, kind="amortized", n_draws=s)
    latents = {
        "z_mean": post["z_mean"], "z_sd": post["z_sd"], "z_draws": post["z_draws"],
        "particle_index": rows, "z_mean_amortized": post["z_mean_amortized"],
        "z_sd_amortized": post["z_sd_amortized"],
        "posterior_method": np.asarray(post["posterior_method"]), "ess": post["ess"],
    }  # fmt: skip
    extra = {k: enc[k] for k in ("rotation_mean", "rotation_sd", "shift_mean", "shift_sd")
             if poses}  # fmt: skip
    save_npz_atomic(tmp_path / "old.npz", **latents, **extra)
    idata = posterior_inference_data(
        post["z_draws"], post["z_mean"], post["z_sd"], rows, elbo,
        rotation_draws=post["rotation_draws"], shift_draws=post["shift_draws"],
        z_mean_amortized=post["z_mean_amortized"], z_sd_amortized=post["z_sd_amortized"],
        ess=post["ess"], posterior_method=post["posterior_method"],
    )  # fmt: skip
    write_posterior(tmp_path / "old.nc", idata)

    # after: blocks of 3 draws (11 = 3 + 3 + 3 + 2)
    streamed = streamed_posterior(key, problem, {}, enc, kind="amortized", n_draws=s)
    write_latents(tmp_path / "new.npz", streamed, rows, extra, block=3)
    write_posterior_nc(tmp_path / "new.nc", streamed, rows, elbo, block=3)

    old, new = np.load(tmp_path / "old.npz"), np.load(tmp_path / "new.npz")
    assert sorted(old.files) == sorted(new.files)
    for name in old.files:
        assert old[name].dtype == new[name].dtype, name
        np.testing.assert_array_equal(old[name], new[name], err_msg=name)
    for group in GROUPS:
        a = xr.open_dataset(tmp_path / "old.nc", group=group, engine="h5netcdf")
        b = xr.open_dataset(tmp_path / "new.nc", group=group, engine="h5netcdf")
        a, b = a.load(), b.load()
        if "rotation" in a:  # XLA's sin/cos differ by 1 ulp with the array's size
            np.testing.assert_allclose(a["rotation"], b["rotation"], rtol=0, atol=3e-7)
            assert a["rotation"].dims == b["rotation"].dims
            a["rotation"] = b["rotation"]
        xr.testing.assert_identical(a, b)
        for name, var in a.variables.items():
            assert b[name].dtype == var.dtype, (group, name)
            for k in ("zlib", "_FillValue", "shuffle", "complevel"):
                va, vb = var.encoding.get(k), b[name].encoding.get(k)
                assert va == vb or (np.isnan(va) and np.isnan(vb)), (group, name, k, va, vb)
        a.close()
        b.close()
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_stream_leaves_no_file(tmp_path):
    enc = _encoding(20, 1, False)
    problem = SimpleNamespace(model_cfg=SimpleNamespace(poses="fixed"))
    streamed = streamed_posterior(jax.random.PRNGKey(0), problem, {}, enc, kind="amortized",
                                  n_draws=4)  # fmt: skip

    def broken(start, stop):
        raise RuntimeError("draws failed")

    streamed._draws_fn = broken
    for write in (write_latents, write_posterior_nc):
        with pytest.raises(RuntimeError, match="draws failed"):
            args = (np.arange(20),) if write is write_latents else (np.arange(20), np.zeros(3))
            write(tmp_path / "out", streamed, *args)
        assert list(tmp_path.iterdir()) == []


def _star_metadata(n: int, groups: bool, inconsistent: bool = False):
    import dataclasses

    from atomicspi_bayes.io import read_particles
    from atomicspi_bayes.io.particles import subset_metadata

    meta = read_particles(DATA / "relion31.v2.star", allow_outside_paths=True)
    meta = subset_metadata(meta, np.arange(n) % len(meta))
    if groups:
        optics = np.where(np.arange(n) % 3 == 0, 2, 1).astype(meta.optics_group.dtype)
        meta = dataclasses.replace(meta, optics_group=optics)
    if inconsistent:
        volt = meta.voltage_kv.copy()
        volt[n // 2 :] = 200.0
        meta = dataclasses.replace(meta, voltage_kv=volt)
    return meta


@pytest.mark.parametrize(
    "groups, inconsistent, n", [(False, False, 61), (True, False, 61), (True, True, 61),
                                (False, False, 5)]
)  # fmt: skip
def test_chunked_star_is_byte_identical_to_write_star(tmp_path, groups, inconsistent, n):
    from atomicspi_bayes.io import write_star
    from atomicspi_bayes.pipeline.outputs import write_star_chunked

    meta = _star_metadata(n, groups, inconsistent)
    rng = np.random.default_rng(0)
    extra = {"atomicspiLatentMean": rng.normal(size=(n, 2)).astype(np.float32),
             "atomicspiLatentSd": rng.uniform(size=(n, 2)).astype(np.float32)}  # fmt: skip
    write_star(tmp_path / "old.star", meta, extra)
    write_star_chunked(tmp_path / "new.star", meta, extra, chunk=7)
    old = (tmp_path / "old.star").read_bytes()
    assert old.count(b"\n") > n  # one row per particle
    assert (tmp_path / "new.star").read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.star", "old.star"]
