"""The engine across processes: SIGKILL/SIGTERM/SIGINT and resume, 2 devices, 2 processes.

Each test runs ``svi_toy.py`` as a subprocess (JAX is started fresh, so the device-count
flag can be set before jax is imported).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from svi_toy import flat_params, make_problem

from atomicspi_bayes.inference import SVIConfig, run_svi
from atomicspi_bayes.inference.checkpoint import list_checkpoints

TOY = Path(__file__).with_name("svi_toy.py")
STEPS = 60


def _env(devices: int | None = None) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONHASHSEED"] = "0"  # every process of a job traces the same program
    return env


def _toy(*args: str, devices: int | None = None, timeout: float = 240) -> dict:
    proc = subprocess.run(
        [sys.executable, str(TOY), *args],
        env=_env(devices),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _params(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _wait_for_checkpoint_after(out: Path, step: int, proc: subprocess.Popen, limit: float = 120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        found = list_checkpoints(out)
        if found and found[-1][0] > step:
            return found[-1][0]
        if proc.poll() is not None:
            raise AssertionError(f"toy run ended early: rc={proc.returncode}")
        time.sleep(0.02)
    raise AssertionError("no new checkpoint appeared")


@pytest.mark.slow
def test_kill_and_signals_then_resume_is_bit_identical(tmp_path):
    """SIGTERM, SIGINT, then two SIGKILLs at random moments; the resumed run must end with
    exactly the parameters and losses of an uninterrupted one."""
    ref = _toy("--steps", str(STEPS), "--params", str(tmp_path / "ref.npz"))
    out = tmp_path / "run"
    common = ["--out", str(out), "--steps", str(STEPS), "--checkpoint-every", "1"]
    common += ["--sleep", "0.02", "--resume"]
    rng = np.random.default_rng(7)
    last, stops = 0, []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL, signal.SIGKILL):
        proc = subprocess.Popen(
            [sys.executable, str(TOY), *common],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        last = _wait_for_checkpoint_after(out, last, proc)
        time.sleep(float(rng.uniform(0.0, 0.15)))
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
        if sig == signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL
        else:
            assert proc.returncode == 128 + sig, stderr[-2000:]
            info = json.loads(stdout.strip().splitlines()[-1])
            assert info["interrupted"] == sig
            assert list_checkpoints(out)[-1][0] == info["step"]
        last = list_checkpoints(out)[-1][0]
        stops.append(last)
        assert last < STEPS, "the run finished before it could be interrupted"
    final = _toy(*common, "--params", str(tmp_path / "resumed.npz"))
    assert not list(out.glob(".ckpt-tmp-*")), "stale temporary files were not cleaned up"
    assert final["resumed_from"] == stops[-1] and final["steps"] == STEPS
    np.testing.assert_array_equal(np.array(final["losses"]), np.array(ref["losses"]))
    a, b = _params(tmp_path / "ref.npz"), _params(tmp_path / "resumed.npz")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    print(json.dumps({"interruptions_at_steps": stops, "max_abs_param_diff": 0.0}))


@pytest.mark.slow
def test_two_devices_match_one_device():
    """Data-parallel over 2 CPU devices: same loss trajectory within 1e-4 relative."""
    res = _toy("--compare-devices", "--steps", "20", devices=2)
    one, two = np.array(res["1"]["losses"]), np.array(res["2"]["losses"])
    rel = np.abs(two - one) / np.abs(one)
    print(json.dumps({"two_device_max_rel_loss_diff": float(rel.max())}))
    assert rel.max() < 1e-4
    for name, value in res["1"]["params"].items():
        np.testing.assert_allclose(res["2"]["params"][name], value, rtol=1e-3, atol=1e-5)
    assert res["1"]["compilations"] == 1 and res["2"]["compilations"] == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_pair(coordinator: str, out: Path, *extra: str) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            [
                sys.executable, str(TOY), "--steps", "20", "--devices", "2",
                "--coordinator", coordinator, "--num-processes", "2", "--process-id", str(i),
                "--out", str(out), *extra,
            ],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]  # fmt: skip


@pytest.mark.slow
def test_two_processes_match_single_process(tmp_path):
    """jax.distributed on 127.0.0.1: two CPU processes, each streaming half of every batch.

    First SIGTERM reaches process 1 only: both processes must stop after the same step
    (the stop request travels through the step's all-reduce), process 0 writes the
    checkpoint, both exit 143. Then both resume to the end; the loss trajectory must match
    a single-process run within 1e-4 relative.
    """
    model, guide, batch_fn = make_problem(batch_size=32)
    single = run_svi(0, model, guide, batch_fn, SVIConfig(num_steps=20, learning_rate=1e-2))
    out = tmp_path / "multi"

    procs = _launch_pair(f"127.0.0.1:{_free_port()}", out, "--sleep", "0.05")
    _wait_for_checkpoint_after(out, 0, procs[0])
    procs[1].send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 143, err[-3000:]
    stopped = [json.loads(o.strip().splitlines()[-1]) for o, _ in outputs]
    assert stopped[0]["step"] == stopped[1]["step"] == list_checkpoints(out)[-1][0] < 20

    procs = _launch_pair(
        f"127.0.0.1:{_free_port()}", out, "--resume", "--params", str(tmp_path / "multi.npz")
    )
    outputs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(o.strip().splitlines()[-1]) for o, _ in outputs]
    assert sorted(r["process"] for r in results) == [0, 1]
    assert all(r["resumed_from"] == stopped[0]["step"] for r in results)
    ref = single.losses.astype(np.float64)
    for r in results:
        rel = np.abs(np.array(r["losses"]) - ref) / np.abs(ref)
        assert rel.max() < 1e-4, rel.max()
    print(json.dumps({"two_process_max_rel_loss_diff": float(rel.max())}))
    a, b = flat_params(single.params), _params(tmp_path / "multi.npz")
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-3, atol=1e-5)
    # only process 0 wrote checkpoints, and the final one is complete
    assert list_checkpoints(out)[-1][0] == 20
