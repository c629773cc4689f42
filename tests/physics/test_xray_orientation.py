"""X-ray orientation search: SO(3) grid, two-fold, intensity map, grid + local search."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from MDAnalysisTests.datafiles import DCD, PSF

from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.io import load_trajectory
from atomicspi_bayes.physics import xray
from atomicspi_bayes.physics import xray_orientation as xo
from atomicspi_bayes.physics.geometry import (
    axis_angle_to_matrix,
    geodesic_angle,
    random_rotations,
)
from atomicspi_bayes.synthetic.xray import default_xray_geometry


@pytest.fixture(scope="module")
def adk_beads():
    model, frames = load_trajectory(DCD, PSF)
    xyz = frames[0] - frames[0].mean(axis=0)
    atoms = xray.atomic_scatterers(model.elements, xyz)
    return xray.bead_scatterers(atoms, model.residue_index, model.n_residues)


def test_so3_grid_is_orthonormal_and_covers_rotation_space():
    grid = xo.so3_grid(2000)
    eye = np.einsum("nij,nkj->nik", grid, grid)
    np.testing.assert_allclose(eye, np.broadcast_to(np.eye(3), eye.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(grid), 1.0, atol=1e-5)
    # every random rotation has a grid point within the covering radius of a 2000-point grid
    probes = random_rotations(jax.random.key(0), 300)
    nearest = np.min(np.asarray(geodesic_angle(probes[:, None], jnp.asarray(grid)[None])), 1)
    assert np.degrees(nearest.max()) < 20.0
    assert np.degrees(np.median(nearest)) < 11.0
    with pytest.raises(ConfigError):
        xo.so3_grid(0)


def test_twofold_partner_gives_the_same_flat_detector_pattern(adk_beads):
    geometry = xray.DetectorGeometry(
        n_pixels=32,
        pixel_size_um=400.0,
        distance_mm=500.0,
        photon_energy_kev=100.0,
        polarization="none",
    )  # fmt: skip  (100 keV: nearly flat Ewald sphere)
    det = xray.detector_arrays(geometry)
    rot = random_rotations(jax.random.key(1), 1)[0]
    mu = np.asarray(xray.intensity(adk_beads, rot, det, 1e6))
    twin = np.asarray(xray.intensity(adk_beads, xo.friedel_twin(rot), det, 1e6))
    assert np.max(np.abs(mu - twin)) < 2e-3 * mu.max()
    err = xo.twofold_angle(xo.friedel_twin(rot)[None], rot[None])
    assert float(err[0]) < 1e-3
    assert float(geodesic_angle(xo.friedel_twin(rot), rot)) == pytest.approx(np.pi, abs=1e-3)


def test_interpolated_map_matches_direct_intensity(adk_beads):
    det = xray.detector_arrays(default_xray_geometry(32))
    k = np.asarray(det.k).reshape(-1, 3)
    imap = xo.intensity_map(adk_beads, float(np.linalg.norm(k, axis=1).max()), 0.002)
    rot = random_rotations(jax.random.key(2), 1)[0]
    direct = np.abs(np.asarray(xray.molecular_transform(jnp.asarray(k), adk_beads, rot))) ** 2
    mapped = np.asarray(xo.map_intensity(imap, jnp.asarray(k), rot))
    assert np.corrcoef(direct, mapped)[0, 1] > 0.995
    assert np.median(np.abs(mapped - direct) / direct.max()) < 2e-3
    stacked = xo.stack_maps([imap, imap._replace(values=2 * imap.values)])
    np.testing.assert_allclose(
        np.asarray(xo.map_intensity(stacked, jnp.asarray(k), rot, 1)), 2 * mapped, rtol=1e-5
    )


def test_binning_sums_counts_and_pixel_factors():
    det = xray.detector_arrays(default_xray_geometry(16))
    binned = xo.bin_detector(det, 2)
    assert binned.k.shape == (8, 8, 3)
    total = float(det.pixel_factor.sum())
    np.testing.assert_allclose(float(binned.pixel_factor.sum()), total, rtol=1e-5)
    counts = np.arange(2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16)
    assert xo.bin_patterns(counts, 2).sum() == counts.sum()
    with pytest.raises(ConfigError):
        xo.bin_detector(det, 0)


@pytest.mark.slow
def test_search_recovers_orientations_of_bright_patterns(adk_beads):
    """Grid (3000) + local search on a 32² detector: median error (mod two-fold) < 3°."""
    geometry = dataclasses.replace(default_xray_geometry(32), distance_mm=70.0)
    det = xray.detector_arrays(geometry)
    true = random_rotations(jax.random.key(3), 4)
    counts, _ = xray.simulate_patterns(
        jax.random.key(4), adk_beads, true, det, 1e7, background=1e-3
    )
    mask = np.asarray(det.mask).ravel()
    k = np.asarray(det.k).reshape(-1, 3)[mask]
    factor = np.asarray(det.pixel_factor).ravel()[mask]
    c = np.asarray(counts, np.float32).reshape(4, -1)[:, mask]
    assert c.sum(axis=1).mean() > 2000
    imap = xo.intensity_map(adk_beads, float(np.linalg.norm(k, axis=1).max()), 0.003)
    fit = xo.search_orientations(
        jax.random.key(5), imap, k, factor, c, 1e7, 1e-3, n_grid=3000, top_k=2
    )
    err = np.degrees(np.asarray(xo.twofold_angle(jnp.asarray(fit.rotations), true)))
    assert np.median(err) < 3.0, err
    assert np.all(fit.models == 0)
    # the recovered pose scores at least as well as the true one (the search succeeded)
    ll_true = np.array(
        [
            float(xo.score_rotations(imap, k, factor, c[i : i + 1], true[i : i + 1], 1e7,
                                     jnp.full(factor.shape, 1e-3))[0, 0])
            for i in range(4)
        ]
    )  # fmt: skip
    assert np.mean(fit.loglik >= ll_true - 1.0) >= 0.75


@pytest.mark.slow
def test_search_over_two_conformations_picks_the_one_that_made_the_data(adk_beads):
    """Open-state (frame 97) patterns scored against closed + open maps choose the open one."""
    model, frames = load_trajectory(DCD, PSF)
    xyz = frames[-1] - frames[-1].mean(axis=0)
    atoms = xray.atomic_scatterers(model.elements, xyz)
    open_beads = xray.bead_scatterers(atoms, model.residue_index, model.n_residues)
    geometry = dataclasses.replace(default_xray_geometry(32), distance_mm=70.0)
    det = xray.detector_arrays(geometry)
    true = random_rotations(jax.random.key(6), 3)
    counts, _ = xray.simulate_patterns(jax.random.key(7), open_beads, true, det, 3e6, 1e-3)
    mask = np.asarray(det.mask).ravel()
    k = np.asarray(det.k).reshape(-1, 3)[mask]
    factor = np.asarray(det.pixel_factor).ravel()[mask]
    c = np.asarray(counts, np.float32).reshape(3, -1)[:, mask]
    k_max = float(np.linalg.norm(k, axis=1).max())
    imap = xo.stack_maps(
        [xo.intensity_map(adk_beads, k_max, 0.004), xo.intensity_map(open_beads, k_max, 0.004)]
    )
    fit = xo.search_orientations(
        jax.random.key(8), imap, k, factor, c, 3e6, 1e-3, n_grid=3000, top_k=3
    )
    assert np.all(fit.models == 1), fit.model_loglik
    assert fit.model_loglik.shape == (3, 2)
    assert np.all(fit.model_loglik[:, 1] > fit.model_loglik[:, 0] + 3.0), fit.model_loglik
    # orientation-marginalised model evidence: the grid quadrature, computed directly
    assert fit.model_logmarginal.shape == (3, 2)
    assert np.all(fit.model_logmarginal[:, 1] > fit.model_logmarginal[:, 0]), fit.model_logmarginal
    grid = jnp.asarray(xo.so3_grid(3000))
    bg = jnp.full(factor.shape, 1e-3)
    scores = np.stack(
        [np.asarray(xo.score_rotations(imap, k, factor, c, grid, 3e6, bg, m)) for m in (0, 1)],
        axis=1,
    )  # (B, C, M)
    direct = np.log(np.mean(np.exp(scores - scores.max(-1, keepdims=True)), -1))
    direct = direct + scores.max(-1)
    np.testing.assert_allclose(fit.model_logmarginal, direct, rtol=0, atol=0.05)
    assert np.all(fit.model_logmarginal < scores.max(-1))  # an average is below the maximum
    err = np.degrees(np.asarray(xo.twofold_angle(jnp.asarray(fit.rotations), true)))
    assert np.median(err) < 5.0, err
    # each model's own refined pose: the winner's equals the best pose, the other is near it
    assert fit.model_rotations.shape == (3, 2, 3, 3)
    own = np.asarray(xo.twofold_angle(jnp.asarray(fit.model_rotations[:, 1]), true))
    assert np.degrees(np.median(own)) < 5.0, own
    assert np.all(fit.model_loglik[:, 1] >= fit.loglik - 1e-3)  # refining never loses
    rescored = [
        np.asarray(xo.score_rotations(imap, k, factor, c[i : i + 1], fit.model_rotations[i], 3e6,
                                      bg, jnp.arange(2)))[0]
        for i in range(3)
    ]  # fmt: skip
    np.testing.assert_allclose(np.stack(rescored), fit.model_loglik, rtol=1e-5)


def test_mean_rotation_is_the_weighted_chordal_mean():
    turn = np.asarray(axis_angle_to_matrix(jnp.array([[0.0, 0.0, 0.2], [0.0, 0.0, -0.2]])))
    np.testing.assert_allclose(xo.mean_rotation(turn, [0.5, 0.5]), np.eye(3), atol=1e-6)
    # unequal weights on a one-axis pair: the angle of the mean is atan of the weighted sines
    mean = xo.mean_rotation(turn, [0.75, 0.25])
    angle = np.arctan2(0.5 * np.sin(0.2), np.cos(0.2))
    np.testing.assert_allclose(
        mean, np.asarray(axis_angle_to_matrix(jnp.array([0, 0, angle]))), atol=1e-6
    )
    grid = xo.so3_grid(4)  # batched: each pose averaged with itself is itself
    out = xo.mean_rotation(np.stack([grid, grid], axis=1), np.full((4, 2), 0.5))
    np.testing.assert_allclose(out, grid, atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(out), 1.0, atol=1e-5)
