"""The NumPyro generative model of cryo-EM particle images (SCIENCE.md §3, §4, §6).

The story, for particles i = 1..N of optics groups g(i):

    globals   θ       decoder z -> mode amplitudes (point estimate, ``"decoder$params"``)
              σ_g     noise sd per pixel of optics group g (``"noise_sigma"``, image units)
              c_g     image scale of optics group g (``"image_scale"``)
              π, μ, s mixture prior of z (``"z_mixture_*"``; only with ``z_prior="mixture"``)
    locals    z_i ~ N(0, I_D)  (or the mixture)                              ``"z"``
              a_i = decoder_θ(z_i)                        (K,) Å of RMSD per mode
              X_i = X0 + Σ_k a_ik s_k                     (R, 3) Å Cα nodes, s_k = sqrt(R)·u_k
                    (the rendered beads or atoms move rigidly with their residue's node
                    and local Cα frame)
              A_i, o_i = STAR pose                        (poses="fixed")
                or A_i ~ Uniform(SO(3)), o_i ~ N(0, s_o² I₂)   ``"rotation"``, ``"shift"``
              factor  log p_phys(X_i, a_i)                 ``"physics_prior"``
              M_i(k) = c_g · CTF_i(k) · P̂[X_i](A_i, o_i)(k)       (RELION sign, §3)
              Y_i(k) ~ CN(M_i(k), σ_g² L² p⁴ w(k))  for |k| <= k_max  ``"image"``

``Y_i = p² · rfft2(ifftshift(y_i))`` is the observed image on the FT convention of SCIENCE.md
(F(k) ≈ p² fft2(f)); white noise of per-pixel sd σ then has E|N_k|² = L² σ² p⁴, and ``w(k)``
is an optional relative noise power spectrum (1 for white noise). Only the independent
coefficients of the Hermitian half plane inside ``|k| <= k_max`` are scored: the real and
imaginary parts of a complex coefficient are independent with variance ``s_k / 2`` each,
the self-conjugate ones (DC) are real with variance ``s_k``. This is SCIENCE.md §4's
``-|Y - M|²/s - log(π s)`` summed over H, written as a product of real Normals so the
observation site is an ordinary NumPyro ``Normal(...).to_event(1)``.

The projection is band-limited to k_max (``physics.cryoem.simulate_batch(k_max=...)``), so
its cost scales with (k_max·L·p)², not with L².

Site names (public API, reused by ``guides``): ``"particles"`` (plate), ``"z"``,
``"rotation"``, ``"shift"``, ``"physics_prior"``, ``"image"``, and the params above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

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
from atomicspi_bayes.physics.cryoem import Scatterers, image_to_fourier, simulate_batch
from atomicspi_bayes.physics.ctf import CTFParams
from atomicspi_bayes.physics.geometry import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    random_rotations,
)
from atomicspi_bayes.structure import (
    PairList,
    ca_bond_logprior,
    clash_logprior,
    deform,
    elastic_logprior,
    mode_logprior,
)
from atomicspi_bayes.structure.deform import transport_points

__all__ = [
    "FourierWindow",
    "LatentDecoder",
    "ModelConfig",
    "ModelStatic",
    "ParticleBatch",
    "TangentNormalSO3",
    "UniformSO3",
    "cryoem_model",
    "decode_nodes",
    "decoder_from_params",
    "image_log_likelihood",
    "initial_noise_and_scale",
    "latent_grid_posterior",
    "nodes_from_amplitudes",
    "observed_fourier",
    "particle_plate",
    "rendered_points",
    "scored_sd",
    "simulate_particles",
]

_LOG_HAAR_VOLUME = math.log(8.0 * math.pi**2)


# ---------------------------------------------------------------- configuration and data


@dataclass(frozen=True)
class ModelConfig:
    """Modelling choices (hashable; closed over by the jitted SVI step).

    Attributes:
        latent_dim: D, dimension of the conformation latent z.
        poses: ``"fixed"`` (poses from the STAR file) or ``"amortized"`` (latent).
        z_prior: ``"normal"`` (N(0, I)) or ``"mixture"`` (learnable Gaussian mixture).
        n_mixture: number of mixture components.
        learn_noise: learn σ_g (else fixed at ``ModelStatic.noise_sigma``).
        elastic_weight: γ/kT_eff of the elastic-network prior on the decoded Cα distances
            (rotation-invariant: rigid domain motions cost only at their hinges), kT⁻¹Å⁻².
        mode_weight: weight of the harmonic ANM prior ``-Σ λ_k a_k²/2`` on the amplitudes
            (1/kT_eff with γ = 1; not rotation-invariant, penalises large domain rotations).
        bond_weight: weight of the Cα-Cα virtual-bond log-prior.
        clash_weight: weight of the Cα clash log-prior.
        shift_prior_sd: Å, sd of each shift component (amortized poses).
    """

    latent_dim: int = 1
    poses: str = "fixed"
    z_prior: str = "normal"
    n_mixture: int = 4
    learn_noise: bool = True
    elastic_weight: float = 0.05
    mode_weight: float = 0.0
    bond_weight: float = 1.0
    clash_weight: float = 1.0
    shift_prior_sd: float = 3.0

    def __post_init__(self) -> None:
        if self.poses not in ("fixed", "amortized"):
            raise ConfigError(f"poses must be 'fixed' or 'amortized', got {self.poses!r}")
        if self.z_prior not in ("normal", "mixture"):
            raise ConfigError(f"z_prior must be 'normal' or 'mixture', got {self.z_prior!r}")
        if self.latent_dim < 1:
            raise ConfigError(f"latent_dim must be >= 1, got {self.latent_dim}")


class ParticleBatch(NamedTuple):
    """A minibatch of B particles (a pytree; every leaf has the batch axis first).

    Attributes:
        indices: ``(B,)`` int32 rows of the particles in the dataset (the plate indices).
        images: ``(B, L, L)`` float32 real-space images (RELION sign, protein white).
        rotations: ``(B, 3, 3)`` float32 RELION matrices A (identity when unknown).
        shifts: ``(B, 2)`` float32 RELION origins in Å (zero when unknown).
        ctf: :class:`~atomicspi_bayes.physics.ctf.CTFParams` with ``(B,)`` leaves.
        optics_group: ``(B,)`` int32, 0-based optics group.
    """

    indices: Array
    images: Array
    rotations: Array
    shifts: Array
    ctf: CTFParams
    optics_group: Array


@dataclass(frozen=True, eq=False)
class FourierWindow:
    """The scored Fourier coefficients: independent entries of the rfft grid with |k| <= k_max.

    Attributes:
        box: L, image side in px.  pixel_size: p, Å.
        k_max: Å⁻¹, highest scored frequency.
        re_index, im_index: flat indices into the ``(L, L//2+1)`` rfft grid of the real /
            imaginary parts scored (``im_index`` omits the self-conjugate entries, whose
            imaginary part is 0, and both omit the conjugate duplicates of columns 0 and L/2).
        re_var, im_var: ``(M_re,)``, ``(M_im,)`` variance of each scored part in units of
            ``L² σ² p⁴`` (1/2 for complex coefficients, 1 for self-conjugate ones), times
            the relative noise power ``w(k)``.
    """

    box: int
    pixel_size: float
    k_max: float
    re_index: np.ndarray
    im_index: np.ndarray
    re_var: np.ndarray
    im_var: np.ndarray

    @property
    def n_scored(self) -> int:
        """Number of real numbers scored per image."""
        return int(self.re_index.size + self.im_index.size)

    @classmethod
    def create(
        cls, box: int, pixel_size: float, resolution: float, noise_power: np.ndarray | None = None
    ) -> FourierWindow:
        """Window of coefficients with ``|k| <= 1/resolution`` of an ``L = box`` image.

        Args:
            box: L in px (even).
            pixel_size: Å.
            resolution: Å; must be >= 2·pixel_size (Nyquist).
            noise_power: optional ``(L, L//2+1)`` relative noise power ``w(k)`` (mean ~1).

        Raises:
            ConfigError: odd box, or resolution finer than Nyquist.
        """
        if box % 2:
            raise ConfigError(f"box size must be even, got {box}")
        if resolution < 2.0 * pixel_size * (1.0 - 1e-6):
            raise ConfigError(
                f"resolution {resolution} Å is finer than Nyquist 2·pixel = {2 * pixel_size} Å"
            )
        k_max = 1.0 / resolution
        m_max = math.floor(k_max * box * pixel_size + 1e-6)  # as physics.cryoem's band
        rows = np.arange(box)
        my = np.where(rows < (box + 1) // 2, rows, rows - box)[:, None]  # signed row index
        mx = np.arange(box // 2 + 1)[None, :]
        inside = (np.abs(my) <= m_max) & (mx <= m_max)
        inside &= (mx**2 + my**2) * (1.0 / (box * pixel_size)) ** 2 <= k_max**2 * (1 + 1e-9)
        boundary = (mx == 0) | (2 * mx == box)  # rfft columns holding conjugate pairs
        self_conj = boundary & ((my == 0) | (2 * np.abs(my) == box))
        keep = inside & (~boundary | (my > 0) | self_conj)
        w = np.ones((box, box // 2 + 1)) if noise_power is None else np.asarray(noise_power)
        flat_keep = np.flatnonzero(keep.ravel())
        flat_complex = np.flatnonzero((keep & ~self_conj).ravel())
        var_re = np.where(self_conj, 1.0, 0.5) * w
        return cls(
            box=int(box),
            pixel_size=float(pixel_size),
            k_max=float(k_max),
            re_index=flat_keep,
            im_index=flat_complex,
            re_var=var_re.ravel()[flat_keep].astype(np.float32),
            im_var=(0.5 * w).ravel()[flat_complex].astype(np.float32),
        )

    def scored(self, ft: Array) -> Array:
        """``(..., L, L//2+1)`` complex -> ``(..., M)`` real scored parts (Re then Im)."""
        flat = ft.reshape(*ft.shape[:-2], -1)
        return jnp.concatenate([flat[..., self.re_index].real, flat[..., self.im_index].imag], -1)

    def variances(self) -> Array:
        """``(M,)`` float32 variance of each scored part in units of ``L² σ² p⁴``."""
        return jnp.asarray(np.concatenate([self.re_var, self.im_var]))


class LatentDecoder(eqx.Module):
    """MLP from the latent ``z`` ``(D,)`` to mode amplitudes ``(K,)`` in Å of RMSD per mode.

    ``amplitudes = mode_scale ⊙ MLP(z)``: the fixed ``mode_scale`` ``(K,)`` (not trained;
    e.g. ``sqrt(λ_1/λ_k)``) preconditions the output so soft, collective modes move faster
    under the optimiser than stiff, local ones. ``hidden=()`` gives a linear decoder. The
    last layer starts small (``output_scale``) so a fresh model sits near the reference.
    """

    layers: tuple[eqx.nn.Linear, ...]
    mode_scale: Array

    def __init__(
        self,
        latent_dim: int,
        n_modes: int,
        hidden: tuple[int, ...] = (64, 64),
        *,
        key: Array,
        output_scale: float = 0.1,
        mode_scale: Array | None = None,
    ):
        sizes = (latent_dim, *hidden, n_modes)
        keys = jax.random.split(key, len(sizes) - 1)
        pairs = zip(sizes[:-1], sizes[1:], keys, strict=True)
        layers = [eqx.nn.Linear(i, o, key=k) for i, o, k in pairs]
        last = layers[-1]
        last = eqx.tree_at(lambda m: m.weight, last, last.weight * output_scale)
        layers[-1] = eqx.tree_at(lambda m: m.bias, last, last.bias * 0.0)
        self.layers = tuple(layers)
        self.mode_scale = jnp.ones(n_modes) if mode_scale is None else jnp.asarray(mode_scale)

    def __call__(self, z: Array) -> Array:
        h = z
        for layer in self.layers[:-1]:
            h = jnp.tanh(layer(h))
        return jax.lax.stop_gradient(self.mode_scale) * self.layers[-1](h)


@dataclass(frozen=True, eq=False)
class ModelStatic:
    """Fixed arrays the model closes over (built once by the pipeline; not sampled).

    Attributes:
        x0_nodes: ``(R, 3)`` float32 reference Cα nodes, Å, centred (the elastic network:
            modes, priors, decoded structures).
        mode_vectors: ``(K, R, 3)`` float32 RMSD-scaled ANM vectors of the nodes
            (amplitude 1 = 1 Å RMSD).
        mode_eigenvalues: ``(K,)`` float32 ANM eigenvalues of the unit vectors (γ = 1).
        render_x0: ``(P, 3)`` float32 reference positions of the rendered scattering points,
            Å: bead scattering centres (coarse-grained) or atoms (all-atom).
        render_node: ``(P,)`` int32 node that carries each point rigidly (its residue's Cα).
        frame_triples, frame_mask: ``(R, 3)`` int32 node triples of the residues' local
            frames and ``(R,)`` bool residues that have one
            (``structure.deform.residue_frame_triples``): each rendered point moves with its
            node's translation and its local frame's rotation. None: translation only.
        scatterers: ``physics.cryoem.Scatterers`` of the P points (bead Gaussians or atoms).
        bonded: ``(R-1,)`` bool peptide-bonded consecutive nodes.
        bond_lengths: ``(R-1,)`` float32 ideal Cα-Cα lengths, Å.
        clash_pairs: non-bonded node pairs for the clash prior.
        elastic_pairs: springs (node pairs within the ANM cutoff) of the elastic prior.
        window: the scored :class:`FourierWindow`.
        n_particles: N, size of the particle plate.
        noise_sigma: ``(G,)`` float32 initial (or fixed) noise sd per pixel, per optics group.
        image_scale: ``(G,)`` float32 initial image scale per optics group.
        decoder: the initial :class:`LatentDecoder`.
    """

    x0_nodes: np.ndarray
    mode_vectors: np.ndarray
    mode_eigenvalues: np.ndarray
    render_x0: np.ndarray
    render_node: np.ndarray
    scatterers: Scatterers
    bonded: np.ndarray
    bond_lengths: np.ndarray
    clash_pairs: PairList
    elastic_pairs: PairList
    window: FourierWindow
    n_particles: int
    noise_sigma: np.ndarray
    image_scale: np.ndarray
    decoder: LatentDecoder
    frame_triples: np.ndarray | None = None
    frame_mask: np.ndarray | None = None

    @property
    def n_nodes(self) -> int:
        """R, number of Cα nodes of the elastic network (modes, priors)."""
        return int(self.x0_nodes.shape[0])

    @property
    def n_modes(self) -> int:
        return int(self.mode_vectors.shape[0])


# ---------------------------------------------------------------- distributions on SO(3)


class UniformSO3(dist.Distribution):
    """Uniform (Haar) distribution of rotation matrices ``(3, 3)``.

    Density ``1 / (8π²)`` with respect to the Haar measure of total volume 8π² (in exponential
    coordinates ε: ``dμ = 2(1 - cos|ε|)/|ε|² d³ε``), the measure :class:`TangentNormalSO3`
    also uses, so their log-densities can be subtracted in an ELBO.
    """

    support = constraints.independent(constraints.real, 2)  # orthogonal matrices
    reparametrized_params: ClassVar[list[str]] = []

    def __init__(self, batch_shape: tuple[int, ...] = (), *, validate_args=None):
        super().__init__(batch_shape=batch_shape, event_shape=(3, 3), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        n = max(1, math.prod(shape))
        return random_rotations(key, n).reshape(*shape, 3, 3)

    def log_prob(self, value):
        return jnp.full(jnp.shape(value)[:-2], -_LOG_HAAR_VOLUME)


class TangentNormalSO3(dist.Distribution):
    """Rotation ``R = loc · exp([ε]×)`` with ``ε ~ N(0, diag(scale²))`` (radians, body frame).

    A Gaussian in the tangent space at ``loc``, pushed onto SO(3). Its density with respect
    to the Haar measure (normalised as in :class:`UniformSO3`) is
    ``N(ε; 0, diag(scale²)) / J(|ε|)`` with ``J(θ) = 2(1 - cos θ)/θ²``, exact for |ε| < π
    (the wrap-around beyond π is neglected: use it for scales well below π).

    Args:
        loc: ``(..., 3, 3)`` rotation matrices (the mode).
        scale: ``(..., 3)`` positive sds in radians.
    """

    arg_constraints: ClassVar[dict] = {"scale": constraints.independent(constraints.positive, 1)}
    support = constraints.independent(constraints.real, 2)
    reparametrized_params: ClassVar[list[str]] = ["loc", "scale"]

    def __init__(self, loc, scale, *, validate_args=None):
        self.loc = jnp.asarray(loc)
        self.scale = jnp.asarray(scale)
        batch_shape = jnp.broadcast_shapes(self.loc.shape[:-2], self.scale.shape[:-1])
        super().__init__(batch_shape=batch_shape, event_shape=(3, 3), validate_args=validate_args)

    def sample_with_intermediates(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape + (3,)
        eps = jax.random.normal(key, shape, dtype=self.scale.dtype) * self.scale
        return self.loc @ axis_angle_to_matrix(eps), [eps]

    def sample(self, key, sample_shape=()):
        return self.sample_with_intermediates(key, sample_shape)[0]

    def log_prob(self, value, intermediates=None):
        if intermediates:
            eps = intermediates[0]
        else:
            eps = matrix_to_axis_angle(jnp.swapaxes(self.loc, -1, -2) @ value)
        log_normal = jnp.sum(
            -0.5 * (eps / self.scale) ** 2 - jnp.log(self.scale) - 0.5 * math.log(2 * math.pi),
            axis=-1,
        )
        theta2 = jnp.sum(eps * eps, axis=-1)
        small = theta2 < 1e-6
        theta = jnp.sqrt(jnp.where(small, 1.0, theta2))
        jac = jnp.where(small, 1.0 - theta2 / 12.0, 2.0 * (1.0 - jnp.cos(theta)) / (theta * theta))
        return log_normal - jnp.log(jac)


# ---------------------------------------------------------------- the forward model (pure JAX)


def observed_fourier(images: Array, window: FourierWindow) -> Array:
    """``(B, L, L)`` real images -> ``(B, M)`` scored parts of ``p² rfft2(ifftshift(y))``."""
    return window.scored(image_to_fourier(images, window.pixel_size))


def nodes_from_amplitudes(amplitudes: Array, static: ModelStatic) -> Array:
    """Mode amplitudes ``(..., K)`` (Å RMSD) -> nodes ``(..., R, 3)`` Å: X0 + Σ a_k s_k."""
    return deform(static.x0_nodes, static.mode_vectors, amplitudes)


def rendered_points(nodes: Array, static: ModelStatic) -> Array:
    """Nodes ``(..., R, 3)`` -> scattering points ``(..., P, 3)`` Å, each carried rigidly by its
    node: translated with it and, with ``static.frame_triples``, rotated with its residue's
    local frame (``structure.deform.transport_points``)."""
    return transport_points(
        nodes, static.x0_nodes, static.render_x0, static.render_node,
        static.frame_triples, static.frame_mask,
    )  # fmt: skip


def decode_nodes(decoder: LatentDecoder, z: Array, static: ModelStatic) -> tuple[Array, Array]:
    """Latents ``(B, D)`` -> (amplitudes ``(B, K)`` Å RMSD, nodes ``(B, R, 3)`` Å)."""
    amplitudes = jax.vmap(decoder)(z)
    return amplitudes, nodes_from_amplitudes(amplitudes, static)


def decoder_from_params(params: dict, static: ModelStatic) -> LatentDecoder:
    """The learned decoder from SVI ``params`` (site ``"decoder$params"``)."""
    structure = eqx.partition(static.decoder, eqx.is_inexact_array)[1]
    return eqx.combine(params["decoder$params"], structure)


def simulate_particles(
    nodes: Array, rotations: Array, shifts: Array, ctf: CTFParams, static: ModelStatic
) -> Array:
    """Noise-free ``(B, M)`` scored Fourier parts of particles with nodes ``(B, R, 3)`` Å.

    ``physics.cryoem.simulate_batch`` (σ_e · CTF · projected potential, rad·Å²) band-limited
    to the window's k_max: the same normalisation as :func:`observed_fourier` of the
    simulator's images (phase per pixel), before the image scale.
    """
    window = static.window
    # compile-time evaluation of constant grids: physics.cryoem.frequency_mask converts a
    # jnp grid with numpy, which fails under jit otherwise (jax 0.10 stages the dtype cast)
    with jax.ensure_compile_time_eval():
        ft, _ = simulate_batch(
            static.scatterers,
            rendered_points(nodes, static),
            rotations,
            shifts,
            ctf,
            box=window.box,
            pixel_size=window.pixel_size,
            k_max=window.k_max,
        )
    return window.scored(ft)


def image_log_likelihood(
    observed: Array, simulated: Array, sigma: Array, window: FourierWindow
) -> Array:
    """``(B,)`` log p(Y | M) of scored parts ``(B, M)`` with per-image noise sd ``sigma`` (B,)."""
    sd = scored_sd(sigma, window)
    return dist.Normal(simulated, sd).to_event(1).log_prob(observed)


def scored_sd(sigma: Array, window: FourierWindow) -> Array:
    """``(B, M)`` sd of every scored part for per-pixel noise sd ``sigma`` ``(B,)``."""
    unit = window.box * window.pixel_size**2  # L p²: E|N_k|² = (L p² σ)² for white noise
    return (sigma * unit)[:, None] * jnp.sqrt(window.variances())[None, :]


def physics_log_prior(nodes: Array, amplitudes: Array, cfg: ModelConfig, static: ModelStatic):
    """``(B,)`` weighted physics log-prior of decoded nodes ``(B, R, 3)`` and amplitudes.

    Elastic network (distances of the Cα nodes vs the reference), harmonic ANM amplitudes,
    Cα-Cα virtual bonds and Cα clashes (``structure.priors``), each times its weight.
    """
    total = jnp.zeros(nodes.shape[:-2], nodes.dtype)
    if cfg.elastic_weight:
        total += elastic_logprior(nodes, static.x0_nodes, static.elastic_pairs, cfg.elastic_weight)
    if cfg.mode_weight:
        unit_amplitudes = amplitudes * math.sqrt(static.n_nodes)  # unit-vector amplitudes
        total += cfg.mode_weight * mode_logprior(unit_amplitudes, static.mode_eigenvalues)
    if cfg.bond_weight:
        total += cfg.bond_weight * ca_bond_logprior(nodes, static.bonded, static.bond_lengths)
    if cfg.clash_weight:
        total += cfg.clash_weight * clash_logprior(nodes, static.clash_pairs)
    return total


# ---------------------------------------------------------------- NumPyro model


def particle_plate(batch: ParticleBatch, n_particles: int) -> numpyro.plate:
    """The ``"particles"`` plate of size N subsampled to exactly ``batch.indices``."""
    with numpyro.handlers.substitute(data={"particles": batch.indices}):
        return numpyro.plate("particles", n_particles, subsample_size=batch.indices.shape[0])


def latent_prior(cfg: ModelConfig) -> dist.Distribution:
    """p(z): N(0, I_D), or a Gaussian mixture whose weights/means/sds are global params."""
    d = cfg.latent_dim
    if cfg.z_prior == "normal":
        return dist.Normal(jnp.zeros(d), 1.0).to_event(1)
    c = cfg.n_mixture
    spread = jnp.linspace(-1.5, 1.5, c)[:, None] * jnp.ones((c, d))
    weights = numpyro.param(
        "z_mixture_weights", jnp.full(c, 1.0 / c), constraint=constraints.simplex
    )
    means = numpyro.param("z_mixture_means", spread)
    sds = numpyro.param("z_mixture_sds", jnp.full((c, d), 0.5), constraint=constraints.positive)
    components = dist.Normal(means, sds).to_event(1)
    return dist.MixtureSameFamily(dist.Categorical(weights), components)


def cryoem_model(batch: ParticleBatch, cfg: ModelConfig, static: ModelStatic) -> None:
    """The cryo-EM generative model for one minibatch (see the module docstring)."""
    decoder = eqx_module("decoder", static.decoder)
    sigma = jnp.asarray(static.noise_sigma)
    if cfg.learn_noise:
        sigma = numpyro.param("noise_sigma", sigma, constraint=constraints.positive)
    scale = numpyro.param("image_scale", jnp.asarray(static.image_scale))
    z_prior = latent_prior(cfg)
    group = batch.optics_group

    with particle_plate(batch, static.n_particles):
        z = numpyro.sample("z", z_prior)
        if cfg.poses == "fixed":
            rotation, shift = batch.rotations, batch.shifts
        else:
            rotation = numpyro.sample("rotation", UniformSO3())
            shift = numpyro.sample(
                "shift", dist.Normal(jnp.zeros(2), cfg.shift_prior_sd).to_event(1)
            )
        amplitudes, nodes = decode_nodes(decoder, z, static)
        numpyro.factor("physics_prior", physics_log_prior(nodes, amplitudes, cfg, static))
        clean = scale[group][:, None] * simulate_particles(
            nodes, rotation, shift, batch.ctf, static
        )
        numpyro.sample(
            "image",
            dist.Normal(clean, scored_sd(sigma[group], static.window)).to_event(1),
            obs=observed_fourier(batch.images, static.window),
        )


# ---------------------------------------------------------------- exact grid posterior (D = 1)


def latent_grid_posterior(
    batch: ParticleBatch,
    cfg: ModelConfig,
    static: ModelStatic,
    params: dict,
    z_grid: Array,
) -> Array:
    """``(B, G)`` normalised posterior weights of z on a 1-D grid, given learned globals.

    The exact per-particle posterior p(z | y_i, θ) ∝ p(z) p_phys(X(z)) p(y_i | X(z), pose_i)
    for D = 1 and fixed poses, evaluated on ``z_grid`` ``(G,)`` (latent units) with the
    learned decoder/noise/scale ``params`` (as returned by SVI). A gold standard that is far
    cheaper than NUTS; the grid must cover the posterior mass (e.g. linspace(-5, 5, 201)).
    Weights are per grid point (multiply by 1/Δz for a density).
    """
    if cfg.latent_dim != 1 or cfg.poses != "fixed":
        raise ConfigError("latent_grid_posterior needs latent_dim=1 and poses='fixed'")
    params = jax.tree_util.tree_map(jnp.asarray, params)
    decoder = decoder_from_params(params, static)
    sigma = params.get("noise_sigma", jnp.asarray(static.noise_sigma))[batch.optics_group]
    scale = params["image_scale"][batch.optics_group]
    observed = observed_fourier(batch.images, static.window)
    z_grid = jnp.asarray(z_grid).reshape(-1, 1)
    amplitudes, nodes = decode_nodes(decoder, z_grid, static)  # (G, K), (G, R, 3)
    log_prior_z = jax.vmap(lambda z: _log_prior_z(z, cfg, params))(z_grid)
    log_phys = physics_log_prior(nodes, amplitudes, cfg, static)  # (G,)

    def per_grid_point(nodes_g):
        b = batch.indices.shape[0]
        tiled = jnp.broadcast_to(nodes_g, (b, *nodes_g.shape))
        clean = scale[:, None] * simulate_particles(
            tiled, batch.rotations, batch.shifts, batch.ctf, static
        )
        return image_log_likelihood(observed, clean, sigma, static.window)  # (B,)

    log_lik = jax.lax.map(per_grid_point, nodes)  # (G, B)
    log_post = (log_lik + (log_prior_z + log_phys)[:, None]).T
    return jax.nn.softmax(log_post, axis=-1)


def _log_prior_z(z: Array, cfg: ModelConfig, params: dict) -> Array:
    if cfg.z_prior == "normal":
        return dist.Normal(0.0, 1.0).log_prob(z).sum()
    components = dist.Normal(params["z_mixture_means"], params["z_mixture_sds"]).to_event(1)
    mixture = dist.MixtureSameFamily(dist.Categorical(params["z_mixture_weights"]), components)
    return mixture.log_prob(z)


# ---------------------------------------------------------------- initial globals


def initial_noise_and_scale(
    batch: ParticleBatch,
    static: ModelStatic,
    n_groups: int,
    *,
    radius_px: float,
    poses_known: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Starting values of σ_g (noise sd per pixel) and c_g (image scale) per optics group.

    σ: sd of the pixels outside a disc of ``radius_px`` around the box centre (the
    background; white-noise assumption), median over the group's images. c: with known
    poses, the least-squares scale of the reference's simulated image against the data,
    ``Σ Y·M / Σ M·M`` over the scored coefficients (median over images); otherwise 1.
    Groups absent from ``batch`` get σ = median of all images and c = 1.
    """
    images = np.asarray(batch.images)
    box = images.shape[-1]
    yy, xx = np.mgrid[:box, :box] - box // 2
    outside = (xx**2 + yy**2) > radius_px**2
    if outside.sum() < 16:
        raise ConfigError(
            f"box of {box} px leaves no background outside the particle radius "
            f"{radius_px:.1f} px to estimate the noise; use a larger box"
        )
    sd = images[:, outside].std(axis=1)
    group = np.asarray(batch.optics_group)
    scale_i = np.ones(images.shape[0])
    if poses_known:
        observed = np.asarray(observed_fourier(batch.images, static.window))
        b = images.shape[0]
        x0 = jnp.broadcast_to(jnp.asarray(static.x0_nodes), (b, *static.x0_nodes.shape))
        clean = np.asarray(simulate_particles(x0, batch.rotations, batch.shifts, batch.ctf, static))
        w = 1.0 / np.asarray(static.window.variances())
        scale_i = np.sum(w * observed * clean, axis=1) / np.maximum(
            np.sum(w * clean**2, axis=1), 1e-30
        )
    sigma = np.full(n_groups, np.median(sd), dtype=np.float32)
    scale = np.ones(n_groups, dtype=np.float32)
    for g in np.unique(group):
        sigma[g] = np.median(sd[group == g])
        scale[g] = np.median(scale_i[group == g])
    return sigma, scale
