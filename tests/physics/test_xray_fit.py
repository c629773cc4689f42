"""``atomicspi fit --modality xray`` (pipeline.fit_xray): run layout, orientations, bad input."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from MDAnalysisTests.datafiles import DCD, PSF

from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.io import load_trajectory, write_multimodel_pdb
from atomicspi_bayes.physics.xray_orientation import twofold_angle
from atomicspi_bayes.pipeline.fit_xray import XrayFitConfig, fit_xray, read_xray_fit_config
from atomicspi_bayes.synthetic.xray import (
    XrayDatasetConfig,
    default_xray_geometry,
    simulate_xray_dataset,
)


def _cli(*args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "atomicspi_bayes.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def bright(tmp_path_factory):
    """8 bright residue-bead patterns of AdK frame 0 on a 32² detector + frame-0 reference."""
    root = tmp_path_factory.mktemp("xfit")
    model, frames = load_trajectory(DCD, PSF)
    write_multimodel_pdb(root / "ref.pdb", model, frames[0][None])
    cfg = XrayDatasetConfig(
        n_patterns=8, geometry=default_xray_geometry(32), fluence_photons_per_angstrom2=1e7,
        frame_indices=(0,), batch_size=8,
    )  # fmt: skip
    summary = simulate_xray_dataset(jax.random.key(0), PSF, root / "data", cfg, DCD)
    return root, summary


def test_bad_xray_fit_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        XrayFitConfig(search_model="voxels")
    with pytest.raises(ConfigError):
        XrayFitConfig(map_step=0.0)
    with pytest.raises(ConfigError):
        XrayFitConfig(background=0.0)
    with pytest.raises(ConfigError, match="search_bin_factor"):
        XrayFitConfig(search_bin_factor=0)
    with pytest.raises(ConfigError, match="search_resolution"):
        XrayFitConfig(search_resolution=-1.0)
    recipe = tmp_path / "r.toml"
    recipe.write_text("[xray]\nn_gird = 10\n")
    with pytest.raises(ConfigError, match="n_gird"):
        read_xray_fit_config(recipe)
    recipe.write_text("[xray]\nn_grid = 'many'\n")
    with pytest.raises(ConfigError, match="n_grid"):
        read_xray_fit_config(recipe)


def test_adk_xray_recipe_reads_both_tables():
    from pathlib import Path

    from atomicspi_bayes.pipeline import read_fit_config

    recipe = Path(__file__).resolve().parents[2] / "models" / "adk_xray.toml"
    assert read_fit_config(recipe).resolution == 12.0
    xcfg = read_xray_fit_config(recipe)
    assert xcfg.search_model == "atoms" and xcfg.n_grid >= 10000


def test_fit_refuses_a_folder_that_is_not_an_xray_dataset(tmp_path):
    (tmp_path / "particles.star").write_text("data_\n")
    with pytest.raises(InputFormatError, match=r"xray\.json"):
        fit_xray(tmp_path / "particles.star", tmp_path / "ref.pdb", tmp_path / "run")
    out = _cli("fit", tmp_path, "--structure", tmp_path / "ref.pdb", "--out", tmp_path / "run",
               "--modality", "xray")  # fmt: skip
    assert out.returncode == 2 and "xray.json" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1  # one line, no traceback
    out = _cli("fit", tmp_path, "--structure", tmp_path / "ref.pdb", "--out", tmp_path / "run",
               "--modality", "neutron")  # fmt: skip
    assert out.returncode == 2 and "modality" in out.stderr


def test_negative_counts_are_refused(bright, tmp_path):
    import shutil

    from atomicspi_bayes.io import open_stack

    root, _ = bright
    data = tmp_path / "data"
    shutil.copytree(root / "data", data)
    stack = np.asarray(open_stack(data / "particles.mrcs")[np.arange(8)])
    stack[0, 0, 0] = -1.0
    from atomicspi_bayes.io import write_stack

    write_stack(data / "particles.mrcs", stack, 2e4)
    with pytest.raises(InputFormatError, match="negative"):
        fit_xray(data, root / "ref.pdb", tmp_path / "run")


def test_diagnose_and_calibrate_refuse_an_xray_run_in_one_line(tmp_path):
    from atomicspi_bayes.pipeline import FitConfig
    from atomicspi_bayes.pipeline.fit import write_fit_config
    from atomicspi_bayes.pipeline.runs import load_fitted_run

    run = tmp_path / "run"
    run.mkdir()
    facts = {"modality": "xray", "particles": str(tmp_path), "structure": str(tmp_path / "r.pdb")}
    write_fit_config(run / "config.toml", FitConfig(), facts)
    np.savez(run / "latents.npz", z_mean=np.zeros((2, 1)))
    with pytest.raises(ConfigError, match="X-ray run"):
        load_fitted_run(run)
    out = _cli("diagnose", run)  # calibrate reopens the run through the same load_fitted_run
    assert out.returncode == 2, out.stderr
    assert "X-ray run" in out.stderr and "--no-ppc --no-fsc" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1  # one line, no traceback


@pytest.mark.slow
def test_cli_fit_xray_recovers_orientations_and_writes_the_run_layout(bright, tmp_path):
    root, summary = bright
    recipe = tmp_path / "x.toml"
    recipe.write_text(
        "[fit]\nn_modes = 4\nepochs = 4\nbatch_size = 4\nn_draws = 5\nn_ensemble = 2\n"
        "[xray]\nbin_factor = 1\nn_grid = 3000\ntop_k = 2\nmap_step = 0.004\n"
        'search_model = "beads"\nsearch_modes = 0\n'
    )
    run = tmp_path / "run"
    out = _cli("fit", root / "data" / "particles.star", "--structure", root / "ref.pdb",
               "--out", run, "--modality", "xray", "--config", recipe, "--quiet")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "photons/pattern" in out.stdout
    lat = np.load(run / "latents.npz")
    assert lat["z_mean"].shape == (8, 1) and lat["z_draws"].shape == (5, 8, 1)
    np.testing.assert_array_equal(lat["particle_index"], np.arange(8))
    for name in ("config.toml", "elbo.npy", "posterior.nc", "ensemble.pdb", "truth.npz"):
        assert (run / name).is_file(), name
    assert 'modality = "xray"' in (run / "config.toml").read_text()
    truth = np.load(run / "truth.npz")
    err = np.degrees(
        np.asarray(
            twofold_angle(jnp.asarray(lat["rotation_mean"]), jnp.asarray(truth["rotations"]))
        )
    )
    assert summary["mean_photons_per_pattern"] > 1000
    assert np.median(err) < 5.0, err
    assert np.all(np.isfinite(np.load(run / "elbo.npy")))
    # a finished run is not overwritten without --force
    again = _cli("fit", root / "data", "--structure", root / "ref.pdb", "--out", run,
                 "--modality", "xray", "--config", recipe, "--quiet")  # fmt: skip
    assert again.returncode == 2 and "--force" in again.stderr
    # the posterior tables of an X-ray run (the model-based checks are refused, see above)
    diag = _cli("diagnose", run, "--no-ppc", "--no-fsc")
    assert diag.returncode == 0, diag.stderr
    assert (run / "diagnostics").is_dir()
    json.dumps(summary)


def test_search_scores_its_own_pixels_and_the_svi_its_own(bright, tmp_path):
    """Search: every measured pixel unbinned by default; SVI: bins and the resolution cut."""
    from atomicspi_bayes.pipeline import FitConfig
    from atomicspi_bayes.pipeline.fit_xray import _Setup
    from atomicspi_bayes.synthetic.xray import read_xray_dataset

    root, _ = bright
    _, _, stack = read_xray_dataset(root / "data")
    counts = np.asarray(stack[np.arange(len(stack))])
    setup = _Setup(
        root / "data", root / "ref.pdb", FitConfig(resolution=20.0), XrayFitConfig(), None
    )
    measured = default_xray_geometry(32).n_pixels ** 2
    assert setup.search.k.shape[0] < measured  # the beam stop is not scored
    np.testing.assert_allclose(setup.search.counts.sum(1), counts.sum((1, 2)))  # every photon
    assert np.linalg.norm(setup.svi.k, axis=1).max() <= 1 / 20.0
    assert setup.svi.counts.shape == (8, setup.svi.k.shape[0]) < setup.search.counts.shape
    assert setup.k_max_map == pytest.approx(np.linalg.norm(setup.search.k, axis=1).max())
    binned = _Setup(
        root / "data", root / "ref.pdb", FitConfig(resolution=20.0),
        XrayFitConfig(search_bin_factor=2, search_resolution=20.0), None,
    )  # fmt: skip
    np.testing.assert_array_equal(binned.search.k, binned.svi.k)
    np.testing.assert_array_equal(binned.search.counts, binned.svi.counts)
    with pytest.raises(ConfigError, match=r"search_resolution = 1000\.0"):
        _Setup(
            root / "data", root / "ref.pdb", FitConfig(),
            XrayFitConfig(search_resolution=1000.0), None,
        )  # fmt: skip


@pytest.mark.slow
def test_template_path_with_a_learned_bend_separates_the_two_states(tmp_path):
    """Closed (frame 0) and open (frame 97) patterns, the open state as template, one EM
    round bending the path: the search ranks every open pattern above every closed one and
    the bend is stored (finite, zero mean would be a no-op: it must have moved)."""
    from atomicspi_bayes.pipeline import FitConfig

    model, frames = load_trajectory(DCD, PSF)
    write_multimodel_pdb(tmp_path / "ref.pdb", model, frames[0][None])
    write_multimodel_pdb(tmp_path / "open.pdb", model, frames[-1][None])
    cfg = XrayDatasetConfig(
        n_patterns=12, geometry=default_xray_geometry(32), fluence_photons_per_angstrom2=1e7,
        frame_indices=(0, 97), batch_size=12, coarse_grained=False,
    )  # fmt: skip
    simulate_xray_dataset(jax.random.key(3), PSF, tmp_path / "data", cfg, DCD)
    fit_cfg = FitConfig(n_modes=4, epochs=1, batch_size=4, n_draws=3, n_ensemble=2, force=True)
    xcfg = XrayFitConfig(
        n_grid=3000, top_k=2, map_step=0.004, template=str(tmp_path / "open.pdb"),
        n_search_conformations=3, bend_rounds=1, bend_steps=2,
    )  # fmt: skip
    result = fit_xray(tmp_path / "data", tmp_path / "ref.pdb", tmp_path / "run", fit_cfg, xcfg)
    truth = np.load(tmp_path / "data" / "truth.npz")
    is_open = truth["frame_index"] == 97
    position = result.search["search_mean"][:, 0]
    assert is_open.any() and (~is_open).any()
    assert position[is_open].min() > position[~is_open].max()
    bend = np.load(tmp_path / "run" / "latents.npz")["path_bend"]
    assert bend.shape == (model.n_atoms, 3) and np.all(np.isfinite(bend))
    assert np.abs(bend).max() > 0.0
    objective = result.search["path_bend_objective"]
    assert objective.shape == (2,) and objective[-1] >= objective[0]
    with pytest.raises(ConfigError, match="template"):
        XrayFitConfig(bend_rounds=1)
