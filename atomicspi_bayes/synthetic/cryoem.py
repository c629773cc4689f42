"""Synthetic cryo-EM particle datasets with ground truth (SCIENCE.md §1-4).

Each particle: a conformation (a frame of an MD trajectory drawn with per-frame weights, or
the single structure), a pose uniform on SO(3) (RELION ``A``), an optional in-plane origin
shift, a CTF (mean defocus uniform in [defocus_min, defocus_max], astigmatism, azimuth), the
noise-free RELION-sign phase-contrast image of :mod:`atomicspi_bayes.physics.cryoem`, and
white Gaussian noise at the requested SNR (whole-box definition, ``physics.noise``).

Coordinates: every frame is superposed (Kabsch on the Cα atoms, or all atoms when there are
none) onto the reference, frame 0 (or the structure itself), and all frames are translated by
the same vector: minus the reference's unweighted all-atom centroid, ``truth["model_center"]``.
So the pose of particle n maps ``reference.coords - model_center`` to what is drawn; fit with
the reference centred the same way.

Written by :func:`simulate_cryoem_dataset` to ``out_dir``:

- ``particles.mrcs``: ``(N, L, L)`` float32 images, phase in radians per pixel (RELION sign,
  protein white), origin at pixel (L//2, L//2);
- ``particles.star``: RELION 3.1 (optics block; rlnAngleRot/Tilt/Psi, rlnOriginX/YAngst,
  rlnDefocusU/V/Angle, ...): the true poses and CTFs;
- ``truth.npz``: ``rotations (N,3,3)``, ``shifts (N,2)`` Å, ``defocus_u``, ``defocus_v`` Å,
  ``defocus_angle`` rad, ``frame_index (N,)``, ``path_position (N,)`` in [0, 1],
  ``noise_sigma (N,)`` (0 when noise-free), ``snr`` (scalar; inf when noise-free),
  ``clean_variance (N,)``, ``frame_weights (F,)``, ``model_center (3,)`` Å, ``b_factor``,
  ``pixel_size``, ``box``;
- ``simulation.json``: the settings and a summary.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.atomic_files import save_npz_atomic, write_text_atomic
from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.physics import cryoem as ce
from atomicspi_bayes.physics.ctf import CTFParams
from atomicspi_bayes.physics.geometry import random_rotations
from atomicspi_bayes.physics.scattering import bead_gaussians, peng_gaussians

__all__ = [
    "CryoEMDatasetConfig",
    "SyntheticParticles",
    "align_frames",
    "load_frame_weights",
    "simulate_cryoem_dataset",
    "simulate_dataset",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CryoEMDatasetConfig:
    """Settings of a synthetic cryo-EM dataset (validated on construction).

    Attributes:
        n_particles: number of particles N (>= 1).
        box: image side L in pixels.
        pixel_size: Å per pixel (> 0).
        snr: whole-box SNR = Var(clean image)/σ² per image (> 0), or None for noise-free.
        defocus_min, defocus_max: range of the mean defocus (dU+dV)/2 in Å (underfocus > 0).
        astigmatism_max: |dU - dV| drawn uniformly in [0, astigmatism_max] Å; azimuth uniform.
        voltage_kv, cs_mm, amplitude_contrast: optics (one optics group).
        b_factor: isotropic atomic B-factor in Å² added to every atom's Peng widths.
        shift_sd: standard deviation in Å of the RELION origin shifts (0 = centred).
        coarse_grained: render one Gaussian bead per residue (``bead_gaussians``) instead of
            all atoms (faster; accurate at resolutions worse than ~10 Å).
        chunk_size: particles rendered per jitted call (memory ~ chunk · L² · 8 bytes).
    """

    n_particles: int = 1000
    box: int = 128
    pixel_size: float = 1.0
    snr: float | None = 0.1
    defocus_min: float = 10000.0
    defocus_max: float = 25000.0
    astigmatism_max: float = 1000.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1
    b_factor: float = 0.0
    shift_sd: float = 0.0
    coarse_grained: bool = False
    chunk_size: int = 64

    def __post_init__(self) -> None:
        if int(self.n_particles) < 1:
            raise ConfigError(f"number of particles {self.n_particles} must be >= 1")
        if int(self.box) < 8:
            raise ConfigError(f"box size {self.box} px is too small: use at least 8 pixels")
        if not np.isfinite(self.pixel_size) or self.pixel_size <= 0:
            raise ConfigError(f"pixel size {self.pixel_size} Å must be > 0")
        if self.snr is not None and not (np.isfinite(self.snr) and self.snr > 0):
            raise ConfigError(f"SNR {self.snr} must be > 0 (or use noise-free images)")
        if not (0 <= self.defocus_min <= self.defocus_max) or not np.isfinite(self.defocus_max):
            raise ConfigError(
                f"defocus range [{self.defocus_min}, {self.defocus_max}] Å must satisfy "
                "0 <= defocus_min <= defocus_max"
            )
        for name in ("astigmatism_max", "cs_mm", "b_factor", "shift_sd"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ConfigError(f"{name} = {value} must be finite and >= 0")
        if 2 * self.astigmatism_max > self.defocus_min + self.defocus_max and self.astigmatism_max:
            raise ConfigError(f"astigmatism_max {self.astigmatism_max} Å exceeds the defocus")
        if not (0 <= self.amplitude_contrast < 1):
            raise ConfigError(f"amplitude contrast {self.amplitude_contrast} must be in [0, 1)")
        if not self.voltage_kv > 0:
            raise ConfigError(f"voltage {self.voltage_kv} kV must be > 0")
        if int(self.chunk_size) < 1:
            raise ConfigError(f"chunk_size {self.chunk_size} must be >= 1")


@dataclass(frozen=True, eq=False)
class SyntheticParticles:
    """Particles simulated in memory by :func:`simulate_dataset` (truth + images).

    Attributes:
        images: ``(N, L, L)`` float32 images (None when only truth was asked for).
        rotations: ``(N, 3, 3)`` RELION A; ``shifts``: ``(N, 2)`` Å RELION origins.
        ctf: :class:`CTFParams` with ``(N,)`` leaves.
        frame_index: ``(N,)`` int64; ``path_position``: ``(N,)`` float32 in [0, 1].
        noise_sigma: ``(N,)`` float32 (0 when noise-free); ``clean_variance``: ``(N,)``.
        snr: the SNR (inf when noise-free).
    """

    images: np.ndarray | None
    rotations: np.ndarray
    shifts: np.ndarray
    ctf: CTFParams
    frame_index: np.ndarray
    path_position: np.ndarray
    noise_sigma: np.ndarray
    clean_variance: np.ndarray
    snr: float


# ---- inputs --------------------------------------------------------------------------------


def load_frame_weights(path: str | os.PathLike, n_frames: int) -> np.ndarray:
    """Per-frame weights from a ``.npy`` or text file (one number per frame), normalised."""
    p = Path(path)
    try:
        w = np.load(p) if p.suffix == ".npy" else np.loadtxt(p, ndmin=1)
    except (OSError, ValueError) as exc:
        raise InputFormatError(f"{p}: cannot read frame weights ({exc})") from exc
    return _check_weights(np.asarray(w, dtype=np.float64).ravel(), n_frames, str(p))


def _check_weights(w: np.ndarray, n_frames: int, where: str) -> np.ndarray:
    if w.shape != (n_frames,):
        raise InputFormatError(
            f"{where}: {w.size} frame weights for {n_frames} frames; give one weight per frame"
        )
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise InputFormatError(f"{where}: frame weights must be finite, >= 0 and not all zero")
    return w / w.sum()


def align_frames(
    frames: np.ndarray, anchor: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Superpose ``(F, N, 3)`` frames onto frame 0 and centre them on frame 0's centroid.

    Args:
        frames: coordinates in Å.
        anchor: atom indices used for the superposition (e.g. Cα); all atoms if None.

    Returns:
        ``(aligned (F, N, 3) float32, model_center (3,) float64)``: aligned frames minus the
        centre (the unweighted all-atom centroid of frame 0).
    """
    frames = np.asarray(frames, dtype=np.float64)
    sel = np.arange(frames.shape[1]) if anchor is None or len(anchor) < 3 else np.asarray(anchor)
    ref = frames[0, sel]
    ref_c = ref.mean(axis=0)
    out = np.empty_like(frames)
    for f in range(frames.shape[0]):  # a one-off preprocessing loop over frames, not particles
        mob = frames[f, sel]
        mob_c = mob.mean(axis=0)
        u, _, vt = np.linalg.svd((mob - mob_c).T @ (ref - ref_c))
        d = np.sign(np.linalg.det(vt.T @ u.T))
        rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
        out[f] = (frames[f] - mob_c) @ rot.T + ref_c
    center = frames[0].mean(axis=0)
    return (out - center).astype(np.float32), center


