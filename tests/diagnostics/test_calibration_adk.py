"""Science checks of the diagnostics on the controlled adenylate-kinase model (slow).

One small controlled set (``adk_model``: 32 px, SNR 0.1, 5 % pure-noise and 5 % wrong-
structure junk) and one short SVI run serve every test; the last test runs the real
``atomicspi fit`` -> ``atomicspi calibrate`` path (refined posterior). Full-size numbers come
from ``benchmarks/calibration.py``.
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
    half_set_fsc,
    nuts_reference,
    posterior_predictive_check,
    prior_latents,
    sbc,
    shrink_guide,
    simulate_images,
    write_ppc,
)
from atomicspi_bayes.posterior import refine_posterior, refined_sampler

pytestmark = pytest.mark.slow

N_SIMS, Z_GRID = 200, np.linspace(-4.0, 4.0, 161)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adk_controlled")
    cs = make_controlled_set(
        folder, 256, box=32, pixel_size=3.0, resolution=9.0, junk_noise=0.05, junk_wrong=0.05,
        batch_size=32, seed=0,
    )  # fmt: skip
    params = train_guide(jax.random.PRNGKey(1), cs.problem, cs.truth_params, 120)
    return cs, params


def test_sbc_passes_for_the_refined_posterior_and_fails_when_shrunk(fitted):
    """The refined posterior a fit reports (here the exact per-particle grid posterior) is
    calibrated under our simulator, noise model and prior draws, and the same posterior
    with half its spread is rejected by the same test: the check can fail."""
    cs, params = fitted
    refined = refined_sampler(cs.problem)
    assert refined.method == "grid"
    kwargs = dict(n_sims=N_SIMS, n_draws=99, batch_size=32, guide=refined)
    good = sbc(jax.random.PRNGKey(2), cs.problem, params, **kwargs)
    assert good.ks_pvalue["z1"] > 0.01, good.to_json()
    assert 0.85 <= good.coverage[0.9]["z1"] <= 0.95, good.to_json()
    assert good.passes() and good.acceptance_rate == 1.0
    assert good.contraction["z1"] > 0.5  # an informative posterior, not the prior
    shrunk = sbc(jax.random.PRNGKey(2), cs.problem, params, draw_scale=0.5, **kwargs)
    assert shrunk.ks_pvalue["z1"] < 1e-4 and not shrunk.passes()


def test_sbc_of_the_amortized_guide_matches_direct_coverage(fitted):
    """SBC (ranks among guide draws) of the trained encoder measures the coverage its
    Gaussian intervals have on fresh particles of the model (computed directly from the
    encoder's means/sds and the true z); its 2x-shrunk copy covers far less."""
    cs, params = fitted
    problem = cs.problem
    key = jax.random.PRNGKey(3)
    amortized = sbc(key, problem, params, n_sims=N_SIMS, n_draws=99, batch_size=32)
    shrunk = sbc(
        key, problem, params, n_sims=N_SIMS // 2, n_draws=19, batch_size=32,
        guide=shrink_guide(problem.guide, 0.5),
    )  # fmt: skip
    assert shrunk.coverage[0.9]["z1"] < amortized.coverage[0.9]["z1"] - 0.1
    covered = []
    for i in range(N_SIMS // 40):
        template = problem.batch(np.arange(40) + 40 * i)
        k_lat, k_img = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(10), i))
        latents, _ = prior_latents(k_lat, problem, params, template)
        batch = template._replace(images=simulate_images(k_img, problem, params, template, latents))
        enc = problem.guide.encode(params, batch)
        z = np.asarray(latents["z"][:, 0])
        covered.append(np.abs(z - enc.z_mean[:, 0]) <= 1.6449 * enc.z_sd[:, 0])
    direct = float(np.mean(np.concatenate(covered)))
    assert abs(direct - amortized.coverage[0.9]["z1"]) < 0.12  # ~3 binomial sds


