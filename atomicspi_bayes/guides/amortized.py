"""Amortized guides: one encoder gives every particle its variational posterior.

    q(z_i | y_i, pose_i, CTF_i) = N(μ_φ(f_i), diag σ_φ(f_i)²)                 (poses fixed)
    q(z_i, A_i, o_i | y_i) = N(z; μ, σ²) · TangentNormalSO3(A; A_h*, s_h*) · N(o; m_h*, t_h*²)
                                                                          (poses amortized)

``f_i`` are the encoder features (``guides.features``). With amortized poses the encoder
has H pose heads (rotation hypotheses); the head used for particle i is the one whose mean
pose explains y_i best under the current model (``h* = argmax_h log p(y_i | μ_z, A_h, o_h)``,
held fixed inside each step), so competing hypotheses (in-plane/flip ambiguities) are kept
instead of averaged, and only the winning head is trained on that particle.

Global parameters of the model (decoder, noise, scale) are point estimates: the guide has
no sample sites for them. Site names are the model's (``"particles"``, ``"z"``,
``"rotation"``, ``"shift"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array
from numpyro.contrib.module import eqx_module
from numpyro.distributions import constraints

from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.guides.encoders import ConvEncoder, MLPEncoder
from atomicspi_bayes.guides.features import lowpass_images, mode_sensitivity, pose_features
from atomicspi_bayes.model import (
    ModelConfig,
    ModelStatic,
    ParticleBatch,
    TangentNormalSO3,
    decode_nodes,
    image_log_likelihood,
    observed_fourier,
    particle_plate,
    simulate_particles,
)
from atomicspi_bayes.physics.geometry import axis_angle_to_matrix, matrix_to_sixd, sixd_to_matrix

__all__ = ["AmortizedGuide", "Encoding", "build_guide", "refine_poses"]

_POSE_OUT = 13  # per head: 6D rotation, 3 log-sds, 2 shift means, 2 shift log-sds
_MIN_SD = 1e-3


class Encoding(eqx.Module):
    """Deterministic encoder output for a batch (variational parameters).

    Attributes:
        z_mean, z_sd: ``(B, D)``.
        rotation: ``(B, 3, 3)`` mean rotation of the chosen head (input pose if fixed).
        rotation_sd: ``(B, 3)`` radians (zeros if fixed).
        shift_mean, shift_sd: ``(B, 2)`` Å (input shift and zeros if fixed).
        head: ``(B,)`` int chosen head (0 if fixed).
    """

    z_mean: Array
    z_sd: Array
    rotation: Array
    rotation_sd: Array
    shift_mean: Array
    shift_sd: Array
    head: Array


@dataclass(frozen=True, eq=False)
class AmortizedGuide:
    """Callable NumPyro guide ``guide(batch)`` around a pre-built encoder.

    Attributes:
        encoder: :class:`MLPEncoder` (``kind="sensitivity"``) or :class:`ConvEncoder`
            (``kind="image"``), built once by :func:`build_guide`.
        kind: ``"sensitivity"`` or ``"image"``.
        cfg, static: the model's configuration and arrays.
        image_size: side of the low-pass image (``kind="image"``).
        pose_heads: H, number of rotation hypotheses (amortized poses).
        sensitivity_modes: number of softest modes whose scores the encoder sees.
    """

    encoder: eqx.Module
    kind: str
    cfg: ModelConfig
    static: ModelStatic
    image_size: int = 32
    pose_heads: int = 1
    sensitivity_modes: int = 64

    def __call__(self, batch: ParticleBatch) -> None:
        encoder = eqx_module("encoder", self.encoder)
        decoder = eqx_module("decoder", self.static.decoder) if self._amortized else None
        scale, sigma = self._globals()
        enc = self.encode_with(encoder, decoder, scale, sigma, batch)
        with particle_plate(batch, self.static.n_particles):
            numpyro.sample("z", dist.Normal(enc.z_mean, enc.z_sd).to_event(1))
            if self._amortized:
                numpyro.sample("rotation", TangentNormalSO3(enc.rotation, enc.rotation_sd))
                numpyro.sample("shift", dist.Normal(enc.shift_mean, enc.shift_sd).to_event(1))

    @property
    def _amortized(self) -> bool:
        return self.cfg.poses == "amortized"

    def _globals(self) -> tuple[Array, Array]:
        """The model's image scale and noise sd (same param sites as the model)."""
        scale = numpyro.param("image_scale", jnp.asarray(self.static.image_scale))
        sigma = jnp.asarray(self.static.noise_sigma)
        if self.cfg.learn_noise:
            sigma = numpyro.param("noise_sigma", sigma, constraint=constraints.positive)
        return scale, sigma

    def features(self, batch: ParticleBatch, scale: Array, sigma: Array) -> tuple[Array, ...]:
        """Encoder inputs for ``batch``: ``(f,)`` or ``(image, side)``."""
        if self.kind == "sensitivity":
            # fixed reference scale/noise: features do not move while the globals learn
            ref_scale = jnp.asarray(self.static.image_scale)
            ref_sigma = jnp.asarray(self.static.noise_sigma)
            score = mode_sensitivity(batch, self.static, ref_scale, ref_sigma)
            score = score[:, : self.sensitivity_modes]  # the softest modes carry the signal
            return (jnp.concatenate([score, pose_features(batch)], axis=-1),)
        images = lowpass_images(batch, self.static, self.image_size, jax.lax.stop_gradient(sigma))
        # amortized poses: the input pose is unknown, only the defocus is a side input
        side = pose_features(batch)[:, 8:] if self._amortized else pose_features(batch)
        return images, side

    def encode_with(
        self,
        encoder: eqx.Module,
        decoder: eqx.Module | None,
        scale: Array,
        sigma: Array,
        batch: ParticleBatch,
    ) -> Encoding:
        """The variational parameters of ``batch`` for given networks and globals (pure)."""
        d = self.cfg.latent_dim
        out = jax.vmap(encoder)(*self.features(batch, scale, sigma))
        z_mean = out[:, :d]
        z_sd = jax.nn.softplus(out[:, d : 2 * d] - 1.0) + _MIN_SD
        b = out.shape[0]
        if not self._amortized:
            zeros3 = jnp.zeros((b, 3), out.dtype)
            return Encoding(z_mean, z_sd, batch.rotations, zeros3, batch.shifts,
                            jnp.zeros((b, 2), out.dtype), jnp.zeros(b, jnp.int32))  # fmt: skip
        rotations, rot_sd, shift_mean, shift_sd = self.pose_heads_of(out)
        head = self._best_head(decoder, scale, sigma, batch, z_mean, rotations, shift_mean)
        pick = jax.vmap(lambda x, h: x[h])
        return Encoding(z_mean, z_sd, pick(rotations, head), pick(rot_sd, head),
                        pick(shift_mean, head), pick(shift_sd, head), head)  # fmt: skip

    def pose_heads_of(self, out: Array) -> tuple[Array, Array, Array, Array]:
        """Encoder output ``(B, 2D + 13H)`` -> per-head pose parameters.

        Returns rotations ``(B, H, 3, 3)``, rotation sds ``(B, H, 3)`` rad, shift means
        ``(B, H, 2)`` Å and shift sds ``(B, H, 2)`` Å.
        """
        b, d = out.shape[0], self.cfg.latent_dim
        heads = out[:, 2 * d :].reshape(b, self.pose_heads, _POSE_OUT)
        rotations = sixd_to_matrix(heads[..., :6] + _head_offsets(self.pose_heads))
        rot_sd = jax.nn.softplus(heads[..., 6:9] - 2.0) + _MIN_SD
        shift_mean = heads[..., 9:11] * self.cfg.shift_prior_sd
        shift_sd = jax.nn.softplus(heads[..., 11:13] - 1.0) * self.cfg.shift_prior_sd + _MIN_SD
        return rotations, rot_sd, shift_mean, shift_sd

    def _best_head(self, decoder, scale, sigma, batch, z_mean, rotations, shifts) -> Array:
        """``(B,)`` index of the head whose mean pose gives the highest likelihood."""
        if self.pose_heads == 1:
            return jnp.zeros(z_mean.shape[0], jnp.int32)
        static = self.static
        group = batch.optics_group
        observed = observed_fourier(batch.images, static.window)
        _, nodes = decode_nodes(decoder, jax.lax.stop_gradient(z_mean), static)

        def score(rot_h, shift_h):
            clean = scale[group][:, None] * simulate_particles(
                nodes, rot_h, shift_h, batch.ctf, static
            )
            return image_log_likelihood(observed, clean, sigma[group], static.window)

        scores = jax.vmap(score, in_axes=(1, 1), out_axes=1)(rotations, shifts)  # (B, H)
        return jnp.argmax(jax.lax.stop_gradient(scores), axis=1)

    def encode(self, params: dict, batch: ParticleBatch, refine_steps: int = 0) -> Encoding:
        """Variational parameters of ``batch`` under learned ``params`` (SVI result).

        With amortized poses and ``refine_steps > 0`` the chosen pose is then refined per
        particle by ``refine_steps`` Adam steps on the log-likelihood (rotation in the
        tangent space, shift), the decoder at the encoder's z mean: a semi-amortized
        estimate (the encoder proposes, the likelihood polishes).
        """
        params = jax.tree_util.tree_map(jnp.asarray, params)
        encoder = _combine(params["encoder$params"], self.encoder)
        decoder = _combine(params["decoder$params"], self.static.decoder)
        scale = params["image_scale"]
        sigma = params.get("noise_sigma", jnp.asarray(self.static.noise_sigma))
        enc = self.encode_with(encoder, decoder, scale, sigma, batch)
        if self._amortized and refine_steps > 0:
            rotation, shift = refine_poses(
                decoder, scale, sigma, batch, self.static, enc, refine_steps
            )
            enc = eqx.tree_at(lambda e: (e.rotation, e.shift_mean), enc, (rotation, shift))
        return enc


