"""`atomicspi fit` end to end on small data from the synthetic module (AdK adk_dims, 64 px).

Slow: one shared simulated dataset (SNR 1, 320 particles) and one shared short fit; the CLI
error paths use tiny copies of it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import starfile
from scipy.stats import spearmanr

from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.pipeline import FitConfig, fit, grid_posterior, nuts_posterior

pytestmark = pytest.mark.slow

N_PARTICLES = 320


def _adk():
    from MDAnalysisTests.datafiles import DCD, PSF

    return PSF, DCD


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """320 particles of the AdK trajectory at SNR 1 (64 px, 1.5 Å) + a frame-0 reference."""
    from atomicspi_bayes.io import load_trajectory, write_multimodel_pdb
    from atomicspi_bayes.synthetic import CryoEMDatasetConfig, simulate_cryoem_dataset

    psf, dcd = _adk()
    root = tmp_path_factory.mktemp("fitdata")
    cfg = CryoEMDatasetConfig(n_particles=N_PARTICLES, box=64, pixel_size=1.5, snr=1.0)
    simulate_cryoem_dataset(jax.random.key(0), psf, root / "sim", cfg, trajectory_path=dcd)
    model, frames = load_trajectory(dcd, psf)
    write_multimodel_pdb(root / "ref.pdb", model, frames[:1])
    return root


@pytest.fixture(scope="module")
def run(dataset):
    cfg = FitConfig(epochs=30, n_draws=20, n_ensemble=5, checkpoint_every=100)
    psf, _ = _adk()  # elements from the topology, recorded for reopening the run
    star = dataset / "sim" / "particles.star"
    return fit(star, dataset / "ref.pdb", dataset / "run", cfg, topology=psf)


def test_run_directory_has_every_output(run, dataset):
    out = run.run_dir
    lat = np.load(out / "latents.npz")
    n = N_PARTICLES
    assert lat["z_mean"].shape == (n, 1) and lat["z_sd"].shape == (n, 1)
    assert lat["z_draws"].shape == (20, n, 1)
    np.testing.assert_array_equal(lat["particle_index"], np.arange(n))
    assert np.load(out / "elbo.npy").shape == run.elbo.shape
    from atomicspi_bayes.diagnostics.export import read_posterior

    idata = read_posterior(out / "posterior.nc")
    assert dict(idata.posterior["z"].sizes) == {
        "chain": 1, "draw": 20, "particle": n, "latent_dim": 1,
    }  # fmt: skip
    assert idata.sample_stats["elbo"].shape == (1, run.elbo.size)
    star = starfile.read(out / "particles.star")["particles"]
    np.testing.assert_allclose(star["atomicspiLatentMean1"], lat["z_mean"][:, 0], rtol=1e-5)
    assert (out / "ensemble.pdb").read_text().count("ENDMDL") == 5
    assert (out / "truth.npz").is_file()
    text = (out / "config.toml").read_text()
    assert "[fit]" in text and "n_particles = 320" in text
    assert list((out / "checkpoints").glob("ckpt_*.npz"))


def test_reopened_run_has_the_topology_and_the_learned_parameters(run):
    from atomicspi_bayes.diagnostics import read_run_facts
    from atomicspi_bayes.pipeline.runs import load_fitted_run

    psf, _ = _adk()
    assert read_run_facts(run.run_dir)["topology"] == str(Path(psf).resolve())
    problem, params = load_fitted_run(run.run_dir)
    np.testing.assert_array_equal(problem.reference.elements, run.problem.reference.elements)
    assert sorted(params) == sorted(run.params)
    for name in ("image_scale", "noise_sigma"):
        np.testing.assert_array_equal(params[name], run.params[name])
    z = np.linspace(-2.0, 2.0, 5)[:, None]
    np.testing.assert_array_equal(problem.decode(params, z), run.problem.decode(run.params, z))


def test_fit_learns_the_conformation_and_the_elbo_rises(run, dataset):
    truth = np.load(dataset / "sim" / "truth.npz")
    q_mean = np.load(run.run_dir / "latents.npz")["z_mean_amortized"]
    for z in (run.z_mean, q_mean):  # reported (refined) posterior and the encoder's q
        assert abs(spearmanr(z[:, 0], truth["frame_index"]).statistic) > 0.85
    k = run.elbo.size // 5
    assert run.elbo[-k:].mean() > run.elbo[:k].mean()


def test_finished_run_is_not_overwritten_without_force(run, dataset):
    with pytest.raises(ConfigError, match="--force"):
        fit(dataset / "sim" / "particles.star", dataset / "ref.pdb", run.run_dir, FitConfig())


def _n_modes(weights: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """Number of local maxima above ``floor`` x the peak of each grid posterior (n, G)."""
    w = weights / weights.max(axis=1, keepdims=True)
    inner = (w[:, 1:-1] > w[:, :-2]) & (w[:, 1:-1] >= w[:, 2:]) & (w[:, 1:-1] > floor)
    return inner.sum(axis=1)


def test_grid_and_nuts_posteriors_agree_with_the_encoder(run):
    problem, params = run.problem, run.params
    subset = np.arange(6)
    z_grid = np.linspace(-4.0, 4.0, 161)
    w = grid_posterior(problem, params, subset, z_grid)
    grid_mean = w @ z_grid
    grid_sd = np.sqrt(w @ z_grid**2 - grid_mean**2)
    draws = nuts_posterior(
        problem, params, subset, jax.random.PRNGKey(0), num_warmup=100, num_samples=100
    )
    nuts_mean = draws[..., 0].mean(axis=0)
    # NUTS (one chain) and the exact grid posterior agree where the posterior has one mode
    # (a chain started in a minor mode of a bimodal posterior does not cross to the main one)
    unimodal = _n_modes(w) == 1
    assert unimodal.sum() >= 3
    np.testing.assert_allclose(
        nuts_mean[unimodal], grid_mean[unimodal], atol=0.5 * grid_sd[unimodal].max() + 0.05
    )
    # the amortized q(z | y) is within ~2 posterior sds of the exact posterior mean
    q_mean = np.load(run.run_dir / "latents.npz")["z_mean_amortized"]
    z = np.abs(q_mean[subset, 0] - grid_mean) / grid_sd
    assert np.median(z[unimodal]) < 2.0


# ---------------------------------------------------------------- CLI and bad input


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "atomicspi_bayes.cli", *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _copy_subset(dataset: Path, dest: Path, n: int, drop: tuple[str, ...] = ()) -> Path:
    """First ``n`` particles of the dataset (same stack), without the ``drop`` columns."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(dataset / "sim" / "particles.mrcs", dest / "particles.mrcs")
    star = starfile.read(dataset / "sim" / "particles.star")
    star["particles"] = star["particles"].iloc[:n].drop(columns=list(drop))
    starfile.write(star, dest / "particles.star")
    return dest / "particles.star"


