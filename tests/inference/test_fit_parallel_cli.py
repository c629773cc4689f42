"""``atomicspi fit`` across devices and processes, and its persistent compilation cache.

Slow tests (issue 11) run the real CLI in subprocesses on a tiny AdK set (40 particles,
32 px, batch 8, 20 steps): ``--devices 2`` on 2 simulated CPU devices, and 2 processes on
127.0.0.1 (``--coordinator/--num-processes/--process-id``), each against a 1-device run
with the same seed. The reference run goes first and fills the CLI's compilation cache
(``$XDG_CACHE_HOME/atomicspi/jax``, a temporary folder here); the three others then start
from it, concurrently.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from typer.testing import CliRunner

from atomicspi_bayes.cli import app
from atomicspi_bayes.inference import cache as cache_mod
from atomicspi_bayes.inference import enable_compilation_cache

ATOMICSPI = [sys.executable, "-c", "from atomicspi_bayes.cli import main; main()"]
_CACHE_OPTIONS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
    "jax_compilation_cache_max_size",
)


# ---------------------------------------------------------------- cache helper (fast)


@pytest.fixture
def jax_cache_config():
    saved = {name: getattr(jax.config, name) for name in _CACHE_OPTIONS}
    yield
    for name, value in saved.items():
        jax.config.update(name, value)


def test_cache_opt_out_configured_and_default_folder(tmp_path, monkeypatch, jax_cache_config):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_mod.default_cache_dir() == tmp_path / "xdg" / "atomicspi" / "jax"
    monkeypatch.setenv(cache_mod.OPT_OUT_ENV, "1")
    before = jax.config.jax_compilation_cache_dir
    assert enable_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir == before  # untouched
    monkeypatch.setenv(cache_mod.OPT_OUT_ENV, "0")  # "0" does not opt out
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "user"))
    assert enable_compilation_cache() == tmp_path / "user"  # the user's folder wins
    jax.config.update("jax_compilation_cache_dir", None)
    assert enable_compilation_cache() == tmp_path / "xdg" / "atomicspi" / "jax"
    assert (tmp_path / "xdg" / "atomicspi" / "jax").is_dir()
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
    jax.config.update("jax_compilation_cache_dir", None)
    (tmp_path / "file").write_text("")
    assert enable_compilation_cache(tmp_path / "file" / "sub") is None  # never fails a run


# ---------------------------------------------------------------- CLI runs (slow)

PROCESSES = ("process_0", "process_1")
ELBO_LINE = r"ELBO\s+(\S+)\s+->\s+(\S+),"  # the CLI's summary line: first -> last ELBO
FIT_ARGS = [
    "--epochs", "4", "--batch-size", "8", "--resolution", "12", "--latent-dim", "1",
    "--poses", "fixed", "--n-modes", "10", "--seed", "0", "--quiet",
]  # fmt: skip


def _env(tmp: Path, devices: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.pop("XLA_FLAGS", None)
    env.pop(cache_mod.OPT_OUT_ENV, None)
    env.pop("PYTHONHASHSEED", None)  # a multi-process fit restarts itself with a fixed one
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["XDG_CACHE_HOME"] = str(tmp / "xdg")  # the CLI's default cache, in a temp folder
    return env


def _fit(tmp: Path, out: str, *extra: str, devices: int | None = None) -> subprocess.Popen:
    cmd = [*ATOMICSPI, "fit", str(tmp / "sim" / "particles.star"), "--structure"]
    cmd += [str(tmp / "ref.pdb"), "--out", str(tmp / out), *FIT_ARGS, *extra]
    return subprocess.Popen(
        cmd, env=_env(tmp, devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, (out + err)[-3000:]
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One 1-device reference, then --devices 2 and a 2-process job side by side."""
    from MDAnalysisTests.datafiles import DCD, PSF

    from atomicspi_bayes.io import load_trajectory, write_multimodel_pdb

    tmp = tmp_path_factory.mktemp("fitpar")
    sim = CliRunner().invoke(
        app,
        [
            "simulate", PSF, "--trajectory", DCD, "--out", str(tmp / "sim"), "--n", "40",
            "--box", "32", "--pixel-size", "3.0", "--snr", "1", "--seed", "0",
        ],
    )  # fmt: skip
    assert sim.exit_code == 0, sim.output
    model, frames = load_trajectory(DCD, PSF)
    write_multimodel_pdb(tmp / "ref.pdb", model, frames[0][None])

    _finish(_fit(tmp, "one", "--devices", "1", devices=2))
    cached = list((tmp / "xdg" / "atomicspi" / "jax").iterdir())
    coordinator = f"127.0.0.1:{_free_port()}"
    multi = ["--coordinator", coordinator, "--num-processes", "2"]
    procs = {
        "two_devices": _fit(tmp, "two", "--devices", "2", devices=2),
        "process_0": _fit(tmp, "multi", *multi, "--process-id", "0"),
        "process_1": _fit(tmp, "multi", *multi, "--process-id", "1"),
    }
    stdout = {name: _finish(p) for name, p in procs.items()}
    return tmp, cached, stdout


