"""SqRA rate matrix: generator properties, detailed balance, stationary distribution, closed
forms (free diffusion in a box), errors."""

import numpy as np
import pytest

from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.kinetics import (
    implied_timescales,
    markov_state_model,
    mean_first_passage_time,
    relaxation_spectrum,
    sqra_rate_matrix,
    transition_matrix,
)


def _random_landscape(rng, shape):
    return rng.uniform(0.0, 4.0, shape)


@pytest.mark.parametrize("shape", [(25,), (7, 9)])
def test_generator_detailed_balance_and_stationary(shape):
    rng = np.random.default_rng(0)
    f = _random_landscape(rng, shape)
    rm = sqra_rate_matrix(f, 0.1 if len(shape) == 1 else (0.1, 0.2), diffusion=2.0, kT=1.5)
    q, pi = rm.Q, rm.stationary
    np.testing.assert_allclose(q.sum(axis=1), 0.0, atol=1e-9 * np.abs(q).max())
    off = q - np.diag(np.diag(q))
    assert np.all(off >= 0)
    flux = pi[:, None] * q
    np.testing.assert_allclose(flux, flux.T, atol=1e-12 * np.abs(flux).max())
    ref = np.exp(-f.ravel() / 1.5)
    np.testing.assert_allclose(pi, ref / ref.sum(), rtol=1e-12)
    np.testing.assert_allclose(pi @ q, 0.0, atol=1e-10 * np.abs(q).max())


def test_rates_between_neighbours_follow_the_sqra_formula():
    f = np.array([0.0, 1.0, 3.0])
    rm = sqra_rate_matrix(f, 0.5, diffusion=2.0, kT=1.0)
    c = 2.0 / 0.25
    assert rm.Q[0, 1] == pytest.approx(c * np.exp(-0.5))
    assert rm.Q[1, 0] == pytest.approx(c * np.exp(0.5))
    assert rm.Q[1, 2] == pytest.approx(c * np.exp(-1.0))
    assert rm.Q[0, 2] == 0.0


def test_free_diffusion_spectrum_is_the_discrete_laplacian():
    """Flat F on G cells with reflecting ends: mu_k = -(2D/h^2)(1 - cos(k pi / G))."""
    g, h, d = 30, 0.1, 0.7
    rm = sqra_rate_matrix(np.zeros(g), h, diffusion=d)
    mu, _ = relaxation_spectrum(rm, 5)
    k = np.arange(5)
    np.testing.assert_allclose(mu, -(2 * d / h**2) * (1 - np.cos(k * np.pi / g)), atol=1e-9)
    # continuum limit: slowest relaxation of a box of length L is L^2 / (pi^2 D)
    assert implied_timescales(rm, 1)[0] == pytest.approx((g * h) ** 2 / (np.pi**2 * d), rel=0.01)


def test_free_diffusion_mfpt_closed_form():
    """Flat box [0, L], reflecting at 0, absorbing at L: MFPT from x is (L^2 - x^2) / (2D)."""
    g, h, d = 200, 0.01, 1.3
    rm = sqra_rate_matrix(np.zeros(g), h, diffusion=d)
    x = (np.arange(g) + 0.5) * h
    source = x < h  # first cell
    target = x > g * h - h  # last cell: absorbing boundary at its centre ~ L - h/2
    length = x[-1] + 0.5 * h - 0.5 * h
    expect = (length**2 - x[0] ** 2) / (2 * d)
    assert mean_first_passage_time(rm, source, target) == pytest.approx(expect, rel=0.02)


def test_transition_matrix_semigroup_and_msm_consistency():
    rng = np.random.default_rng(1)
    rm = sqra_rate_matrix(_random_landscape(rng, (20,)), 0.1)
    t1, t2 = transition_matrix(rm, 0.01), transition_matrix(rm, 0.02)
    np.testing.assert_allclose(t1.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(t1 @ t1, t2, atol=1e-10)
    msm = markov_state_model(rm, 0.01)
    np.testing.assert_allclose(msm.stationary_distribution, rm.stationary, atol=1e-10)
    # implied timescales of T(tau) = expm(Q tau) equal -1/mu of Q exactly
    np.testing.assert_allclose(msm.timescales(3), implied_timescales(rm, 3), rtol=1e-6)
    # discrete-time MFPT -> continuous-time MFPT linearly as tau -> 0
    a, b = np.arange(20) < 3, np.arange(20) >= 17
    m_q = mean_first_passage_time(rm, a, b)
    rel = [
        markov_state_model(rm, tau).mfpt(np.flatnonzero(a), np.flatnonzero(b)) / m_q - 1
        for tau in (0.01, 0.001)
    ]
    assert 0 < rel[1] < 0.01 and rel[0] == pytest.approx(10 * rel[1], rel=0.3)


def test_undefined_cells_and_components():
    f = np.array([0.0, 1.0, np.nan, 0.5, 0.2, 0.1])
    rm = sqra_rate_matrix(f, 0.1)
    np.testing.assert_array_equal(rm.cells, [3, 4, 5])  # largest connected finite set
    assert rm.to_grid(rm.stationary).shape == (6,)
    assert np.isnan(rm.to_grid(rm.stationary)[0])


@pytest.mark.parametrize("d", [0.0, -1.0, float("nan")])
def test_nonpositive_diffusion_is_a_config_error(d):
    with pytest.raises(ConfigError, match="diffusion"):
        sqra_rate_matrix(np.zeros(5), 0.1, diffusion=d)
