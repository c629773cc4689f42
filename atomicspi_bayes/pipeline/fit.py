"""The ``atomicspi fit`` workflow: particles + reference structure -> a run directory.

Glue only (the numerics live in ``model``, ``guides``, ``inference``, ``physics``,
``structure``): read and screen the particles, coarse-grain the reference and compute its
ANM modes, build the NumPyro model and the amortized guide, run the streaming SVI engine on
minibatches read from the memory-mapped stack, then write the run directory:

    RUN/config.toml     every setting used ([fit]) and run facts ([run])
    RUN/checkpoints/    engine checkpoints (resume with --resume)
    RUN/latents.npz     z_mean (N, D), z_sd (N, D), z_draws (S, N, D), particle_index (N,)
                        (the reported posterior: refined by default, see ``posterior``),
                        z_mean_amortized, z_sd_amortized (N, D) (the encoder's q),
                        posterior_method ("grid" | "importance" | "amortized"), ess (N,)
                        (+ rotation_mean (N,3,3), rotation_sd (N,3), shift_mean (N,2),
                        shift_sd (N,2) with amortized poses)
    RUN/elbo.npy        (T,) ELBO of every optimisation step (= -loss; higher is better)
    RUN/posterior.nc    ArviZ InferenceData (see diagnostics.export)
    RUN/particles.star  input particles + posterior mean/sd of z (+ refined poses)
    RUN/ensemble.pdb    all-atom structures along the latent (multi-model PDB)
    RUN/truth.npz       copied from the particles' folder when it has one

Every file is written atomically (temp file + rename); ``latents.npz`` is written last and
marks a finished run.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.atomic_files import copy_file_atomic, save_npy_atomic, save_npz_atomic
from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.pipeline.outputs import (  # run-folder helpers (also fit_xray's)
    clear_run_dir,
    ensemble_latents,
    prepare_run_dir,
    streamed_posterior,
    write_latents,
    write_posterior_nc,
    write_star_chunked,
)

__all__ = [
    "FitConfig",
    "FitProblem",
    "FitResult",
    "build_problem",
    "encode_all",
    "fit",
    "format_fit_config",
    "grid_posterior",
    "nuts_posterior",
    "pretrain_poses",
    "read_fit_config",
    "write_fit_config",
]

logger = logging.getLogger(__name__)

_POSES = ("fixed", "amortized")
_Z_PRIORS = ("normal", "mixture")
_ENCODERS = ("auto", "sensitivity", "image")


@dataclass(frozen=True)
class FitConfig:
    """All settings of a fit (units in the field comments).

    Model:
        latent_dim: D, dimension of the conformation latent z (1-4).
        poses: ``"fixed"`` (STAR poses) or ``"amortized"`` (rotation and shift inferred).
        coarse_grained: one bead per residue (True) or all atoms in the likelihood (False,
            the default: at 6 Å the beads' isotropic form factors pull the decoded Cα of
            AdK ~1 Å off even for the reference itself).
        residue_frames: rendered beads/atoms turn with their residue's local Cα frame
            (i-1, i, i+1) as well as moving with its Cα (False: translation only, which
            misplaces side chains where domains rotate).
        n_modes: K, number of ANM modes the decoder drives (0: all 3R-6, a complete basis of
            non-rigid bead displacements).
        anm_cutoff: Å, elastic-network cutoff of the ANM modes.
        elastic_cutoff: Å, cutoff of the springs of the elastic prior (short: local
            geometry is kept while domains move rigidly).
        decoder_hidden: hidden widths of the z -> amplitudes MLP (empty: linear decoder).
        mode_preconditioning: exponent p of the decoder's per-mode output scale
            ``(λ_1/λ_k)^p`` (soft modes move faster under the optimiser; 0: all alike).
        z_prior: ``"normal"`` (N(0, I)) or ``"mixture"`` (learnable Gaussian mixture).
        n_mixture: components of the mixture prior.
        resolution: Å, likelihood uses Fourier coefficients with |k| <= 1/resolution.
        learn_noise: learn the noise level per optics group (else fixed at its estimate).
        elastic_weight: γ/kT of the elastic-network prior on decoded Cα distances (kT/Å²),
            a factor per particle: at 0.05 the closed AdK end of the DIMS path costs
            ~100 kT per particle and the decoded path stopped short of it; 0.005: ~10 kT.
        mode_weight: multiplies the harmonic ANM log-prior of the amplitudes (1/kT_eff).
        bond_weight: multiplies the Cα-Cα bond log-prior of the decoded beads.
        clash_weight: multiplies the Cα clash log-prior of the decoded beads.
        shift_prior_sd: Å, sd of the Gaussian prior on shifts (amortized poses).
    Guide:
        encoder: ``"sensitivity"`` (mode-sensitivity features, needs poses), ``"image"``
            (CNN on the low-pass image) or ``"auto"`` (sensitivity if poses fixed, else image).
        encoder_hidden: hidden widths of the encoder MLP (head).
        encoder_image_size: px, side of the low-pass image the CNN sees.
        pose_heads: number of rotation hypotheses (multi-head pose encoder).
        pose_pretrain_steps: sleep-phase steps regressing the pose heads on particles
            simulated from the reference before SVI (amortized poses; 0 = none).
        refine_steps: per-particle likelihood refinement steps of the encoder's pose in the
            final posterior pass (amortized poses; 0 = pure amortized poses).
    Optimisation:
        epochs, batch_size, learning_rate, grad_clip (global norm), warmup_steps,
        checkpoint_every (steps), seed.
    Outputs:
        n_draws: S posterior draws per particle in latents.npz / posterior.nc.
        n_ensemble: structures along the latent in ensemble.pdb.
        nuts_subset: particles in a NUTS gold-standard run after SVI (0 = none).
        posterior: ``"refined"`` (per-particle exact grid posterior for fixed poses and
            D <= 2, else importance sampling with the widened q; ``atomicspi_bayes.posterior``)
            or ``"amortized"`` (the encoder's q as is) in latents.npz / posterior.nc / STAR.
    Run control:
        resume: continue from RUN/checkpoints.  force: overwrite a finished RUN.
        devices: devices of the data-parallel mesh (batch split over them, parameters
            replicated; the batch size must be a multiple). In a multi-process job the
            mesh spans all global devices: give 1 (= all) or their global count.
        coordinator: ``"host:port"`` of process 0 in a multi-process job ("" = one process).
        num_processes, process_id: P and this process's rank; each process reads only
            its rows of every minibatch, process 0 alone writes the run folder.
        (devices and the process settings do not enter the run's fingerprint: a run can
        resume on another device count.)
    """

    latent_dim: int = 1
    poses: str = "fixed"
    coarse_grained: bool = False
    residue_frames: bool = True
    n_modes: int = 0
    anm_cutoff: float = 15.0
    elastic_cutoff: float = 7.0
    decoder_hidden: tuple[int, ...] = (64, 64)
    mode_preconditioning: float = 0.25
    z_prior: str = "normal"
    n_mixture: int = 4
    resolution: float = 6.0
    learn_noise: bool = True
    elastic_weight: float = 0.005
    mode_weight: float = 0.0
    bond_weight: float = 0.2
    clash_weight: float = 0.0
    shift_prior_sd: float = 3.0
    encoder: str = "auto"
    encoder_hidden: tuple[int, ...] = (128, 128)
    encoder_image_size: int = 32
    pose_heads: int = 4
    pose_pretrain_steps: int = 3000
    refine_steps: int = 50
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 3e-3
    grad_clip: float = 10.0
    warmup_steps: int = 50
    checkpoint_every: int = 200
    seed: int = 0
    n_draws: int = 100
    n_ensemble: int = 10
    nuts_subset: int = 0
    posterior: str = "refined"
    resume: bool = False
    force: bool = False
    devices: int = 1
    coordinator: str = ""
    num_processes: int = 1
    process_id: int = 0

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(f"fit config: {what}")

        need(1 <= self.latent_dim <= 4, f"latent_dim must be in 1..4, got {self.latent_dim}")
        need(self.poses in _POSES, f"poses must be one of {_POSES}, got {self.poses!r}")
        need(self.z_prior in _Z_PRIORS, f"z_prior must be one of {_Z_PRIORS}, got {self.z_prior!r}")
        need(self.encoder in _ENCODERS, f"encoder must be one of {_ENCODERS}, got {self.encoder!r}")
        need(
            not (self.encoder == "sensitivity" and self.poses == "amortized"),
            "encoder 'sensitivity' needs poses 'fixed' (use 'image' or 'auto')",
        )
        need(self.n_modes >= 0, f"n_modes must be >= 0 (0 = all 3R-6), got {self.n_modes}")
        need(self.anm_cutoff > 0, f"anm_cutoff must be > 0 Å, got {self.anm_cutoff}")
        need(self.elastic_cutoff > 0, f"elastic_cutoff must be > 0 Å, got {self.elastic_cutoff}")
        need(self.n_mixture >= 1, f"n_mixture must be >= 1, got {self.n_mixture}")
        need(
            math.isfinite(self.resolution) and self.resolution > 0,
            f"resolution must be a positive number of Å, got {self.resolution}",
        )
        for name in ("elastic_weight", "mode_weight", "bond_weight", "clash_weight",
                     "mode_preconditioning"):  # fmt: skip
            value = getattr(self, name)
            need(math.isfinite(value) and value >= 0, f"{name} must be >= 0, got {value}")
        need(self.shift_prior_sd > 0, f"shift_prior_sd must be > 0 Å, got {self.shift_prior_sd}")
        need(all(h >= 1 for h in self.decoder_hidden), "decoder_hidden widths must be >= 1")
        need(all(h >= 1 for h in self.encoder_hidden), "encoder_hidden widths must be >= 1")
        need(
            self.encoder_image_size >= 8 and self.encoder_image_size % 8 == 0,
            f"encoder_image_size must be a multiple of 8, got {self.encoder_image_size}",
        )
        need(self.pose_heads >= 1, f"pose_heads must be >= 1, got {self.pose_heads}")
        need(self.pose_pretrain_steps >= 0, "pose_pretrain_steps must be >= 0")
        need(self.refine_steps >= 0, f"refine_steps must be >= 0, got {self.refine_steps}")
        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        need(self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}")
        need(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        need(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")
        need(self.n_draws >= 1, f"n_draws must be >= 1, got {self.n_draws}")
        need(self.n_ensemble >= 2, f"n_ensemble must be >= 2, got {self.n_ensemble}")
        need(self.nuts_subset >= 0, f"nuts_subset must be >= 0, got {self.nuts_subset}")
        need(
            self.posterior in ("refined", "amortized"),
            f"posterior must be 'refined' or 'amortized', got {self.posterior!r}",
        )
        need(self.devices >= 1, f"devices must be >= 1, got {self.devices}")
        need(
            self.num_processes >= 1 and 0 <= self.process_id < self.num_processes,
            f"process_id {self.process_id} must be in [0, num_processes={self.num_processes})",
        )
        need(
            self.num_processes == 1 or bool(self.coordinator),
            f"num_processes={self.num_processes} needs a coordinator 'host:port'",
        )

    @property
    def encoder_kind(self) -> str:
        """The encoder actually used (``"auto"`` resolved against the pose mode)."""
        if self.encoder != "auto":
            return self.encoder
        return "sensitivity" if self.poses == "fixed" else "image"

    def replace(self, **changes: Any) -> FitConfig:
        """A copy with ``changes`` applied (``None`` values are ignored: "not given")."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> FitConfig:
        """Build from a mapping (TOML table); lists become tuples, unknown keys are errors."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown fit setting(s) {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            default = known[name].default
            if isinstance(default, tuple):
                if not isinstance(value, list | tuple) or not all(
                    isinstance(v, int) for v in value
                ):
                    raise ConfigError(f"{source}: {name} must be a list of integers, got {value!r}")
                value = tuple(value)
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"{source}: {name} must be true or false, got {value!r}")
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ConfigError(f"{source}: {name} must be an integer, got {value!r}")
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ConfigError(f"{source}: {name} must be a number, got {value!r}")
                value = float(value)
            elif isinstance(default, str) and not isinstance(value, str):
                raise ConfigError(f"{source}: {name} must be a string, got {value!r}")
            values[name] = value
        return cls(**values)


def read_fit_config(path: str | Path) -> FitConfig:
    """Read a TOML recipe: keys at the top level or in a ``[fit]`` table.

    Raises:
        InputFormatError: the file is missing or not valid TOML.
        ConfigError: an unknown key or a value of the wrong type or range.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise InputFormatError(f"{path}: config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"{path}: not valid UTF-8 TOML ({exc})") from None
    if "fit" in data:
        if not isinstance(data["fit"], dict):
            raise ConfigError(f"{path}: 'fit' must be a table")
        data = data["fit"]
    else:
        data = {k: v for k, v in data.items() if not isinstance(v, dict)}
    return FitConfig.from_dict(data, source=str(path))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def format_fit_config(cfg: FitConfig, extra: dict[str, Any] | None = None) -> str:
    """TOML text: a ``[fit]`` table with every setting (+ an optional ``[run]`` table)."""
    lines = ["# atomicspi fit settings (read back with --config)", "[fit]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in cfg.to_dict().items()]
    if extra:
        lines += ["", "[run]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def write_fit_config(path: str | Path, cfg: FitConfig, extra: dict[str, Any] | None = None) -> None:
    """Write ``cfg`` (and run facts in ``extra``: str/int/float/bool/lists) as TOML, atomically."""
    from atomicspi_bayes.io._atomic import atomic_open

    with atomic_open(path, "w") as fh:
        fh.write(format_fit_config(cfg, extra))


# ---------------------------------------------------------------- the workflow


@dataclass(frozen=True, eq=False)
class FitProblem:
    """Everything a fit composes, built once by :func:`build_problem`.

    Attributes:
        cfg: the :class:`FitConfig`.
        model_cfg: the :class:`~atomicspi_bayes.model.ModelConfig` derived from it.
        static: the model's fixed arrays (:class:`~atomicspi_bayes.model.ModelStatic`).
        guide: the amortized guide (:class:`~atomicspi_bayes.guides.AmortizedGuide`).
        metadata: all input particles (``io.ParticleMetadata``).
        dataset: the kept particles (``io.ParticleDataset``, memory-mapped).
        rows: ``(N,)`` input row of each kept particle (``particle_index``).
        n_excluded: particles dropped by screening (NaN/inf/constant images).
        reference: the reference ``AtomicModel`` (input coordinates).
        centre: ``(3,)`` Å, subtracted from the reference before modelling (the rotation
            centre of the projection).
        beads: the ``BeadModel`` of the reference (input frame; nodes, modes, priors).
    """

    cfg: FitConfig
    model_cfg: Any
    static: Any
    guide: Any
    metadata: Any
    dataset: Any
    rows: np.ndarray
    n_excluded: int
    reference: Any
    centre: np.ndarray
    beads: Any

    @property
    def n_particles(self) -> int:
        return int(self.rows.shape[0])

    @property
    def batch_size(self) -> int:
        return min(self.cfg.batch_size, self.n_particles)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.n_particles // self.batch_size)

    def model(self, batch) -> None:
        """``cryoem_model(batch, model_cfg, static)`` as a one-argument NumPyro model."""
        from atomicspi_bayes.model import cryoem_model

        cryoem_model(batch, self.model_cfg, self.static)

    def batch(self, positions: np.ndarray):
        """:class:`ParticleBatch` of kept particles ``positions`` (0..N-1, the plate indices)."""
        from atomicspi_bayes.model import ParticleBatch
        from atomicspi_bayes.physics.ctf import CTFParams

        positions = np.asarray(positions, dtype=np.int64)
        m = self.dataset.metadata  # kept particles, dataset order
        n = positions.shape[0]
        if m.rotations is not None:
            rotations = np.asarray(m.rotations[positions], dtype=np.float32)
            shifts = np.asarray(m.shifts[positions], dtype=np.float32)
        else:
            rotations = np.broadcast_to(np.eye(3, dtype=np.float32), (n, 3, 3)).copy()
            shifts = np.zeros((n, 2), dtype=np.float32)
        groups = np.asarray(m.optics_group[positions], dtype=np.int64)
        return ParticleBatch(
            indices=jnp.asarray(positions, dtype=jnp.int32),
            images=jnp.asarray(self.dataset.images(positions)),
            rotations=jnp.asarray(rotations),
            shifts=jnp.asarray(shifts),
            ctf=CTFParams.from_metadata(m, positions),
            optics_group=jnp.asarray(self._group_index[groups], dtype=jnp.int32),
        )

    @property
    def _group_index(self) -> np.ndarray:
        """Lookup table optics group number (1-based, as in the file) -> 0-based index."""
        groups = np.unique(np.asarray(self.metadata.optics_group))
        table = np.zeros(int(groups.max()) + 1, dtype=np.int64)
        table[groups] = np.arange(groups.size)
        return table

    def batch_fn(self, step: int):
        """The minibatch of optimisation step ``step`` (deterministic in seed and step)."""
        positions = self.dataset.batch_indices(self.cfg.seed, self.batch_size, step)
        return self.batch(positions)

    def decode(self, params: dict, z: np.ndarray) -> np.ndarray:
        """Latents ``(n, D)`` -> decoded Cα nodes ``(n, R, 3)`` Å (centred model frame)."""
        from atomicspi_bayes.model import decode_nodes, decoder_from_params

        decoder = decoder_from_params(params, self.static)
        _, nodes = decode_nodes(decoder, jnp.asarray(z, dtype=jnp.float32), self.static)
        return np.asarray(nodes)

    def all_atom_coords(self, nodes: np.ndarray) -> np.ndarray:
        """Decoded nodes ``(..., R, 3)`` (centred) -> all atoms ``(..., N, 3)`` Å, input frame.

        Every atom moves rigidly with its residue's Cα node.
        """
        from atomicspi_bayes.structure import atom_coords_from_beads

        nodes = np.asarray(nodes, dtype=np.float64) + self.centre
        return np.asarray(atom_coords_from_beads(self.reference, self.beads, nodes))


def _check_metadata(metadata, path: Path, cfg: FitConfig) -> None:
    if len(metadata) == 0:
        raise InputFormatError(f"{path}: no particles")
    if not metadata.has_ctf:
        raise InputFormatError(
            f"{path}: particles have no CTF parameters (defocus); run CTF estimation first"
        )
    if cfg.poses == "fixed" and not metadata.has_poses:
        raise InputFormatError(
            f"{path}: no poses (rlnAngleRot/Tilt/Psi, origins) but --poses fixed; "
            "use --poses amortized or a refined STAR file"
        )


def _render_model(reference, beads, coarse_grained: bool, centre: np.ndarray) -> dict:
    """Scattering points the projector renders and the node (Cα) that carries each one.

    Coarse-grained: one bead Gaussian per residue at its scattering centre. All-atom: every
    atom with a residue node, moved rigidly with that residue's Cα
    (``structure.bead_to_atom_displacements``'s convention).
    """
    from atomicspi_bayes.physics.cryoem import Scatterers

    if coarse_grained:
        points = np.asarray(beads.scattering_coords(), dtype=np.float64) - centre
        return {
            "render_x0": points, "render_node": np.arange(beads.n_beads),
            "scatterers": Scatterers.from_gaussians(beads.a, beads.b),
        }  # fmt: skip
    node = np.asarray(beads.atom_to_bead)
    keep = node >= 0
    if not keep.all():
        logger.info("all-atom rendering leaves out %d atoms without a residue node", (~keep).sum())
    atoms = np.asarray(reference.coords, dtype=np.float64)[keep] - centre
    return {
        "render_x0": atoms, "render_node": node[keep],
        "scatterers": Scatterers.from_elements(np.asarray(reference.elements)[keep]),
    }  # fmt: skip


def build_problem(
    particles_path: str | Path,
    structure_path: str | Path,
    cfg: FitConfig,
    *,
    topology: str | Path | None = None,
) -> FitProblem:
    """Read inputs, screen images, build model arrays, decoder and guide (no training).

    Raises:
        InputFormatError: unreadable inputs, particles without CTF, no poses with
            ``poses="fixed"``, mixed box/pixel sizes, no usable image, structure larger
            than the box.
        ConfigError: inconsistent settings (e.g. resolution finer than Nyquist).
    """
    from atomicspi_bayes.guides import build_guide
    from atomicspi_bayes.io import ParticleDataset, load_structure, read_particles
    from atomicspi_bayes.model import (
        FourierWindow,
        LatentDecoder,
        ModelConfig,
        ModelStatic,
        initial_noise_and_scale,
    )
    from atomicspi_bayes.structure import (
        anm_modes,
        clash_pairs,
        coarse_grain,
        elastic_pairs,
        ideal_bond_lengths,
    )
    from atomicspi_bayes.structure.deform import residue_frame_triples

    particles_path, structure_path = Path(particles_path), Path(structure_path)
    metadata = read_particles(particles_path)
    _check_metadata(metadata, particles_path, cfg)
    dataset = ParticleDataset(metadata)  # checks stacks, one box and pixel size
    box, pixel = dataset.box_size, dataset.pixel_size
    bad = dataset.find_bad_images()
    if bad.count == len(dataset):
        raise InputFormatError(
            f"{particles_path}: all {bad.count} images are NaN/inf ({bad.n_nonfinite}) or "
            f"constant ({bad.n_constant})"
        )
    if bad.count:
        logger.warning(
            "%s: excluded %d of %d particles (%d NaN/inf, %d constant images)",
            particles_path, bad.count, len(dataset), bad.n_nonfinite, bad.n_constant,
        )  # fmt: skip
        dataset = dataset.without(bad.indices)
    rows = dataset.particle_index
    n_excluded = int(bad.count)

    reference = load_structure(structure_path, topology)
    centre = np.asarray(reference.coords, dtype=np.float64).mean(axis=0)
    extent = 2.0 * float(np.max(np.linalg.norm(np.asarray(reference.coords) - centre, axis=1)))
    if extent > box * pixel:
        raise InputFormatError(
            f"{structure_path}: structure spans {extent:.1f} Å but the box is {box} px x "
            f"{pixel:.3f} Å = {box * pixel:.1f} Å; use a larger box or a smaller structure"
        )
    beads = coarse_grain(reference)
    nodes = np.asarray(beads.coords, dtype=np.float64) - centre
    n_modes = cfg.n_modes if cfg.n_modes > 0 else 3 * beads.n_beads - 6
    modes = anm_modes(nodes, n_modes, cfg.anm_cutoff)
    render = _render_model(reference, beads, cfg.coarse_grained, centre)
    triples, frame_mask = residue_frame_triples(beads.bonded)
    window = FourierWindow.create(box, pixel, cfg.resolution)
    model_cfg = ModelConfig(
        latent_dim=cfg.latent_dim,
        poses=cfg.poses,
        z_prior=cfg.z_prior,
        n_mixture=cfg.n_mixture,
        learn_noise=cfg.learn_noise,
        elastic_weight=cfg.elastic_weight,
        mode_weight=cfg.mode_weight,
        bond_weight=cfg.bond_weight,
        clash_weight=cfg.clash_weight,
        shift_prior_sd=cfg.shift_prior_sd,
    )
    key = jax.random.PRNGKey(cfg.seed)
    k_decoder, k_encoder = jax.random.split(key)
    n_groups = int(np.unique(np.asarray(metadata.optics_group)).size)
    static = ModelStatic(
        x0_nodes=nodes.astype(np.float32),
        mode_vectors=np.asarray(modes.rmsd_scaled_vectors(), dtype=np.float32),
        mode_eigenvalues=np.asarray(modes.eigenvalues, dtype=np.float32),
        render_x0=np.asarray(render["render_x0"], dtype=np.float32),
        render_node=np.asarray(render["render_node"], dtype=np.int32),
        scatterers=render["scatterers"],
        bonded=np.asarray(beads.bonded),
        bond_lengths=ideal_bond_lengths(nodes, beads.bonded),
        clash_pairs=clash_pairs(beads.n_beads, chain_index=np.asarray(beads.chain_index)),
        elastic_pairs=elastic_pairs(nodes, cfg.elastic_cutoff),
        window=window,
        n_particles=int(rows.size),
        noise_sigma=np.ones(n_groups, dtype=np.float32),
        image_scale=np.ones(n_groups, dtype=np.float32),
        frame_triples=triples if cfg.residue_frames else None,
        frame_mask=frame_mask if cfg.residue_frames else None,
        decoder=LatentDecoder(
            cfg.latent_dim,
            n_modes,
            cfg.decoder_hidden,
            key=k_decoder,
            mode_scale=(modes.eigenvalues[0] / modes.eigenvalues) ** cfg.mode_preconditioning,
        ),
    )
    problem = FitProblem(
        cfg=cfg, model_cfg=model_cfg, static=static, guide=None, metadata=metadata,
        dataset=dataset, rows=rows, n_excluded=n_excluded, reference=reference,
        centre=centre, beads=beads,
    )  # fmt: skip
    example = problem.batch(np.arange(min(problem.n_particles, 256)))
    radius_px = 0.5 * extent / pixel
    sigma, scale = initial_noise_and_scale(
        example, static, n_groups, radius_px=radius_px, poses_known=metadata.has_poses
    )
    static = dataclasses.replace(static, noise_sigma=sigma, image_scale=scale)
    guide = build_guide(
        k_encoder, model_cfg, static, example, kind=cfg.encoder_kind,
        hidden=cfg.encoder_hidden, image_size=min(cfg.encoder_image_size, box),
        pose_heads=cfg.pose_heads,
    )  # fmt: skip
    return dataclasses.replace(problem, static=static, guide=guide)


def pretrain_poses(problem: FitProblem) -> FitProblem:
    """The problem with its pose heads pre-trained on simulated reference particles.

    Sleep phase before SVI (``guides.pretrain_pose_encoder``), ``cfg.pose_pretrain_steps``
    steps, CTFs drawn from the dataset; a no-op for fixed poses or 0 steps.
    """
    from atomicspi_bayes.guides import pretrain_pose_encoder
    from atomicspi_bayes.physics.ctf import CTFParams

    cfg = problem.cfg
    if cfg.poses != "amortized" or cfg.pose_pretrain_steps == 0:
        return problem
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 2)
    guide, losses = pretrain_pose_encoder(
        key, problem.guide, CTFParams.from_metadata(problem.dataset.metadata),
        steps=cfg.pose_pretrain_steps, batch_size=64, learning_rate=2e-3,
    )  # fmt: skip
    logger.info(
        "pose heads pre-trained: loss %.3g -> %.3g", losses[:50].mean(), losses[-50:].mean()
    )
    return dataclasses.replace(problem, guide=guide)


# ---------------------------------------------------------------- after training


def encode_all(problem: FitProblem, params: dict) -> dict[str, np.ndarray]:
    """Encoder output for every kept particle, in order (streamed in padded batches).

    Returns ``{"z_mean", "z_sd"}`` ``(N, D)`` and, with amortized poses, ``"rotation_mean"``
    ``(N, 3, 3)``, ``"rotation_sd"`` ``(N, 3)`` rad, ``"shift_mean"``, ``"shift_sd"``
    ``(N, 2)`` Å, ``"head"`` ``(N,)``.
    """
    n, bsz = problem.n_particles, problem.batch_size
    encode = jax.jit(functools.partial(problem.guide.encode, refine_steps=problem.cfg.refine_steps))
    chunks: list = []
    for start in range(0, n, bsz):
        positions = np.arange(start, start + bsz)
        valid = positions < n
        enc = encode(params, problem.batch(np.where(valid, positions, n - 1)))
        chunks.append(jax.tree_util.tree_map(lambda x, v=valid: np.asarray(x)[v], enc))
    out = {
        "z_mean": np.concatenate([c.z_mean for c in chunks]),
        "z_sd": np.concatenate([c.z_sd for c in chunks]),
    }
    if problem.cfg.poses == "amortized":
        out["rotation_mean"] = np.concatenate([c.rotation for c in chunks])
        out["rotation_sd"] = np.concatenate([c.rotation_sd for c in chunks])
        out["shift_mean"] = np.concatenate([c.shift_mean for c in chunks])
        out["shift_sd"] = np.concatenate([c.shift_sd for c in chunks])
        out["head"] = np.concatenate([c.head for c in chunks])
    return out


def grid_posterior(
    problem: FitProblem, params: dict, positions: np.ndarray, z_grid: np.ndarray
) -> np.ndarray:
    """``(n, G)`` exact posterior weights of z on ``z_grid`` (D = 1, poses fixed) per particle.

    The learned globals (decoder, noise, scale) are held fixed; see
    :func:`atomicspi_bayes.model.latent_grid_posterior`.
    """
    from atomicspi_bayes.model import latent_grid_posterior

    fn = jax.jit(
        lambda batch: latent_grid_posterior(
            batch, problem.model_cfg, problem.static, params, jnp.asarray(z_grid)
        )
    )
    positions = np.asarray(positions)
    bsz = problem.batch_size
    out = []
    for start in range(0, positions.size, bsz):
        chunk = positions[start : start + bsz]
        padded = np.concatenate([chunk, np.full(bsz - chunk.size, chunk[-1])])
        out.append(np.asarray(fn(problem.batch(padded)))[: chunk.size])
    return np.concatenate(out)


def nuts_posterior(
    problem: FitProblem,
    params: dict,
    positions: np.ndarray,
    key: jax.Array,
    *,
    num_warmup: int = 300,
    num_samples: int = 300,
    init_z: np.ndarray | None = None,
) -> np.ndarray:
    """``(S, n, D)`` NUTS draws of z for particles ``positions`` with the globals fixed.

    The gold standard for q(z | y): the same model on a full (non-subsampled) plate of the
    ``n`` particles, globals substituted from the SVI ``params`` (poses fixed only). The
    chain starts at ``init_z`` ``(n, D)`` (default: the encoder's means): a per-particle
    posterior can have distant minor modes that one chain started at random does not leave.
    """
    from atomicspi_bayes.inference import run_nuts
    from atomicspi_bayes.model import cryoem_model

    if problem.cfg.poses != "fixed":
        raise ConfigError("NUTS comparison is implemented for poses='fixed' only")
    positions = np.asarray(positions)
    n = positions.size
    static = dataclasses.replace(problem.static, n_particles=n)
    batch = problem.batch(positions)._replace(indices=jnp.arange(n, dtype=jnp.int32))
    if init_z is None:
        init_z = problem.guide.encode(params, batch).z_mean
    fixed = {k: v for k, v in params.items() if not k.startswith("encoder")}
    result = run_nuts(
        key, cryoem_model, batch, problem.model_cfg, static, fixed_params=fixed,
        num_warmup=num_warmup, num_samples=num_samples,
        init_params={"z": jnp.asarray(init_z, dtype=jnp.float32)},
    )  # fmt: skip
    return result.samples["z"][0]


# ---------------------------------------------------------------- run directory


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` did.

    Attributes:
        run_dir: the run directory.
        n_particles: particles fitted (kept).  n_excluded: particles dropped by screening.
        z_mean, z_sd: ``(N, D)`` posterior means and sds of z.
        elbo: ``(T,)`` ELBO per step.
        params: learned global parameters (SVI).
        items_per_s: training throughput (particles per second, after compilation).
        resumed_from: step a resumed run continued from (None: fresh).
        nuts_z_score: with ``nuts_subset``: ``(n, D)`` (mean_SVI - mean_NUTS) / sd_NUTS.
        problem: the :class:`FitProblem` (to decode structures, evaluate posteriors).
    """

    run_dir: Path
    n_particles: int
    n_excluded: int
    z_mean: np.ndarray
    z_sd: np.ndarray
    elbo: np.ndarray
    params: dict
    items_per_s: float
    resumed_from: int | None
    nuts_z_score: np.ndarray | None = None
    problem: FitProblem | None = None


def _star_columns(z_mean: np.ndarray, z_sd: np.ndarray) -> dict[str, np.ndarray]:
    """``atomicspiLatentMean1..D`` and ``atomicspiLatentSd1..D`` columns."""
    return {"atomicspiLatentMean": z_mean, "atomicspiLatentSd": z_sd}


_NOT_FINGERPRINTED = ("resume", "force", "devices", "coordinator", "num_processes", "process_id")
_READER = FitConfig(resume=True)  # run-folder view of processes > 0: never clear, never refuse


def _join_processes(cfg: FitConfig) -> bool:
    """Join the multi-process job of ``cfg`` (if any); True for the process that writes."""
    if cfg.num_processes > 1:
        from atomicspi_bayes.inference import initialize_distributed

        initialize_distributed(cfg.coordinator, cfg.num_processes, cfg.process_id)
    return jax.process_index() == 0


def _mesh_devices(cfg: FitConfig, batch_size: int) -> int:
    """Devices of the SVI mesh: ``cfg.devices``, all global ones in a multi-process job."""
    devices = cfg.devices
    if jax.process_count() > 1 and devices == 1:
        devices = jax.device_count()
    if batch_size % devices:
        raise ConfigError(
            f"batch size {batch_size} is not a multiple of {devices} devices; choose "
            f"--batch-size {max(devices, batch_size - batch_size % devices)} or other --devices"
        )
    return devices


def _process_batch_fn(problem: FitProblem):
    """``problem.batch_fn``, or in a multi-process job this process's rows of each batch."""
    if jax.process_count() == 1:
        return problem.batch_fn
    from atomicspi_bayes.inference import process_slice

    rows = process_slice(problem.batch_size)

    def batch_fn(step: int):
        positions = problem.dataset.batch_indices(problem.cfg.seed, problem.batch_size, step)
        return problem.batch(positions[rows])

    return batch_fn


def fit(
    particles_path: str | Path,
    structure_path: str | Path,
    out_dir: str | Path,
    cfg: FitConfig | None = None,
    *,
    topology: str | Path | None = None,
    progress: bool = False,
) -> FitResult:
    """Fit conformations (and poses) of the particles against the reference structure.

    Args:
        particles_path: RELION ``.star`` or cryoSPARC ``.cs`` with CTF (and poses for
            ``poses="fixed"``).
        structure_path: reference PDB/mmCIF (its coordinates define the model frame).
        out_dir: the run directory (see the module docstring for its contents).
        cfg: settings (default :class:`FitConfig`).
        topology: optional topology (e.g. PSF) giving elements of ``structure_path``.
        progress: show the engine's progress bar.

    Raises:
        InputFormatError, ConfigError: bad inputs or settings (one clear line).
        ConvergenceError: the ELBO became NaN/inf.
        atomicspi_bayes.inference.Interrupted: SIGINT/SIGTERM (a checkpoint was written).
    """
    from atomicspi_bayes.inference import SVIConfig, config_fingerprint, run_svi
    from atomicspi_bayes.io import write_multimodel_pdb

    cfg = cfg if cfg is not None else FitConfig()
    out_dir = Path(out_dir)
    writer = _join_processes(cfg)
    prepare_run_dir(out_dir, cfg if writer else _READER)
    problem = build_problem(particles_path, structure_path, cfg, topology=topology)
    clear_run_dir(out_dir, cfg if writer else _READER)
    n = problem.n_particles
    num_steps = cfg.epochs * problem.steps_per_epoch
    run_facts = {
        "particles": str(Path(particles_path).resolve()),
        "structure": str(Path(structure_path).resolve()),
        "n_particles": n,
        "n_excluded": problem.n_excluded,
        "batch_size_used": problem.batch_size,
        "num_steps": num_steps,
        "n_modes": problem.static.n_modes,
        "n_scored": problem.static.window.n_scored,
    }
    if topology is not None:
        run_facts["topology"] = str(Path(topology).resolve())
    if writer:
        write_fit_config(out_dir / "config.toml", cfg, run_facts)

    svi_cfg = SVIConfig(
        num_steps=num_steps,
        learning_rate=cfg.learning_rate,
        schedule="cosine",
        warmup_steps=min(cfg.warmup_steps, num_steps - 1),
        clip_norm=cfg.grad_clip,
        checkpoint_every=cfg.checkpoint_every,
        progress=progress and writer,
        devices=_mesh_devices(cfg, problem.batch_size),
    )
    numeric = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_FINGERPRINTED}
    fingerprint = config_fingerprint({"fit": numeric, **run_facts})
    key = jax.random.PRNGKey(cfg.seed)
    k_svi, k_draws, k_nuts = jax.random.split(jax.random.fold_in(key, 1), 3)
    if not (cfg.resume and list((out_dir / "checkpoints").glob("ckpt_*.npz"))):
        problem = pretrain_poses(problem)  # a resumed run takes its encoder from the checkpoint
    result = run_svi(
        k_svi, problem.model, problem.guide, _process_batch_fn(problem), svi_cfg,
        checkpoint_dir=out_dir / "checkpoints", resume=cfg.resume, overwrite=cfg.force,
        fingerprint=fingerprint,
    )  # fmt: skip
    params = result.params
    if not writer:  # process 0 encodes the particles and writes every output
        return FitResult(
            run_dir=out_dir, n_particles=n, n_excluded=problem.n_excluded,
            z_mean=np.zeros((0, cfg.latent_dim)), z_sd=np.zeros((0, cfg.latent_dim)),
            elbo=-np.asarray(result.losses, dtype=np.float64), params=params,
            items_per_s=result.items_per_s, resumed_from=result.resumed_from, problem=problem,
        )  # fmt: skip
    elbo = -np.asarray(result.losses, dtype=np.float64)

    enc = encode_all(problem, params)
    # the reported posterior; its draws are made and written a block at a time (outputs)
    post = streamed_posterior(k_draws, problem, params, enc, kind=cfg.posterior,
                              n_draws=cfg.n_draws)  # fmt: skip
    z_mean, z_sd = post.z_mean, post.z_sd
    pose_q = {k: enc[k] for k in ("rotation_mean", "rotation_sd", "shift_mean", "shift_sd")
              if cfg.poses == "amortized"}  # fmt: skip

    save_npy_atomic(out_dir / "elbo.npy", elbo)
    write_posterior_nc(out_dir / "posterior.nc", post, problem.rows, elbo)
    star_meta = _kept_metadata(problem, enc)
    write_star_chunked(out_dir / "particles.star", star_meta, _star_columns(z_mean, z_sd))
    decoded = problem.decode(params, ensemble_latents(z_mean, cfg.n_ensemble))
    write_multimodel_pdb(
        out_dir / "ensemble.pdb", problem.reference, problem.all_atom_coords(decoded)
    )
    truth = Path(particles_path).parent / "truth.npz"
    if truth.is_file():
        copy_file_atomic(truth, out_dir / "truth.npz")

    nuts_z = None
    if cfg.nuts_subset:
        subset = np.arange(min(cfg.nuts_subset, n))
        draws = nuts_posterior(problem, params, subset, k_nuts)
        nuts_mean, nuts_sd = draws.mean(axis=0), draws.std(axis=0)
        nuts_z = (z_mean[subset] - nuts_mean) / nuts_sd
        save_npz_atomic(
            out_dir / "nuts.npz", particle_index=problem.rows[subset], z_draws=draws,
            svi_z_mean=z_mean[subset], svi_z_sd=z_sd[subset],
        )  # fmt: skip
    write_latents(out_dir / "latents.npz", post, problem.rows, pose_q)
    logger.info("fit finished: %d particles, final ELBO %.6g", n, elbo[-1])
    return FitResult(
        run_dir=out_dir, n_particles=n, n_excluded=problem.n_excluded, z_mean=z_mean,
        z_sd=z_sd, elbo=elbo, params=params, items_per_s=result.items_per_s,
        resumed_from=result.resumed_from, nuts_z_score=nuts_z, problem=problem,
    )  # fmt: skip


def _kept_metadata(problem: FitProblem, enc: dict[str, np.ndarray]):
    """Input metadata restricted to the kept particles (+ refined poses when amortized)."""
    meta = problem.dataset.metadata
    if problem.cfg.poses == "amortized":
        meta = dataclasses.replace(
            meta,
            rotations=enc["rotation_mean"].astype(np.float32),
            shifts=enc["shift_mean"].astype(np.float32),
        )
    return meta