@pytest.mark.parametrize(
    ("drop", "extra", "message"),
    [
        (("rlnDefocusU", "rlnDefocusV"), (), "CTF"),
        (("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"), (), "poses"),
    ],
    ids=["no-ctf", "no-poses"],
)
def test_cli_refuses_bad_particles_with_one_line(dataset, tmp_path, drop, extra, message):
    star = _copy_subset(dataset, tmp_path / "d", 40, drop)
    out = _cli("fit", str(star), "--structure", str(dataset / "ref.pdb"), "--out",
               str(tmp_path / "run"), "--quiet", *extra)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "latents.npz").exists()


def test_cli_refuses_a_structure_larger_than_the_box(dataset, tmp_path):
    from atomicspi_bayes.io import load_structure, write_multimodel_pdb

    model = load_structure(dataset / "ref.pdb")
    big = model.coords.copy()
    big[0] += 80.0  # one atom far away: the model spans > 64 px x 1.5 Å
    write_multimodel_pdb(tmp_path / "big.pdb", model, big[None])
    star = _copy_subset(dataset, tmp_path / "d", 40)
    out = _cli("fit", str(star), "--structure", str(tmp_path / "big.pdb"), "--out",
               str(tmp_path / "run"), "--quiet")  # fmt: skip
    assert out.returncode == 2 and "box" in out.stderr and "Traceback" not in out.stderr


def test_fit_skips_nan_and_constant_images_and_reports_them(dataset, tmp_path, caplog):
    import mrcfile

    star = _copy_subset(dataset, tmp_path / "d", 64)
    with mrcfile.mmap(tmp_path / "d" / "particles.mrcs", mode="r+") as mrc:
        mrc.data[3] = np.nan
        mrc.data[5] = 0.0
    cfg = FitConfig(epochs=1, batch_size=16, n_modes=8, n_draws=4)
    result = fit(star, dataset / "ref.pdb", tmp_path / "run", cfg)
    assert result.n_excluded == 2
    assert "excluded 2 of 64" in caplog.text
    lat = np.load(tmp_path / "run" / "latents.npz")
    assert lat["z_mean"].shape == (62, 1)
    assert 3 not in lat["particle_index"] and 5 not in lat["particle_index"]


def test_cli_fit_interrupted_and_resumed_equals_an_uninterrupted_run(dataset, tmp_path):
    import signal
    import time

    star = _copy_subset(dataset, tmp_path / "d", 64)
    common = ["fit", str(star), "--structure", str(dataset / "ref.pdb"), "--epochs", "20",
              "--batch-size", "16", "--n-modes", "8", "--quiet", "--config",
              str(tmp_path / "c.toml")]  # fmt: skip
    (tmp_path / "c.toml").write_text("checkpoint_every = 3\nn_draws = 5\n")
    cfg = FitConfig(epochs=20, batch_size=16, n_modes=8, checkpoint_every=3, n_draws=5)
    fit(star, dataset / "ref.pdb", tmp_path / "full", cfg)  # uninterrupted, in process

    proc = subprocess.Popen(
        [sys.executable, "-m", "atomicspi_bayes.cli", *common, "--out", str(tmp_path / "cut")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 600
    while not list((tmp_path / "cut" / "checkpoints").glob("ckpt_*.npz")):
        assert proc.poll() is None and time.time() < deadline, "no checkpoint before exit"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert not (tmp_path / "cut" / "latents.npz").exists()
    resumed = _cli(*common, "--out", str(tmp_path / "cut"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = np.load(tmp_path / "full" / "latents.npz")
    b = np.load(tmp_path / "cut" / "latents.npz")
    np.testing.assert_array_equal(a["z_mean"], b["z_mean"])  # bit-identical parameters
    np.testing.assert_array_equal(a["z_sd"], b["z_sd"])
    # the loss values themselves may differ in the last float32 bit between compilations
    np.testing.assert_allclose(
        np.load(tmp_path / "full" / "elbo.npy"), np.load(tmp_path / "cut" / "elbo.npy"), rtol=1e-6
    )
