"""Fit open adenylate kinase to projections of closed AdK through the simulator.

Bead model (one bead per residue) of open AdK (MDAnalysisTests adk_open.pdb, elements from
adk.psf); 20 ANM modes + per-bead refinement, priors on/off, known poses. Truth: the closed
bead model (its own scattering Gaussians and centroid offsets), superposed on the open Cα,
projected in 50 random orientations (64 px, 2 Å/px). Prints one JSON object per line.

    python benchmarks/fit_modes.py [--n-images 50] [--box 64] [--pixel-size 2.0] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from MDAnalysisTests.datafiles import PSF, PDB_closed, PDB_small

from atomicspi_bayes.io import load_structure
from atomicspi_bayes.physics.cryoem import Scatterers, fourier_to_image, project_batch
from atomicspi_bayes.physics.geometry import random_rotations
from atomicspi_bayes.structure import anm_modes, coarse_grain, ideal_bond_lengths
from atomicspi_bayes.structure.align import kabsch_transform, rmsd
from atomicspi_bayes.structure.fitting import FitConfig, fit_to_images
from atomicspi_bayes.structure.validation import geometry_report


def adk_problem(n_images: int, box: int, pixel_size: float, seed: int):
    """Open bead model (centred), closed truth nodes, clean images, poses."""
    beads_open = coarse_grain(load_structure(PDB_small, topology=PSF))
    beads_closed = coarse_grain(load_structure(PDB_closed, topology=PSF))
    centre = beads_open.coords.mean(axis=0)
    beads = dataclasses.replace(beads_open, coords=beads_open.coords - centre)
    rot, t = kabsch_transform(beads_closed.coords, beads.coords)
    closed_nodes = beads_closed.coords @ rot.T + t
    closed_centres = np.asarray(beads_closed.scattering_coords()) @ rot.T + t
    rotations = random_rotations(jax.random.key(seed), n_images)
    shifts = jnp.zeros((n_images, 2), jnp.float32)
    scat = Scatterers.from_gaussians(jnp.asarray(beads_closed.a), jnp.asarray(beads_closed.b))
    ft, _ = project_batch(
        scat,
        jnp.asarray(closed_centres, jnp.float32),
        rotations,
        shifts,
        box=box,
        pixel_size=pixel_size,
    )
    clean = fourier_to_image(ft, box, pixel_size)
    return beads, closed_nodes.astype(np.float32), clean, rotations, shifts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-images", type=int, default=50)
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--pixel-size", type=float, default=2.0)
    ap.add_argument("--snr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    beads, closed, clean, rotations, shifts = adk_problem(
        args.n_images, args.box, args.pixel_size, args.seed
    )
    modes = anm_modes(beads.coords, n_modes=20)
    lengths = ideal_bond_lengths(beads.coords, beads.bonded)
    # Per-image noise sigma for the target SNR (variance over the whole box).
    sigma = jnp.sqrt(jnp.var(clean, axis=(1, 2)) / args.snr)
    noise = sigma[:, None, None] * jax.random.normal(jax.random.key(args.seed + 1), clean.shape)
    start = geometry_report(
        beads.coords, beads.bonded, lengths, chain_index=beads.chain_index, reference=closed
    )
    print(json.dumps({"name": "fit_modes_start", "open_vs_closed": start}))
    runs = [
        ("priors_noise_free", clean, FitConfig()),
        ("no_priors_noise_free", clean, FitConfig(use_priors=False)),
        ("priors_snr", clean + noise, FitConfig()),
        ("no_priors_snr", clean + noise, FitConfig(use_priors=False)),
        ("modes_only_no_priors_snr", clean + noise, FitConfig(use_priors=False, refine=False)),
    ]
    for name, images, cfg in runs:
        t0 = time.perf_counter()
        res = fit_to_images(
            beads,
            images,
            rotations,
            shifts,
            pixel_size=args.pixel_size,
            noise_sigma=sigma,
            modes=modes,
            config=cfg,
        )
        wall = time.perf_counter() - t0
        rep = geometry_report(
            res.coords, beads.bonded, lengths, chain_index=beads.chain_index, reference=closed
        )
        out = {
            "name": f"fit_modes_{name}",
            "snr": None if images is clean else args.snr,
            "n_images": args.n_images,
            "box": args.box,
            "pixel_size": args.pixel_size,
            "steps": cfg.steps,
            "wall_s": round(wall, 2),
            "loss_first_last": [float(res.loss[0]), float(res.loss[-1])],
            "refinement_rms": float(np.sqrt(np.mean(np.sum(res.refinement**2, axis=1)))),
            "amplitude_norm": float(np.linalg.norm(res.amplitudes)),
            "closed_amplitude_norm": rmsd(closed, beads.coords),
            **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in rep.items()},
        }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
