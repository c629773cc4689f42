"""`atomicspi diagnose` file summaries (ArviZ), the CLI error contract, and the report reading
what diagnostics write."""

import json

import jax
import numpy as np
import pytest
from typer.testing import CliRunner

from atomicspi_bayes.cli import app
from atomicspi_bayes.diagnostics import rank_statistics, summarize_run, write_sbc, write_summary
from atomicspi_bayes.diagnostics.export import posterior_inference_data, write_posterior
from atomicspi_bayes.diagnostics.summary import nuts_summary
from atomicspi_bayes.errors import InputFormatError

N, D, S = 40, 2, 60


def _fake_run(folder, *, nuts_draws=None):
    rng = np.random.default_rng(0)
    z_mean = rng.normal(size=(N, D)).astype(np.float32)
    z_sd = np.stack([np.full(N, 0.2), np.full(N, 0.97)], axis=1).astype(np.float32)
    z_draws = (z_mean + z_sd * rng.normal(size=(S, N, D))).astype(np.float32)
    index = np.arange(N)
    np.savez(
        folder / "latents.npz", z_mean=z_mean, z_sd=z_sd, z_draws=z_draws, particle_index=index
    )
    elbo = -1000.0 + np.log1p(np.arange(50.0))
    np.save(folder / "elbo.npy", elbo)
    write_posterior(
        folder / "posterior.nc", posterior_inference_data(z_draws, z_mean, z_sd, index, elbo)
    )
    if nuts_draws is not None:
        np.savez(folder / "nuts.npz", z_draws=nuts_draws, particle_index=index[:3])
    return folder


def test_svi_run_summary(tmp_path):
    summary = summarize_run(_fake_run(tmp_path))
    assert summary.n_particles == N and summary.latent_dim == D
    assert summary.sd_quantiles["z1"]["q50"] == pytest.approx(0.2)
    assert summary.contraction["z1"] == pytest.approx(0.96)
    assert summary.contraction["z2"] < 0.1 and any("z2" in note for note in summary.notes)
    assert list(summary.svi_summary.columns[:2]) == ["mean", "sd"]
    assert summary.nuts_summary is None
    paths = write_summary(summary, tmp_path / "diagnostics")
    assert {p.name for p in paths} == {"summary.json", "posterior_sd.png"}
    data = json.loads((tmp_path / "diagnostics" / "summary.json").read_text())
    assert data["posterior_sd_quantiles"]["z2"]["q50"] == pytest.approx(0.97)


def test_split_rhat_detects_a_stuck_chain():
    rng = np.random.default_rng(1)
    good = rng.normal(size=(400, 3, 1))
    mixed = nuts_summary(good)
    assert mixed["r_hat"].max() < 1.02 and mixed["ess_bulk"].min() > 200
    stuck = good + np.linspace(0.0, 3.0, 400)[:, None, None]  # drifting chain
    assert nuts_summary(stuck)["r_hat"].max() > 1.2


def test_nuts_draws_are_summarised(tmp_path):
    draws = np.random.default_rng(2).normal(size=(200, 3, D))
    summary = summarize_run(_fake_run(tmp_path, nuts_draws=draws))
    assert len(summary.nuts_summary) == 3 * D
    names = {p.name for p in write_summary(summary, tmp_path / "diagnostics")}
    assert "nuts_summary.csv" in names
    assert summary.to_json()["nuts"]["max_r_hat"] < 1.05


def test_missing_run_is_one_clear_error(tmp_path):
    with pytest.raises(InputFormatError, match=r"latents\.npz"):
        summarize_run(tmp_path)
    result = CliRunner().invoke(app, ["diagnose", str(tmp_path / "nope")])
    assert result.exit_code != 0


def test_cli_diagnose_without_model_and_report_reads_outputs(tmp_path):
    from atomicspi_bayes.cli import main  # noqa: F401  (the entry point maps errors to exit 2)
    from atomicspi_bayes.report.artifacts import scan_run

    run = _fake_run(tmp_path)
    result = CliRunner().invoke(app, ["diagnose", str(run), "--no-ppc", "--no-fsc"])
    assert result.exit_code == 0, result.output
    assert "Per-particle posterior sd" in result.output
    ranks = np.random.default_rng(3).integers(0, 100, size=(300, 1))
    write_sbc(rank_statistics(jax.random.PRNGKey(0), ranks, 99, names=["z1"]), run / "calibration")
    art = scan_run(run)
    (cal,) = art.calibration
    assert cal.name == "sbc" and cal.ranks.shape == (300, 1) and cal.n_draws == 99
    assert set(cal.coverage) == {0.5, 0.9} and cal.names == ["z1"]
    assert {p.name for p in cal.figures} == {"sbc_ranks.png", "sbc_ecdf.png"}
    assert "summary.json" in art.diagnostics
    assert {p.name for p in art.figures["diagnostics"]} == {"posterior_sd.png"}
