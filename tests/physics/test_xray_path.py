"""Bent template path of the X-ray fit: geometry, map gradients, bend recovered from patterns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.physics import xray
from atomicspi_bayes.physics import xray_orientation as xo
from atomicspi_bayes.physics.geometry import random_rotations
from atomicspi_bayes.physics.xray_path import fit_path_bend, path_structures
from atomicspi_bayes.synthetic.xray import default_xray_geometry

K_MAX, STEP = 0.09, 0.01


@pytest.fixture(scope="module")
def toy():
    """A 48-atom carbon 'molecule' (diameter ~25 Å) of 6 groups and its other state."""
    rng = np.random.default_rng(0)
    start = rng.normal(scale=7.0, size=(48, 3)).astype(np.float32)
    groups = np.repeat(np.arange(6), 8)
    end = start + np.repeat(rng.normal(scale=3.0, size=(6, 3)), 8, axis=0).astype(np.float32)
    atoms = xray.atomic_scatterers(np.array(["C"] * 48), start)
    det = xray.detector_arrays(default_xray_geometry(24))
    keep = np.asarray(det.mask).ravel()
    k = np.asarray(det.k).reshape(-1, 3)[keep]
    factor = np.asarray(det.pixel_factor).ravel()[keep]
    return atoms, start, end, groups, k, factor


def test_path_runs_from_start_to_end_and_bends_in_between(toy):
    _, start, end, _, _, _ = toy
    bend = np.ones_like(start)
    xyz = np.asarray(path_structures(start, end, [0.0, 0.5, 1.0], bend))
    np.testing.assert_allclose(xyz[0], start, atol=1e-6)
    np.testing.assert_allclose(xyz[2], end, atol=1e-6)
    np.testing.assert_allclose(xyz[1], 0.5 * (start + end) + 0.25, atol=1e-5)
    line = np.asarray(path_structures(start, end, [0.5]))[0]
    np.testing.assert_allclose(line, 0.5 * (start + end), atol=1e-5)


def test_intensity_map_gradient_matches_finite_differences(toy):
    atoms, start, *_ = toy
    shape = xo.intensity_map(atoms, K_MAX, STEP).values.shape
    weights = jax.random.normal(jax.random.key(3), shape)

    def summed(xyz):
        values = xo.intensity_map(atoms._replace(coords=xyz), K_MAX, STEP, pixel_chunk=1000).values
        return jnp.sum(weights * values) / 1e4

    grad = np.asarray(jax.grad(summed)(jnp.asarray(start)))
    h = 1e-2
    for atom, axis in ((0, 0), (17, 1), (40, 2)):
        e = np.zeros_like(start)
        e[atom, axis] = h
        numeric = (summed(jnp.asarray(start + e)) - summed(jnp.asarray(start - e))) / (2 * h)
        assert float(numeric) == pytest.approx(grad[atom, axis], rel=2e-2, abs=1e-3)


def test_bend_is_recovered_from_bright_patterns(toy):
    atoms, start, end, groups, k, factor = toy
    rng = np.random.default_rng(1)
    true_group_bend = rng.normal(scale=4.0, size=(6, 3)).astype(np.float32)
    true_group_bend -= true_group_bend.mean(axis=0)  # |F|² cannot see a common translation
    positions = np.array([0.0, 0.5, 1.0], np.float32)
    n = 40
    rotations = random_rotations(jax.random.key(4), n)
    middle = path_structures(start, end, positions, true_group_bend[groups])[1]
    fluence = 5e10  # ~3e4 photons per pattern: the bend is well determined
    mean = jax.vmap(
        lambda r: fluence * factor * jnp.abs(
            xray.molecular_transform(jnp.asarray(k), atoms._replace(coords=middle), r)
        ) ** 2
    )(rotations)  # fmt: skip
    counts = np.asarray(jax.random.poisson(jax.random.key(5), mean), np.float32)
    weights = np.tile(np.float32([0.0, 1.0, 0.0]), (n, 1))
    poses = np.repeat(np.asarray(rotations)[:, None], positions.size, axis=1)
    fit = fit_path_bend(
        atoms, start, end, positions, groups, k, factor, counts, fluence, np.full(k.shape[0], 1e-3),
        weights, poses, K_MAX, STEP, prior_sd=5.0, n_steps=100, learning_rate=0.1,
    )  # fmt: skip
    at_truth = fit_path_bend(
        atoms, start, end, positions, groups, k, factor, counts, fluence, np.full(k.shape[0], 1e-3),
        weights, poses, K_MAX, STEP, prior_sd=5.0, n_steps=1, init=true_group_bend,
    ).objective[0]  # fmt: skip
    assert fit.objective[-1] > fit.objective[0] + 100.0
    assert fit.objective[-1] > at_truth - 5.0  # the optimum, not a stall on the way
    learned = fit.group_bend - fit.group_bend.mean(axis=0)
    err = np.sqrt(np.mean((learned - true_group_bend) ** 2))
    assert err < 0.5 * np.sqrt(np.mean(true_group_bend**2))
    np.testing.assert_allclose(fit.bend, fit.group_bend[groups])


def test_bad_settings_are_refused(toy):
    atoms, start, end, groups, k, factor = toy
    args = (atoms, start, end, [0.0, 1.0], groups, k, factor, np.zeros((1, k.shape[0])), 1.0,
            np.ones(k.shape[0]), np.full((1, 2), 0.5), np.tile(np.eye(3), (1, 2, 1, 1)),
            K_MAX, STEP)  # fmt: skip
    with pytest.raises(ConfigError, match="prior_sd"):
        fit_path_bend(*args, prior_sd=0.0)
    with pytest.raises(ConfigError, match="group"):
        fit_path_bend(*args[:4], -np.ones_like(groups), *args[5:])
