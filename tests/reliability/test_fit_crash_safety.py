"""Crash safety of the real `atomicspi fit`: SIGKILL at random moments (during a step, during a
checkpoint write), SIGINT and SIGTERM, each followed by `--resume`, end with exactly the
parameters, optimizer state and latents of an uninterrupted run (the loss history to 1 ulp:
see the end of the test); no file is ever half-written.

Each run is a fresh `atomicspi fit` process on a tiny dataset (64 particles of 32 px made by
`atomicspi simulate`, a small model, a checkpoint every step). The JAX compilation cache of
the session is shared with the subprocesses, so only the first one compiles.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from reliability_harness import TINY_FIT_TOML, cli_command, run_cli, subprocess_env

from atomicspi_bayes.inference.checkpoint import list_checkpoints

N_PARTICLES, BATCH, EPOCHS = 64, 8, 8
NUM_STEPS = N_PARTICLES // BATCH * EPOCHS
# (signal, moment): "step" = a random time inside a random later step, "write" = as soon as
# a checkpoint temp file appears (the process is then writing or renaming it)
INTERRUPTIONS = [
    (signal.SIGKILL, "step"),
    (signal.SIGKILL, "write"),
    (signal.SIGINT, "step"),
    (signal.SIGKILL, "write"),
    (signal.SIGTERM, "step"),
]


@pytest.fixture(scope="module")
def crash_inputs(tmp_path_factory, jax_cache_dir):
    from reliability_harness import shared_data

    root = tmp_path_factory.mktemp("crash")
    structure = root / "1orc.pdb"
    structure.write_bytes((shared_data() / "gemmi" / "1orc.pdb").read_bytes())
    data = root / "data"
    outcome = run_cli(["simulate", structure, "--out", data, "--n", N_PARTICLES, "--box", 32,
                       "--pixel-size", 2.5, "--seed", 11])  # fmt: skip
    assert outcome.kind == "ok", outcome.describe()
    config = root / "crash.toml"
    config.write_text(TINY_FIT_TOML.replace("checkpoint_every = 4", "checkpoint_every = 1"))
    return {"root": root, "structure": structure, "star": data / "particles.star",
            "config": config, "env": subprocess_env(jax_cache_dir)}  # fmt: skip


def _fit_args(inputs: dict, out: Path, *extra: str) -> list[str]:
    return [*cli_command(), "fit", str(inputs["star"]), "--structure", str(inputs["structure"]),
            "--out", str(out), "--config", str(inputs["config"]), "--epochs", str(EPOCHS),
            "--batch-size", str(BATCH), "--seed", "5", "--quiet", *extra]  # fmt: skip


def _start(inputs: dict, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen(
            _fit_args(inputs, out, *extra), stdout=fh, stderr=subprocess.STDOUT,
            env=inputs["env"],
        )  # fmt: skip


def _newest_step(ckpt_dir: Path) -> int:
    found = list_checkpoints(ckpt_dir)
    return found[-1][0] if found else 0


def _wait_for_step(proc: subprocess.Popen, ckpt_dir: Path, step: int, limit: float = 240.0):
    """Poll until a checkpoint at >= ``step`` exists; return (step, seconds per step)."""
    t0 = time.monotonic()
    seen = [(_newest_step(ckpt_dir), t0)]
    while time.monotonic() - t0 < limit:
        now_step = _newest_step(ckpt_dir)
        if now_step != seen[-1][0]:
            seen.append((now_step, time.monotonic()))
        if now_step >= step:
            (s0, t_0), (s1, t_1) = seen[max(len(seen) - 3, 0)], seen[-1]
            return now_step, (t_1 - t_0) / max(s1 - s0, 1) if s1 > s0 else 0.05
        if proc.poll() is not None:
            raise AssertionError(f"fit ended (rc={proc.returncode}) before step {step}")
        time.sleep(0.002)
    raise AssertionError(f"no checkpoint at step {step} within {limit} s")


def _wait_for_temp(proc: subprocess.Popen, ckpt_dir: Path, limit: float = 120.0) -> bool:
    """Busy-poll for a checkpoint temp file; True when one was seen (kill right away)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit and proc.poll() is None:
        with os.scandir(ckpt_dir) as entries:
            if any(e.name.startswith(".ckpt-tmp-") for e in entries):
                return True
    return False


