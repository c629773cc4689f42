"""KineticsEstimator on known landscapes: states, intervals that collapse without
uncertainty, consistency of MFPT/rates/populations, errors."""

import numpy as np
import pytest

from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.kinetics import KineticsConfig, KineticsEstimator, sqra_rate_matrix


def _double_well(x, tilt=0.0):
    return 3.0 * (x**2 - 1.0) ** 2 + tilt * x


X = np.linspace(-1.95, 1.95, 40)  # cell centres, h = 0.1


def test_exact_landscape_gives_degenerate_intervals_and_two_wells():
    f = _double_well(X, tilt=0.5)
    model = (
        KineticsEstimator(KineticsConfig(diffusion=1.0, lag=0.05))
        .fit(np.stack([f] * 3), 0.1)
        .fetch_model()
    )
    assert model.n_states == 2
    # states ordered by position: state 0 holds the left well, state 1 the right one
    assert X[model.state_minima[0]] == pytest.approx(-1.05, abs=0.11)
    assert X[model.state_minima[1]] == pytest.approx(0.95, abs=0.11)
    assert np.ptp(model.mfpt, axis=0).max() < 1e-9 * model.mfpt.max()
    # tilt 0.5 x lowers the left well: populations from exp(-F) over the crisp sets
    pi = np.exp(-f) / np.exp(-f).sum()
    left = model.reference.to_grid(model.assignments.astype(float)) == 0
    assert model.populations[0, 0] == pytest.approx(pi[left].sum(), rel=1e-9)
    assert model.populations[0, 0] > 0.6
    # escaping the deeper (left) well takes longer; rates are inverse MFPTs
    assert model.mfpt[0, 0, 1] > model.mfpt[0, 1, 0]
    assert model.rates[0, 0, 1] == pytest.approx(1.0 / model.mfpt[0, 0, 1])
    # MSM timescales equal the generator's; the MSM MFPT exceeds it by O(lag)
    np.testing.assert_allclose(model.timescales_msm, model.timescales, rtol=1e-5)
    assert 0 < model.mfpt_msm[0, 0, 1] / model.mfpt[0, 0, 1] - 1 < 0.05


def test_diffusion_sets_the_time_unit():
    f = _double_well(X)
    t = [
        KineticsEstimator(KineticsConfig(diffusion=d)).fit(f[None], 0.1).fetch_model()
        for d in (1.0, 4.0)
    ]
    assert t[0].timescales[0, 0] == pytest.approx(4 * t[1].timescales[0, 0], rel=1e-9)
    assert t[0].mfpt[0, 0, 1] == pytest.approx(4 * t[1].mfpt[0, 0, 1], rel=1e-6)


def test_intervals_widen_with_landscape_uncertainty():
    rng = np.random.default_rng(0)
    f = _double_well(X)
    noisy = f[None] + 0.2 * rng.standard_normal((50, X.size))
    model = KineticsEstimator().fit(noisy, 0.1).fetch_model()
    q = model.quantiles(model.mfpt[:, 0, 1])
    assert q[0] < q[1] < q[2]
    exact = KineticsEstimator().fit(f[None], 0.1).fetch_model().mfpt[0, 0, 1]
    assert q[0] < exact < q[2]


def test_two_dimensional_landscape():
    x = np.linspace(-1.9, 1.9, 20)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    f = 3 * (xx**2 - 1) ** 2 + 2 * yy**2
    model = KineticsEstimator(KineticsConfig(lag=0.1)).fit(f[None], (0.2, 0.2)).fetch_model()
    rm = sqra_rate_matrix(f, 0.2)
    assert model.reference.n_cells == rm.n_cells == 400
    assert model.timescales[0, 0] > 5 * model.timescales[0, 1]  # one slow barrier crossing


@pytest.mark.parametrize("d", [0.0, -2.0])
def test_bad_config(d):
    with pytest.raises(ConfigError, match="diffusion"):
        KineticsConfig(diffusion=d)
    with pytest.raises(ConfigError, match="lag"):
        KineticsConfig(lag=0.0)
    with pytest.raises(ConfigError, match="n_states"):
        KineticsConfig(n_states=1)


def test_bad_input():
    with pytest.raises(InputFormatError, match="shape"):
        KineticsEstimator().fit(np.zeros(5), 0.1)
    with pytest.raises(InputFormatError, match="finite"):
        KineticsEstimator().fit(np.full((2, 5), np.nan), 0.1)
