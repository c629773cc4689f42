"""Basins, k-means and GMM states; GMM state likelihoods in closed form."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from atomicspi_bayes.landscape.states import (
    basin_labels,
    fit_gmm,
    gmm_log_likelihoods,
    kmeans_centers,
    nearest_labels,
)


def test_basins_of_a_double_well_and_barrier_merging():
    x = np.linspace(-2, 2, 41)
    f = 3 * (x**2 - 1) ** 2
    lab = basin_labels(f)
    assert set(lab.tolist()) == {0, 1}
    assert np.all(lab[x < -0.05] == 0) and np.all(lab[x > 0.05] == 1)
    rough = f + 0.3 * np.sin(17 * x)  # small ripples create spurious minima
    assert len(np.unique(basin_labels(rough, 0.0))) > 2
    assert len(np.unique(basin_labels(rough, 1.0))) == 2
    assert len(np.unique(basin_labels(f, 3.5))) == 1  # barrier 3 kT < 3.5: one basin


def test_basins_2d_with_undefined_cells():
    x = np.linspace(-2, 2, 31)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    f = 3 * (xx**2 - 1) ** 2 + 2 * yy**2
    f[0, :] = np.nan
    lab = basin_labels(f)
    assert np.all(lab[0] == -1)
    assert set(np.unique(lab[1:]).tolist()) == {0, 1}
    assert lab[8, 15] != lab[22, 15]


def test_gmm_log_likelihood_closed_form():
    rng = np.random.default_rng(0)
    means = np.array([[-1.0, 0.0], [1.0, 0.5]])
    covs = np.array([[[0.2, 0.05], [0.05, 0.1]], [[0.3, 0.0], [0.0, 0.2]]])
    z, sd = rng.normal(size=(6, 2)), rng.uniform(0.05, 0.3, (6, 2))
    got = gmm_log_likelihoods(z, sd, means, covs)
    for n in range(6):
        for k in range(2):
            ref = multivariate_normal(means[k], covs[k] + np.diag(sd[n] ** 2)).logpdf(z[n])
            assert got[n, k] == pytest.approx(ref, rel=1e-10)


def test_kmeans_and_gmm_find_two_clusters():
    rng = np.random.default_rng(1)
    z = np.concatenate([rng.normal(-1, 0.2, (300, 1)), rng.normal(1, 0.2, (200, 1))])
    c = kmeans_centers(z, 2)
    np.testing.assert_allclose(np.sort(c[:, 0]), [-1, 1], atol=0.05)
    assert np.all(nearest_labels(np.array([[-0.9], [1.2]]), c) == [0, 1])
    means, covs = fit_gmm(z, 2)
    np.testing.assert_allclose(means[:, 0], [-1, 1], atol=0.05)
    np.testing.assert_allclose(np.sqrt(covs[:, 0, 0]), 0.2, atol=0.03)


def test_gmm_deconvolves_posterior_widths():
    """Extreme deconvolution: the components describe the latents, not latents + noise."""
    rng = np.random.default_rng(11)
    n = 4000
    state = (rng.random(n) > 0.7).astype(int)
    x = rng.normal(np.array([-1.0, 1.0])[state], np.array([0.4, 0.5])[state])
    sd = rng.uniform(0.1, 0.3, n)
    m = x + sd * rng.standard_normal(n)
    _, naive = fit_gmm(m[:, None], 2)
    means, covs = fit_gmm(m[:, None], 2, z_sd=sd[:, None])
    np.testing.assert_allclose(means[:, 0], [-1.0, 1.0], atol=0.05)
    np.testing.assert_allclose(np.sqrt(covs[:, 0, 0]), [0.4, 0.5], rtol=0.08)
    assert np.all(naive[:, 0, 0] > covs[:, 0, 0] + 0.02)  # the naive fit is blurred


def test_small_basins_are_merged_by_population():
    x = np.linspace(-2, 2, 41)
    f = 3 * (x**2 - 1) ** 2
    f[1] = f[2] - 2.0  # a deep but tiny spurious minimum in the far tail
    assert len(np.unique(basin_labels(f, 1.0))) == 3
    lab = basin_labels(f, 1.0, min_population=0.02)
    assert len(np.unique(lab)) == 2 and lab[1] == lab[15]
