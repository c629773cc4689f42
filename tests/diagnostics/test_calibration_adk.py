"""Science checks of the diagnostics on the controlled adenylate-kinase model (slow).

One small controlled set (``adk_model``: 32 px, SNR 0.1, 5 % pure-noise and 5 % wrong-
structure junk) and one short SVI run serve every test. Full-size numbers come from
``benchmarks/calibration.py``.
"""

import json

import jax
import numpy as np
import pytest
from adk_model import controlled_config, make_controlled_set, train_guide
from scipy.stats import mannwhitneyu
from typer.testing import CliRunner

from atomicspi_bayes.diagnostics import (
    amortization_gap,
    grid_guide,
    half_set_fsc,
    nuts_reference,
    posterior_predictive_check,
    sbc,
    shrink_guide,
    write_ppc,
)

pytestmark = pytest.mark.slow

N_SIMS, Z_GRID = 256, np.linspace(-4.0, 4.0, 161)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adk_controlled")
    cs = make_controlled_set(
        folder, 384, box=32, pixel_size=3.0, resolution=9.0, junk_noise=0.05, junk_wrong=0.05,
        batch_size=32, seed=0,
    )  # fmt: skip
    params = train_guide(jax.random.PRNGKey(1), cs.problem, cs.truth_params, 300)
    return cs, params


@pytest.fixture(scope="module")
def exact_sbc(fitted):
    cs, params = fitted
    guide = grid_guide(cs.problem, params, Z_GRID)
    run = lambda scale: sbc(  # noqa: E731
        jax.random.PRNGKey(2), cs.problem, params, n_sims=N_SIMS, n_draws=99, guide=guide,
        batch_size=32, draw_scale=scale,
    )  # fmt: skip
    return run(1.0), run(0.5)


def test_sbc_passes_for_the_exact_posterior_and_rejects_it_shrunk(exact_sbc):
    """The exact (grid) posterior of the real model is calibrated under our simulator, noise
    model and prior draws; the same posterior with half its spread is rejected."""
    good, shrunk = exact_sbc
    assert good.ks_pvalue["z1"] > 0.01
    assert 0.85 <= good.coverage[0.9]["z1"] <= 0.95
    assert good.passes() and good.acceptance_rate == 1.0
    assert good.contraction["z1"] > 0.5  # an informative posterior, not the prior
    assert shrunk.ks_pvalue["z1"] < 1e-4 and shrunk.coverage[0.9]["z1"] < 0.75
    assert not shrunk.passes()


def test_sbc_of_the_amortized_guide_matches_its_measured_gap(fitted):
    """SBC of the trained encoder and of its 2x-shrunk copy; the coverage SBC measures is
    the coverage the amortization-gap table measures against the exact posterior."""
    cs, params = fitted
    key = jax.random.PRNGKey(3)
    amortized = sbc(key, cs.problem, params, n_sims=N_SIMS, n_draws=99, batch_size=32)
    shrunk = sbc(
        key, cs.problem, params, n_sims=N_SIMS, n_draws=99, batch_size=32,
        guide=shrink_guide(cs.problem.guide, 0.5),
    )  # fmt: skip
    assert shrunk.ks_pvalue["z1"] < 1e-4 and not shrunk.passes()
    assert shrunk.coverage[0.9]["z1"] < amortized.coverage[0.9]["z1"] - 0.1
    good = np.flatnonzero(cs.junk == 0)[:64]
    gap = amortization_gap(
        jax.random.PRNGKey(4), cs.problem, params, good, z_grid=Z_GRID, truth=cs.z[good]
    )
    assert gap.method == "grid" and gap.table["q_sd"].shape == (64,)
    assert abs(gap.summary["mean_ref_mass_in_q90"] - amortized.coverage[0.9]["z1"]) < 0.1
    # the truth lies in the exact posterior's bulk: |truth - ref mean| / ref sd ~ N(0, 1)
    z = (gap.table["truth"] - gap.table["ref_mean"]) / gap.table["ref_sd"]
    assert 0.7 < np.std(z) < 1.3


