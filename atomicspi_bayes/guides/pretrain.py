"""Sleep-phase pre-training of the pose heads on images simulated from the model itself.

Before SVI, the encoder of an amortized-pose guide is trained by regression on particles
drawn from the generative model at the reference structure (``z`` at the prior mode): pose
``A ~ Uniform(SO(3))``, shift ``o ~ N(0, s_o²)``, a CTF drawn from the dataset's own CTFs,
white noise at the estimated noise level. This is the "sleep" phase of wake-sleep learning
(it minimises KL(p || q) for the pose on model samples) and gives the heads a starting point
far better than random, which SVI (the "wake" phase, the ELBO on real data) then adapts.

Loss (winner-takes-all over the H heads, so competing hypotheses are kept instead of
averaged): ``min_h [ ||A_h - A||_F² + |o_h - o|² / s_o² ] + 0.05 · mean_h [...]``.
"""

from __future__ import annotations

import dataclasses
import logging

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array

from atomicspi_bayes.guides.amortized import AmortizedGuide
from atomicspi_bayes.model import ParticleBatch
from atomicspi_bayes.physics.cryoem import fourier_to_image, simulate_batch
from atomicspi_bayes.physics.ctf import CTFParams
from atomicspi_bayes.physics.geometry import random_rotations

__all__ = ["pretrain_pose_encoder"]

logger = logging.getLogger(__name__)


def pretrain_pose_encoder(
    key: Array,
    guide: AmortizedGuide,
    ctf_pool: CTFParams,
    *,
    steps: int = 1000,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
) -> tuple[AmortizedGuide, np.ndarray]:
    """Regress the pose heads of ``guide``'s encoder on simulated reference particles.

    Args:
        key: PRNG key.
        guide: an amortized-pose guide (``cfg.poses == "amortized"``, image encoder).
        ctf_pool: CTFParams with ``(M,)`` leaves to draw the simulated particles' CTFs from.
        steps, batch_size, learning_rate: Adam optimisation of the encoder.

    Returns:
        The guide with the pre-trained encoder, and the ``(steps,)`` loss history.
    """
    static = guide.static
    window = static.window
    sigma = jnp.asarray(static.noise_sigma[:1])
    scale = jnp.asarray(static.image_scale[:1])
    shift_sd = guide.cfg.shift_prior_sd
    n_pool = int(jnp.shape(ctf_pool.defocus_u)[0])
    k_max = guide.image_size / (2 * window.box * window.pixel_size)  # the encoder's band
    points = jnp.broadcast_to(jnp.asarray(static.render_x0), (batch_size, *static.render_x0.shape))
    params, structure = eqx.partition(guide.encoder, eqx.is_inexact_array)
    opt = optax.adam(learning_rate)

    def simulate(k: Array) -> tuple[ParticleBatch, Array, Array]:
        k_rot, k_shift, k_ctf, k_noise = jax.random.split(k, 4)
        rotations = random_rotations(k_rot, batch_size)
        shifts = shift_sd * jax.random.normal(k_shift, (batch_size, 2))
        rows = jax.random.randint(k_ctf, (batch_size,), 0, n_pool)
        ctf = jax.tree_util.tree_map(lambda x: x[rows], ctf_pool)
        ft, _ = simulate_batch(
            static.scatterers, points, rotations, shifts, ctf, box=window.box,
            pixel_size=window.pixel_size, k_max=k_max,
        )  # fmt: skip
        clean = scale[0] * fourier_to_image(ft, window.box, window.pixel_size)
        images = clean + sigma[0] * jax.random.normal(k_noise, clean.shape)
        batch = ParticleBatch(
            indices=jnp.arange(batch_size, dtype=jnp.int32), images=images, rotations=rotations,
            shifts=shifts, ctf=ctf, optics_group=jnp.zeros(batch_size, jnp.int32),
        )  # fmt: skip
        return batch, rotations, shifts

    def loss_fn(p, batch: ParticleBatch, rotations: Array, shifts: Array) -> Array:
        encoder = eqx.combine(p, structure)
        out = jax.vmap(encoder)(*guide.features(batch, scale, sigma))
        rot_h, _, shift_h, _ = guide.pose_heads_of(out)
        err = jnp.sum((rot_h - rotations[:, None]) ** 2, axis=(-1, -2))
        err += jnp.sum((shift_h - shifts[:, None]) ** 2, axis=-1) / shift_sd**2
        return jnp.mean(jnp.min(err, axis=1) + 0.05 * jnp.mean(err, axis=1))

    @jax.jit
    def step(p, state, k):
        with jax.ensure_compile_time_eval():  # see model.simulate_particles
            batch, rotations, shifts = simulate(k)
        loss, grad = jax.value_and_grad(loss_fn)(p, batch, rotations, shifts)
        update, state = opt.update(grad, state, p)
        return optax.apply_updates(p, update), state, loss

    state = opt.init(params)
    losses = np.zeros(steps, np.float32)
    for i, k in enumerate(jax.random.split(key, steps)):
        params, state, loss = step(params, state, k)
        losses[i] = float(loss)
    logger.info("pose pre-training: loss %.4g -> %.4g", losses[:10].mean(), losses[-10:].mean())
    return dataclasses.replace(guide, encoder=eqx.combine(params, structure)), losses
