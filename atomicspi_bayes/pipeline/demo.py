"""The end-to-end demo on the embedded default: adenylate kinase from MDAnalysisTests.

Stages (each skipped when its output already exists, so an interrupted demo resumes):

1. ``simulate``: particles from the real DIMS open->closed trajectory of AdK (adk.psf +
   adk_dims.dcd, shipped by MDAnalysisTests), frames drawn with double-well populations
   along the path (known truth).
2. ``fit``: the atomic latent model with poses fixed from the STAR file.
3. ``fit-amortized``: the same with poses inferred by the encoder (full demo only).
4. ``landscape``: F(z) with a 5/50/95 % band and state populations.
5. ``kinetics``: Smoluchowski rate matrix -> MSM, MFPT and timescales with intervals.
6. ``calibrate``: simulation-based calibration of the amortized posterior.
7. ``report``: DIR/report.html.

Glue only: every number comes from the library functions the CLI commands call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from atomicspi_bayes.atomic_files import write_text_atomic
from atomicspi_bayes.errors import MissingDependencyError

log = logging.getLogger(__name__)

STAGES = ("simulate", "fit", "fit-amortized", "landscape", "kinetics", "calibrate", "report")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo.

    Attributes:
        n_particles: particles simulated.
        box, pixel_size: image side in px and Å per pixel.
        snr: whole-box signal-to-noise ratio of the particles.
        barrier_kT: barrier of the double well over the path position, in kT.
        tilt_kT: F(closed end) - F(open end) in kT (makes the populations unequal).
        epochs: SVI passes over the particles (poses fixed).
        amortized_epochs: passes for the amortized-pose fit (0 skips that stage).
        pose_pretrain_steps: sleep-phase steps of the pose heads before that fit.
        n_calibration: simulated draws for SBC (0 skips calibration).
        coarse_grained: fit with one bead per residue (translated with its Cα), the model
            the README's headline numbers were measured with: half the cost of the all-atom
            rendering with residue frames that ``atomicspi fit`` uses by default (which gives
            better Cα positions, benchmarks/fit_accuracy.py; the landscape does not need them).
        seed: one seed for every stage.
    """

    n_particles: int = 2000
    box: int = 64
    pixel_size: float = 2.0
    snr: float = 0.1
    barrier_kT: float = 3.0
    tilt_kT: float = 0.8
    epochs: int = 20
    amortized_epochs: int = 10
    pose_pretrain_steps: int = 3000
    n_calibration: int = 500
    coarse_grained: bool = True
    seed: int = 0

    @classmethod
    def quick(cls) -> DemoConfig:
        """A CI-sized demo (well under two minutes on two cores)."""
        return cls(n_particles=600, epochs=8, amortized_epochs=0, n_calibration=100)


def embedded_adk() -> dict[str, Path]:
    """Paths of the adenylate-kinase files shipped by MDAnalysisTests (no download)."""
    try:
        from MDAnalysisTests import datafiles
    except ImportError as exc:  # a runtime dependency; a broken install says so
        raise MissingDependencyError(
            "the demo data come from MDAnalysisTests: pip install MDAnalysisTests"
        ) from exc
    return {
        "topology": Path(datafiles.PSF),
        "trajectory": Path(datafiles.DCD),
        "open": Path(datafiles.PDB_small),
        "closed": Path(datafiles.PDB_closed),
    }


def double_well(path_position: np.ndarray, barrier_kT: float, tilt_kT: float) -> np.ndarray:
    """F(s) in kT over the path position s in [0, 1]: wells near s = 0.2 and 0.8.

    F(s) = barrier · (1 - u²)² + tilt · s with u = (s - 0.5)/0.3, so F(0.5) - F(0.2) equals
    the barrier (up to the tilt) and the closed-side well is raised by about ``tilt_kT``.
    """
    u = (np.asarray(path_position, dtype=np.float64) - 0.5) / 0.3
    return barrier_kT * (1.0 - u**2) ** 2 + tilt_kT * path_position


def write_open_reference(data: dict[str, Path], path: Path) -> None:
    """Write the open end of the trajectory in the frame the simulated poses refer to.

    The simulator superposes every frame on frame 0 (Kabsch on Cα) and centres it on frame 0's
    centroid, so a PDB in another frame (adk_open.pdb) would make every fixed pose wrong.
    The open end is the reference because ANM modes of open AdK describe its closure well.
    """
    from atomicspi_bayes.io import load_trajectory, write_multimodel_pdb
    from atomicspi_bayes.synthetic import align_frames

    model, frames = load_trajectory(data["trajectory"], data["topology"])
    aligned, centre = align_frames(frames, model.ca_indices)
    write_multimodel_pdb(path, model, aligned[-1] + centre)