def refine_poses(
    decoder: eqx.Module,
    scale: Array,
    sigma: Array,
    batch: ParticleBatch,
    static: ModelStatic,
    enc: Encoding,
    steps: int,
    learning_rate: float = 0.02,
) -> tuple[Array, Array]:
    """Maximise log p(y | X(z_mean), A exp([ε]×), o) over ε (rad) and o (Å) per particle.

    Starts at the encoder's pose; ``steps`` Adam iterations with a step size decaying from
    ``learning_rate`` (rad; the shift is optimised in units of 10 Å) to 1 % of it (cosine),
    so the pose settles instead of jittering by ~one step. Returns refined rotations
    ``(B, 3, 3)`` and shifts ``(B, 2)`` Å.
    """
    import optax

    group = batch.optics_group
    observed = observed_fourier(batch.images, static.window)
    _, nodes = decode_nodes(decoder, enc.z_mean, static)
    nodes = jax.lax.stop_gradient(nodes)

    def neg_loglik(delta):
        eps, shift = delta[:, :3], enc.shift_mean + 10.0 * delta[:, 3:]
        rotation = enc.rotation @ axis_angle_to_matrix(eps)
        clean = scale[group][:, None] * simulate_particles(
            nodes, rotation, shift, batch.ctf, static
        )
        return -jnp.sum(image_log_likelihood(observed, clean, sigma[group], static.window))

    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.01))
    delta = jnp.zeros((enc.z_mean.shape[0], 5), enc.z_mean.dtype)

    def step(carry, _):
        delta, state = carry
        grad = jax.grad(neg_loglik)(delta)
        update, state = opt.update(grad, state)
        return (delta + update, state), None

    (delta, _), _ = jax.lax.scan(step, (delta, opt.init(delta)), None, length=steps)
    return enc.rotation @ axis_angle_to_matrix(delta[:, :3]), enc.shift_mean + 10.0 * delta[:, 3:]