def _elbo(run: Path) -> np.ndarray:
    return np.load(run / "elbo.npy")


@pytest.mark.slow
def test_cli_two_devices_match_one_device(runs):
    tmp, cached, _ = runs
    assert cached, "the CLI did not fill its compilation cache"
    one, two = _elbo(tmp / "one"), _elbo(tmp / "two")
    assert one.shape == two.shape == (20,)
    rel = np.abs(two - one) / np.abs(one)
    print({"cli_two_device_max_rel_elbo_diff": float(rel.max())})
    assert rel.max() < 1e-4
    z1, z2 = np.load(tmp / "one" / "latents.npz"), np.load(tmp / "two" / "latents.npz")
    np.testing.assert_allclose(z2["z_mean"], z1["z_mean"], rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_cli_two_processes_match_single_process(runs):
    tmp, _, stdout = runs
    one, multi = _elbo(tmp / "one"), _elbo(tmp / "multi")
    assert multi.shape == (20,)
    rel = np.abs(multi - one) / np.abs(one)
    print({"cli_two_process_max_rel_elbo_diff": float(rel.max())})
    assert rel.max() < 1e-4
    # process 0 wrote the run folder (its config names it); process 1 only trained
    assert "process_id = 0" in (tmp / "multi" / "config.toml").read_text()
    assert "wrote" in stdout["process_0"] and "process 0 writes" in stdout["process_1"]
    # both processes saw the same loss trajectory (process 1 prints its own first/last ELBO)
    elbo_0, elbo_1 = (re.search(ELBO_LINE, stdout[p]).groups() for p in PROCESSES)
    assert elbo_0 == elbo_1, (elbo_0, elbo_1)
    z1, zm = np.load(tmp / "one" / "latents.npz"), np.load(tmp / "multi" / "latents.npz")
    np.testing.assert_allclose(zm["z_mean"], z1["z_mean"], rtol=1e-3, atol=1e-3)


def test_multi_process_job_needs_a_fixed_hash_seed(monkeypatch):
    # numpyro's ELBO sums sites in Python set order: processes with different string-hash
    # seeds trace different programs and their all-reduces pair unrelated terms
    from atomicspi_bayes.errors import ConfigError
    from atomicspi_bayes.inference.parallel import initialize_distributed

    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    with pytest.raises(ConfigError, match="PYTHONHASHSEED"):
        initialize_distributed("127.0.0.1:1", 2, 0)
    monkeypatch.setenv("PYTHONHASHSEED", "random")
    with pytest.raises(ConfigError, match="PYTHONHASHSEED"):
        initialize_distributed("127.0.0.1:1", 2, 0)


def test_batch_not_divisible_by_devices_is_one_line(tmp_path):
    """A batch that the devices cannot split is refused before training (exit 2)."""
    from atomicspi_bayes.errors import ConfigError
    from atomicspi_bayes.pipeline.fit import FitConfig, _mesh_devices

    with pytest.raises(ConfigError, match="batch size 9 is not a multiple of 2 devices"):
        _mesh_devices(FitConfig(devices=2), 9)
    with pytest.raises(ConfigError, match="process_id 2 must be in"):
        FitConfig(num_processes=2, process_id=2, coordinator="h:1")
    with pytest.raises(ConfigError, match="needs a coordinator"):
        FitConfig(num_processes=2)
