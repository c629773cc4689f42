"""Amortized guides: encoders, features, site matching with the model, pose heads."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpyro import handlers
from numpyro.infer import SVI, Trace_ELBO
from tiny import BOX, fixed_config, tiny_batch, tiny_static

from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.guides import (
    ConvEncoder,
    MLPEncoder,
    build_guide,
    lowpass_images,
    mode_sensitivity,
)
from atomicspi_bayes.guides.amortized import _head_offsets
from atomicspi_bayes.model import (
    cryoem_model,
    image_log_likelihood,
    nodes_from_amplitudes,
    observed_fourier,
    simulate_particles,
)
from atomicspi_bayes.physics.geometry import geodesic_angle, sixd_to_matrix


def test_mlp_encoder_standardises_inputs_and_starts_small():
    enc = MLPEncoder(
        3, 4, (8,), key=jax.random.PRNGKey(0), offset=jnp.array([10.0, 0, 0]),
        scale=jnp.array([100.0, 1, 1]),
    )  # fmt: skip
    out = enc(jnp.array([10.0, 0.0, 0.0]))
    assert out.shape == (4,)
    assert float(jnp.abs(out).max()) < 0.5
    grads = jax.grad(lambda m: jnp.sum(m(jnp.ones(3)) ** 2))(enc)
    np.testing.assert_array_equal(np.asarray(grads.offset), 0.0)  # offsets are not trained


def test_conv_encoder_shapes_and_size_check():
    enc = ConvEncoder(16, 3, 5, channels=(4, 8), hidden=(16,), key=jax.random.PRNGKey(0))
    assert enc(jnp.ones((16, 16)), jnp.ones(3)).shape == (5,)
    with pytest.raises(ValueError, match="divisible"):
        ConvEncoder(12, 0, 5, channels=(4, 8, 8), key=jax.random.PRNGKey(0))


def test_mode_sensitivity_is_the_gradient_of_the_log_likelihood():
    static = tiny_static()
    batch, sigma = tiny_batch(static, 3)
    scale = jnp.ones(1)
    got = mode_sensitivity(batch, static, scale, jnp.asarray(sigma))
    observed = observed_fourier(batch.images, static.window)

    def loglik(amplitudes):
        nodes = nodes_from_amplitudes(amplitudes, static)
        clean = simulate_particles(nodes, batch.rotations, batch.shifts, batch.ctf, static)
        return image_log_likelihood(
            observed, clean, jnp.broadcast_to(jnp.asarray(sigma), (3,)), static.window
        ).sum()

    want = jax.grad(loglik)(jnp.zeros((3, static.n_modes)))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-3, atol=1e-3)


def test_lowpass_images_have_unit_noise():
    static = tiny_static()
    batch, _ = tiny_batch(static, 8, snr=None)
    noise = 0.7 * jax.random.normal(jax.random.PRNGKey(3), (8, 4 * BOX, BOX // 4))
    noise = noise.reshape(8, BOX, BOX)
    small = lowpass_images(batch._replace(images=noise), static, 16, jnp.array([0.7]))
    assert small.shape == (8, 16, 16)
    assert float(small.std()) == pytest.approx(1.0, rel=0.05)


def test_head_offsets_start_in_distinct_rotations():
    mats = sixd_to_matrix(_head_offsets(6))
    angles = geodesic_angle(mats[:, None], mats[None, :])
    off = np.asarray(angles)[~np.eye(6, dtype=bool)]
    assert off.min() > 1.0  # > 57° apart


@pytest.mark.parametrize(
    ("poses", "kind"),
    [
        ("fixed", "sensitivity"),
        pytest.param("fixed", "image", marks=pytest.mark.slow),
        pytest.param("amortized", "image", marks=pytest.mark.slow),
    ],
)
def test_guide_sites_match_the_model_and_svi_steps(poses, kind):
    static = tiny_static(n_particles=40)
    batch, sigma = tiny_batch(static, 8)
    static = dataclasses.replace(static, noise_sigma=sigma)
    cfg = fixed_config(poses=poses)
    guide = build_guide(
        jax.random.PRNGKey(0), cfg, static, batch, kind=kind, hidden=(16,), image_size=16,
        pose_heads=3,
    )  # fmt: skip
    model = functools.partial(cryoem_model, cfg=cfg, static=static)
    gtr = handlers.trace(handlers.seed(guide, jax.random.PRNGKey(1))).get_trace(batch)
    mtr = handlers.trace(
        handlers.replay(handlers.seed(model, jax.random.PRNGKey(2)), gtr)
    ).get_trace(batch)
    latent = {k for k, s in mtr.items() if s["type"] == "sample" and not s["is_observed"]}
    sampled = {k for k, s in gtr.items() if s["type"] == "sample"}
    assert latent == sampled
    svi = SVI(model, guide, numpyro.optim.Adam(1e-3), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(3), batch)
    state, loss = jax.jit(svi.update)(state, batch)
    assert np.isfinite(float(loss))
    enc = guide.encode(svi.get_params(state), batch)
    assert enc.z_mean.shape == (8, 1) and bool(jnp.all(enc.z_sd > 0))
    if poses == "amortized":
        assert enc.rotation.shape == (8, 3, 3) and set(np.asarray(enc.head)) <= {0, 1, 2}


def test_sensitivity_encoder_refuses_amortized_poses():
    static = tiny_static()
    batch, _ = tiny_batch(static, 4)
    with pytest.raises(ConfigError, match="poses"):
        build_guide(jax.random.PRNGKey(0), fixed_config(poses="amortized"), static, batch)


def test_best_head_picks_the_true_pose():
    # With noise-free images, the head whose mean rotation is the truth must win.
    static = tiny_static()
    batch, _ = tiny_batch(static, 4, snr=None)
    static = dataclasses.replace(static, noise_sigma=np.full(1, 0.01, np.float32))
    cfg = fixed_config(poses="amortized")
    guide = build_guide(
        jax.random.PRNGKey(0), cfg, static, batch, kind="image", image_size=16, pose_heads=3
    )
    wrong = jnp.swapaxes(batch.rotations, -1, -2)
    rotations = jnp.stack([wrong, batch.rotations, wrong @ wrong], axis=1)  # truth = head 1
    head = guide._best_head(
        static.decoder, jnp.ones(1), jnp.asarray(static.noise_sigma), batch, jnp.zeros((4, 1)),
        rotations, jnp.zeros((4, 3, 2)),
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(head), 1)
