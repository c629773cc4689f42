"""`atomicspi demo --quick` end to end, as a user runs it: every stage, the report, the
headline numbers against the simulated truth, and resumption that redoes nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _demo(out):
    return subprocess.run(
        [sys.executable, "-m", "atomicspi_bayes.cli", "demo", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=1500,
    )  # fmt: skip


def _summary(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{") : stdout.rindex("}") + 1])


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    first = _demo(out)
    assert first.returncode == 0, first.stderr[-2000:]
    return out, first


def test_quick_demo_writes_every_stage_and_the_report(demo_run):
    out, first = demo_run
    run = out / "run"
    for name in ("latents.npz", "posterior.nc", "ensemble.pdb", "config.toml", "report.html"):
        assert (run / name).is_file(), name
    assert (run / "landscape" / "landscape.npz").is_file()
    assert (run / "kinetics" / "kinetics.json").is_file()
    html = (run / "report.html").read_text()
    assert "Free-energy landscape" in html and "data:image/png;base64," in html
    assert f"report: {run / 'report.html'}" in first.stdout.replace("\n", "")


def test_quick_demo_headline_numbers_follow_the_truth(demo_run):
    out, first = demo_run
    summary = _summary(first.stdout)
    # quick demo: 600 particles at SNR 0.1 in two wells; the latent must order them
    assert abs(summary["spearman_rho_latent_vs_truth"]) > 0.6
    truth = np.load(out / "run" / "truth.npz")
    assert summary["population_open_true"] == pytest.approx(
        np.mean(truth["path_position"] < 0.5), abs=1e-9
    )
    assert summary["population_error"] < 0.1
    low, mid, high = summary["mfpt_open_to_closed_5_50_95"]
    assert 0 < low <= mid <= high and np.isfinite(high)
    assert summary["mfpt_unit"]


def test_rerunning_the_demo_skips_every_finished_stage(demo_run):
    out, first = demo_run
    report = out / "run" / "report.html"
    before = report.stat().st_mtime_ns
    again = _demo(out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("done already, skipped") >= 5
    assert "running" not in again.stdout
    assert report.stat().st_mtime_ns == before
    assert _summary(again.stdout) == _summary(first.stdout)