def test_amortization_gap_table(fitted):
    cs, params = fitted
    good = np.flatnonzero(cs.junk == 0)[:48]
    gap = amortization_gap(
        jax.random.PRNGKey(4), cs.problem, params, good, z_grid=Z_GRID, truth=cs.z[good]
    )
    table = gap.table
    assert gap.method == "grid" and table["q_sd"].shape == (48,)
    assert np.all((table["ref_mass_in_q90"] >= 0) & (table["ref_mass_in_q90"] <= 1))
    assert np.all(table["ref_mass_in_q50"] <= table["ref_mass_in_q90"] + 1e-9)
    # the truth lies in the exact posterior's bulk: |truth - ref mean| / ref sd ~ N(0, 1)
    z = (table["truth"] - table["ref_mean"]) / table["ref_sd"]
    assert 0.7 < np.std(z) < 1.3
    ratio = table["sd_ratio"]
    assert np.all(ratio == table["q_sd"] / table["ref_sd"]) and np.all(ratio > 0)


def test_grid_reference_and_refined_posterior_agree_with_nuts(fitted):
    cs, params = fitted
    positions = np.flatnonzero(cs.junk == 0)[:2]
    draws = nuts_reference(
        jax.random.PRNGKey(5), cs.problem, params, positions, num_warmup=80, num_samples=160
    )
    gap = amortization_gap(jax.random.PRNGKey(6), cs.problem, params, positions, z_grid=Z_GRID)
    nuts_mean, nuts_sd = draws.mean(axis=0)[:, 0], draws.std(axis=0)[:, 0]
    ref_mean, ref_sd = gap.table["ref_mean"], gap.table["ref_sd"]
    assert np.all(np.abs(nuts_mean - ref_mean) < 0.3 * ref_sd)
    assert np.all(np.abs(nuts_sd / ref_sd - 1.0) < 0.25)
    refined = refine_posterior(jax.random.PRNGKey(7), cs.problem, params, positions)
    np.testing.assert_allclose(refined.z_mean[:, 0], ref_mean, atol=0.02 * ref_sd.min())
    np.testing.assert_allclose(refined.z_sd[:, 0], ref_sd, rtol=0.02)


def test_ppc_ranks_injected_junk_on_top(fitted, tmp_path):
    cs, params = fitted
    ppc = posterior_predictive_check(
        jax.random.PRNGKey(7), cs.problem, params, n_draws=4, n_replicas=2
    )
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
    result, map1, _ = half_set_fsc(jax.random.PRNGKey(9), cs.problem, params, z, max_per_half=64)
    assert map1.shape == (32, 32, 32) and result.n_half == (64, 64)
    assert result.fsc[1] > 0.99  # two halves of one ensemble agree at low resolution
    same, *_ = half_set_fsc(jax.random.PRNGKey(9), cs.problem, params, np.zeros((10, 1)))
    assert np.all(same.fsc[1:] > 0.999) and np.isnan(same.resolution)


def test_cli_calibrate_and_diagnose_on_a_fit_run(fitted, tmp_path):
    """`atomicspi fit` -> `atomicspi calibrate` (rebuilds the model, restores the params) ->
    diagnostics of the same run -> the report reads the results."""
    from atomicspi_bayes.cli import app
    from atomicspi_bayes.diagnostics import DiagnoseOptions, diagnose_run
    from atomicspi_bayes.pipeline import fit
    from atomicspi_bayes.report.artifacts import scan_run

    cs, _ = fitted
    run = tmp_path / "run"
    cfg = controlled_config(8, 9.0, 32, 0)
    fitted_run = fit(
        cs.star, cs.star.parent / "adk_open.pdb", run, cfg.replace(epochs=1, n_draws=10)
    )
    lat = np.load(run / "latents.npz")
    assert str(lat["posterior_method"]) == "grid"  # the refined posterior is reported
    assert lat["z_mean_amortized"].shape == lat["z_mean"].shape == (cs.junk.size, 1)
    assert not np.allclose(lat["z_mean"], lat["z_mean_amortized"])
    result = CliRunner().invoke(app, ["calibrate", str(run), "--n", "32", "--draws", "19"])
    assert result.exit_code == 0, result.output
    data = json.loads((run / "calibration" / "sbc.json").read_text())
    assert data["n_sims"] == 32 and data["n_draws"] == 19 and "ks_pvalue" in data
    assert data["posterior"] == "refined (grid)"
    options = DiagnoseOptions(ppc_n=32, ppc_draws=2, gap=2)
    diagnose_run(run, fitted_run.problem, fitted_run.params, options)
    names = {p.name for p in (run / "diagnostics").iterdir()}
    assert {"ppc.csv", "amortization_gap.csv", "fsc.json", "summary.json"} <= names
    art = scan_run(run)
    assert [c.name for c in art.calibration] == ["sbc"]
    assert "amortization_gap.csv" in art.diagnostics
