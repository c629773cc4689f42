"""SBC rank statistics on a conjugate Gaussian model with a known exact posterior."""

import jax
import numpy as np
import pytest

from atomicspi_bayes.diagnostics import rank_statistics
from atomicspi_bayes.errors import ConfigError

S, L, NOISE_SD = 1000, 99, 0.5


def _conjugate_ranks(seed: int, *, sd_factor: float = 1.0, bias: float = 0.0) -> np.ndarray:
    """θ ~ N(0, 1), y ~ N(θ, s²); L draws from N(y/(1+s²), s²/(1+s²)) (scaled/shifted)."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=S)
    y = theta + NOISE_SD * rng.normal(size=S)
    post_var = NOISE_SD**2 / (1 + NOISE_SD**2)
    mean = y / (1 + NOISE_SD**2) + bias * np.sqrt(post_var)
    draws = mean[:, None] + sd_factor * np.sqrt(post_var) * rng.normal(size=(S, L))
    return np.sum(draws < theta[:, None], axis=1)


def test_exact_posterior_is_calibrated():
    result = rank_statistics(jax.random.PRNGKey(0), _conjugate_ranks(1), L, names=["theta"])
    assert result.ks_pvalue["theta"] > 0.01
    assert result.chi2_pvalue["theta"] > 0.01
    assert abs(result.coverage[0.9]["theta"] - 0.9) < 0.03
    assert abs(result.coverage[0.5]["theta"] - 0.5) < 0.05
    assert result.passes()
    assert result.ranks.shape == (S, 1) and result.pit.min() > 0 and result.pit.max() < 1


@pytest.mark.parametrize(("sd_factor", "bias"), [(0.5, 0.0), (2.0, 0.0), (1.0, 1.0)])
def test_miscalibrated_posteriors_are_rejected(sd_factor, bias):
    ranks = _conjugate_ranks(2, sd_factor=sd_factor, bias=bias)
    result = rank_statistics(jax.random.PRNGKey(0), ranks, L, names=["theta"])
    assert result.ks_pvalue["theta"] < 1e-4
    assert not result.passes()
    if sd_factor < 1:  # over-confident: intervals too short
        assert result.coverage[0.9]["theta"] < 0.75
    if sd_factor > 1:
        assert result.coverage[0.9]["theta"] > 0.98


def test_pit_is_exactly_uniform_for_uniform_ranks():
    ranks = np.random.default_rng(3).integers(0, 10, size=(4000, 2))  # L = 9: coarse ranks
    result = rank_statistics(jax.random.PRNGKey(1), ranks, 9)
    assert min(result.ks_pvalue.values()) > 0.01
    assert result.names == ["c1", "c2"]


def test_json_layout_for_the_report():
    result = rank_statistics(jax.random.PRNGKey(0), _conjugate_ranks(1), L, names=["z1"])
    data = result.to_json()
    assert data["n_draws"] == L and data["coverage"]["0.9"] == result.coverage[0.9]["z1"]
    assert data["passed"] is True and data["ks_pvalue"]["z1"] == result.ks_pvalue["z1"]


def test_bad_ranks_raise():
    with pytest.raises(ConfigError, match=r"0\.\.9"):
        rank_statistics(jax.random.PRNGKey(0), np.array([0, 10, 3]), 9)
    with pytest.raises(ConfigError, match="at least 2"):
        rank_statistics(jax.random.PRNGKey(0), np.array([1]), 9)
