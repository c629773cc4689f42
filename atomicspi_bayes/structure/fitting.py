"""Flexible fitting of a bead model to images with known poses (MAP, gradient-based).

The conformation is ``X = X0 + Σ_k a_k s_k + δ`` (:func:`~atomicspi_bayes.structure.deform`
with RMSD-scaled ANM vectors ``s_k``, so ``a`` is in Å of RMSD, plus a free per-bead
refinement ``δ`` (R, 3) Å). The objective is the negative log posterior

    -log p = Σ_images ‖y - m(X)‖² / (2σ²)                      (white Gaussian noise, σ per pixel)
             - [elastic(X | X0) + bonds(X) + clashes(X) + modes(a)]   (structure.priors)

with ``m(X)`` the physics simulator (``physics.cryoem``: projected potential, or the
CTF-modulated phase image when CTF parameters are given) of the beads' scattering centres.
Optimised with Adam (optax) in two stages: first the mode amplitudes only (the large,
collective motion), then amplitudes and refinement together. Deterministic: no random
initialisation (a = 0, δ = 0).

The prior weights are temperatures in units of the likelihood's (σ sets the data weight):
with noise-free data σ is a nominal noise level and the ratio of data to prior weight is a
choice; :class:`FitConfig` documents the defaults that the AdK benchmark uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.physics.cryoem import (
    Scatterers,
    fourier_to_image,
    project_batch,
    simulate_batch,
)
from atomicspi_bayes.structure.anm import NormalModes, anm_modes
from atomicspi_bayes.structure.coarse_grain import BeadModel
from atomicspi_bayes.structure.deform import deform
from atomicspi_bayes.structure.priors import (
    ca_bond_logprior,
    clash_logprior,
    clash_pairs,
    elastic_logprior,
    elastic_pairs,
    ideal_bond_lengths,
    mode_logprior,
)


@dataclass(frozen=True)
class FitConfig:
    """Settings of :func:`fit_to_images`.

    Attributes:
        n_modes: ANM modes used when no :class:`NormalModes` are passed (cutoff 15 Å).
        steps: total Adam steps; ``mode_steps`` of them (stage 1) move the amplitudes only.
        mode_steps: stage-1 steps (0 fits everything from the start).
        learning_rate: Adam step size, in Å for amplitudes (RMSD units) and refinement;
            decayed linearly to 10 % over the last 20 % of the steps.
        refine: fit the per-bead refinement δ in stage 2 (False: modes only).
        use_priors: add the physics priors (False: likelihood only).
        elastic_gamma, elastic_kT, elastic_cutoff: elastic network relative to X0,
            ``-(γ/2kT) Σ (d - d⁰)²`` over pairs within ``elastic_cutoff`` Å of X0.
            Default γ/kT = 1/20 per Å² (keeps the refinement locally coherent; the AdK
            open→closed change costs E/kT ≈ 86 at these settings).
        mode_kT: harmonic ANM prior temperature ``-Σ λ_k a_k² / (2 mode_kT)`` (unit-vector
            amplitudes, γ = 1).
        bond_sigma: Å, width of the Cα–Cα virtual bond prior (3.80 Å trans / 2.90 Å cis).
        clash_distance, clash_kappa: soft clash ``-κ Σ relu(d_min - d)²`` for ``|i-j| ≥ 3``.
        k_max: Å⁻¹, band limit of the simulated images (None: up to the corners). Outside
            the band the model is zero, so those pixels' residual is a constant: the fit
            uses the band |k| ≤ k_max only. 0.2 Å⁻¹ (5 Å) is past the bead model's useful
            resolution and ~3x cheaper than the full 2 Å/px band.
    """

    n_modes: int = 20
    steps: int = 160
    mode_steps: int = 50
    learning_rate: float = 0.08
    refine: bool = True
    use_priors: bool = True
    elastic_gamma: float = 1.0
    elastic_kT: float = 20.0
    elastic_cutoff: float = 15.0
    mode_kT: float = 100.0
    bond_sigma: float = 0.05
    clash_distance: float = 4.0
    clash_kappa: float = 12.5
    k_max: float | None = 0.2

    def __post_init__(self) -> None:
        if self.n_modes < 1:
            raise ConfigError(f"n_modes must be >= 1, got {self.n_modes}")
        if not 0 <= self.mode_steps <= self.steps or self.steps < 1:
            raise ConfigError(
                f"need 0 <= mode_steps <= steps and steps >= 1, got {self.mode_steps}, {self.steps}"
            )
        if self.k_max is not None and not self.k_max > 0:
            raise ConfigError(f"k_max must be > 0 Å⁻¹ or None, got {self.k_max}")
        for name in ("learning_rate", "elastic_gamma", "elastic_kT", "mode_kT", "bond_sigma"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True, eq=False)
class FitResult:
    """Result of :func:`fit_to_images`.

    Attributes:
        coords: ``(R, 3)`` float32 fitted bead node (Cα) coordinates in Å.
        amplitudes: ``(K,)`` float32 mode amplitudes in Å of RMSD (RMSD-scaled vectors).
        refinement: ``(R, 3)`` float32 per-bead refinement in Å.
        loss: ``(steps,)`` float32 negative log posterior at each step (before the update).
        modes: the :class:`NormalModes` used.
    """

    coords: np.ndarray
    amplitudes: np.ndarray
    refinement: np.ndarray
    loss: np.ndarray
    modes: NormalModes


def fit_to_images(
    beads: BeadModel,
    images,
    rotations,
    shifts,
    *,
    pixel_size: float,
    noise_sigma,
    ctf_params=None,
    modes: NormalModes | None = None,
    config: FitConfig = FitConfig(),
) -> FitResult:
    """Fit mode amplitudes (+ refinement) of ``beads`` to images with known poses.

    Args:
        beads: reference bead model (nodes X0, scattering Gaussians and offsets).
        images: ``(B, L, L)`` real-space images, same units as the simulator output
            (``physics.cryoem.fourier_to_image`` of the projected potential, or of the
            CTF-modulated phase when ``ctf_params`` is given), origin at pixel (L//2, L//2).
        rotations: ``(B, 3, 3)`` RELION rotation matrices A.
        shifts: ``(B, 2)`` RELION origins in Å.
        pixel_size: Å per pixel.
        noise_sigma: per-pixel noise standard deviation, scalar or ``(B,)``.
        ctf_params: ``physics.ctf.CTFParams`` with ``(B,)`` leaves, or None for projections.
        modes: ANM modes of ``beads.coords``; computed with ``config.n_modes`` if None.
        config: :class:`FitConfig`.

    Raises:
        InputFormatError: inconsistent shapes or non-finite images.
    """
    images = jnp.asarray(images, dtype=jnp.float32)
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise InputFormatError(f"images must have shape (B, L, L), got {images.shape}")
    n_img, box = images.shape[0], int(images.shape[1])
    rotations = jnp.asarray(rotations, dtype=jnp.float32)
    shifts = jnp.asarray(shifts, dtype=jnp.float32)
    if rotations.shape != (n_img, 3, 3) or shifts.shape != (n_img, 2):
        raise InputFormatError(
            f"poses for {n_img} images need rotations (B,3,3) and shifts (B,2), got "
            f"{rotations.shape} and {shifts.shape}"
        )
    if not bool(jnp.all(jnp.isfinite(images))):
        raise InputFormatError("images contain NaN or inf")
    sigma = jnp.broadcast_to(jnp.asarray(noise_sigma, dtype=jnp.float32), (n_img,))

    x0_np = np.asarray(beads.coords, dtype=np.float32)
    n_beads = x0_np.shape[0]
    if modes is None:
        modes = anm_modes(x0_np, n_modes=config.n_modes)
    vectors = jnp.asarray(modes.rmsd_scaled_vectors(), dtype=jnp.float32)
    eigenvalues = jnp.asarray(modes.eigenvalues, dtype=jnp.float32)
    x0 = jnp.asarray(x0_np)
    offsets = jnp.zeros_like(x0) if beads.offsets is None else jnp.asarray(beads.offsets)
    scat = Scatterers.from_gaussians(jnp.asarray(beads.a), jnp.asarray(beads.b))
    e_pairs = elastic_pairs(x0_np, config.elastic_cutoff)
    c_pairs = clash_pairs(n_beads, chain_index=beads.chain_index)
    bonded = jnp.asarray(beads.bonded)
    lengths = jnp.asarray(ideal_bond_lengths(x0_np, beads.bonded))
    sqrt_r = float(np.sqrt(n_beads))
    k_max = config.k_max

    def simulate(x):
        centres = x + offsets
        if ctf_params is None:
            ft, _ = project_batch(
                scat, centres, rotations, shifts, box=box, pixel_size=pixel_size, k_max=k_max
            )
        else:
            ft, _ = simulate_batch(
                scat,
                centres,
                rotations,
                shifts,
                ctf_params,
                box=box,
                pixel_size=pixel_size,
                k_max=k_max,
            )
        return fourier_to_image(ft, box, pixel_size)

    def neg_log_post(params):
        x = deform(x0, vectors, params["a"], params["d"])
        resid = simulate(x) - images
        nll = 0.5 * jnp.sum(jnp.sum(resid * resid, axis=(1, 2)) / sigma**2)
        if not config.use_priors:
            return nll
        lp = (
            elastic_logprior(x, x0, e_pairs, config.elastic_gamma, config.elastic_kT)
            + ca_bond_logprior(x, bonded, lengths, config.bond_sigma)
            + clash_logprior(x, c_pairs, config.clash_distance, config.clash_kappa)
            + mode_logprior(params["a"] * sqrt_r, eigenvalues, config.mode_kT)
        )
        return nll - lp

    # Constant step size, then a linear decay to 10 % over the last 20 % of the steps, which
    # lets bonds and clashes settle (a decay over the whole run stalls the domain motion).
    n_decay = max(1, config.steps // 5)
    schedule = optax.join_schedules(
        [
            optax.constant_schedule(config.learning_rate),
            optax.linear_schedule(config.learning_rate, 0.1 * config.learning_rate, n_decay),
        ],
        [config.steps - n_decay],
    )
    opt = optax.adam(schedule)
    params = {"a": jnp.zeros(modes.n_modes, jnp.float32), "d": jnp.zeros_like(x0)}
    refine_on = np.arange(config.steps) >= config.mode_steps
    if not config.refine:
        refine_on[:] = False

    @jax.jit
    def run(params, refine_on):
        def step(carry, on):
            p, state = carry
            loss, grad = jax.value_and_grad(neg_log_post)(p)
            grad = {"a": grad["a"], "d": jnp.where(on, grad["d"], 0.0)}
            updates, state = opt.update(grad, state, p)
            return (optax.apply_updates(p, updates), state), loss

        (p, _), losses = jax.lax.scan(step, (params, opt.init(params)), refine_on)
        return p, losses

    params, losses = run(params, jnp.asarray(refine_on))
    coords = deform(x0, vectors, params["a"], params["d"])
    return FitResult(
        coords=np.asarray(coords, dtype=np.float32),
        amplitudes=np.asarray(params["a"]),
        refinement=np.asarray(params["d"]),
        loss=np.asarray(losses),
        modes=modes,
    )