# ---- simulation ----------------------------------------------------------------------------


def _scatterers_and_points(elements, frames, residue_index, n_residues, cfg):
    """Scatterers and per-frame point coordinates ``(F, M, 3)`` for the chosen representation."""
    if not cfg.coarse_grained:
        return ce.Scatterers.from_elements(elements, cfg.b_factor), jnp.asarray(frames)
    if residue_index is None:
        raise ConfigError("coarse-grained rendering needs the residue of every atom")
    a, b = peng_gaussians(elements)
    b = b + cfg.b_factor
    beads = jax.vmap(lambda x: bead_gaussians(a, b, x, residue_index, n_residues))(
        jnp.asarray(frames)
    )
    # bead widths depend (weakly) on the frame; use frame 0's table for every frame
    scat = ce.Scatterers.from_gaussians(beads[1][0], beads[2][0])
    return scat, beads[0]


def _draw_truth(key, n_frames, weights, cfg):
    n = int(cfg.n_particles)
    k_frame, k_rot, k_shift, k_def, k_ast, k_ang = jax.random.split(key, 6)
    frame_index = np.asarray(
        jax.random.choice(k_frame, n_frames, (n,), replace=True, p=jnp.asarray(weights)),
        dtype=np.int64,
    )
    rotations = np.asarray(random_rotations(k_rot, n), dtype=np.float32)
    shifts = np.asarray(jax.random.normal(k_shift, (n, 2)) * cfg.shift_sd, dtype=np.float32)
    mean_def = jax.random.uniform(k_def, (n,), minval=cfg.defocus_min, maxval=cfg.defocus_max)
    astig = jax.random.uniform(k_ast, (n,), maxval=cfg.astigmatism_max)
    angle = jax.random.uniform(k_ang, (n,), minval=-np.pi, maxval=np.pi)
    ctf = CTFParams.create(
        mean_def + 0.5 * astig, mean_def - 0.5 * astig, angle, cfg.voltage_kv, cfg.cs_mm,
        cfg.amplitude_contrast,
    )  # fmt: skip
    ctf = CTFParams(*(np.asarray(x, dtype=np.float32) for x in ctf))
    path_position = (frame_index / max(n_frames - 1, 1)).astype(np.float32)
    return frame_index, rotations, shifts, ctf, path_position


