"""`atomicspi simulate` and synthetic.cryoem: files, truth, determinism, SNR, bad input."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from MDAnalysisTests.datafiles import DCD, PSF, PDB_small

from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.io import load_structure, open_stack, read_particles
from atomicspi_bayes.physics.geometry import geodesic_angle
from atomicspi_bayes.synthetic import CryoEMDatasetConfig, simulate_dataset

SMALL = ["--box", "64", "--pixel-size", "2.0"]


@pytest.fixture(scope="module")
def adk():
    return load_structure(PDB_small, topology=PSF)


@pytest.mark.slow
def test_in_memory_dataset_truth_snr_and_determinism(adk):
    cfg = CryoEMDatasetConfig(n_particles=12, box=64, pixel_size=2.0, snr=0.05, chunk_size=5,
                              shift_sd=1.5)  # fmt: skip
    a = simulate_dataset(jax.random.key(3), adk.coords, adk.elements, cfg, anchor=adk.ca_indices)
    assert a.images.shape == (12, 64, 64) and a.images.dtype == np.float32
    np.testing.assert_allclose(a.clean_variance / a.noise_sigma**2, 0.05, rtol=1e-4)
    # empirical SNR: noise variance of the written image matches σ²
    ca = adk.ca_indices
    cfg_clean = CryoEMDatasetConfig(**{**cfg.__dict__, "snr": None})
    clean = simulate_dataset(jax.random.key(3), adk.coords, adk.elements, cfg_clean, anchor=ca)
    resid_var = np.var(a.images - clean.images, axis=(1, 2))
    np.testing.assert_allclose(resid_var / a.noise_sigma**2, 1.0, rtol=0.1)
    np.testing.assert_array_equal(clean.noise_sigma, 0.0)
    np.testing.assert_allclose(clean.clean_variance, a.clean_variance, rtol=1e-5)
    # same key -> identical, and the chunk size does not change the result
    cfg_b = CryoEMDatasetConfig(**{**cfg.__dict__, "chunk_size": 12})
    b = simulate_dataset(jax.random.key(3), adk.coords, adk.elements, cfg_b, anchor=ca)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.rotations, b.rotations)
    c = simulate_dataset(jax.random.key(4), adk.coords, adk.elements, cfg, anchor=adk.ca_indices)
    assert not np.allclose(a.images, c.images)
    # truth ranges
    mean_def = 0.5 * (a.ctf.defocus_u + a.ctf.defocus_v)
    assert np.all((mean_def >= 1e4) & (mean_def <= 2.5e4))
    assert np.all(np.abs(a.ctf.defocus_u - a.ctf.defocus_v) <= 1000.0 + 1e-3)
    np.testing.assert_allclose(np.linalg.det(a.rotations), 1.0, atol=1e-5)
    assert np.std(a.shifts) > 0.5


def test_cli_writes_star_stack_truth(run_cli, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ds"
    weights = tmp_path / "w.txt"
    w = np.zeros(98)
    w[[0, 97]] = [1.0, 3.0]
    np.savetxt(weights, w)
    args = ["simulate", PSF, "--trajectory", DCD, "--weights", weights, "--out", out, "--n", 16,
            *SMALL, "--snr", 0.1, "--seed", 5, "--shift-sd", 2.0]  # fmt: skip
    code, stdout, err = run_cli(args)
    assert code == 0, err
    assert "16 particles" in stdout
    meta = read_particles(out / "particles.star")
    truth = np.load(out / "truth.npz")
    assert len(meta) == 16 and meta.has_poses and meta.has_ctf
    assert set(truth.files) >= {"rotations", "shifts", "defocus_u", "defocus_v", "frame_index",
                                "path_position", "noise_sigma", "snr"}  # fmt: skip
    assert set(np.unique(truth["frame_index"])) <= {0, 97}
    np.testing.assert_allclose(truth["path_position"], truth["frame_index"] / 97)
    assert float(truth["snr"]) == pytest.approx(0.1)
    # STAR poses/CTF are the truth (degrees round-tripped through the text file)
    assert float(np.max(np.asarray(geodesic_angle(meta.rotations, truth["rotations"])))) < 1e-4
    np.testing.assert_allclose(meta.shifts, truth["shifts"], atol=1e-3)
    np.testing.assert_allclose(meta.defocus_u, truth["defocus_u"], rtol=1e-6)
    np.testing.assert_allclose(meta.defocus_angle, truth["defocus_angle"], atol=1e-5)
    np.testing.assert_allclose(meta.pixel_size, 2.0)
    assert int(meta.box_size[0]) == 64
    stack = open_stack(out / "particles.mrcs")
    imgs = np.asarray(stack[np.arange(16)])
    assert imgs.shape == (16, 64, 64) and np.all(np.isfinite(imgs))
    # same seed -> identical files; refuses to overwrite without --force
    first = {p: (out / p).read_bytes() for p in ("particles.star", "particles.mrcs", "truth.npz")}
    code, _, err = run_cli(args)
    assert code == 2 and "--force" in err and err.count("\n") == 1
    code, _, err = run_cli([*args, "--force"])
    assert code == 0, err
    for p, data in first.items():
        assert (out / p).read_bytes() == data, p


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--pixel-size", "0"], "pixel size"),
        (["--pixel-size", "-1"], "pixel size"),
        (["--snr", "0"], "SNR"),
        (["--snr", "-0.5"], "SNR"),
        (["--snr", "0.1", "--noise-free"], "exclude"),
        (["--box", "24"], "box too small"),
        (["--n", "0"], "particles"),
    ],
)
def test_cli_bad_input_exit_2(run_cli, tmp_path, monkeypatch, capsys, extra, message):
    args = ["simulate", PDB_small, "--topology", PSF, "--out", tmp_path / "x", *extra]
    code, _, err = run_cli(args)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x" / "particles.star").exists()


def test_cli_unreadable_inputs(run_cli, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "broken.pdb"
    bad.write_text("this is not a structure\n")
    for args in (
        ["simulate", tmp_path / "missing.pdb", "--out", tmp_path / "o"],
        ["simulate", bad, "--out", tmp_path / "o"],
        [
            "simulate",
            PSF,
            "--trajectory",
            DCD,
            "--weights",
            tmp_path / "nope.npy",
            "--out",
            tmp_path / "o",
        ],
    ):
        code, _, err = run_cli(args)
        assert code == 2 and err.startswith("error:") and err.count("\n") == 1, err
    w = tmp_path / "w.npy"
    np.save(w, np.ones(5))
    args = ["simulate", PSF, "--trajectory", DCD, "--weights", w, "--out", tmp_path / "o"]
    code, _, err = run_cli(args)
    assert code == 2 and "5 frame weights for 98 frames" in err


def test_library_validation():
    with pytest.raises(ConfigError):
        CryoEMDatasetConfig(defocus_min=3e4, defocus_max=1e4)
    with pytest.raises(ConfigError):
        CryoEMDatasetConfig(amplitude_contrast=1.0)
    with pytest.raises(InputFormatError):
        simulate_dataset(
            jax.random.key(0), np.zeros((0, 3)), [], CryoEMDatasetConfig(n_particles=1)
        )
    with pytest.raises(InputFormatError):
        simulate_dataset(
            jax.random.key(0),
            np.full((3, 3), np.nan),
            ["C"] * 3,
            CryoEMDatasetConfig(n_particles=1),
        )
