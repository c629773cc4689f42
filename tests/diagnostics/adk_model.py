"""A controlled adenylate-kinase model for the calibration checks (tests and benchmark).

The "AdK synthetic model": open AdK (MDAnalysisTests adk_open.pdb, elements from adk.psf),
one bead per residue, poses known, latent D = 1 with a *linear* decoder that moves the
beads along the softest ANM mode, ``amplitude`` Å RMSD per unit z, prior z ~ N(0, 1) (the
physics-prior weights are 0, so the prior is exactly the latent site's). Particle images are
drawn from this model itself (``diagnostics.predictive``: the model's own image site and
noise model) at a whole-box SNR, optionally with junk mixed in (pure-noise images of the
same total variance, and images of a different protein, 4E43 from MDAnalysisTests, through
the same simulator). Everything is written as a RELION 3.1 STAR + MRC stack, so the fit
pipeline's ``build_problem`` reads it like any data set, and the encoder is trained by the
SVI engine with the globals starting at the truth.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.diagnostics.predictive import (
    noise_free_images,
    sample_prior,
    scored_to_images,
)
from atomicspi_bayes.io import (
    ParticleMetadata,
    load_structure,
    write_multimodel_pdb,
    write_stack,
    write_star,
)
from atomicspi_bayes.model import simulate_particles
from atomicspi_bayes.physics.cryoem import Scatterers
from atomicspi_bayes.physics.ctf import CTFParams
from atomicspi_bayes.physics.geometry import random_rotations
from atomicspi_bayes.pipeline import FitConfig, build_problem


@dataclass(frozen=True, eq=False)
class ControlledSet:
    """What :func:`make_controlled_set` built.

    Attributes:
        problem: ``pipeline.FitProblem`` reading the simulated particles.
        truth_params: the globals the particles were drawn with (decoder, noise, scale).
        z: ``(N, 1)`` true latents (NaN for junk).
        junk: ``(N,)`` int: 0 particle, 1 pure noise, 2 wrong structure.
        snr: whole-box SNR of the particles.
        star: the STAR file.
    """

    problem: object
    truth_params: dict
    z: np.ndarray
    junk: np.ndarray
    snr: float
    star: Path


def _reference(out_dir: Path) -> Path:
    from MDAnalysisTests.datafiles import PSF, PDB_small

    model = load_structure(PDB_small, topology=PSF)
    path = out_dir / "adk_open.pdb"
    write_multimodel_pdb(path, model, np.asarray(model.coords)[None])
    return path


def _write_particles(
    out_dir: Path, images: np.ndarray, rotations, ctf: CTFParams, pixel_size: float
) -> Path:
    n, box, _ = images.shape
    stack = out_dir / "particles.mrcs"
    write_stack(stack, images.astype(np.float32), pixel_size)
    f32 = lambda x: np.asarray(x, dtype=np.float32)  # noqa: E731
    meta = ParticleMetadata(
        source=str(out_dir / "particles.star"),
        image_paths=np.array([str(stack)] * n),
        image_indices=np.arange(n, dtype=np.int64),
        pixel_size=np.full(n, pixel_size, np.float32),
        box_size=np.full(n, box, np.int64),
        voltage_kv=f32(ctf.voltage_kv), cs_mm=f32(ctf.cs_mm),
        amplitude_contrast=f32(ctf.amplitude_contrast), defocus_u=f32(ctf.defocus_u),
        defocus_v=f32(ctf.defocus_v), defocus_angle=f32(ctf.defocus_angle),
        phase_shift=f32(ctf.phase_shift), ctf_bfactor=f32(ctf.bfactor), ctf_scale=f32(ctf.scale),
        optics_group=np.ones(n, np.int64), rotations=f32(rotations),
        shifts=np.zeros((n, 2), np.float32),
    )  # fmt: skip
    star = out_dir / "particles.star"
    write_star(star, meta)
    return star


def linear_decoder_params(problem, amplitude: float) -> dict:
    """``decoder$params`` of a linear decoder: z -> ``amplitude`` Å RMSD along mode 1."""
    decoder = problem.static.decoder
    if len(decoder.layers) != 1:
        raise ValueError("the controlled model needs decoder_hidden=() (a linear decoder)")
    weight = jnp.zeros_like(decoder.layers[0].weight).at[0, 0].set(amplitude)
    decoder = eqx.tree_at(lambda d: d.layers[0].weight, decoder, weight)
    decoder = eqx.tree_at(
        lambda d: d.layers[0].bias, decoder, jnp.zeros_like(decoder.layers[0].bias)
    )
    return eqx.partition(decoder, eqx.is_inexact_array)[0]


def _wrong_structure_images(key, problem, templates, sigma, scale) -> np.ndarray:
    """Images of 4E43 (a different ~200-residue protein), same poses/CTF/simulator/noise."""
    from MDAnalysisTests.datafiles import PDB_full

    from atomicspi_bayes.structure import coarse_grain

    beads = coarse_grain(load_structure(PDB_full))
    centre = np.asarray(beads.coords).mean(axis=0)
    nodes = (np.asarray(beads.coords) - centre).astype(np.float32)
    points = (np.asarray(beads.scattering_coords()) - centre).astype(np.float32)
    static = dataclasses.replace(
        problem.static, x0_nodes=nodes, render_x0=points,
        render_node=np.arange(nodes.shape[0], dtype=np.int32),
        scatterers=Scatterers.from_gaussians(beads.a, beads.b),
    )  # fmt: skip
    coords = nodes
    out = []
    for i, t in enumerate(templates):
        b = t.indices.shape[0]
        tiled = jnp.broadcast_to(jnp.asarray(coords, jnp.float32), (b, *coords.shape))
        clean = scale * simulate_particles(tiled, t.rotations, t.shifts, t.ctf, static)
        sd = (
            problem.static.window.variances() ** 0.5
            * sigma
            * problem.static.window.box
            * (problem.static.window.pixel_size**2)
        )
        k1, k2 = jax.random.split(jax.random.fold_in(key, i))
        scored = clean + sd * jax.random.normal(k1, clean.shape)
        out.append(
            np.asarray(scored_to_images(k2, scored, problem.static.window, jnp.full(b, sigma)))
        )
    return np.concatenate(out)


def controlled_config(n_modes: int, resolution: float, batch_size: int, seed: int) -> FitConfig:
    """Fit settings of the controlled model: D = 1, known poses, linear decoder, no physics
    prior (weights 0), ``n_modes`` ANM modes, likelihood to ``resolution`` Å."""
    return FitConfig(
        latent_dim=1, poses="fixed", n_modes=n_modes, decoder_hidden=(), resolution=resolution,
        coarse_grained=True, residue_frames=False,  # the bead model the images are drawn from
        batch_size=batch_size, seed=seed, elastic_weight=0.0, mode_weight=0.0, bond_weight=0.0,
        clash_weight=0.0,
    )  # fmt: skip


def make_controlled_set(
    out_dir: Path,
    n: int,
    *,
    box: int = 48,
    pixel_size: float = 2.0,
    resolution: float = 8.0,
    n_modes: int = 8,
    amplitude: float = 2.0,
    snr: float = 0.1,
    junk_noise: float = 0.0,
    junk_wrong: float = 0.0,
    batch_size: int = 64,
    seed: int = 0,
) -> ControlledSet:
    """Simulate ``n`` particles of the controlled AdK model and build the fit problem.

    The first build (from placeholder noise images) provides the model arrays; particles
    are drawn from the model with the truth globals, noise set from ``snr`` (Var(clean)
    over the box / σ²), junk fractions replaced, written, and the problem rebuilt from the
    files (so encoder input scaling and noise estimates see the data).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = _reference(out_dir)
    key = jax.random.PRNGKey(seed)
    k_rot, k_def, k_img, k_prior, k_sim, k_junk, k_wrong = jax.random.split(key, 7)
    rotations = np.asarray(random_rotations(k_rot, n))
    defocus = jax.random.uniform(k_def, (n,), minval=1.0e4, maxval=2.5e4)
    ctf = CTFParams.create(defocus_u=defocus, defocus_v=defocus * 1.02, defocus_angle=0.3)
    placeholder = np.asarray(jax.random.normal(k_img, (n, box, box)), np.float32)
    star = _write_particles(out_dir, placeholder, rotations, ctf, pixel_size)
    cfg = controlled_config(n_modes, resolution, batch_size, seed)
    problem = build_problem(star, ref, cfg)
    truth = {
        "decoder$params": linear_decoder_params(problem, amplitude),
        "image_scale": jnp.ones(1, jnp.float32),
        "noise_sigma": jnp.ones(1, jnp.float32),
    }
    bsz = min(batch_size, n)
    n_batches = -(-n // bsz)
    rows = np.resize(np.arange(n), n_batches * bsz).reshape(n_batches, bsz)
    templates = [problem.batch(r) for r in rows]
    latents, _ = sample_prior(k_prior, problem, truth, templates)
    clean = np.concatenate([
        np.asarray(noise_free_images(problem, truth, t,
                                     {"z": latents["z"][i * bsz : (i + 1) * bsz]}))
        for i, t in enumerate(templates)
    ])[:n]  # fmt: skip
    sigma = float(np.sqrt(clean.var(axis=(1, 2)).mean() / snr))
    truth["noise_sigma"] = jnp.full(1, sigma, jnp.float32)
    noise = np.asarray(jax.random.normal(k_sim, clean.shape), np.float32) * sigma
    images = clean + noise
    z = np.asarray(latents["z"][:n], np.float64)
    junk = np.zeros(n, np.int64)
    order = np.asarray(jax.random.permutation(k_junk, n))
    n_noise, n_wrong = round(junk_noise * n), round(junk_wrong * n)
    junk[order[:n_noise]] = 1
    junk[order[n_noise : n_noise + n_wrong]] = 2
    if n_noise:
        sel = junk == 1
        total_sd = float(np.sqrt(sigma**2 * (1.0 + snr)))
        images[sel] = total_sd * np.asarray(jax.random.normal(k_wrong, (int(sel.sum()), box, box)))
    if n_wrong:
        wrong = _wrong_structure_images(k_wrong, problem, templates, sigma, 1.0)[:n]
        images[junk == 2] = wrong[junk == 2]
    z[junk > 0] = np.nan
    star = _write_particles(out_dir, images, rotations, ctf, pixel_size)
    problem = build_problem(star, ref, cfg)
    return ControlledSet(problem, truth, z, junk, snr, star)


def train_guide(
    key: jax.Array, problem, init_params: dict, num_steps: int, *, learning_rate: float = 3e-3
) -> dict:
    """SVI (the project's engine) from the truth globals; returns all learned params."""
    from atomicspi_bayes.inference import SVIConfig, run_svi

    cfg = SVIConfig(
        num_steps=num_steps, learning_rate=learning_rate, schedule="cosine",
        warmup_steps=min(50, num_steps // 10), clip_norm=10.0,
    )  # fmt: skip
    result = run_svi(
        key, problem.model, problem.guide, problem.batch_fn, cfg, init_params=init_params
    )
    return result.params


def train_guide_streaming(
    key: jax.Array,
    problem,
    truth_params: dict,
    num_steps: int,
    *,
    learning_rate: float = 3e-3,
) -> dict:
    """SVI on a stream of fresh particles drawn from the model with ``truth_params``.

    Step s sees the poses/CTFs of the dataset's minibatch s and new latents and noise (keys
    folded with s, so the stream is deterministic in s): the encoder never sees a particle
    twice and cannot overfit a finite set. The globals start at the truth and are learned.
    """
    from atomicspi_bayes.diagnostics.predictive import prior_latents, simulate_images
    from atomicspi_bayes.inference import SVIConfig, run_svi

    truth = jax.tree_util.tree_map(jnp.asarray, truth_params)

    @jax.jit
    def fresh(k, template):
        k_lat, k_img = jax.random.split(k)
        latents, _ = prior_latents(k_lat, problem, truth, template)
        return template._replace(images=simulate_images(k_img, problem, truth, template, latents))

    def batch_fn(step: int):
        return fresh(jax.random.fold_in(key, step), problem.batch_fn(step))

    cfg = SVIConfig(
        num_steps=num_steps, learning_rate=learning_rate, schedule="cosine",
        warmup_steps=min(50, num_steps // 10), clip_norm=10.0,
    )  # fmt: skip
    return run_svi(
        key, problem.model, problem.guide, batch_fn, cfg, init_params=truth_params
    ).params
