"""Synthetic X-ray single-particle diffraction datasets with ground truth (SCIENCE.md §7).

Each pattern: a conformation (an MD frame, e.g. of the adenylate-kinase open <-> closed
trajectory), a uniformly random orientation (RELION ``A``), the Ewald-sphere intensity
``μ = J0 r_e² Ω P |F(k)|² + background`` of :mod:`atomicspi_bayes.physics.xray`, and Poisson
photon counts. Written to ``out_dir``:

- ``particles.mrcs``: ``(N, L, L)`` float32 photon counts (mode-2 MRC; header voxel size =
  detector pixel pitch in Å, the physical pixel, *not* a sample-plane sampling);
- ``particles.star``: RELION 3.1 listing of the stack (no CTF, no poses: orientation is
  latent in X-ray SPI), so ``io.read_particles`` / ``ParticleDataset`` stream the patterns;
- ``xray.json``: the modality, detector geometry (``DetectorGeometry.to_dict``), fluence,
  background, B-factor, scatterer model and photon statistics (``gap_mask.npy`` next to it
  when the detector has gaps) — everything a fit needs to rebuild the forward model;
- ``truth.npz``: ``rotations (N,3,3)``, ``frame_index (N,)``, ``path_position (N,)`` in
  [0, 1], ``fluence (N,)`` photons/Å², ``photons (N,)`` counted, ``mean_photons (N,)``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.atomic_files import save_npz_atomic, write_text_atomic
from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.physics import xray
from atomicspi_bayes.physics.geometry import random_rotations

__all__ = [
    "XrayDatasetConfig",
    "default_xray_geometry",
    "read_xray_dataset",
    "simulate_xray_dataset",
]

logger = logging.getLogger(__name__)


def default_xray_geometry(n_pixels: int = 128) -> xray.DetectorGeometry:
    """6 keV (λ = 2.07 Å), 200 µm pixels (AGIPD-like) scaled to ``n_pixels``, 100 mm, beam stop.

    For ``n_pixels = 128``: 25.6 mm square, ``|k|`` up to 0.061 1/Å at the edge (16.5 Å) and
    0.085 1/Å at the corners (11.7 Å); a 2-pixel beam stop. Other ``n_pixels`` keep the same
    ``k`` range (pixel pitch ``200·128/n_pixels`` µm).
    """
    if int(n_pixels) < 2:  # before the pitch divides by it
        raise ConfigError(f"detector n_pixels={n_pixels} must be >= 2 (--box)")
    return xray.DetectorGeometry(
        n_pixels=int(n_pixels),
        pixel_size_um=200.0 * 128 / int(n_pixels),
        distance_mm=100.0,
        photon_energy_kev=6.0,
        beam_stop_radius_px=2.0 * int(n_pixels) / 128,
    )


@dataclass(frozen=True)
class XrayDatasetConfig:
    """Settings of a synthetic X-ray dataset (validated).

    Attributes:
        n_patterns: number of diffraction patterns ``N``.
        geometry: the detector (``None``: :func:`default_xray_geometry` with 128 pixels).
        fluence_photons_per_angstrom2: incident fluence ``J0`` in photons/Å² (1e6 photons/Å²
            = 1e14 photons/µm², e.g. 1e12 photons in a 100 nm focus: the upper end of what
            XFELs deliver). AdK (24 kDa) then scatters ~4e2 photons into the default detector.
        fluence_jitter: log-normal sd of the per-pattern fluence (particle position within the
            focus); 0 = every pattern sees ``J0``.
        background_photons_per_pixel: mean background photons per measured pixel.
        b_factor: isotropic B in Å² for every atom.
        coarse_grained: residue beads (15x faster) instead of all atoms. On the default
            geometry (AdK) bead and all-atom patterns correlate 0.99995 overall and 0.984 on
            the outer 40 % of |k|; at 70 mm (8 Å corners) the outer correlation drops to 0.91,
            so use all atoms for detectors that reach d < 12 Å.
        frame_indices: candidate trajectory frames, sampled uniformly per pattern; ``None`` =
            all frames.
        noise_free: write ``μ`` instead of Poisson counts.
        batch_size: patterns computed together (memory ``batch_size · L² · N_scatterers``).
    """

    n_patterns: int = 1000
    geometry: xray.DetectorGeometry | None = None
    fluence_photons_per_angstrom2: float = 1e6
    fluence_jitter: float = 0.0
    background_photons_per_pixel: float = 0.0
    b_factor: float = 0.0
    coarse_grained: bool = True
    frame_indices: tuple[int, ...] | None = field(default=None)
    noise_free: bool = False
    batch_size: int = 16

    def __post_init__(self) -> None:
        if int(self.n_patterns) < 1:
            raise ConfigError(f"n_patterns={self.n_patterns} must be >= 1")
        if not np.isfinite(self.fluence_photons_per_angstrom2) or (
            self.fluence_photons_per_angstrom2 <= 0
        ):
            raise ConfigError(
                f"fluence={self.fluence_photons_per_angstrom2} photons/Å² must be finite and > 0"
            )
        for name in ("fluence_jitter", "background_photons_per_pixel", "b_factor"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ConfigError(f"{name}={value} must be finite and >= 0")
        if int(self.batch_size) < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be >= 1")


def _load_model(structure_path, trajectory_path):
    from atomicspi_bayes.io import load_structure, load_trajectory

    if trajectory_path is not None:
        model, frames = load_trajectory(trajectory_path, structure_path)
    else:
        model = load_structure(structure_path)
        frames = model.coords[None]
    return model, np.asarray(frames, dtype=np.float32)


def simulate_xray_dataset(
    key: jax.Array,
    structure_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: XrayDatasetConfig | None = None,
    trajectory_path: str | os.PathLike | None = None,
) -> dict:
    """Simulate ``N`` X-ray diffraction patterns with ground truth and write them to ``out_dir``.

    Args:
        key: PRNG key (conformations, orientations, fluence jitter and photons all follow
            from it: same key, same dataset).
        structure_path: PDB/mmCIF, or the topology (PSF...) when ``trajectory_path`` is given;
            elements come from it (never guessed from CHARMM atom names).
        out_dir: output folder (created; existing files of the same names are replaced
            atomically).
        config: :class:`XrayDatasetConfig` (``None`` = defaults).
        trajectory_path: optional MD trajectory (DCD, XTC...) whose frames are the
            conformations; ``path_position = frame / (F - 1)``.

    Returns:
        The summary written to ``xray.json`` (a dict).
    """
    from atomicspi_bayes.io import ParticleMetadata, new_stack, write_star

    cfg = config or XrayDatasetConfig()
    geometry = cfg.geometry or default_xray_geometry()
    model, frames = _load_model(structure_path, trajectory_path)
    n_frames = frames.shape[0]
    candidates = (
        np.arange(n_frames)
        if cfg.frame_indices is None
        else np.asarray(cfg.frame_indices, dtype=np.int64)
    )
    if candidates.size == 0 or candidates.min() < 0 or candidates.max() >= n_frames:
        raise ConfigError(
            f"frame_indices {cfg.frame_indices} out of range for {n_frames} trajectory frames"
        )
    n = int(cfg.n_patterns)
    k_frame, k_rot, k_flu, k_photons = jax.random.split(key, 4)
    frame_index = candidates[np.asarray(jax.random.randint(k_frame, (n,), 0, candidates.size))]
    rotations = np.asarray(random_rotations(k_rot, n), dtype=np.float32)
    fluence = cfg.fluence_photons_per_angstrom2 * np.exp(
        cfg.fluence_jitter * np.asarray(jax.random.normal(k_flu, (n,)))
        - 0.5 * cfg.fluence_jitter**2  # mean fluence stays J0
    ).astype(np.float32)
    path_position = (frame_index / max(n_frames - 1, 1)).astype(np.float32)

    centred = frames - frames.mean(axis=1, keepdims=True)
    atoms = xray.atomic_scatterers(model.elements, centred[0])
    if cfg.coarse_grained:
        scatterers = xray.bead_scatterers(atoms, model.residue_index, model.n_residues)
        frame_coords = jax.vmap(
            lambda x: (
                xray.bead_scatterers(
                    atoms._replace(coords=x), model.residue_index, model.n_residues
                ).coords
            )
        )(jnp.asarray(centred))
    else:
        scatterers, frame_coords = atoms, jnp.asarray(centred)
    det = xray.detector_arrays(geometry)
    batch = min(int(cfg.batch_size), n)

    @jax.jit
    def block(k, rots, frames_idx, flu):
        mu = jax.vmap(
            lambda r, i, f: xray.intensity(
                scatterers._replace(coords=frame_coords[i]),
                r,
                det,
                f,
                cfg.b_factor,
                cfg.background_photons_per_pixel,
            )
        )(rots, frames_idx, flu)
        return xray.sample_photons(k, mu), mu

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pixel_angstrom = geometry.pixel_size_um * 1e4
    photons = np.zeros(n, dtype=np.int64)
    mean_photons = np.zeros(n, dtype=np.float64)
    n_pix = geometry.n_pixels
    with new_stack(out / "particles.mrcs", n, n_pix, pixel_angstrom) as stack:
        for start in range(0, n, batch):  # blocks of patterns, each one jitted call
            idx = np.arange(start, min(start + batch, n))
            pad = batch - idx.size
            sel = np.concatenate([idx, np.full(pad, idx[-1])]) if pad else idx
            counts, mu = block(
                jax.random.fold_in(k_photons, start),
                jnp.asarray(rotations[sel]),
                jnp.asarray(frame_index[sel]),
                jnp.asarray(fluence[sel]),
            )
            counts, mu = np.asarray(counts)[: idx.size], np.asarray(mu)[: idx.size]
            stack[idx] = mu if cfg.noise_free else counts.astype(np.float32)
            photons[idx] = counts.sum(axis=(1, 2))
            mean_photons[idx] = mu.sum(axis=(1, 2), dtype=np.float64)
        logger.info("simulated %d X-ray patterns into %s", n, out)

    nan = np.full(n, np.nan, dtype=np.float32)
    metadata = ParticleMetadata(
        source=str(out / "particles.star"),
        image_paths=np.array([str(out / "particles.mrcs")] * n),
        image_indices=np.arange(n, dtype=np.int64),
        pixel_size=np.full(n, pixel_angstrom, dtype=np.float32),
        box_size=np.full(n, n_pix, dtype=np.int64),
        voltage_kv=nan,
        cs_mm=nan,
        amplitude_contrast=nan,
        defocus_u=nan,
        defocus_v=nan,
        defocus_angle=nan,
        phase_shift=nan,
        ctf_bfactor=np.zeros(n, np.float32),
        ctf_scale=np.ones(n, np.float32),
        optics_group=np.ones(n, np.int64),
        has_ctf=False,
    )
    write_star(out / "particles.star", metadata)
    if geometry.gap_mask is not None:
        np.save(out / "gap_mask.npy", np.asarray(geometry.gap_mask, dtype=bool))
    truth = {
        "rotations": rotations,
        "frame_index": frame_index.astype(np.int64),
        "path_position": path_position,
        "fluence": fluence,
        "photons": photons,
        "mean_photons": mean_photons.astype(np.float32),
    }
    save_npz_atomic(out / "truth.npz", **truth)
    summary = {
        "modality": "xray",
        "n_patterns": n,
        "stack": "particles.mrcs",
        "counts": not cfg.noise_free,
        "detector": geometry.to_dict(),
        "resolution_at_edge_angstrom": _edge_resolution(geometry),
        "fluence_photons_per_angstrom2": float(cfg.fluence_photons_per_angstrom2),
        "fluence_photons_per_um2": float(cfg.fluence_photons_per_angstrom2) * 1e8,
        "fluence_jitter": float(cfg.fluence_jitter),
        "background_photons_per_pixel": float(cfg.background_photons_per_pixel),
        "b_factor": float(cfg.b_factor),
        "scatterers": "residue_beads" if cfg.coarse_grained else "atoms",
        "n_scatterers": int(scatterers.coords.shape[0]),
        "n_atoms": int(model.n_atoms),
        "structure": str(structure_path),
        "trajectory": None if trajectory_path is None else str(trajectory_path),
        "n_frames": int(n_frames),
        "mean_photons_per_pattern": float(photons.mean()),
        "median_photons_per_pattern": float(np.median(photons)),
        "mean_expected_photons_per_pattern": float(mean_photons.mean()),
    }
    write_text_atomic(out / "xray.json", json.dumps(summary, indent=2))
    return summary


def _edge_resolution(geometry: xray.DetectorGeometry) -> float:
    k = np.asarray(xray.scattering_vectors(geometry))
    row = round(geometry.centre_px[1])  # the beam-centre row, last column
    edge = np.linalg.norm(k[row, -1])
    return float(1.0 / edge)


def read_xray_dataset(path: str | os.PathLike) -> tuple[dict, xray.DetectorGeometry, object]:
    """Open a dataset written by :func:`simulate_xray_dataset`.

    Returns:
        ``(summary, geometry, patterns)``: the ``xray.json`` dict, the rebuilt
        :class:`DetectorGeometry` and the lazy ``(N, L, L)`` stack (``io.open_stack``).
    """
    from atomicspi_bayes.io import open_stack

    folder = Path(path)
    meta_path = folder / "xray.json"
    if not meta_path.is_file():
        raise InputFormatError(f"{meta_path}: missing; not an X-ray dataset folder")
    try:
        summary = json.loads(meta_path.read_text())
        d = summary["detector"]
        gap = folder / "gap_mask.npy"
        geometry = xray.DetectorGeometry(
            n_pixels=int(d["n_pixels"]),
            pixel_size_um=float(d["pixel_size_um"]),
            distance_mm=float(d["distance_mm"]),
            wavelength_angstrom=float(d["wavelength_angstrom"]),
            beam_center_px=tuple(d["beam_center_px"]),
            beam_stop_radius_px=float(d["beam_stop_radius_px"]),
            gap_mask=np.load(gap) if gap.is_file() else None,
            polarization=d["polarization"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputFormatError(f"{meta_path}: malformed X-ray metadata ({exc})") from exc
    return summary, geometry, open_stack(folder / summary.get("stack", "particles.mrcs"))
