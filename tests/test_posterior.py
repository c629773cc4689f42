"""Per-particle posterior refinement (atomicspi_bayes.posterior) against closed forms.

A linear-Gaussian stand-in for the cryo-EM model with the same site structure (``"z"`` in
the ``"particles"`` plate, a ``"physics_prior"`` factor, an observed ``"image"``):
y_i = A z_i + ε, z ~ N(0, I), ε ~ N(0, s² I), so each particle's posterior is Gaussian
with known mean and covariance. The refinement runs the real code path (model trace,
lax.map over grid points / proposals, chunking, resampling).
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.guides import Encoding
from atomicspi_bayes.model import ModelConfig, ParticleBatch, particle_plate
from atomicspi_bayes.physics.ctf import CTFParams
from atomicspi_bayes.posterior import (
    RefineSpec,
    refine_posterior,
    refined_sampler,
    reported_posterior,
    resolve_method,
)

M, SIGMA = 6, 0.5


@dataclass(frozen=True, eq=False)
class _Guide:
    """Encoder stand-in: a deliberately biased, over-confident Gaussian q."""

    post_mean: np.ndarray
    post_sd: np.ndarray

    def encode(self, params, batch, refine_steps=0):
        idx = batch.indices
        b = idx.shape[0]
        mean = jnp.asarray(self.post_mean)[idx] + 0.5 * jnp.asarray(self.post_sd)[idx]
        sd = 0.7 * jnp.asarray(self.post_sd)[idx]
        return Encoding(mean, sd, jnp.tile(jnp.eye(3), (b, 1, 1)), jnp.zeros((b, 3)),
                        jnp.zeros((b, 2)), jnp.zeros((b, 2)), jnp.zeros(b, jnp.int32))  # fmt: skip


@dataclass(frozen=True, eq=False)
class LinearProblem:
    a: np.ndarray  # (M, D)
    y: np.ndarray  # (N, M)
    model_cfg: ModelConfig
    guide: _Guide
    batch_size: int = 16

    @property
    def n_particles(self) -> int:
        return self.y.shape[0]

    def model(self, batch):
        d = self.model_cfg.latent_dim
        with particle_plate(batch, self.n_particles):
            z = numpyro.sample("z", dist.Normal(jnp.zeros(d), 1.0).to_event(1))
            numpyro.factor("physics_prior", jnp.zeros(z.shape[0]))
            numpyro.sample(
                "image",
                dist.Normal(z @ jnp.asarray(self.a).T, SIGMA).to_event(1),
                obs=batch.images.reshape(batch.images.shape[0], -1),
            )

    def batch(self, positions):
        positions = np.asarray(positions)
        b = positions.size
        ctf = CTFParams.create(defocus_u=jnp.full(b, 1e4), defocus_v=jnp.full(b, 1e4))
        return ParticleBatch(
            indices=jnp.asarray(positions, jnp.int32),
            images=jnp.asarray(self.y[positions]).reshape(b, M, 1),
            rotations=jnp.tile(jnp.eye(3), (b, 1, 1)),
            shifts=jnp.zeros((b, 2)),
            ctf=ctf,
            optics_group=jnp.zeros(b, jnp.int32),
        )


def linear_problem(d: int, n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(M, d)) * np.linspace(1.0, 0.4, d)
    z = rng.normal(size=(n, d))
    y = z @ a.T + SIGMA * rng.normal(size=(n, M))
    cov = np.linalg.inv(np.eye(d) + a.T @ a / SIGMA**2)
    mean = y @ a @ cov / SIGMA**2
    sd = np.sqrt(np.diag(cov))
    guide = _Guide(mean.astype(np.float32), np.tile(sd, (n, 1)).astype(np.float32))
    cfg = ModelConfig(latent_dim=d, poses="fixed")
    return LinearProblem(a.astype(np.float32), y.astype(np.float32), cfg, guide), mean, sd, z


@pytest.mark.parametrize("d", [1, 2])
def test_grid_posterior_matches_closed_form(d):
    problem, mean, sd, _ = linear_problem(d)
    post = refine_posterior(jax.random.PRNGKey(0), problem, {}, n_draws=400)
    assert post.method == "grid" and post.z_draws.shape == (400, 40, d)
    np.testing.assert_allclose(post.z_mean, mean, atol=0.02 * sd.max())
    np.testing.assert_allclose(post.z_sd, np.tile(sd, (40, 1)), rtol=0.02)
    assert np.all(post.edge_mass < 1e-6) and np.all(post.ess > 5)
    # the draws follow the posterior: standardised draws pooled are ~ N(0, 1)
    u = (post.z_draws - mean[None]) / sd
    assert abs(u.mean()) < 0.05 and abs(u.std() - 1.0) < 0.05


def test_importance_sampling_corrects_a_biased_q_and_reports_ess():
    problem, mean, sd, _ = linear_problem(3)
    post = refine_posterior(
        jax.random.PRNGKey(1), problem, {}, n_draws=200, spec=RefineSpec(n_proposals=1024)
    )
    assert post.method == "importance" and np.all(np.isnan(post.edge_mass))
    assert post.ess.shape == (40,) and np.all((post.ess > 20) & (post.ess <= 1024))
    q_shift = 0.5  # the guide's mean is off by 0.5 posterior sd; IS must remove that
    err = np.abs(post.z_mean - mean) / sd
    assert np.median(err) < 0.1 < q_shift
    assert np.median(post.z_sd / sd) == pytest.approx(1.0, abs=0.1)


def test_importance_with_a_hopeless_proposal_shows_in_the_ess(caplog):
    problem, *_ = linear_problem(3)
    spec = RefineSpec(n_proposals=256, inflate=0.05)  # far too narrow and off-centre
    post = refine_posterior(jax.random.PRNGKey(2), problem, {}, n_draws=10, spec=spec)
    assert np.median(post.ess) < 10
    assert "ESS < 10" in caplog.text


def test_sbc_style_coverage_of_refined_draws():
    """90 % intervals of the refined draws cover the simulated truth ~90 % of the time."""
    problem, _, _, z = linear_problem(1, n=400, seed=3)
    post = refine_posterior(jax.random.PRNGKey(3), problem, {}, n_draws=199, batch_size=100)
    lo, hi = np.quantile(post.z_draws, [0.05, 0.95], axis=0)
    covered = np.mean((z >= lo) & (z <= hi))
    assert 0.85 <= covered <= 0.95  # binomial sd 0.015 at n = 400


def test_reported_posterior_keeps_the_amortized_moments():
    problem, mean, sd, _ = linear_problem(1, n=20)
    enc = problem.guide.encode({}, problem.batch(np.arange(20)))
    enc = {"z_mean": np.asarray(enc.z_mean), "z_sd": np.asarray(enc.z_sd)}
    refined = reported_posterior(jax.random.PRNGKey(4), problem, {}, enc, n_draws=50)
    amort = reported_posterior(
        jax.random.PRNGKey(4), problem, {}, enc, kind="amortized", n_draws=50
    )
    assert refined["posterior_method"] == "grid" and amort["posterior_method"] == "amortized"
    np.testing.assert_array_equal(refined["z_mean_amortized"], enc["z_mean"])
    np.testing.assert_allclose(refined["z_mean"], mean, atol=0.02 * sd.max())
    np.testing.assert_array_equal(amort["z_mean"], enc["z_mean"])
    assert refined["z_draws"].shape == amort["z_draws"].shape == (50, 20, 1)
    with pytest.raises(ConfigError, match="refined"):
        reported_posterior(jax.random.PRNGKey(4), problem, {}, enc, kind="exact")


def test_sampler_and_method_resolution():
    problem, *_ = linear_problem(2, n=8)
    sampler = refined_sampler(problem)
    draws = sampler.sample(jax.random.PRNGKey(5), {}, problem.batch(np.arange(8)), 7)
    assert sampler.method == "grid" and draws["z"].shape == (7, 8, 2)
    assert resolve_method(ModelConfig(latent_dim=3)) == "importance"
    assert resolve_method(ModelConfig(latent_dim=1, poses="amortized")) == "importance"
    with pytest.raises(ConfigError, match="grid refinement needs"):
        resolve_method(ModelConfig(latent_dim=3), "grid")
    with pytest.raises(ConfigError, match="refine method"):
        resolve_method(ModelConfig(), "nuts")


def test_fit_config_posterior_setting(tmp_path):
    from atomicspi_bayes.pipeline import FitConfig, read_fit_config

    assert FitConfig().posterior == "refined"
    path = tmp_path / "fit.toml"
    path.write_text('[fit]\nposterior = "amortized"\nlatent_dim = 2\n')
    cfg = read_fit_config(path)
    assert cfg.posterior == "amortized" and cfg.latent_dim == 2
    path.write_text('posterior = "exact"\n')
    with pytest.raises(ConfigError, match="posterior must be 'refined' or 'amortized'"):
        read_fit_config(path)


def test_reported_posterior_keeps_q_where_importance_sampling_degenerates():
    problem, mean, sd, _ = linear_problem(3, n=16)
    enc = problem.guide.encode({}, problem.batch(np.arange(16)))
    enc = {"z_mean": np.asarray(enc.z_mean), "z_sd": np.asarray(enc.z_sd)}
    spec = RefineSpec(n_proposals=64, inflate=0.05, min_ess=10.0)  # a hopeless proposal
    out = reported_posterior(jax.random.PRNGKey(6), problem, {}, enc, n_draws=30, spec=spec)
    low = out["ess"] < 10.0
    assert out["posterior_method"] == "importance" and low.any()
    np.testing.assert_array_equal(out["z_mean"][low], enc["z_mean"][low])
    np.testing.assert_array_equal(out["z_sd"][low], enc["z_sd"][low])
    assert np.all(out["z_sd"] > 0) and out["z_draws"].shape == (30, 16, 3)
    good = reported_posterior(
        jax.random.PRNGKey(6), problem, {}, enc, n_draws=30, spec=RefineSpec(n_proposals=1024)
    )
    assert np.all(good["ess"] >= 10.0)
    assert np.median(np.abs(good["z_mean"] - mean) / sd) < 0.15
