"""Small synthetic particle sets for the fit tests (a local stand-in for `atomicspi simulate`).

Images of adenylate-kinase trajectory frames (MDAnalysisTests adk_dims) in random poses,
simulated all-atom with ``physics.cryoem.simulate_batch`` (RELION sign, phase per pixel),
white noise at a whole-box SNR, written as an MRC stack + RELION 3.1 STAR + truth.npz.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.io import ParticleMetadata, load_trajectory, write_stack, write_star
from atomicspi_bayes.physics.cryoem import Scatterers, fourier_to_image, simulate_batch
from atomicspi_bayes.physics.ctf import CTFParams
from atomicspi_bayes.physics.geometry import random_rotations


def adk_trajectory():
    from MDAnalysisTests.datafiles import DCD, PSF

    return load_trajectory(DCD, PSF)


def write_reference_pdb(path: Path, frame: int = 0) -> Path:
    from atomicspi_bayes.io import write_multimodel_pdb

    model, frames = adk_trajectory()
    write_multimodel_pdb(path, model, frames[frame][None])
    return path


def simulate_particles(
    out_dir: Path,
    n: int,
    *,
    snr: float | None = 1.0,
    box: int = 64,
    pixel_size: float = 1.5,
    seed: int = 0,
    frames: np.ndarray | None = None,
    with_poses: bool = True,
    shift_sd: float = 0.0,
) -> Path:
    """Write ``out_dir/particles.star``, ``particles.mrcs``, ``truth.npz``; return the STAR."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model, traj = adk_trajectory()
    key = jax.random.PRNGKey(seed)
    k_frame, k_rot, k_def, k_noise, k_shift = jax.random.split(key, 5)
    choices = np.arange(traj.shape[0]) if frames is None else np.asarray(frames)
    frame_index = choices[np.asarray(jax.random.randint(k_frame, (n,), 0, choices.size))]
    centre = traj[0].mean(axis=0)
    rotations = random_rotations(k_rot, n)
    shifts = shift_sd * jax.random.normal(k_shift, (n, 2))
    defocus = jax.random.uniform(k_def, (n,), minval=1.0e4, maxval=2.5e4)
    ctf = CTFParams.create(defocus_u=defocus, defocus_v=defocus * 1.02, defocus_angle=0.3)
    scat = Scatterers.from_elements(model.elements)
    clean = []
    for start in range(0, n, 64):
        sl = slice(start, start + 64)
        ft, _ = simulate_batch(
            scat,
            jnp.asarray(traj[frame_index[sl]] - centre),
            rotations[sl],
            shifts[sl],
            jax.tree_util.tree_map(lambda x, s=sl: x[s], ctf),
            box=box,
            pixel_size=pixel_size,
        )
        clean.append(np.asarray(fourier_to_image(ft, box, pixel_size)))
    clean = np.concatenate(clean)
    if snr is None:
        sigma = np.zeros(n, np.float32)
    else:
        sigma = np.sqrt(clean.var(axis=(1, 2)) / snr).astype(np.float32)
    images = clean + sigma[:, None, None] * np.asarray(jax.random.normal(k_noise, clean.shape))
    stack = out_dir / "particles.mrcs"
    write_stack(stack, images.astype(np.float32), pixel_size)
    f32 = lambda x: np.asarray(x, dtype=np.float32)  # noqa: E731
    meta = ParticleMetadata(
        source=str(out_dir / "particles.star"),
        image_paths=np.array([str(stack)] * n),
        image_indices=np.arange(n, dtype=np.int64),
        pixel_size=np.full(n, pixel_size, np.float32),
        box_size=np.full(n, box, np.int64),
        voltage_kv=f32(ctf.voltage_kv),
        cs_mm=f32(ctf.cs_mm),
        amplitude_contrast=f32(ctf.amplitude_contrast),
        defocus_u=f32(ctf.defocus_u),
        defocus_v=f32(ctf.defocus_v),
        defocus_angle=f32(ctf.defocus_angle),
        phase_shift=f32(ctf.phase_shift),
        ctf_bfactor=f32(ctf.bfactor),
        ctf_scale=f32(ctf.scale),
        optics_group=np.ones(n, np.int64),
        rotations=f32(rotations) if with_poses else None,
        shifts=f32(shifts) if with_poses else None,
    )
    star = out_dir / "particles.star"
    write_star(star, meta)
    np.savez(
        out_dir / "truth.npz",
        rotations=f32(rotations),
        shifts=f32(shifts),
        defocus_u=f32(ctf.defocus_u),
        defocus_v=f32(ctf.defocus_v),
        frame_index=frame_index,
        path_position=frame_index / (traj.shape[0] - 1),
        noise_sigma=sigma,
        snr=np.float32(np.nan if snr is None else snr),
    )
    return star
