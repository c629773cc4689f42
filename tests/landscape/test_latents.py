"""Reading RUN/latents.npz, validation messages, and the projection of >2-D latents."""

import numpy as np
import pytest

from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.landscape import LandscapeConfig, LandscapeEstimator, Latents, read_latents
from atomicspi_bayes.landscape.latents import check_dim, project_latents


def test_read_latents_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    z, sd = rng.normal(size=(7, 2)), rng.uniform(0.1, 0.2, (7, 2))
    draws = rng.normal(size=(3, 7, 2))
    np.savez(
        tmp_path / "latents.npz", z_mean=z, z_sd=sd, z_draws=draws, particle_index=np.arange(7)
    )
    lat = read_latents(tmp_path)
    assert lat.n_particles == 7 and lat.dim == 2
    np.testing.assert_allclose(lat.z_mean, z)
    np.testing.assert_allclose(lat.z_draws, draws)
    assert str(tmp_path / "latents.npz") in lat.source


def test_missing_run_and_unfinished_fit(tmp_path):
    with pytest.raises(InputFormatError, match="does not exist"):
        read_latents(tmp_path / "nope")
    with pytest.raises(InputFormatError, match=r"latents\.npz: not found"):
        read_latents(tmp_path)
    np.savez(tmp_path / "latents.npz", z_mean=np.zeros((3, 1)))
    with pytest.raises(InputFormatError, match="missing z_sd"):
        read_latents(tmp_path)
    (tmp_path / "latents.npz").write_bytes(b"not a zip")
    with pytest.raises(InputFormatError, match="unreadable"):
        read_latents(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"z_mean": np.zeros((3, 1)), "z_sd": np.ones((4, 1))}, "shape"),
        ({"z_mean": np.zeros((3, 1)), "z_sd": np.zeros((3, 1))}, "non-positive"),
        ({"z_mean": np.full((3, 1), np.nan), "z_sd": np.ones((3, 1))}, "NaN"),
        (
            {"z_mean": np.zeros((3, 1)), "z_sd": np.ones((3, 1)), "z_draws": np.ones((2, 4, 1))},
            "z_draws",
        ),
    ],
)
def test_latents_validation(kwargs, match):
    with pytest.raises(InputFormatError, match=match):
        Latents(**kwargs)


def test_dim_above_two_is_config_error_with_advice():
    lat = Latents(np.zeros((5, 3)), np.ones((5, 3)), source="RUN/latents.npz")
    with pytest.raises(ConfigError, match=r"dimension 3 > 2.*--project pca"):
        check_dim(lat, "none")
    with pytest.raises(ConfigError, match="dimension 3 > 2"):
        LandscapeEstimator(LandscapeConfig()).fit(lat)


def test_pca_projection_keeps_the_dominant_axes():
    rng = np.random.default_rng(3)
    n = 500
    z = np.stack([3 * rng.normal(size=n), 1.5 * rng.normal(size=n), 0.1 * rng.normal(size=n)], 1)
    rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    lat = Latents(z @ rot.T, np.full((n, 3), 0.05), z_draws=np.stack([z @ rot.T] * 2))
    proj = project_latents(lat, 2)
    assert proj.dim == 2 and proj.projection.shape == (3, 2)
    # projected coordinates reproduce the two large-variance axes up to sign
    for j in range(2):
        corr = abs(np.corrcoef(proj.z_mean[:, j], z[:, j])[0, 1])
        assert corr > 0.99
    np.testing.assert_allclose(proj.z_sd, 0.05, rtol=1e-6)  # isotropic sd stays isotropic
    assert proj.z_draws.shape == (2, n, 2)