def _check_box(points: np.ndarray, cfg: CryoEMDatasetConfig) -> None:
    radius = float(np.sqrt(np.max(np.sum(np.asarray(points, dtype=np.float64) ** 2, axis=-1))))
    if not np.isfinite(radius):  # e.g. 1e38 Å coordinates overflow when the frames are aligned
        raise InputFormatError(
            f"atom coordinates reach {radius} Å from the centre after alignment; check the "
            "structure/trajectory for absurd coordinates"
        )
    half = 0.5 * cfg.box * cfg.pixel_size
    need = radius + 3.0 * cfg.shift_sd
    if need > half:
        min_box = int(np.ceil(2 * need / cfg.pixel_size)) + 1
        raise ConfigError(
            f"box too small for the structure: it reaches {need:.1f} Å from its centre (incl. "
            f"3 sd of shifts) but the box half-width is {half:.1f} Å; use --box >= {min_box} "
            f"at {cfg.pixel_size} Å/px (or a larger pixel size)"
        )


@partial(jax.jit, static_argnames=("box", "pixel_size", "snr"))
def _render_chunk(scat, points, rots, shifts, ctf, frame_idx, keys, *, box, pixel_size, snr):
    """One chunk: ``(images (B,L,L), clean variance (B,), noise sigma (B,))``."""
    ft, _ = ce.simulate_batch(
        scat, points[frame_idx], rots, shifts, ctf, box=box, pixel_size=pixel_size
    )
    clean = ce.fourier_to_image(ft, box, pixel_size)
    var = jnp.var(clean, axis=(-2, -1))
    if snr is None:
        return clean, var, jnp.zeros_like(var)
    sigma = jnp.sqrt(var / snr)  # = physics.noise.noise_sigma_for_snr
    noise = jax.vmap(lambda k: jax.random.normal(k, (box, box)))(keys)
    return clean + sigma[:, None, None] * noise, var, sigma


