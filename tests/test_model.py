"""The NumPyro cryo-EM model: likelihood normalisation, SO(3) laws, sites, grid posterior."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from guides.tiny import fixed_config, tiny_batch, tiny_static
from numpyro import handlers

from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.model import (
    FourierWindow,
    ModelConfig,
    TangentNormalSO3,
    UniformSO3,
    cryoem_model,
    image_log_likelihood,
    latent_grid_posterior,
    observed_fourier,
    scored_sd,
    simulate_particles,
)
from atomicspi_bayes.physics.cryoem import (
    image_to_fourier,
    rfft_frequencies,
)
from atomicspi_bayes.physics.geometry import geodesic_angle, random_rotations

# ---------------------------------------------------------------- Fourier window / likelihood


@pytest.mark.parametrize("box", [8, 16])
def test_window_scores_each_independent_coefficient_once(box):
    # Full band (k_max = Nyquist on the axes, corners dropped): count by brute force the
    # independent real numbers of a real L x L image inside |k| <= k_max.
    window = FourierWindow.create(box, 1.0, 2.0)
    freqs = np.asarray(rfft_frequencies(box, 1.0))
    idx = np.fft.fftfreq(box) * box
    count = 0
    seen = set()
    for r in range(box):
        for c in range(box // 2 + 1):
            if np.hypot(*freqs[r, c]) > 0.5 + 1e-9:
                continue
            my, mx = int(idx[r]), c
            key = (mx % box, my % box)
            conj = ((-mx) % box, (-my) % box)
            if conj in seen:
                continue
            seen.add(key)
            count += 1 if key == conj else 2  # self-conjugate entries are real
    assert window.n_scored == count


def test_white_noise_is_whitened_to_unit_variance_and_uncorrelated():
    box, pixel, sigma = 16, 1.7, 0.3
    window = FourierWindow.create(box, pixel, 4.0)
    noise = sigma * jax.random.normal(jax.random.PRNGKey(0), (4000, box, box))
    white = observed_fourier(noise, window) / scored_sd(jnp.full(4000, sigma), window)
    white = np.asarray(white)
    np.testing.assert_allclose(white.var(axis=0), 1.0, atol=0.1)
    corr = np.corrcoef(white.T)
    off = np.abs(corr - np.eye(corr.shape[0]))
    assert off.max() < 0.1  # no conjugate duplicate is scored twice


def test_log_likelihood_matches_science_formula():
    # SCIENCE.md §4: Σ_{k∈H} -|Y-M|²/s - log(π s) (complex), real Gaussian for self-conjugate.
    box, pixel, sigma = 16, 1.5, 0.2
    window = FourierWindow.create(box, pixel, 4.0)
    key1, key2 = jax.random.split(jax.random.PRNGKey(3))
    y = jax.random.normal(key1, (2, box, box))
    m_img = 0.5 * jax.random.normal(key2, (2, box, box))
    got = image_log_likelihood(
        observed_fourier(y, window), observed_fourier(m_img, window), jnp.full(2, sigma), window
    )
    yf, mf = np.asarray(image_to_fourier(y, pixel)), np.asarray(image_to_fourier(m_img, pixel))
    s = box**2 * sigma**2 * pixel**4
    flat = lambda a: a.reshape(2, -1)  # noqa: E731
    re, im = window.re_index, window.im_index
    complex_idx = np.intersect1d(re, im)
    real_idx = np.setdiff1d(re, im)
    d = flat(yf) - flat(mf)
    expect = np.sum(-(np.abs(d[:, complex_idx]) ** 2) / s - np.log(np.pi * s), axis=1)
    expect += np.sum(-(d[:, real_idx].real ** 2) / (2 * s) - 0.5 * np.log(2 * np.pi * s), axis=1)
    np.testing.assert_allclose(np.asarray(got), expect, rtol=1e-4)


def test_window_rejects_resolution_beyond_nyquist():
    with pytest.raises(ConfigError, match="Nyquist"):
        FourierWindow.create(64, 2.0, 3.0)


def test_model_rendering_matches_simulated_images():
    # the model's band-limited Fourier image == the transform of the simulator's image
    static = tiny_static()
    batch, _ = tiny_batch(static, 4, snr=None)
    rendered = simulate_particles(
        jnp.broadcast_to(static.x0_nodes, (4, *static.x0_nodes.shape)),
        batch.rotations,
        batch.shifts,
        batch.ctf,
        static,
    )
    observed = observed_fourier(batch.images, static.window)
    np.testing.assert_allclose(
        np.asarray(rendered), np.asarray(observed), atol=1e-4 * float(jnp.abs(observed).max())
    )


# ---------------------------------------------------------------- SO(3) distributions


def test_uniform_so3_samples_rotations_with_constant_density():
    d = UniformSO3().expand([5])
    r = d.sample(jax.random.PRNGKey(0), (3,))
    assert r.shape == (3, 5, 3, 3)
    np.testing.assert_allclose(
        np.asarray(jnp.swapaxes(r, -1, -2) @ r), np.broadcast_to(np.eye(3), r.shape), atol=1e-5
    )
    np.testing.assert_allclose(np.asarray(d.log_prob(r)), -math.log(8 * math.pi**2), rtol=1e-6)


def test_tangent_normal_integrates_to_one_over_haar_measure():
    # ∫ q dμ = E_{R ~ Uniform}[q(R) / u(R)] = 1 with u = 1/(8π²)
    mean = random_rotations(jax.random.PRNGKey(1), 1)[0]
    q = TangentNormalSO3(mean, jnp.array([0.6, 0.4, 0.5]))
    r = random_rotations(jax.random.PRNGKey(2), 400_000)
    ratio = jnp.exp(q.log_prob(r) + math.log(8 * math.pi**2))
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.04)


def test_tangent_normal_log_prob_with_and_without_intermediates_agree():
    mean = random_rotations(jax.random.PRNGKey(4), 6)
    q = TangentNormalSO3(mean, jnp.full((6, 3), 0.2))
    value, inter = q.sample_with_intermediates(jax.random.PRNGKey(5))
    np.testing.assert_allclose(
        np.asarray(q.log_prob(value, inter)), np.asarray(q.log_prob(value)), atol=2e-3
    )
    angles = np.asarray(geodesic_angle(mean, value))
    assert 0.05 < np.median(angles) < 0.8


# ---------------------------------------------------------------- the model


def _trace(model, batch, key=0):
    return handlers.trace(handlers.seed(model, jax.random.PRNGKey(key))).get_trace(batch)


def test_fixed_pose_model_sites_shapes_and_subsample_scale():
    static = tiny_static(n_particles=40)
    batch, sigma = tiny_batch(static, 8)
    static = dataclasses.replace(static, noise_sigma=sigma)
    model = functools.partial(cryoem_model, cfg=fixed_config(), static=static)
    tr = _trace(model, batch)
    assert tr["z"]["value"].shape == (8, 1)
    assert tr["image"]["value"].shape == (8, static.window.n_scored)
    assert "rotation" not in tr
    assert tr["image"]["scale"] == pytest.approx(40 / 8)
    np.testing.assert_array_equal(np.asarray(tr["particles"]["value"]), np.arange(8))
    assert {"decoder$params", "noise_sigma", "image_scale"} <= set(tr)


def test_amortized_model_samples_poses():
    static = tiny_static()
    batch, _ = tiny_batch(static, 5)
    cfg = fixed_config(poses="amortized")
    tr = _trace(functools.partial(cryoem_model, cfg=cfg, static=static), batch)
    assert tr["rotation"]["value"].shape == (5, 3, 3)
    assert tr["shift"]["value"].shape == (5, 2)


def test_mixture_prior_registers_learnable_components():
    static = tiny_static(latent_dim=2)
    batch, _ = tiny_batch(static, 4)
    cfg = fixed_config(latent_dim=2, z_prior="mixture", n_mixture=3)
    tr = _trace(functools.partial(cryoem_model, cfg=cfg, static=static), batch)
    assert tr["z_mixture_means"]["value"].shape == (3, 2)
    assert tr["z"]["value"].shape == (4, 2)


def test_physics_priors_enter_as_factor_and_vanish_without_weights():
    static = tiny_static()
    batch, _ = tiny_batch(static, 4)
    on = fixed_config(elastic_weight=1.0, bond_weight=1.0, clash_weight=1.0)
    tr = _trace(functools.partial(cryoem_model, cfg=on, static=static), batch)
    assert tr["physics_prior"]["fn"].log_prob(None).shape == (4,)
    off = _trace(functools.partial(cryoem_model, cfg=fixed_config(), static=static), batch)
    np.testing.assert_allclose(np.asarray(off["physics_prior"]["fn"].log_prob(None)), 0.0)


def test_model_config_validates():
    with pytest.raises(ConfigError):
        ModelConfig(poses="free")
    with pytest.raises(ConfigError):
        ModelConfig(z_prior="flow")


def test_grid_posterior_recovers_the_amplitude_of_noise_free_particles():
    # Decoder = identity on mode 0 (z in Å RMSD); particles at z = -1.5 .. 1.5.
    static = tiny_static(n_modes=2)
    true_z = np.linspace(-1.5, 1.5, 6).astype(np.float32)
    amps = np.stack([true_z, np.zeros_like(true_z)], axis=1)
    batch, sigma = tiny_batch(static, 6, amplitudes=amps, snr=50.0)
    import equinox as eqx

    from atomicspi_bayes.model import LatentDecoder

    linear = LatentDecoder(1, 2, (), key=jax.random.PRNGKey(0))
    linear = eqx.tree_at(lambda m: m.layers[0].weight, linear, jnp.array([[1.0], [0.0]]))
    static = dataclasses.replace(static, decoder=linear, noise_sigma=sigma)
    params = {
        "decoder$params": eqx.partition(linear, eqx.is_inexact_array)[0],
        "image_scale": jnp.ones(1),
        "noise_sigma": jnp.asarray(sigma),
    }
    grid = jnp.linspace(-3, 3, 121)
    w = np.asarray(latent_grid_posterior(batch, fixed_config(), static, params, grid))
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)
    mean = w @ np.asarray(grid)
    np.testing.assert_allclose(mean, true_z, atol=0.1)


@pytest.mark.slow
def test_svi_on_the_tiny_model_raises_the_elbo():
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    static = tiny_static(n_particles=32)
    amps = np.zeros((32, static.n_modes), np.float32)
    amps[:, 0] = np.linspace(-2, 2, 32)
    batch, sigma = tiny_batch(static, 32, amplitudes=amps, snr=2.0)
    static = dataclasses.replace(static, noise_sigma=sigma)
    model = functools.partial(cryoem_model, cfg=fixed_config(), static=static)
    guide = AutoNormal(model)
    svi = SVI(model, guide, numpyro.optim.Adam(0.02), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(0), 300, batch, progress_bar=False)
    losses = np.asarray(result.losses)
    assert losses[-30:].mean() < losses[:30].mean() - 10.0
