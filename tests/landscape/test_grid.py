"""Grid likelihoods: closed forms against numerical integration, shapes, block sums."""

import numpy as np
import pytest
from scipy.stats import norm

from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.landscape.grid import bin_masses, grid_log_likelihoods, make_grid


def _numeric_hat(m, s, c, h):
    z = np.linspace(c - h, c + h, 20001)
    hat = np.clip(1 - np.abs(z - c) / h, 0, None) / h
    return np.trapezoid(hat * norm.pdf(z, m, s), z)


@pytest.mark.parametrize(
    ("m", "s"), [(0.31, 0.07), (0.0, 0.01), (1.0, 2.0), (0.52, 0.002), (-0.4, 0.05)]
)
def test_linear_basis_likelihood_matches_quadrature(m, s):
    grid = make_grid(np.zeros((1, 1)), np.ones((1, 1)), 10, [(-0.5, 0.5)])
    ll = grid_log_likelihoods(np.array([[m]]), np.array([[s]]), grid, basis="linear")
    h = grid.spacing[0]
    for k, c in enumerate(grid.nodes[0]):
        ref = _numeric_hat(m, s, c, h)
        got = np.exp(np.float64(ll[0, k]))
        assert got == pytest.approx(ref, rel=2e-4, abs=1e-12)


def test_constant_basis_is_bin_mass_over_width():
    grid = make_grid(np.zeros((1, 1)), np.ones((1, 1)), 8, [(-1.0, 1.0)])
    m, s = np.array([[0.13]]), np.array([[0.2]])
    ll = grid_log_likelihoods(m, s, grid, basis="constant")
    e = grid.bin_edges[0]
    ref = (norm.cdf(e[1:], 0.13, 0.2) - norm.cdf(e[:-1], 0.13, 0.2)) / grid.spacing[0]
    np.testing.assert_allclose(np.exp(ll[0].astype(float)), ref, rtol=1e-5)


def test_2d_likelihood_is_product_of_axes_and_c_order():
    rng = np.random.default_rng(0)
    m, s = rng.normal(size=(5, 2)) * 0.3, rng.uniform(0.05, 0.2, (5, 2))
    grid = make_grid(m, s, [6, 4], [(-1, 1), (-0.8, 0.8)])
    ll2 = grid_log_likelihoods(m, s, grid).astype(float).reshape(5, *grid.shape)
    gx = make_grid(m[:, :1], s[:, :1], 6, [(-1, 1)])
    gy = make_grid(m[:, 1:], s[:, 1:], 4, [(-0.8, 0.8)])
    lx = grid_log_likelihoods(m[:, :1], s[:, :1], gx).astype(float)
    ly = grid_log_likelihoods(m[:, 1:], s[:, 1:], gy).astype(float)
    np.testing.assert_allclose(ll2, lx[:, :, None] + ly[:, None, :], rtol=1e-5, atol=1e-4)


def test_likelihood_integrates_to_mass_inside_support():
    # sum_k L[n, k] * h = int (sum_k hat_k) q = 1 for a particle well inside the grid
    grid = make_grid(np.zeros((1, 1)), np.ones((1, 1)), 40, [(-2, 2)])
    ll = grid_log_likelihoods(np.array([[0.1], [1.93]]), np.array([[0.08], [0.3]]), grid)
    tot = np.exp(ll.astype(float)).sum(axis=1) * grid.cell_volume
    assert tot[0] == pytest.approx(1.0, abs=1e-6)
    assert 0.3 < tot[1] < 0.8  # half outside the last node


def test_draws_likelihood_approaches_normal_likelihood():
    rng = np.random.default_rng(1)
    m, s = np.array([[0.2]]), np.array([[0.15]])
    draws = (m + s * rng.standard_normal((20000, 1)))[:, :, None]
    grid = make_grid(m, s, 12, [(-0.6, 1.0)])
    ref = np.exp(grid_log_likelihoods(m, s, grid).astype(float))
    got = np.exp(grid_log_likelihoods(m, s, grid, z_draws=draws).astype(float))
    np.testing.assert_allclose(got, ref, atol=0.05 * ref.max())


def test_fit_prior_is_divided_out():
    # posterior of a flat-prior likelihood N(0.5, 0.1^2) under prior N(0, 1): divide it out
    lik_m, lik_s, prior_sd = 0.5, 0.1, 1.0
    post_var = 1 / (1 / lik_s**2 + 1 / prior_sd**2)
    post_m = post_var * lik_m / lik_s**2
    grid = make_grid(np.zeros((1, 1)), np.ones((1, 1)), 20, [(0, 1)])
    got = grid_log_likelihoods(
        np.array([[post_m]]), np.array([[np.sqrt(post_var)]]), grid, fit_prior_sd=prior_sd
    )
    ref = grid_log_likelihoods(np.array([[lik_m]]), np.array([[lik_s]]), grid)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    with pytest.raises(InputFormatError, match="prior"):
        grid_log_likelihoods(np.array([[0.0]]), np.array([[2.0]]), grid, fit_prior_sd=1.0)


def test_block_sum_and_bins():
    grid = make_grid(np.zeros((1, 2)), np.ones((1, 2)), [4, 3], [(0, 4), (0, 3)], oversample=2)
    assert grid.shape == (8, 6) and grid.bin_shape == (4, 3)
    np.testing.assert_allclose(grid.bin_edges[0], [0, 1, 2, 3, 4])
    v = np.arange(grid.n_nodes, dtype=float)
    got = grid.block_sum(v).reshape(4, 3)
    full = v.reshape(8, 6)
    assert got[0, 0] == full[0:2, 0:2].sum() and got[3, 2] == full[6:8, 4:6].sum()


def test_bin_masses_normal_and_draws():
    rng = np.random.default_rng(2)
    m, s = rng.normal(size=(3, 1)), np.full((3, 1), 0.2)
    grid = make_grid(m, s, 15, [(-4, 4)])
    mass = bin_masses(m, s, grid)
    np.testing.assert_allclose(mass.sum(axis=1), 1.0, atol=1e-5)
    draws = m[None] + s[None] * rng.standard_normal((4000, 3, 1))
    np.testing.assert_allclose(bin_masses(m, s, grid, z_draws=draws), mass, atol=0.03)


def test_make_grid_errors():
    with pytest.raises(ConfigError, match="n_grid"):
        make_grid(np.zeros((2, 1)), np.ones((2, 1)), 2)
    with pytest.raises(ConfigError, match="grid_range"):
        make_grid(np.zeros((2, 1)), np.ones((2, 1)), 5, [(1, 0)])