def frame_weights(n_frames: int, cfg: DemoConfig) -> np.ndarray:
    """(F,) Boltzmann weights exp(-F(s_f)) of the trajectory frames, s_f = f/(F-1)."""
    s = np.arange(n_frames) / max(n_frames - 1, 1)
    w = np.exp(-double_well(s, cfg.barrier_kT, cfg.tilt_kT))
    return w / w.sum()


@dataclass(frozen=True)
class DemoSummary:
    """Headline numbers of a finished demo."""

    report: Path
    spearman_rho: float
    population_open_true: float
    population_open_estimate: tuple[float, float, float]
    mfpt: tuple[float, float, float] | None
    mfpt_unit: str = ""
    amortized_rotation_error_deg: float | None = None

    def as_dict(self) -> dict:
        return {
            "report": str(self.report),
            "spearman_rho_latent_vs_truth": self.spearman_rho,
            "population_open_true": self.population_open_true,
            "population_open_estimate_5_50_95": list(self.population_open_estimate),
            "population_error": abs(self.population_open_estimate[1] - self.population_open_true),
            "mfpt_open_to_closed_5_50_95": None if self.mfpt is None else list(self.mfpt),
            "mfpt_unit": self.mfpt_unit,
            "amortized_median_rotation_error_deg": self.amortized_rotation_error_deg,
        }


def _done(path: Path) -> bool:
    return path.exists()


def run_demo(
    out_dir: str | Path,
    cfg: DemoConfig | None = None,
    *,
    on_stage: Callable[[str, bool], None] | None = None,
    progress: bool = True,
) -> DemoSummary:
    """Run (or resume) every demo stage in ``out_dir`` and return the headline numbers.

    Args:
        out_dir: demo folder; finished stages found there are skipped.
        cfg: sizes (default :class:`DemoConfig`; :meth:`DemoConfig.quick` for CI).
        on_stage: ``callback(stage, skipped)`` called before each stage (for progress).
        progress: show the fit's progress bar.
    """
    import jax

    from atomicspi_bayes.kinetics import KineticsConfig, kinetics_from_landscape
    from atomicspi_bayes.landscape import LandscapeConfig, landscape_from_run
    from atomicspi_bayes.pipeline.fit import FitConfig, fit
    from atomicspi_bayes.report.html import write_report
    from atomicspi_bayes.synthetic import CryoEMDatasetConfig, simulate_cryoem_dataset

    cfg = cfg if cfg is not None else DemoConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = embedded_adk()
    sim_dir, run_dir = out / "particles", out / "run"
    notify = on_stage or (lambda stage, skipped: None)

    stage_done = _done(sim_dir / "truth.npz")
    notify("simulate", stage_done)
    if not stage_done:
        import mdtraj

        n_frames = mdtraj.load(str(data["trajectory"]), top=str(data["topology"])).n_frames
        simulate_cryoem_dataset(
            jax.random.key(cfg.seed),
            data["topology"],
            sim_dir,
            CryoEMDatasetConfig(
                n_particles=cfg.n_particles,
                box=cfg.box,
                pixel_size=cfg.pixel_size,
                snr=cfg.snr,
            ),
            trajectory_path=data["trajectory"],
            weights=frame_weights(n_frames, cfg),
            force=True,
        )

    reference = sim_dir / "reference_open.pdb"
    if not reference.exists():
        write_open_reference(data, reference)
    fit_cfg = FitConfig(
        epochs=cfg.epochs,
        seed=cfg.seed,
        resume=True,
        coarse_grained=cfg.coarse_grained,
        residue_frames=not cfg.coarse_grained,
    )
    stage_done = _done(run_dir / "latents.npz")
    notify("fit", stage_done)
    if not stage_done:
        fit(
            sim_dir / "particles.star",
            reference,
            run_dir,
            fit_cfg,
            topology=data["topology"],
            progress=progress,
        )

    if cfg.amortized_epochs > 0:
        amortized_dir = out / "run_amortized"
        stage_done = _done(amortized_dir / "latents.npz")
        notify("fit-amortized", stage_done)
        if not stage_done:
            fit(
                sim_dir / "particles.star",
                reference,
                amortized_dir,
                # the pose fit reports the encoder's q: importance refinement of amortized
                # poses mostly falls back to q at this SNR (ESS < 10) and costs minutes
                replace(
                    fit_cfg,
                    poses="amortized",
                    epochs=cfg.amortized_epochs,
                    pose_pretrain_steps=cfg.pose_pretrain_steps,
                    posterior="amortized",
                ),
                topology=data["topology"],
                progress=progress,
            )

    landscape_dir = run_dir / "landscape"
    stage_done = _done(landscape_dir / "landscape.npz")
    notify("landscape", stage_done)
    if not stage_done:
        landscape_from_run(run_dir, landscape_dir, LandscapeConfig(seed=cfg.seed))

    kinetics_dir = run_dir / "kinetics"
    stage_done = _done(kinetics_dir / "kinetics.json")
    notify("kinetics", stage_done)
    if not stage_done:
        kinetics_from_landscape(landscape_dir / "landscape.npz", kinetics_dir, KineticsConfig())

    if cfg.n_calibration > 0:
        calibration_dir = run_dir / "calibration"
        stage_done = _done(calibration_dir / "sbc.json")
        notify("calibrate", stage_done)
        if not stage_done:
            from atomicspi_bayes.diagnostics import calibrate_run
            from atomicspi_bayes.pipeline.runs import load_fitted_run

            problem, params = load_fitted_run(run_dir)
            calibrate_run(run_dir, problem, params, n_sims=cfg.n_calibration, seed=cfg.seed)

    report = run_dir / "report.html"
    stage_done = _done(report) and all(
        report.stat().st_mtime_ns >= path.stat().st_mtime_ns
        for path in run_dir.rglob("*")
        if path.is_file() and path.suffix in {".npz", ".json", ".nc"}
    )
    notify("report", stage_done)
    if not stage_done:
        report = write_report(run_dir)
    summary = summarize(run_dir, report)
    write_text_atomic(out / "summary.json", json.dumps(summary.as_dict(), indent=2) + "\n")
    return summary


