"""X-ray SPI: the NumPyro model of photon patterns and its per-particle guide (SCIENCE.md §7).

The same conformation latent as cryo-EM (``model.py``), a different image formation:

    globals   θ       decoder z -> ANM mode amplitudes (``"decoder$params"``)
    locals    z_i ~ N(0, I_D) (or the mixture prior)                         ``"z"``
              A_i ~ Uniform(SO(3))     (orientation is always latent)        ``"rotation"``
              X_i = X0 + Σ_k a_k(z_i) s_k     Cα nodes; scatterers move rigidly with them
              factor  log p_phys(X_i, a_i)                                    ``"physics_prior"``
              μ_i(k) = J0 · r_e²ΩP(k) · |F[X_i](A_iᵀ k)|² + b(k)   (``physics.xray.intensity``)
              n_i(k) ~ Poisson(μ_i(k))  over the measured (binned) pixels    ``"pattern"``

No shift: ``|F|²`` does not depend on the particle's position. The Friedel two-fold
(``A`` vs ``R_z(π) A``, see ``physics.xray_orientation``) leaves the likelihood almost
invariant; the guide is local around one member of the pair, found by the orientation search.

Guide (per particle ``i``, parameters indexed by the plate's subsample):
``q(z_i) = N(z_loc_i, diag z_scale_i²)`` and
``q(A_i) = TangentNormalSO3(exp([ω_i]×) A0_i, rotation_scale_i)`` around the search result
``A0_i`` (in the batch; ``ω_i = 0`` unless ``XrayStatic.learn_rotation``). Cost per
pattern: ``P · N`` phases (``P`` scored pixels, ``N`` scatterers), see ``physics.xray``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.module import eqx_module
from numpyro.distributions import constraints

from atomicspi_bayes.model import (
    LatentDecoder,
    ModelConfig,
    TangentNormalSO3,
    UniformSO3,
    decode_nodes,
    latent_prior,
    particle_plate,
    physics_log_prior,
    rendered_points,
)
from atomicspi_bayes.physics.geometry import axis_angle_to_matrix
from atomicspi_bayes.physics.xray import DetectorArrays, XrayScatterers, intensity

__all__ = [
    "XrayBatch",
    "XrayStatic",
    "xray_guide",
    "xray_mean_counts",
    "xray_model",
]


class XrayBatch(NamedTuple):
    """One minibatch of patterns.

    Attributes:
        indices: ``(B,)`` int32 plate positions (0..N-1) of the patterns.
        counts: ``(B, P)`` float32 photons of the scored (binned) pixels.
        rotation0: ``(B, 3, 3)`` float32 orientation-search result (the guide's anchor).
    """

    indices: jax.Array
    counts: jax.Array
    rotation0: jax.Array


@dataclass(frozen=True, eq=False)
class XrayStatic:
    """Fixed arrays of the X-ray model (the attributes ``model.py``'s helpers read, plus optics).

    Attributes:
        x0_nodes, mode_vectors, mode_eigenvalues, bonded, bond_lengths, clash_pairs,
        elastic_pairs, decoder: as in ``model.ModelStatic`` (Cα nodes in Å, centred).
        render_x0: ``(S, 3)`` float32 reference scatterer positions, Å (same frame).
        render_node: ``(S,)`` int32 node that carries each scatterer.
        scatterers: ``physics.xray.XrayScatterers`` (composition and Cromer-Mann tables;
            coordinates replaced per particle).
        detector: ``DetectorArrays`` of the ``P`` scored pixels, flattened: ``k (P, 3)``,
            ``pixel_factor (P,)``, ``mask (P,)``.
        fluence: photons/Å².
        background: ``(P,)`` mean background photons per scored pixel (> 0).
        n_particles: N, size of the plate.
        z_init: ``(N, D)`` initial ``z_loc`` of the guide (small random: breaks symmetry).
        rotation_scale_init: rad, initial sd of ``q(A_i)``.
        learn_rotation: also learn the mode of ``q(A_i)`` (offset ``ω_i``); otherwise it
            stays at the search result and only its spread is learned.
        frame_triples, frame_mask: as in ``model.ModelStatic`` (None: scatterers translate
            with their node only).
    """

    x0_nodes: np.ndarray
    mode_vectors: np.ndarray
    mode_eigenvalues: np.ndarray
    bonded: np.ndarray
    bond_lengths: np.ndarray
    clash_pairs: object
    elastic_pairs: object
    decoder: LatentDecoder
    render_x0: np.ndarray
    render_node: np.ndarray
    scatterers: XrayScatterers
    detector: DetectorArrays
    fluence: float
    background: np.ndarray
    n_particles: int
    z_init: np.ndarray
    rotation_scale_init: float = 0.03
    learn_rotation: bool = False
    frame_triples: np.ndarray | None = None
    frame_mask: np.ndarray | None = None

    @property
    def n_nodes(self) -> int:
        return int(self.x0_nodes.shape[0])

    @property
    def n_modes(self) -> int:
        return int(self.mode_vectors.shape[0])


def xray_mean_counts(nodes: jax.Array, rotations: jax.Array, static: XrayStatic) -> jax.Array:
    """``(B, P)`` mean photons for nodes ``(B, R, 3)`` Å and poses ``(B, 3, 3)``."""
    points = rendered_points(nodes, static)

    def one(x, rot):
        return intensity(
            static.scatterers._replace(coords=x),
            rot,
            static.detector,
            static.fluence,
            background=jnp.asarray(static.background),
        )

    return jax.vmap(one)(points, rotations)


def xray_model(batch: XrayBatch, cfg: ModelConfig, static: XrayStatic) -> None:
    """The X-ray generative model for one minibatch (see the module docstring)."""
    decoder = eqx_module("decoder", static.decoder)
    z_prior = latent_prior(cfg)
    with particle_plate(batch, static.n_particles):
        z = numpyro.sample("z", z_prior)
        rotation = numpyro.sample("rotation", UniformSO3())
        amplitudes, nodes = decode_nodes(decoder, z, static)
        numpyro.factor("physics_prior", physics_log_prior(nodes, amplitudes, cfg, static))
        mu = xray_mean_counts(nodes, rotation, static)
        numpyro.sample("pattern", dist.Poisson(mu).to_event(1), obs=batch.counts)


def xray_guide(batch: XrayBatch, cfg: ModelConfig, static: XrayStatic) -> None:
    """Per-particle mean-field guide: Normal ``z``, tangent-Normal rotation at the search pose."""
    n, d = static.n_particles, cfg.latent_dim
    z_loc = numpyro.param("z_loc", jnp.asarray(static.z_init, jnp.float32))
    z_scale = numpyro.param(
        "z_scale", jnp.full((n, d), 0.3, jnp.float32), constraint=constraints.positive
    )
    omega = jnp.zeros((n, 3), jnp.float32)
    if static.learn_rotation:
        omega = numpyro.param("rotation_delta", omega)
    rot_scale = numpyro.param(
        "rotation_scale",
        jnp.full((n, 3), static.rotation_scale_init, jnp.float32),
        constraint=constraints.positive,
    )
    idx = batch.indices
    with particle_plate(batch, n):
        numpyro.sample("z", dist.Normal(z_loc[idx], z_scale[idx]).to_event(1))
        loc = axis_angle_to_matrix(omega[idx]) @ batch.rotation0
        numpyro.sample("rotation", TangentNormalSO3(loc, rot_scale[idx]))
