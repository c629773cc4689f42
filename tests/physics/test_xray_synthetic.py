"""Synthetic X-ray datasets: files, truth, reproducibility, read-back (small and fast)."""

import json

import jax
import numpy as np
import pytest
from MDAnalysisTests.datafiles import DCD, PSF

from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.io import open_stack, read_particles
from atomicspi_bayes.physics import xray
from atomicspi_bayes.synthetic.xray import (
    XrayDatasetConfig,
    default_xray_geometry,
    read_xray_dataset,
    simulate_xray_dataset,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("xray")
    gaps = np.zeros((32, 32), dtype=bool)
    gaps[:, 24] = True
    geometry = xray.DetectorGeometry(
        n_pixels=32,
        pixel_size_um=800.0,
        distance_mm=100.0,
        photon_energy_kev=6.0,
        beam_stop_radius_px=1.0,
        gap_mask=gaps,
    )
    cfg = XrayDatasetConfig(
        n_patterns=12,
        geometry=geometry,
        frame_indices=(0, 97),
        batch_size=5,
        background_photons_per_pixel=0.01,
    )
    summary = simulate_xray_dataset(jax.random.key(3), PSF, out, cfg, trajectory_path=DCD)
    return out, summary, cfg


def test_files_truth_and_photon_statistics(dataset):
    out, summary, _ = dataset
    for name in ("particles.mrcs", "particles.star", "xray.json", "truth.npz", "gap_mask.npy"):
        assert (out / name).is_file(), name
    truth = np.load(out / "truth.npz")
    assert truth["rotations"].shape == (12, 3, 3)
    np.testing.assert_allclose(
        np.einsum("nij,nkj->nik", truth["rotations"], truth["rotations"]),
        np.broadcast_to(np.eye(3), (12, 3, 3)),
        atol=1e-5,
    )
    assert set(truth["frame_index"]) <= {0, 97} and len(set(truth["frame_index"])) == 2
    np.testing.assert_allclose(truth["path_position"], truth["frame_index"] / 97.0)
    np.testing.assert_allclose(truth["fluence"], 1e6)
    stack = np.asarray(open_stack(out / "particles.mrcs")[np.arange(12)])
    assert stack.shape == (12, 32, 32)
    assert np.all(stack == np.round(stack)) and stack.min() >= 0  # photon counts
    np.testing.assert_array_equal(stack.sum(axis=(1, 2)), truth["photons"])
    assert np.all(stack[:, :, 24] == 0) and np.all(stack[:, 16, 16] == 0)  # gaps, beam stop
    total, expected = truth["photons"].sum(), truth["mean_photons"].sum()
    assert abs(total - expected) < 5 * np.sqrt(expected)
    assert summary["mean_photons_per_pattern"] == pytest.approx(truth["photons"].mean())
    assert json.loads((out / "xray.json").read_text())["modality"] == "xray"
    assert len(read_particles(out / "particles.star")) == 12


def test_read_back_geometry_and_reproducible(dataset, tmp_path):
    out, _, cfg = dataset
    summary, geometry, patterns = read_xray_dataset(out)
    assert len(patterns) == 12 and summary["n_patterns"] == 12
    np.testing.assert_allclose(
        np.asarray(xray.scattering_vectors(geometry)),
        np.asarray(xray.scattering_vectors(cfg.geometry)),
        rtol=1e-6,
    )
    np.testing.assert_array_equal(xray.pixel_mask(geometry), xray.pixel_mask(cfg.geometry))
    again = tmp_path / "again"
    simulate_xray_dataset(jax.random.key(3), PSF, again, cfg, trajectory_path=DCD)
    np.testing.assert_array_equal(
        open_stack(again / "particles.mrcs")[np.arange(12)],
        open_stack(out / "particles.mrcs")[np.arange(12)],
    )


def test_bad_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        XrayDatasetConfig(n_patterns=0)
    with pytest.raises(ConfigError):
        XrayDatasetConfig(fluence_photons_per_angstrom2=-1.0)
    with pytest.raises(ConfigError):
        simulate_xray_dataset(
            jax.random.key(0),
            PSF,
            tmp_path / "x",
            XrayDatasetConfig(
                n_patterns=2, frame_indices=(500,), geometry=default_xray_geometry(16)
            ),
            trajectory_path=DCD,
        )
    with pytest.raises(InputFormatError):
        read_xray_dataset(tmp_path)


def test_cli_detector_and_fluence_options_reach_the_dataset(run_cli, tmp_path):
    """``simulate --modality xray`` options set the geometry; photons scale with fluence."""
    common = ["simulate", PSF, "--trajectory", DCD, "--modality", "xray", "--n", 4,
              "--box", 16, "--energy", 8, "--distance", 80, "--detector-pixel", 1000,
              "--beam-stop", 1, "--noise-free", "--coarse-grained"]  # fmt: skip
    photons = []
    for fluence in ("1e14", "3e14"):
        out = tmp_path / fluence
        code, stdout, err = run_cli([*common, "--out", out, "--fluence", fluence])
        assert code == 0, err
        assert "photons/pattern" in stdout
        info = json.loads((out / "xray.json").read_text())
        geometry = info["detector"]
        assert geometry["photon_energy_kev"] == 8.0 and geometry["distance_mm"] == 80.0
        assert geometry["pixel_size_um"] == 1000.0 and geometry["beam_stop_radius_px"] == 1.0
        assert info["fluence_photons_per_angstrom2"] == pytest.approx(float(fluence) / 1e8)
        photons.append(np.load(out / "truth.npz")["mean_photons"])
    np.testing.assert_allclose(photons[1], 3.0 * photons[0], rtol=1e-5)
