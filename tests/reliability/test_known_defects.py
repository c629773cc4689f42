"""Defects the reliability tests found in modules whose owners are still changing them
(reported to them, not patched here). Each test states the contract and is a strict xfail:
when the defect is fixed it passes, pytest reports XPASS as a failure, and the matching
entry of ``reliability_harness.KNOWN_DEFECTS`` (which lets the fuzz count instead of fail on
it) must be removed together with the marker.
"""

from __future__ import annotations

import numpy as np
import pytest
from reliability_harness import KNOWN_DEFECTS, run_cli, shared_data

PDB = shared_data() / "gemmi" / "1orc.pdb"


def _one_line(outcome) -> None:
    assert outcome.code == 2 and outcome.exc is None, outcome.describe()
    assert outcome.err.count("\n") == 1 and outcome.err.startswith("error: "), outcome.err


def test_every_known_defect_has_a_test():
    names = {"fit-config-not-utf8", "diagnose-empty-npy-aborted"}
    assert set(KNOWN_DEFECTS) == names


@pytest.mark.xfail(strict=True, reason=KNOWN_DEFECTS["fit-config-not-utf8"][0])
def test_fit_config_that_is_not_utf8_is_one_line(tmp_path):
    config = tmp_path / "recipe.toml"
    config.write_bytes(b"[fit]\nepochs = \xff\xfe\n")
    outcome = run_cli(["fit", tmp_path / "p.star", "--structure", PDB, "--out", tmp_path / "r",
                       "--config", config])  # fmt: skip
    _one_line(outcome)


@pytest.mark.xfail(strict=True, reason=KNOWN_DEFECTS["diagnose-empty-npy-aborted"][0])
def test_diagnose_with_an_empty_elbo_file_is_one_line(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "latents.npz", z_mean=rng.normal(size=(30, 1)),
             z_sd=np.full((30, 1), 0.2), z_draws=rng.normal(size=(5, 30, 1)),
             particle_index=np.arange(30))  # fmt: skip
    (tmp_path / "elbo.npy").write_bytes(b"")
    _one_line(run_cli(["diagnose", tmp_path, "--no-ppc", "--no-fsc"]))


@pytest.mark.xfail(
    strict=True,
    reason="pipeline/fit.py _prepare_run_dir: --force deletes the previous run's outputs "
    "before the new inputs are read; a refused `fit --force` leaves neither result",
)
def test_refused_fit_with_force_keeps_the_previous_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    np.savez(run / "latents.npz", z_mean=np.zeros((3, 1)))
    (run / "config.toml").write_text("[fit]\n")
    outcome = run_cli(["fit", tmp_path / "missing.star", "--structure", PDB, "--out", run,
                       "--force"])  # fmt: skip
    assert outcome.kind == "refused", outcome.describe()
    assert (run / "latents.npz").exists() and (run / "config.toml").exists()


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="pipeline/fit.py fit: config.toml is rewritten before run_svi refuses an unfinished "
    "run's checkpoints (no --resume/--force); the earlier run's recipe is lost",
)
def test_refused_rerun_into_an_unfinished_run_keeps_its_config(tmp_path, workspace):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(workspace.run, run)
    for name in ("latents.npz", "posterior.nc", "particles.star", "ensemble.pdb", "elbo.npy"):
        (run / name).unlink()  # checkpoints and config.toml of an unfinished run remain
    before = (run / "config.toml").read_bytes()
    outcome = run_cli(["fit", workspace.dataset / "particles.star", "--structure",
                       workspace.structure, "--out", run, "--config", workspace.config,
                       "--epochs", 2, "--batch-size", 5, "--quiet"])  # fmt: skip
    assert outcome.kind == "refused" and "--resume" in outcome.err, outcome.describe()
    assert (run / "config.toml").read_bytes() == before