def _simulate_chunks(key, scat, points, truth, cfg, sink, progress):
    """Render all particles in fixed-size chunks, calling ``sink(indices, images)``."""
    frame_index, rotations, shifts, ctf, _ = truth
    n = int(cfg.n_particles)
    chunk = min(int(cfg.chunk_size), n)
    k_noise = jax.random.fold_in(key, 7)
    clean_var = np.zeros(n, np.float32)
    sigma = np.zeros(n, np.float32)
    for start in range(0, n, chunk):  # chunks of particles, each one jitted call
        idx = np.arange(start, min(start + chunk, n))
        sel = np.concatenate([idx, np.full(chunk - idx.size, idx[-1])])  # fixed shape
        keys = jax.vmap(lambda i: jax.random.fold_in(k_noise, i))(jnp.asarray(sel))
        imgs, var, sig = _render_chunk(
            scat, points, jnp.asarray(rotations[sel]), jnp.asarray(shifts[sel]),
            CTFParams(*(jnp.asarray(x[sel]) for x in ctf)), jnp.asarray(frame_index[sel]), keys,
            box=int(cfg.box), pixel_size=float(cfg.pixel_size),
            snr=None if cfg.snr is None else float(cfg.snr),
        )  # fmt: skip
        m = idx.size
        sink(idx, np.asarray(imgs[:m], dtype=np.float32))
        clean_var[idx] = np.asarray(var[:m])
        sigma[idx] = np.asarray(sig[:m])
        if progress is not None:
            progress(int(idx[-1]) + 1, n)
    return clean_var, sigma


def _prepare(elements, frames, residue_index, n_residues, anchor, weights, cfg):
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3 or frames.shape[-1] != 3 or frames.shape[1] == 0:
        raise InputFormatError(f"coordinates of shape {frames.shape}: expected (F, N, 3), N > 0")
    if len(elements) != frames.shape[1]:
        raise InputFormatError(f"{len(elements)} elements for {frames.shape[1]} atoms")
    if not np.all(np.isfinite(frames)):
        raise InputFormatError("coordinates contain NaN or inf")
    n_frames = frames.shape[0]
    w = np.full(n_frames, 1.0 / n_frames) if weights is None else _check_weights(
        np.asarray(weights, dtype=np.float64).ravel(), n_frames, "weights"
    )  # fmt: skip
    aligned, center = align_frames(frames, anchor)
    scat, points = _scatterers_and_points(elements, aligned, residue_index, n_residues, cfg)
    _check_box(np.asarray(aligned[w > 0]), cfg)
    return scat, points, w, center


