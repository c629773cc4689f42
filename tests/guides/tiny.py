"""A tiny stand-in problem for model/guide unit tests: a 24-bead helix in a 32 px box.

Shared by tests/test_model.py (``from guides.tiny import ...``) and tests/guides/.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.model import (
    FourierWindow,
    LatentDecoder,
    ModelConfig,
    ModelStatic,
    ParticleBatch,
)
from atomicspi_bayes.physics.cryoem import Scatterers, fourier_to_image, simulate_batch
from atomicspi_bayes.physics.ctf import CTFParams
from atomicspi_bayes.physics.geometry import random_rotations
from atomicspi_bayes.physics.scattering import peng_gaussians
from atomicspi_bayes.structure import (
    anm_modes,
    clash_pairs,
    elastic_pairs,
    ideal_bond_lengths,
)

BOX, PIXEL = 32, 2.0


def helix(n: int = 24) -> np.ndarray:
    """``(n, 3)`` Cα-like helix (rise 1.5 Å, radius 2.3 Å, 100° per residue), centred."""
    t = np.deg2rad(100.0) * np.arange(n)
    x = np.stack([2.3 * np.cos(t), 2.3 * np.sin(t), 1.5 * np.arange(n)], axis=1)
    return (x - x.mean(axis=0)).astype(np.float32)


def tiny_static(
    n_particles: int = 64,
    latent_dim: int = 1,
    n_modes: int = 6,
    resolution: float = 5.0,
    key: int = 0,
) -> ModelStatic:
    x0 = helix()
    r = x0.shape[0]
    a, b = peng_gaussians(np.array(["C"] * r))
    modes = anm_modes(x0, n_modes, cutoff=10.0)
    bonded = np.ones(r - 1, dtype=bool)
    return ModelStatic(
        x0_nodes=x0,
        mode_vectors=modes.rmsd_scaled_vectors().astype(np.float32),
        mode_eigenvalues=modes.eigenvalues.astype(np.float32),
        render_x0=x0,
        render_node=np.arange(r, dtype=np.int32),
        scatterers=Scatterers.from_gaussians(a * 6.0, b + 20.0),  # residue-sized blobs
        bonded=bonded,
        bond_lengths=ideal_bond_lengths(x0, bonded),
        clash_pairs=clash_pairs(r),
        elastic_pairs=elastic_pairs(x0, 10.0),
        window=FourierWindow.create(BOX, PIXEL, resolution),
        n_particles=n_particles,
        noise_sigma=np.ones(1, np.float32),
        image_scale=np.ones(1, np.float32),
        decoder=LatentDecoder(latent_dim, n_modes, (16,), key=jax.random.PRNGKey(key)),
    )


def tiny_batch(
    static: ModelStatic,
    n: int,
    *,
    key: int = 1,
    amplitudes: np.ndarray | None = None,
    snr: float | None = 1.0,
) -> tuple[ParticleBatch, np.ndarray]:
    """Simulated particles of ``static``'s beads deformed by ``amplitudes`` (n, K) Å."""
    k_rot, k_def, k_noise = jax.random.split(jax.random.PRNGKey(key), 3)
    if amplitudes is None:
        amplitudes = np.zeros((n, static.n_modes), np.float32)
    coords = static.x0_nodes + np.einsum("nk,krc->nrc", amplitudes, static.mode_vectors)
    rotations = random_rotations(k_rot, n)
    shifts = jnp.zeros((n, 2))
    ctf = CTFParams.create(defocus_u=jax.random.uniform(k_def, (n,), minval=8e3, maxval=2e4))
    ft, _ = simulate_batch(
        static.scatterers, jnp.asarray(coords), rotations, shifts, ctf, box=BOX, pixel_size=PIXEL
    )
    clean = np.asarray(fourier_to_image(ft, BOX, PIXEL))
    sigma = 0.0 if snr is None else float(np.sqrt(clean.var() / snr))
    images = clean + sigma * np.asarray(jax.random.normal(k_noise, clean.shape))
    batch = ParticleBatch(
        indices=jnp.arange(n, dtype=jnp.int32),
        images=jnp.asarray(images, dtype=jnp.float32),
        rotations=rotations,
        shifts=shifts,
        ctf=ctf,
        optics_group=jnp.zeros(n, jnp.int32),
    )
    return batch, np.full(1, max(sigma, 1e-6), np.float32)


def fixed_config(**kw) -> ModelConfig:
    base = dict(latent_dim=1, elastic_weight=0.0, bond_weight=0.0, clash_weight=0.0)
    base.update(kw)
    return ModelConfig(**base)
