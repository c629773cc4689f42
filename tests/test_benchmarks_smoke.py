"""Smoke tests of the performance benchmarks: each runs with ``--quick`` at tiny sizes and
prints exactly one JSON object with the figures benchmarks/README.md reports.

The scripts start ``atomicspi`` subprocesses; a persistent JAX compilation cache (a
temporary folder handed over through the environment) turns the repeated XLA programs of
those processes into cache hits. ``fit_vs_cryodrgn.py`` runs cryoDRGN only when the CRYODRGN
environment variable names its executable (it lives in its own environment and is never a
project dependency); otherwise it runs with ``--no-cryodrgn`` (our side, same data path).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench_env(tmp_path_factory) -> dict[str, str]:
    env = dict(os.environ)
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax-cache"))
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


def run_benchmark(name: str, *args: str, env: dict[str, str]) -> dict:
    """Run ``benchmarks/NAME --quick ARGS``; return its single JSON line."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), "--quick", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stderr[-3000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"{name} printed {len(lines)} lines, expected one JSON object"
    return json.loads(lines[0])


def test_memory_benchmark(bench_env):
    out = run_benchmark("memory.py", env=bench_env)
    assert out["name"] == "memory"
    assert out["n_large"] == 10 * out["n_small"]
    for size in ("small", "large"):
        rss, anon, file = (out[f"{k}_{size}_mb"] for k in ("rss", "anon", "file"))
        assert 100 < rss < 20_000
        assert 0 < anon <= rss * 1.01 and 0 <= file <= rss * 1.01
        assert out[f"fit_{size}_particles_per_s"] > 0
        assert out[f"peak_anon_phase_{size}"]
    assert out["ratio"] == pytest.approx(out["rss_large_mb"] / out["rss_small_mb"], rel=1e-2)
    assert out["ratio_anon"] > 0 and out["cpu_count"] >= 1


def test_scaling_benchmark(bench_env):
    out = run_benchmark("scaling.py", env=bench_env)
    rows = out["render"]
    structures = {r["structure"] for r in rows}
    assert "beads" in structures and len(structures) >= 3
    assert {r["box"] for r in rows} == set(out["boxes"])
    assert all(r["images_per_s"] > 0 and r["gemm_gflop_per_s"] > 0 for r in rows)
    # the exponents are computed from the rows (their values depend on the machine)
    exps = out["render_exponents"]
    assert set(exps["box"]) == set(exps["box_cpu"]) == structures
    assert set(exps["points"]) == set(exps["points_cpu"]) == {str(b) for b in out["boxes"]}
    assert 0 < out["gemm_fraction_of_matmul"] < 5
    assert out["svi"], "no SVI timings"
    for row in out["svi"]:
        assert row["particles_per_s"] > 0
        # the hot path: one compilation of the update step, no XLA compile after step one
        assert row["step_compilations"] == 1
        assert row["xla_compiles_after_first_step"] == 0
        # no implicit host->device copy in steps 2.. (the guard was live: its control tripped)
        assert row["host_to_device_guard"] == "passed" and row["guard_live"]
        assert row["guarded_steps"] == row["steps"] - 1


def test_fit_vs_cryodrgn_benchmark(bench_env):
    cryodrgn = os.environ.get("CRYODRGN")
    args = ("--cryodrgn", cryodrgn) if cryodrgn else ("--no-cryodrgn",)
    out = run_benchmark("fit_vs_cryodrgn.py", *args, env=bench_env)
    ours = out["ours"]
    assert len(ours["epochs"]) == 2  # --quick: two epochs, one checkpoint each
    times = [e["t_s"] for e in ours["epochs"]]
    assert times == sorted(times) and times[0] > 0
    assert all(0 <= e["abs_rho"] <= 1 for e in ours["epochs"])
    assert ours["epochs"][-1]["abs_rho"] == pytest.approx(ours["final_abs_rho"], abs=1e-3)
    if cryodrgn:
        assert out["conversion"]["pose_max_err_deg"] < 0.05
        assert len(out["cryodrgn"]["epochs"]) == 1
        assert "time_ratio" in out
    else:
        assert out["cryodrgn"] is None