def simulate_dataset(
    key: jax.Array,
    frames: np.ndarray,
    elements,
    config: CryoEMDatasetConfig | None = None,
    *,
    weights: np.ndarray | None = None,
    residue_index: np.ndarray | None = None,
    n_residues: int | None = None,
    anchor: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SyntheticParticles:
    """Simulate particles in memory (notebooks, demos, tests).

    Args:
        key: PRNG key; the same key and inputs give identical arrays.
        frames: ``(F, N, 3)`` (or ``(N, 3)``) conformations in Å; aligned with
            :func:`align_frames` (``anchor`` atoms) before rendering.
        elements: ``(N,)`` element symbols.
        config: :class:`CryoEMDatasetConfig`.
        weights: ``(F,)`` frame weights (default uniform).
        residue_index, n_residues: atom -> residue map, needed for ``coarse_grained``.
        progress: optional ``callback(done, total)`` after each chunk.
    """
    cfg = config or CryoEMDatasetConfig()
    scat, points, w, _ = _prepare(elements, frames, residue_index, n_residues, anchor, weights, cfg)
    k_truth, k_img = jax.random.split(key)
    truth = _draw_truth(k_truth, points.shape[0], w, cfg)
    images = np.empty((cfg.n_particles, cfg.box, cfg.box), np.float32)

    def sink(idx, imgs):
        images[idx] = imgs

    clean_var, sigma = _simulate_chunks(k_img, scat, points, truth, cfg, sink, progress)
    frame_index, rotations, shifts, ctf, path_position = truth
    return SyntheticParticles(
        images=images, rotations=rotations, shifts=shifts, ctf=ctf, frame_index=frame_index,
        path_position=path_position, noise_sigma=sigma, clean_variance=clean_var,
        snr=float("inf") if cfg.snr is None else float(cfg.snr),
    )  # fmt: skip


def _load_inputs(structure_path, trajectory_path, topology_path=None):
    from atomicspi_bayes.io import load_structure, load_trajectory

    if trajectory_path is not None:
        model, frames = load_trajectory(trajectory_path, structure_path)
    else:
        model = load_structure(structure_path, topology=topology_path)
        frames = model.coords[None]
    if model.n_atoms == 0:
        raise InputFormatError(f"{structure_path}: the structure has no atoms")
    return model, np.asarray(frames, dtype=np.float32)


def simulate_cryoem_dataset(
    key: jax.Array,
    structure_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: CryoEMDatasetConfig | None = None,
    *,
    trajectory_path: str | os.PathLike | None = None,
    topology_path: str | os.PathLike | None = None,
    weights: np.ndarray | str | os.PathLike | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Simulate a cryo-EM particle dataset from a structure (or trajectory) and write it.

    Args:
        key: PRNG key (same key -> identical files).
        structure_path: PDB/mmCIF, or the topology (PSF, PDB...) when ``trajectory_path`` is
            given; elements come from it (never guessed from CHARMM atom names).
        out_dir: output folder (created). An existing ``particles.star`` is an error unless
            ``force``.
        config: :class:`CryoEMDatasetConfig`.
        trajectory_path: MD trajectory; each particle takes one frame, drawn with ``weights``.
        topology_path: topology (e.g. PSF) giving the elements of a PDB without an element
            column (single-structure case only).
        weights: ``(F,)`` array or a ``.npy``/text file of per-frame weights (default uniform).
        progress: optional ``callback(done, total)``.

    Returns:
        The summary also written to ``simulation.json``.
    """
    from atomicspi_bayes.io import ParticleMetadata, new_stack, write_star

    cfg = config or CryoEMDatasetConfig()
    out = Path(out_dir)
    star = out / "particles.star"
    if star.exists() and not force:
        raise ConfigError(f"{star} exists; choose another --out folder or pass --force")
    model, frames = _load_inputs(structure_path, trajectory_path, topology_path)
    n_frames = frames.shape[0]
    if weights is not None and not isinstance(weights, np.ndarray):
        weights = load_frame_weights(weights, n_frames)
    anchor = model.ca_indices
    scat, points, w, center = _prepare(
        model.elements, frames, model.residue_index, model.n_residues, anchor, weights, cfg
    )
    k_truth, k_img = jax.random.split(key)
    truth = _draw_truth(k_truth, n_frames, w, cfg)
    frame_index, rotations, shifts, ctf, path_position = truth
    n, box = int(cfg.n_particles), int(cfg.box)
    out.mkdir(parents=True, exist_ok=True)
    with new_stack(out / "particles.mrcs", n, box, cfg.pixel_size) as stack:

        def sink(idx, imgs):
            stack[idx] = imgs

        clean_var, sigma = _simulate_chunks(k_img, scat, points, truth, cfg, sink, progress)
    _stamp_label(out / "particles.mrcs", "atomicspi simulate (synthetic cryo-EM particles)")
    metadata = ParticleMetadata(
        source=str(star),
        image_paths=np.array([str((out / "particles.mrcs").resolve())] * n),
        image_indices=np.arange(n, dtype=np.int64),
        pixel_size=np.full(n, cfg.pixel_size, np.float32),
        box_size=np.full(n, box, np.int64),
        voltage_kv=ctf.voltage_kv, cs_mm=ctf.cs_mm, amplitude_contrast=ctf.amplitude_contrast,
        defocus_u=ctf.defocus_u, defocus_v=ctf.defocus_v, defocus_angle=ctf.defocus_angle,
        phase_shift=ctf.phase_shift, ctf_bfactor=ctf.bfactor, ctf_scale=ctf.scale,
        optics_group=np.ones(n, np.int64), rotations=rotations, shifts=shifts, has_ctf=True,
    )  # fmt: skip
    write_star(star, metadata)
    snr = float("inf") if cfg.snr is None else float(cfg.snr)
    save_npz_atomic(
        out / "truth.npz",
        rotations=rotations, shifts=shifts, defocus_u=ctf.defocus_u, defocus_v=ctf.defocus_v,
        defocus_angle=ctf.defocus_angle, frame_index=frame_index, path_position=path_position,
        noise_sigma=sigma, snr=np.float64(snr), clean_variance=clean_var,
        frame_weights=w.astype(np.float64), model_center=center,
        b_factor=np.float64(cfg.b_factor), pixel_size=np.float64(cfg.pixel_size),
        box=np.int64(box),
    )  # fmt: skip
    summary = {
        "modality": "cryoem",
        "config": {k: (None if v is None else v) for k, v in asdict(cfg).items()},
        "structure": str(structure_path),
        "trajectory": None if trajectory_path is None else str(trajectory_path),
        "n_frames": int(n_frames),
        "n_atoms": int(model.n_atoms),
        "n_scatterers": int(scat.n_points),
        "representation": "residue_beads" if cfg.coarse_grained else "atoms",
        "snr": None if cfg.snr is None else snr,
        "mean_clean_std": float(np.sqrt(clean_var).mean()),
        "mean_noise_sigma": float(sigma.mean()),
        "image_units": "phase (radians per pixel), RELION sign (protein white)",
    }
    write_text_atomic(out / "simulation.json", json.dumps(summary, indent=2))
    logger.info("simulated %d cryo-EM particles into %s", n, out)
    return summary


def _stamp_label(path: Path, text: str) -> None:
    """Replace MRC label 0 (mrcfile writes the creation time there) by a fixed text, so the
    same seed gives byte-identical files (MRC2014: labels at byte 224, 80 bytes each)."""
    with open(path, "r+b") as fh:
        fh.seek(224)
        fh.write(text.encode("ascii")[:80].ljust(80))