def _combine(learned: eqx.Module, template: eqx.Module) -> eqx.Module:
    return eqx.combine(learned, eqx.partition(template, eqx.is_inexact_array)[1])


def _head_offsets(n_heads: int) -> Array:
    """``(H, 6)`` 6D offsets spreading the heads' initial rotations over SO(3).

    Head 0 starts at the identity; the others at rotations by π about x, y, z and then at
    quasi-uniform axes (golden spiral) by 2π/3, so the heads begin in different basins.
    """
    vecs = [np.zeros(3), np.array([np.pi, 0, 0]), np.array([0, np.pi, 0]), np.array([0, 0, np.pi])]
    golden = np.pi * (3.0 - np.sqrt(5.0))
    for i in range(max(0, n_heads - 4)):
        y = 1.0 - 2.0 * (i + 0.5) / max(1, n_heads - 4)
        r = np.sqrt(1.0 - y * y)
        axis = np.array([np.cos(golden * i) * r, y, np.sin(golden * i) * r])
        vecs.append(axis * 2.0 * np.pi / 3.0)
    mats = axis_angle_to_matrix(jnp.asarray(np.stack(vecs[:n_heads]), dtype=jnp.float32))
    return matrix_to_sixd(mats)


def build_guide(
    key: Array,
    cfg: ModelConfig,
    static: ModelStatic,
    example: ParticleBatch,
    *,
    kind: str = "sensitivity",
    hidden: tuple[int, ...] = (128, 128),
    image_size: int = 32,
    pose_heads: int = 4,
) -> AmortizedGuide:
    """Build the encoder once (input standardisation from ``example``) and wrap it.

    Args:
        key: PRNG key for the encoder weights.
        cfg, static: the model's configuration and arrays.
        example: a representative batch (sets the input offset/scale of MLP encoders).
        kind: ``"sensitivity"`` (poses fixed) or ``"image"``.
        hidden: encoder MLP (head) widths.
        image_size: low-pass image side for ``kind="image"`` (multiple of 8, <= box).
        pose_heads: rotation hypotheses for amortized poses.

    Raises:
        ConfigError: ``kind="sensitivity"`` with amortized poses, or bad sizes.
    """
    d = cfg.latent_dim
    amortized = cfg.poses == "amortized"
    heads = pose_heads if amortized else 1
    out_size = 2 * d + (_POSE_OUT * heads if amortized else 0)
    if kind == "sensitivity":
        if amortized:
            raise ConfigError("the 'sensitivity' encoder needs known poses (poses='fixed')")
        probe = AmortizedGuide(None, kind, cfg, static)  # type: ignore[arg-type]
        (feats,) = probe.features(
            example, jnp.asarray(static.image_scale), jnp.asarray(static.noise_sigma)
        )
        feats = np.asarray(feats)
        offset = feats.mean(axis=0)
        spread = feats.std(axis=0)
        spread = np.where(spread > 0, spread, 1.0)
        encoder = MLPEncoder(feats.shape[1], out_size, hidden, key=key, offset=offset, scale=spread)
    elif kind == "image":
        if image_size > static.window.box or image_size % 8:
            raise ConfigError(
                f"encoder image size {image_size} must be a multiple of 8 and <= box "
                f"{static.window.box}"
            )
        side = 1 if amortized else 9
        encoder = ConvEncoder(image_size, side, out_size, hidden=hidden, key=key)
    else:
        raise ConfigError(f"unknown encoder kind {kind!r}: use 'sensitivity' or 'image'")
    return AmortizedGuide(encoder, kind, cfg, static, image_size=image_size, pose_heads=heads)