def _load_all(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _assert_nothing_half_written(run: Path) -> None:
    """Every file under its final name is complete (loads); temporaries are only allowed
    in checkpoints/ (a SIGKILL mid-write leaves one; the next run deletes it)."""
    for ckpt in sorted((run / "checkpoints").glob("ckpt_*.npz")):
        arrays = _load_all(ckpt)
        meta = json.loads(str(arrays["__meta__"]))
        assert arrays["losses"].shape == (meta["step"],), ckpt
    if (run / "config.toml").exists():
        assert "fit" in tomllib.loads((run / "config.toml").read_text())
    stray = [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert not stray, f"temporary files in the run folder: {stray}"


@pytest.mark.slow
def test_fit_killed_and_resumed_is_bit_identical(crash_inputs):
    inputs, root = crash_inputs, crash_inputs["root"]
    ref = root / "reference"
    proc = subprocess.run(_fit_args(inputs, ref), capture_output=True, text=True,
                          env=inputs["env"], timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]

    run, ckpt_dir = root / "interrupted", root / "interrupted" / "checkpoints"
    rng = np.random.default_rng(2024)
    history = []
    for i, (sig, moment) in enumerate(INTERRUPTIONS):
        log = root / f"attempt{i}.log"
        before = _newest_step(ckpt_dir)
        proc = _start(inputs, run, log, "--resume")
        # let training pass at least one new checkpoint (it started and made progress)
        step, step_s = _wait_for_step(proc, ckpt_dir, before + 1)
        if moment == "write":
            hit = _wait_for_temp(proc, ckpt_dir)
        else:
            target = step + int(rng.integers(1, 6))
            _, step_s = _wait_for_step(proc, ckpt_dir, target)
            time.sleep(float(rng.uniform(0.0, max(step_s, 1e-3))))  # somewhere in a step
            hit = None
        assert proc.poll() is None, f"fit finished before interruption {i}; raise EPOCHS"
        proc.send_signal(sig)
        rc = proc.wait(timeout=120)
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, text[-3000:]
        if sig == signal.SIGKILL:
            assert rc == -signal.SIGKILL
        else:  # clean stop: a checkpoint at the stopped step, exit 130 / 143
            assert rc == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig], text[-2000:]
            match = re.search(
                r"stopped: interrupted by signal \d+ after step (\d+); checkpoint", text
            )
            assert match, text[-2000:]
            stopped = int(match.group(1))
            assert (ckpt_dir / f"ckpt_{stopped:09d}.npz").is_file()
            assert _newest_step(ckpt_dir) == stopped > before
        temps = [p.name for p in ckpt_dir.iterdir() if p.name.startswith(".ckpt-tmp-")]
        history.append({"signal": signal.Signals(sig).name, "moment": moment, "rc": rc,
                        "newest_checkpoint": _newest_step(ckpt_dir), "temp_seen": hit,
                        "temp_left": len(temps)})  # fmt: skip
        _assert_nothing_half_written(run)
    print(json.dumps({"interruptions": history}))  # did a "write" kill land mid-write?

    proc = subprocess.run(_fit_args(inputs, run, "--resume"), capture_output=True, text=True,
                          env=inputs["env"], timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_nothing_half_written(run)
    assert not [p for p in ckpt_dir.iterdir() if p.name.startswith(".ckpt-tmp-")]

    # bit-identical: params and optimizer state (final checkpoint), latents, output STAR
    final = f"ckpt_{NUM_STEPS:09d}.npz"
    a, b = _load_all(ref / "checkpoints" / final), _load_all(ckpt_dir / final)
    assert sorted(a) == sorted(b)
    differ = [k for k in a if k not in ("__meta__", "losses") and not np.array_equal(a[k], b[k])]
    assert not differ, f"checkpoint arrays differ after kill/resume: {differ}"
    la, lb = _load_all(ref / "latents.npz"), _load_all(run / "latents.npz")
    assert all(np.array_equal(la[k], lb[k]) for k in la), "latents differ"
    assert (ref / "particles.star").read_bytes() == (run / "particles.star").read_bytes()
    # The reported loss of a step can differ in its last bit between two identical,
    # uninterrupted processes (XLA CPU's scalar reduction; the parameters never do), so the
    # loss history is compared to 1 float32 ulp.
    np.testing.assert_array_max_ulp(a["losses"], b["losses"], maxulp=1)
    np.testing.assert_array_max_ulp(
        np.load(ref / "elbo.npy").astype(np.float32),
        np.load(run / "elbo.npy").astype(np.float32),
        maxulp=1,
    )
    params = [k for k in a if k not in ("__meta__", "losses") and a[k].dtype.kind == "f"]
    max_abs = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in params)
    loss_diff = int(np.sum(a["losses"] != b["losses"]))
    print(json.dumps({"kill_resume_runs": len(INTERRUPTIONS), "num_steps": NUM_STEPS,
                      "param_arrays": len(params), "max_abs_param_difference": max_abs,
                      "losses_differing_by_1_ulp": loss_diff}))  # fmt: skip
