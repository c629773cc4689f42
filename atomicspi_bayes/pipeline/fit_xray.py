"""``atomicspi fit --modality xray``: photon patterns + reference structure -> a run directory.

Glue (numerics in ``physics.xray``, ``physics.xray_orientation``, ``guides.xray``,
``inference``): read an X-ray dataset (``particles.star`` / ``xray.json`` folder written by
``atomicspi simulate --modality xray``), then

1. orientation search over a few structures (the reference and its ANM deformations, or
   structures interpolated towards a ``template`` of another state) on every detector pixel
   (by default): all-atom intensity maps, SO(3) grid scored by the Poisson likelihood (a
   GEMM), local refinement of the top maxima and their Friedel two-fold partners
   (``physics.xray_orientation``); each pattern's posterior over the structures
   initialises its ``z``;
2. SVI of the conformation latent (ANM modes + decoder, residue beads by default) and of
   per-particle orientations around the search result, Poisson likelihood on binned pixels
   up to ``resolution`` (``guides.xray``);
3. (``search_rounds = 2``) a second search over the poses *and* ``n_search_conformations``
   structures decoded along the learned latent (each pattern takes the best
   (structure, pose) pair, EMC-style), which also re-initialises each pattern's ``z``;
   then SVI again from the learned decoder.

Run directory (same layout as cryo-EM, so ``landscape`` / ``kinetics`` work unchanged):
``config.toml`` ([fit] + [run] with ``modality = "xray"`` and the X-ray settings),
``checkpoints/``, ``latents.npz`` (``z_mean``, ``z_sd``, ``z_draws``, ``particle_index``,
``rotation_mean (N,3,3)``, ``rotation_sd (N,3)`` rad, ``rotation_search (N,3,3)``,
``search_gap (N,)``), ``elbo.npy``, ``posterior.nc``, ``particles.star`` (poses and
latents), ``ensemble.pdb``, ``truth.npz`` (copied when present). Rotations are one member of
the two-fold pair ``{A, R_z(π) A}``; compare them modulo it
(``physics.xray_orientation.twofold_angle``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.atomic_files import copy_file_atomic, save_npy_atomic, save_npz_atomic
from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.pipeline.outputs import (
    clear_run_dir,
    ensemble_latents,
    prepare_run_dir,
)

__all__ = ["XrayFitConfig", "XrayFitResult", "fit_xray", "read_xray_fit_config"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class XrayFitConfig:
    """X-ray settings of a fit (the ``[xray]`` table of a recipe; the rest is ``[fit]``).

    Attributes:
        bin_factor: detector pixels binned ``f x f`` in the SVI (speckles are oversampled).
        search_bin_factor: the same for the orientation search (all-atom maps).
        search_resolution: Å, the search scores pixels with ``|k| <= 1/search_resolution``;
            0 = every measured pixel. The search's maps are all-atom, so unlike the SVI's
            residue beads they stay accurate at high ``k``, and the high-``k`` speckles fix
            the orientation: on the AdK DIMS path at ~435 photons/pattern, with the true
            frames as candidates and the orientation unknown, rho of the conformation
            posterior went 0.88 -> 0.92 (grid marginal) and 0.82 -> 0.96 (profile) from
            12 Å / 2x2 bins to every pixel unbinned (``benchmarks/xray_ceiling.py``).
        n_grid: rotations of the SO(3) search grid (30000: ~6° between neighbours).
        top_k: grid maxima per pattern refined locally (each with its two-fold partner).
        map_step: 1/Å, grid step of the tabulated intensity (``<= 1/(3 · diameter)``).
        search_model: ``"atoms"`` (all-atom maps; recommended) or ``"beads"``.
        search_modes: the first search scores the reference and its deformations along
            each of the lowest ``search_modes`` ANM modes (0 = reference only) ...
        search_amplitude: ... by ``±a/2`` and ``±a`` Å RMSD; each pattern's best
            deformation also initialises its ``z`` (first principal axis of the chosen
            amplitudes).
        template: optional structure file of another state with the reference's atoms
            (e.g. the open crystal structure when the reference is closed). Then the first
            search scores ``n_search_conformations`` structures interpolated linearly between
            the reference and the template (superposed) instead of ANM deformations, and the
            chosen position along it initialises each pattern's ``z``. Relative paths are
            taken from the working directory.
        search_rounds: 1 (search, then SVI) or 2 (+ search over conformations decoded
            along the learned latent, then SVI again).
        n_search_conformations: structures along the latent in the second search.
        background: mean background photons per binned pixel added to the model on top of
            the dataset's own (> 0 keeps ``log μ`` finite).
        svi_rounds_split: fraction of the SVI steps spent before the second search.
        learn_rotation: let the SVI move each pose's mode away from the search result
            (residue beads at ``resolution``: less accurate than the all-atom search maps,
            so off by default; the SVI then learns only each pose's spread).
        conformation_posterior: how the first search weighs its structures per pattern:
            ``"marginal"`` (likelihood averaged over the SO(3) grid: the orientation
            integrated out) or ``"profile"`` (likelihood at the best refined pose). At
            ~430 photons/pattern a wrong pose of another structure can beat the true pose
            by chance. Measured on the AdK DIMS path (434 photons/pattern, 48 patterns,
            ``benchmarks/xray_fit.py``): grid-only scores favour the marginal (rho 0.82 vs
            0.80), after the per-structure refinement the two agree (0.841 vs 0.840 and
            0.900 vs 0.897 on two seeds with 8 structures; 6 structures: 0.77).
        pose_average: each pattern's pose is the chordal mean of its poses refined under every
            search structure, weighted by its posterior over them (else: the best refined
            pose of the best structure). The patterns of intermediate states lie between the
            search structures. AdK DIMS path, 435 photons/pattern, median rotation error:
            48 patterns 4.74 -> 4.48° (seed 0), but 480 patterns 5.02 -> 5.05° (seed 0): no
            gain beyond noise, so off by default.
        bend_rounds: EM rounds that bend the template path to the patterns (needs
            ``template``): each learns ``B`` of ``X(t) = start + t (end - start) +
            t (1 - t) B`` (one translation per residue, ``physics.xray_path``) from the last
            search's posterior over the path and poses, then searches again on the bent path.
            The straight line misses intermediate states (AdK DIMS frames: 1.6 Å Cα from it,
            0.68 Å from the best bend). AdK DIMS path, 436 photons/pattern, 480 patterns,
            seed 0 (``benchmarks/xray_fit.py``): one round of 30 steps took rho 0.898 -> 0.929
            and the median rotation error 5.02 -> 4.51°; 48 patterns: 0.879 -> 0.923,
            4.69 -> 4.23°. Each step builds and differentiates every structure's all-atom map:
            a GPU job (480 patterns: 15 s per round on an H200 after compiling; 48 patterns on
            the 2-core CPU at a 2x coarser map: ~14 min), so off by default.
        bend_steps: Adam steps of each round.
        bend_prior_sd: Å, Gaussian prior sd of each residue's bend component.
        bend_learning_rate: Å, Adam step size of the bend.
    """

    bin_factor: int = 2
    search_bin_factor: int = 1
    search_resolution: float = 0.0
    n_grid: int = 30000
    top_k: int = 8
    map_step: float = 0.003
    search_model: str = "atoms"
    search_modes: int = 2
    search_amplitude: float = 6.0
    search_rounds: int = 1
    template: str = ""
    n_search_conformations: int = 3
    background: float = 1e-3
    svi_rounds_split: float = 0.5
    learn_rotation: bool = False
    conformation_posterior: str = "marginal"
    pose_average: bool = False
    bend_rounds: int = 0
    bend_steps: int = 30
    bend_prior_sd: float = 4.0
    bend_learning_rate: float = 0.1

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(f"xray fit config: {what}")

        need(self.bin_factor >= 1, f"bin_factor must be >= 1, got {self.bin_factor}")
        need(
            self.search_bin_factor >= 1,
            f"search_bin_factor must be >= 1, got {self.search_bin_factor}",
        )
        need(
            math.isfinite(self.search_resolution) and self.search_resolution >= 0,
            f"search_resolution must be >= 0 Å (0 = all pixels), got {self.search_resolution}",
        )
        need(self.n_grid >= 100, f"n_grid must be >= 100, got {self.n_grid}")
        need(self.top_k >= 1, f"top_k must be >= 1, got {self.top_k}")
        need(
            math.isfinite(self.map_step) and self.map_step > 0,
            f"map_step must be > 0 1/Å, got {self.map_step}",
        )
        need(
            self.search_model in ("atoms", "beads"),
            f"search_model must be 'atoms' or 'beads', got {self.search_model!r}",
        )
        need(
            self.search_rounds in (1, 2), f"search_rounds must be 1 or 2, got {self.search_rounds}"
        )
        need(self.n_search_conformations >= 2, "n_search_conformations must be >= 2")
        need(self.search_modes >= 0, f"search_modes must be >= 0, got {self.search_modes}")
        need(
            math.isfinite(self.search_amplitude) and self.search_amplitude > 0,
            f"search_amplitude must be > 0 Å, got {self.search_amplitude}",
        )
        need(
            math.isfinite(self.background) and self.background > 0,
            f"background must be > 0 photons/pixel, got {self.background}",
        )
        need(0 < self.svi_rounds_split < 1, "svi_rounds_split must be in (0, 1)")
        need(self.bend_rounds >= 0, f"bend_rounds must be >= 0, got {self.bend_rounds}")
        need(
            self.bend_rounds == 0 or bool(self.template),
            "bend_rounds > 0 bends the template path: give a template",
        )
        need(self.bend_steps >= 1, f"bend_steps must be >= 1, got {self.bend_steps}")
        for name in ("bend_prior_sd", "bend_learning_rate"):
            value = getattr(self, name)
            need(math.isfinite(value) and value > 0, f"{name} must be > 0 Å, got {value}")
        need(
            self.conformation_posterior in ("marginal", "profile"),
            "conformation_posterior must be 'marginal' or 'profile', "
            f"got {self.conformation_posterior!r}",
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def read_xray_fit_config(path: str | Path) -> XrayFitConfig:
    """The ``[xray]`` table of a TOML recipe (defaults when it has none)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise InputFormatError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputFormatError(f"{path}: not valid TOML ({exc})") from None
    table = data.get("xray", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: 'xray' must be a table")
    known = {f.name: f for f in fields(XrayFitConfig)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"{path}: unknown xray setting(s) {unknown}; known: {sorted(known)}")
    values = {}
    for name, value in table.items():
        kind = type(known[name].default)
        if kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: xray.{name} must be true or false, got {value!r}")
            values[name] = value
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{path}: xray.{name} has the wrong type ({value!r})")
        if kind is int and not isinstance(value, int):
            raise ConfigError(f"{path}: xray.{name} must be an integer, got {value!r}")
        if kind is float and isinstance(value, str):
            raise ConfigError(f"{path}: xray.{name} must be a number, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise ConfigError(f"{path}: xray.{name} must be a string, got {value!r}")
        values[name] = float(value) if kind is float else value
    return XrayFitConfig(**values)


@dataclass(frozen=True)
class XrayFitResult:
    """What :func:`fit_xray` did.

    Attributes:
        run_dir: the run directory.  n_particles: patterns fitted.
        z_mean, z_sd: ``(N, D)`` posterior means and sds of z.
        rotations: ``(N, 3, 3)`` posterior mean orientations (one member of the two-fold).
        rotation_search: ``(N, 3, 3)`` orientations of the last search.
        elbo: ``(T,)`` ELBO per step (all rounds).
        params: learned parameters.  items_per_s: SVI patterns per second.
        mean_photons: mean photons per pattern of the data.
        timings: wall seconds per stage.
        search: the first search's posterior over its structures (after ``bend_rounds``:
            the search on the bent path, plus ``path_bend (A, 3)`` Å and
            ``path_bend_objective``): ``search_weights (N, C)``,
            ``search_coordinates (C, M)`` (ANM amplitudes in Å RMSD, or the path position in
            [0, 1] with a template), ``search_mean (N, M)``, ``search_sd (N, M)``.
    """

    run_dir: Path
    n_particles: int
    z_mean: np.ndarray
    z_sd: np.ndarray
    rotations: np.ndarray
    rotation_search: np.ndarray
    elbo: np.ndarray
    params: dict
    items_per_s: float
    mean_photons: float
    timings: dict
    search: dict


def _dataset_folder(particles_path: Path) -> Path:
    folder = particles_path if particles_path.is_dir() else particles_path.parent
    if not (folder / "xray.json").is_file():
        raise InputFormatError(
            f"{particles_path}: no xray.json next to it; give the folder or particles.star "
            "written by 'atomicspi simulate --modality xray'"
        )
    return folder


def _read_patterns(folder: Path):
    from atomicspi_bayes.synthetic.xray import read_xray_dataset

    summary, geometry, stack = read_xray_dataset(folder)
    if summary.get("modality") != "xray":
        raise InputFormatError(f"{folder / 'xray.json'}: modality is not 'xray'")
    counts = np.asarray(stack[np.arange(len(stack))], dtype=np.float32)
    if counts.ndim != 3 or counts.shape[1:] != (geometry.n_pixels, geometry.n_pixels):
        raise InputFormatError(
            f"{folder}: stack shape {counts.shape} does not match the "
            f"{geometry.n_pixels}x{geometry.n_pixels} detector in xray.json"
        )
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise InputFormatError(
            f"{folder}: patterns hold NaN/inf or negative photon counts; X-ray fits need counts"
        )
    return summary, geometry, counts


class _Pixels(NamedTuple):
    """The measured (binned) pixels one stage scores: ``k (P, 3)`` 1/Å, ``factor (P,)``
    ``r_e²ΩP``, ``counts (N, P)`` photons, ``background (P,)`` photons."""

    k: np.ndarray
    factor: np.ndarray
    counts: np.ndarray
    background: np.ndarray


class _Setup:
    """Everything the rounds share (built once)."""

    def __init__(self, folder, structure_path, cfg, xcfg, topology):
        from atomicspi_bayes.io import load_structure
        from atomicspi_bayes.physics import xray
        from atomicspi_bayes.physics import xray_orientation as xo
        from atomicspi_bayes.structure import anm_modes, coarse_grain

        self.summary, self.geometry, counts = _read_patterns(folder)
        self.n = counts.shape[0]
        self.photons = counts.sum(axis=(1, 2))
        detector = xray.detector_arrays(self.geometry)
        bg = float(self.summary.get("background_photons_per_pixel", 0.0))

        def pixels(factor: int, resolution: float, setting: str) -> _Pixels:
            det = xo.bin_detector(detector, factor)
            k = np.asarray(det.k).reshape(-1, 3)
            keep = np.array(det.mask).ravel()
            if resolution > 0:
                keep &= np.linalg.norm(k, axis=1) <= 1.0 / resolution
            if not keep.any():
                raise ConfigError(
                    f"no detector pixel within {setting} = {resolution} Å; "
                    f"use a larger {setting} (coarser)"
                )
            return _Pixels(
                k[keep],
                np.asarray(det.pixel_factor).ravel()[keep],
                xo.bin_patterns(counts, factor).reshape(self.n, -1)[:, keep],
                np.full(int(keep.sum()), bg * factor**2 + xcfg.background, np.float32),
            )

        self.svi = pixels(xcfg.bin_factor, cfg.resolution, "resolution")
        self.search = pixels(xcfg.search_bin_factor, xcfg.search_resolution, "search_resolution")
        self.fluence = float(self.summary["fluence_photons_per_angstrom2"])

        self.reference = load_structure(structure_path, topology)
        self.centre = np.asarray(self.reference.coords, np.float64).mean(axis=0)
        self.beads = coarse_grain(self.reference)
        self.nodes = (np.asarray(self.beads.coords, np.float64) - self.centre).astype(np.float32)
        n_modes = cfg.n_modes if cfg.n_modes > 0 else 3 * self.beads.n_beads - 6
        self.modes = anm_modes(self.nodes, n_modes, cfg.anm_cutoff)
        atom_bead = np.asarray(self.beads.atom_to_bead)
        self.atom_keep = atom_bead >= 0
        xyz = np.asarray(self.reference.coords, np.float64)[self.atom_keep] - self.centre
        self.atoms = xray.atomic_scatterers(
            np.asarray(self.reference.elements)[self.atom_keep], xyz
        )
        if cfg.coarse_grained:
            self.scatterers = xray.bead_scatterers(
                self.atoms, atom_bead[self.atom_keep], self.beads.n_beads
            )
            self.render_node = np.arange(self.beads.n_beads, dtype=np.int32)
        else:
            self.scatterers = self.atoms
            self.render_node = atom_bead[self.atom_keep].astype(np.int32)
        self.k_max_map = float(np.linalg.norm(self.search.k, axis=1).max())

    def atom_coords(self, nodes: np.ndarray) -> np.ndarray:
        """Decoded nodes ``(..., R, 3)`` (centred) -> kept atoms ``(..., A, 3)`` (centred)."""
        from atomicspi_bayes.structure import atom_coords_from_beads

        full = atom_coords_from_beads(self.reference, self.beads, nodes + self.centre)
        return np.asarray(full)[..., self.atom_keep, :] - self.centre


def _maps(setup: _Setup, xcfg: XrayFitConfig, atom_coords_list):
    """Intensity maps of conformations (kept-atom coordinates, centred)."""
    from atomicspi_bayes.physics import xray
    from atomicspi_bayes.physics import xray_orientation as xo

    out = []
    for xyz in atom_coords_list:  # one model at a time: memory G³ per model
        atoms = setup.atoms._replace(coords=jnp.asarray(xyz, jnp.float32))
        if xcfg.search_model == "beads":
            groups = np.asarray(setup.beads.atom_to_bead)[setup.atom_keep]
            atoms = xray.bead_scatterers(atoms, groups, setup.beads.n_beads)
        out.append(jax.block_until_ready(xo.intensity_map(atoms, setup.k_max_map, xcfg.map_step)))
    return xo.stack_maps(out)


def _search(key, setup: _Setup, xcfg: XrayFitConfig, maps):
    from atomicspi_bayes.physics import xray_orientation as xo

    px = setup.search
    return xo.search_orientations(
        key, maps, px.k, px.factor, px.counts, setup.fluence, px.background,
        n_grid=xcfg.n_grid, top_k=xcfg.top_k,
    )  # fmt: skip


def _search_amplitudes(xcfg: XrayFitConfig, n_modes: int) -> np.ndarray:
    """``(C, M)`` Å RMSD: the reference (zeros) and ``±a/2, ±a`` along each of ``M`` modes."""
    m = min(xcfg.search_modes, n_modes)
    rows = [np.zeros(max(m, 1))]
    for j in range(m):
        for a in (-1.0, -0.5, 0.5, 1.0):
            row = np.zeros(m)
            row[j] = a * xcfg.search_amplitude
            rows.append(row)
    return np.asarray(rows, np.float32)


def _template_ends(setup, xcfg: XrayFitConfig, topology):
    """``(A, 3)`` kept-atom reference and ``xcfg.template`` superposed onto it (centred)."""
    from atomicspi_bayes.io import load_structure

    other = load_structure(xcfg.template, topology)
    if other.n_atoms != setup.reference.n_atoms or list(other.elements) != list(
        setup.reference.elements
    ):
        raise InputFormatError(
            f"{xcfg.template}: template has {other.n_atoms} atoms / other elements than the "
            f"reference ({setup.reference.n_atoms}); give the same molecule in another state"
        )
    from atomicspi_bayes.structure import kabsch_align

    ref = np.asarray(setup.atoms.coords, np.float64)
    xyz = kabsch_align(np.asarray(other.coords)[setup.atom_keep], ref)
    return ref, xyz - ref.mean(axis=0)


def _initial_z(amplitudes: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """``(N, D)`` z from the chosen search amplitudes ``(N, M)``: standardised scores on the
    first principal axes (``fallback`` where they do not vary)."""
    centred = amplitudes - amplitudes.mean(axis=0)
    if not np.any(np.abs(centred) > 0):
        return fallback
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    d = min(fallback.shape[1], vt.shape[0])
    scores = centred @ vt[:d].T
    sd = scores.std(axis=0)
    z = fallback.copy()
    ok = np.flatnonzero(sd > 0)
    z[:, ok] = scores[:, ok] / sd[ok]
    return z.astype(np.float32)


def fit_xray(
    particles_path: str | Path,
    structure_path: str | Path,
    out_dir: str | Path,
    cfg=None,
    xcfg: XrayFitConfig | None = None,
    *,
    topology: str | Path | None = None,
    progress: bool = False,
) -> XrayFitResult:
    """Fit orientations and conformations of X-ray patterns against a reference structure.

    Args:
        particles_path: the dataset folder, its ``particles.star`` or ``xray.json``.
        structure_path: reference PDB/mmCIF (or topology + ``topology``), model frame.
        out_dir: the run directory (module docstring).
        cfg: ``pipeline.FitConfig`` (shared settings: latent_dim, coarse_grained, n_modes,
            anm_cutoff, elastic_cutoff, decoder_hidden, z_prior, priors' weights, resolution
            (Å, scored pixels ``|k| <= 1/resolution``), epochs, batch_size, learning_rate,
            grad_clip, warmup_steps, checkpoint_every, seed, n_draws, n_ensemble, resume,
            force). ``poses`` and the encoder settings do not apply: orientation is always
            latent, found by search.
        xcfg: :class:`XrayFitConfig`.
        topology: optional topology (PSF) giving elements of ``structure_path``.
        progress: show the SVI progress bar.

    Raises:
        InputFormatError, ConfigError: bad inputs or settings (one clear line).
        ConvergenceError: the ELBO became NaN/inf.
    """
    from atomicspi_bayes.diagnostics.export import posterior_inference_data, write_posterior
    from atomicspi_bayes.guides.xray import XrayBatch, XrayStatic, xray_guide, xray_model
    from atomicspi_bayes.inference import SVIConfig, config_fingerprint, run_svi
    from atomicspi_bayes.io import read_particles, write_multimodel_pdb, write_star
    from atomicspi_bayes.model import LatentDecoder, ModelConfig, TangentNormalSO3
    from atomicspi_bayes.physics import xray_orientation as xo
    from atomicspi_bayes.physics.geometry import axis_angle_to_matrix
    from atomicspi_bayes.physics.xray import DetectorArrays
    from atomicspi_bayes.physics.xray_path import fit_path_bend, path_structures
    from atomicspi_bayes.pipeline.fit import FitConfig, write_fit_config
    from atomicspi_bayes.structure import (
        atom_coords_from_beads,
        clash_pairs,
        elastic_pairs,
        ideal_bond_lengths,
    )

    cfg = cfg if cfg is not None else FitConfig()
    xcfg = xcfg if xcfg is not None else XrayFitConfig()
    particles_path, out_dir = Path(particles_path), Path(out_dir)
    folder = _dataset_folder(particles_path)
    prepare_run_dir(out_dir, cfg)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    setup = _Setup(folder, structure_path, cfg, xcfg, topology)
    clear_run_dir(out_dir, cfg)  # only once the new inputs have been read and checked
    n = setup.n
    bsz = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // bsz)
    num_steps = cfg.epochs * steps_per_epoch
    run_facts = {
        "modality": "xray",
        "particles": str(folder.resolve()),
        "structure": str(Path(structure_path).resolve()),
        "n_particles": n,
        "batch_size_used": bsz,
        "num_steps": num_steps,
        "n_modes": int(setup.modes.eigenvalues.shape[0]),
        "n_scored_pixels": int(setup.svi.k.shape[0]),
        "n_search_pixels": int(setup.search.k.shape[0]),
        "fluence_photons_per_angstrom2": setup.fluence,
        "mean_photons_per_pattern": float(setup.photons.mean()),
        **{f"xray_{k}": v for k, v in xcfg.to_dict().items()},
    }
    if topology is not None:
        run_facts["topology"] = str(Path(topology).resolve())
    write_fit_config(out_dir / "config.toml", cfg, run_facts)
    timings["setup_s"] = time.perf_counter() - t0

    key = jax.random.PRNGKey(cfg.seed)
    k_dec, k_z, k_search, k_svi, k_draws = jax.random.split(key, 5)
    model_cfg = ModelConfig(
        latent_dim=cfg.latent_dim, poses="amortized", z_prior=cfg.z_prior,
        n_mixture=cfg.n_mixture, learn_noise=False, elastic_weight=cfg.elastic_weight,
        mode_weight=cfg.mode_weight, bond_weight=cfg.bond_weight,
        clash_weight=cfg.clash_weight,
    )  # fmt: skip
    eig = np.asarray(setup.modes.eigenvalues)
    n_scat = setup.scatterers.coords.shape[0]
    static = XrayStatic(
        x0_nodes=setup.nodes,
        mode_vectors=np.asarray(setup.modes.rmsd_scaled_vectors(), np.float32),
        mode_eigenvalues=eig.astype(np.float32),
        bonded=np.asarray(setup.beads.bonded),
        bond_lengths=ideal_bond_lengths(setup.nodes, setup.beads.bonded),
        clash_pairs=clash_pairs(
            setup.beads.n_beads, chain_index=np.asarray(setup.beads.chain_index)
        ),
        elastic_pairs=elastic_pairs(setup.nodes, cfg.elastic_cutoff),
        decoder=LatentDecoder(
            cfg.latent_dim,
            eig.shape[0],
            cfg.decoder_hidden,
            key=k_dec,
            mode_scale=np.sqrt(eig[0] / eig),
        ),
        render_x0=np.asarray(setup.scatterers.coords, np.float32).reshape(n_scat, 3),
        render_node=setup.render_node,
        scatterers=setup.scatterers,
        detector=DetectorArrays(
            jnp.asarray(setup.svi.k),
            jnp.asarray(setup.svi.factor),
            jnp.ones(setup.svi.k.shape[0], bool),
        ),
        fluence=setup.fluence,
        background=setup.svi.background,
        n_particles=n,
        z_init=0.5 * np.asarray(jax.random.normal(k_z, (n, cfg.latent_dim)), np.float32),
        learn_rotation=xcfg.learn_rotation,
    )

    # round 1: search over the reference and its ANM deformations (or the template path)
    t0 = time.perf_counter()
    if xcfg.template:
        start, end = _template_ends(setup, xcfg, topology)
        amps = np.linspace(0.0, 1.0, xcfg.n_search_conformations, dtype=np.float32)[:, None]
        templates = np.asarray(path_structures(start, end, amps[:, 0]))
    else:
        amps = _search_amplitudes(xcfg, int(eig.shape[0]))
        vectors = static.mode_vectors[: amps.shape[1]]
        templates = setup.atom_coords(setup.nodes[None] + np.einsum("ck,krd->crd", amps, vectors))

    def search_structures(structures, round_):
        found = _search(
            jax.random.fold_in(k_search, round_), setup, xcfg, _maps(setup, xcfg, list(structures))
        )
        score = (
            found.model_logmarginal
            if xcfg.conformation_posterior == "marginal"
            else found.model_loglik
        )
        w = np.exp(score - score.max(axis=1, keepdims=True))
        return found, w / w.sum(axis=1, keepdims=True)  # posterior over the structures

    search, weights = search_structures(templates, 1)
    bend = None
    for round_ in range(xcfg.bend_rounds):  # EM: bend the path to the patterns, search again
        px = setup.search
        bend = fit_path_bend(
            setup.atoms, start, end, amps[:, 0], setup.reference.residue_index[setup.atom_keep],
            px.k, px.factor, px.counts, setup.fluence, px.background, weights,
            search.model_rotations, setup.k_max_map, xcfg.map_step,
            prior_sd=xcfg.bend_prior_sd, n_steps=xcfg.bend_steps,
            learning_rate=xcfg.bend_learning_rate,
            init=None if bend is None else bend.group_bend,
        )  # fmt: skip
        logger.info(
            "path bend %d: objective %.2f -> %.2f per pattern, rms bend %.2f Å",
            round_ + 1, bend.objective[0], bend.objective[-1],
            float(np.sqrt(np.mean(np.sum(bend.bend**2, axis=1)))),
        )  # fmt: skip
        templates = np.asarray(path_structures(start, end, amps[:, 0], bend.bend))
        search, weights = search_structures(templates, 10 + round_)
    chosen = weights @ amps  # (N, M) posterior-mean amplitudes / path position
    search1 = {
        "search_weights": weights.astype(np.float32),
        "search_coordinates": amps.astype(np.float32),
        "search_mean": chosen.astype(np.float32),
        "search_sd": np.sqrt(np.maximum(weights @ amps**2 - chosen**2, 0.0)).astype(np.float32),
    }
    if bend is not None:
        search1["path_bend"] = bend.bend.astype(np.float32)
        search1["path_bend_objective"] = bend.objective.astype(np.float32)
    static = dataclasses.replace(static, z_init=_initial_z(chosen, static.z_init))
    rotation0 = search.rotations
    if xcfg.pose_average:
        rotation0 = xo.mean_rotation(search.model_rotations, weights)
    timings["search1_s"] = time.perf_counter() - t0
    logger.info("orientation search 1: %.1f s for %d patterns", timings["search1_s"], n)

    def make_batch_fn(rotation0):
        counts = jnp.asarray(setup.svi.counts)
        rot0 = jnp.asarray(rotation0)
        perm_key = jax.random.fold_in(key, 7)

        def batch_fn(step: int):
            epoch, pos = divmod(step, steps_per_epoch)
            perm = jax.random.permutation(jax.random.fold_in(perm_key, epoch), n)
            idx = perm[pos * bsz : (pos + 1) * bsz]
            return XrayBatch(idx.astype(jnp.int32), counts[idx], rot0[idx])

        return batch_fn

    def svi_round(name, steps, rotation0, init_params, stat):
        svi_cfg = SVIConfig(
            num_steps=steps, learning_rate=cfg.learning_rate, schedule="cosine",
            warmup_steps=min(cfg.warmup_steps, steps - 1), clip_norm=cfg.grad_clip,
            checkpoint_every=cfg.checkpoint_every, progress=progress,
        )  # fmt: skip
        numeric = {k: v for k, v in cfg.to_dict().items() if k not in ("resume", "force")}
        fingerprint = config_fingerprint({"fit": numeric, **run_facts, "round": name})
        return run_svi(
            jax.random.fold_in(k_svi, len(name)),
            lambda b: xray_model(b, model_cfg, stat),
            lambda b: xray_guide(b, model_cfg, stat),
            make_batch_fn(rotation0), svi_cfg,
            checkpoint_dir=out_dir / "checkpoints" / name, resume=cfg.resume,
            overwrite=cfg.force, fingerprint=fingerprint, init_params=init_params,
        )  # fmt: skip

    split = 1.0 if xcfg.search_rounds == 1 else xcfg.svi_rounds_split
    steps1 = max(1, int(num_steps * split))
    t0 = time.perf_counter()
    result = svi_round("round1", steps1, rotation0, None, static)
    timings["svi1_s"] = time.perf_counter() - t0
    losses = [np.asarray(result.losses)]
    params = result.params
    if xcfg.search_rounds == 2:
        from atomicspi_bayes.model import decode_nodes, decoder_from_params

        t0 = time.perf_counter()
        z_now = np.asarray(params["z_loc"])
        z_grid = ensemble_latents(z_now, xcfg.n_search_conformations).astype(np.float32)
        _, nodes = decode_nodes(decoder_from_params(params, static), jnp.asarray(z_grid), static)
        maps = _maps(setup, xcfg, list(setup.atom_coords(np.asarray(nodes))))
        search = _search(jax.random.fold_in(k_search, 2), setup, xcfg, maps)
        map_index = search.models
        timings["search2_s"] = time.perf_counter() - t0
        rotation0 = search.rotations
        init = {k: v for k, v in params.items() if k not in ("rotation_delta", "rotation_scale")}
        init["z_loc"] = jnp.asarray(z_grid[map_index])
        t0 = time.perf_counter()
        result = svi_round("round2", num_steps - steps1, rotation0, init, static)
        timings["svi2_s"] = time.perf_counter() - t0
        losses.append(np.asarray(result.losses))
        params = result.params

    z_mean = np.asarray(params["z_loc"], np.float32)
    z_sd = np.asarray(params["z_scale"], np.float32)
    delta = params.get("rotation_delta", jnp.zeros((n, 3), jnp.float32))
    rot_mean = np.asarray(axis_angle_to_matrix(jnp.asarray(delta)) @ jnp.asarray(rotation0))
    rot_sd = np.asarray(params["rotation_scale"], np.float32)
    elbo = -np.concatenate(losses).astype(np.float64)
    eps = np.asarray(jax.random.normal(k_draws, (cfg.n_draws, *z_mean.shape)))
    z_draws = (z_mean[None] + z_sd[None] * eps).astype(np.float32)
    rotation_draws = np.asarray(
        TangentNormalSO3(rot_mean, rot_sd).sample(jax.random.fold_in(k_draws, 1), (cfg.n_draws,))
    )
    rows = np.arange(n, dtype=np.int64)

    save_npy_atomic(out_dir / "elbo.npy", elbo)
    idata = posterior_inference_data(
        z_draws, z_mean, z_sd, rows, elbo, rotation_draws=rotation_draws,
        posterior_method="xray_local",
    )  # fmt: skip
    write_posterior(out_dir / "posterior.nc", idata)
    meta = read_particles(folder / "particles.star")
    if len(meta) == n:
        meta = dataclasses.replace(
            meta, rotations=rot_mean.astype(np.float32), shifts=np.zeros((n, 2), np.float32)
        )
        write_star(
            out_dir / "particles.star",
            meta,
            {"atomicspiLatentMean": z_mean, "atomicspiLatentSd": z_sd},
        )
    from atomicspi_bayes.model import decode_nodes, decoder_from_params

    _, nodes = decode_nodes(
        decoder_from_params(params, static),
        jnp.asarray(ensemble_latents(z_mean, cfg.n_ensemble), jnp.float32),
        static,
    )
    ensemble = atom_coords_from_beads(
        setup.reference, setup.beads, np.asarray(nodes, np.float64) + setup.centre
    )
    write_multimodel_pdb(out_dir / "ensemble.pdb", setup.reference, np.asarray(ensemble))
    truth = folder / "truth.npz"
    if truth.is_file():
        copy_file_atomic(truth, out_dir / "truth.npz")
    save_npz_atomic(
        out_dir / "latents.npz", z_mean=z_mean, z_sd=z_sd, z_draws=z_draws, particle_index=rows,
        rotation_mean=rot_mean.astype(np.float32), rotation_sd=rot_sd,
        rotation_search=np.asarray(rotation0, np.float32),
        search_gap=np.asarray(search.runner_up_gap, np.float32),
        **search1,
    )  # fmt: skip
    logger.info("xray fit finished: %d patterns, final ELBO %.6g", n, elbo[-1])
    return XrayFitResult(
        run_dir=out_dir, n_particles=n, z_mean=z_mean, z_sd=z_sd, rotations=rot_mean,
        rotation_search=np.asarray(rotation0), elbo=elbo, params=params,
        items_per_s=float(result.items_per_s), mean_photons=float(setup.photons.mean()),
        timings=timings,
        search=search1,
    )  # fmt: skip