def test_grid_reference_agrees_with_nuts(fitted):
    cs, params = fitted
    positions = np.flatnonzero(cs.junk == 0)[:2]
    draws = nuts_reference(
        jax.random.PRNGKey(5), cs.problem, params, positions, num_warmup=150, num_samples=300
    )
    gap = amortization_gap(jax.random.PRNGKey(6), cs.problem, params, positions, z_grid=Z_GRID)
    nuts_mean, nuts_sd = draws.mean(axis=0)[:, 0], draws.std(axis=0)[:, 0]
    ref_mean, ref_sd = gap.table["ref_mean"], gap.table["ref_sd"]
    assert np.all(np.abs(nuts_mean - ref_mean) < 0.3 * ref_sd)
    assert np.all(np.abs(nuts_sd / ref_sd - 1.0) < 0.25)


def test_ppc_ranks_injected_junk_on_top(fitted, tmp_path):
    cs, params = fitted
    ppc = posterior_predictive_check(jax.random.PRNGKey(7), cs.problem, params, n_draws=8)
    score, junk = ppc.outlier_score, cs.junk
    for kind in (1, 2):  # pure noise, wrong structure
        keep = (junk == 0) | (junk == kind)
        pos, neg = score[keep & (junk == kind)], score[keep & (junk == 0)]
        assert mannwhitneyu(pos, neg).statistic / (pos.size * neg.size) >= 0.95
    good = junk == 0
    assert 0.9 < np.median(ppc.chi2_per_dof[good]) < 1.1  # the model explains its own data
    assert 0.2 < np.median(ppc.p_value[good]) < 0.8
    paths = write_ppc(ppc, tmp_path)
    assert {p.name for p in paths} >= {"ppc.csv", "ppc_groups.csv", "ppc.json", "ppc_spectrum.png"}
    assert json.loads((tmp_path / "ppc.json").read_text())["n_particles"] == cs.junk.size


def test_half_set_fsc_of_the_ensembles(fitted):
    cs, params = fitted
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(8), (200, 1)))
    result, map1, _ = half_set_fsc(jax.random.PRNGKey(9), cs.problem, params, z)
    assert map1.shape == (32, 32, 32) and result.n_half == (100, 100)
    assert result.fsc[1] > 0.99  # two halves of one ensemble agree at low resolution
    same, *_ = half_set_fsc(jax.random.PRNGKey(9), cs.problem, params, np.zeros((10, 1)))
    assert np.all(same.fsc[1:] > 0.999) and np.isnan(same.resolution)


def test_cli_calibrate_and_diagnose_on_a_fit_run(fitted, tmp_path):
    """`atomicspi fit` -> `atomicspi calibrate` / `diagnose` -> the report reads the results."""
    from atomicspi_bayes.cli import app
    from atomicspi_bayes.pipeline import fit
    from atomicspi_bayes.report.artifacts import scan_run

    cs, _ = fitted
    run = tmp_path / "run"
    cfg = controlled_config(8, 9.0, 32, 0)
    fit(cs.star, cs.star.parent / "adk_open.pdb", run, cfg.replace(epochs=1, n_draws=10))
    runner = CliRunner()
    result = runner.invoke(app, ["calibrate", str(run), "--n", "64", "--draws", "19"])
    assert result.exit_code == 0, result.output
    data = json.loads((run / "calibration" / "sbc.json").read_text())
    assert data["n_sims"] == 64 and data["n_draws"] == 19 and "ks_pvalue" in data
    result = runner.invoke(app, ["diagnose", str(run), "--ppc-n", "64", "--gap", "4"])
    assert result.exit_code == 0, result.output
    names = {p.name for p in (run / "diagnostics").iterdir()}
    assert {"ppc.csv", "amortization_gap.csv", "fsc.json", "summary.json"} <= names
    art = scan_run(run)
    assert [c.name for c in art.calibration] == ["sbc"]
    assert "amortization_gap.csv" in art.diagnostics