def summarize(run_dir: Path, report: Path) -> DemoSummary:
    """Headline numbers: latent vs truth, open-state population, MFPT between the states.

    The open population is read off the landscape posterior: the latent axis is split halfway
    between the median z of the truly-open and truly-closed particles (the sign of z is
    arbitrary), and p = exp(-F) is summed over the open side for every posterior draw of F.
    """
    from scipy.stats import spearmanr

    latents = np.load(run_dir / "latents.npz")
    truth = np.load(run_dir / "truth.npz")
    z = latents["z_mean"][:, 0]
    s_true = truth["path_position"][latents["particle_index"]]
    rho = float(spearmanr(z, s_true).statistic)

    is_open = s_true < 0.5
    z_open, z_closed = np.median(z[is_open]), np.median(z[~is_open])
    boundary = 0.5 * (z_open + z_closed)
    landscape = np.load(run_dir / "landscape" / "landscape.npz")
    centers = landscape["bin_centers_0"]
    open_bins = centers < boundary if z_open < boundary else centers > boundary
    p = np.exp(-np.nan_to_num(landscape["free_energy_samples"], nan=np.inf))
    p_open = p[:, open_bins].sum(axis=1) / p.sum(axis=1)
    estimate = tuple(float(v) for v in np.quantile(p_open, [0.05, 0.5, 0.95]))

    mfpt, unit = None, ""
    kinetics_path = run_dir / "kinetics" / "kinetics.json"
    if kinetics_path.exists():
        kinetics = json.loads(kinetics_path.read_text())
        unit = kinetics.get("time_unit", "")
        # the open state is the one whose free-energy minimum lies on the open side
        minima = {s["id"]: s["minimum"][0] for s in kinetics["states"]}
        on_open_side = {i: (m < boundary) == (z_open < boundary) for i, m in minima.items()}
        for entry in kinetics["mfpt"]:
            if on_open_side[entry["from"]] and not on_open_side[entry["to"]]:
                mfpt = (entry["p05"], entry["p50"], entry["p95"])
                break
    rotation_error = None
    amortized = run_dir.parent / "run_amortized" / "latents.npz"
    if amortized.exists():
        rotation_error = median_rotation_error_deg(amortized, run_dir / "truth.npz")
    return DemoSummary(report, rho, float(is_open.mean()), estimate, mfpt, unit, rotation_error)


def median_rotation_error_deg(latents_path: Path, truth_path: Path) -> float:
    """Median angle (degrees) between inferred and true poses after one global alignment."""
    from atomicspi_bayes.physics.geometry import align_rotation_sets, geodesic_angle

    latents, truth = np.load(latents_path), np.load(truth_path)
    true = truth["rotations"][latents["particle_index"]].astype(np.float32)
    aligned = align_rotation_sets(latents["rotation_mean"].astype(np.float32), true)
    return float(np.degrees(np.median(np.asarray(geodesic_angle(aligned, true)))))
