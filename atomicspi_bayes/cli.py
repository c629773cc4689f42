"""The ``atomicspi`` command line: parse options, call one library function, write outputs.

No numerics here. Every user-facing failure is an :class:`AtomicspiError`; :func:`main`
prints it as one line on stderr and exits with code 2.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from atomicspi_bayes.errors import AtomicspiError

app = typer.Typer(
    name="atomicspi",
    help="Atomic models, poses and conformational landscapes from single-particle images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


@app.callback()
def _root() -> None:
    """Atomic models, poses and conformational landscapes from single-particle images."""


def main() -> None:
    """Console-script entry point: run the app, turn :class:`AtomicspiError` into exit 2.

    Typer's standalone mode already turns usage errors into exit 2 and Ctrl-C into 130.
    """
    try:
        app()
    except AtomicspiError as exc:
        # one line whatever the message holds (third-party text can carry newlines)
        err_console.print(f"error: {' '.join(str(exc).split())}", markup=False, highlight=False)
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in _OS_ERROR_HINTS:
            raise  # anything else is a bug: keep its traceback
        err_console.print(f"error: {_os_error_line(exc)}", markup=False, highlight=False)
        sys.exit(2)


# Operating-system errors that are facts about the user's disk or paths, not bugs: one line.
_OS_ERROR_HINTS = {
    errno.ENOSPC: "free some space or choose another output folder",
    errno.EDQUOT: "free some space or choose another output folder",
    errno.EFBIG: "choose another output folder",
    errno.EROFS: "choose a writable output folder",
    errno.EACCES: "check the permissions or choose another folder",
    errno.EPERM: "check the permissions or choose another folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "give a file, not a folder",
    errno.EEXIST: "choose another --out",
    errno.ENAMETOOLONG: "use a shorter path",
}


def _os_error_line(exc: OSError) -> str:
    """``OSError`` as one line: the path, the system's reason and what to do."""
    where = exc.filename if exc.filename is not None else "output"
    reason = " ".join(str(exc.strerror or exc).split())
    return f"{where}: {reason}; {_OS_ERROR_HINTS[exc.errno]}"


def _checked_seed(value: int | None) -> int | None:
    """``--seed`` callback: NumPy needs a seed >= 0 and JAX one that fits 64 bits."""
    if value is not None and not 0 <= value < 2**63:
        from atomicspi_bayes.errors import ConfigError

        raise ConfigError(f"--seed {value}: use an integer in 0..{2**63 - 1}")
    return value


def _refuse_overwrite(paths: list[Path], force: bool) -> None:
    """Exit 2 before any work when an earlier result would be overwritten without --force."""
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        from atomicspi_bayes.errors import ConfigError

        raise ConfigError(
            f"{existing[0]} exists (an earlier result); pass --force to overwrite it or "
            "choose another --out"
        )


# ---- commands -------------------------------------------------------------------------
# Each command lives in its own section below; keep them thin (parse, call, write).


@app.command()
def version() -> None:
    """Print the package version."""
    from atomicspi_bayes import __version__

    console.print(__version__)


# ---- report ---------------------------------------------------------------------------


@app.command()
def report(
    run: Path = typer.Argument(..., help="Run folder written by `atomicspi fit`."),
    out: Path = typer.Option(None, "--out", help="Output HTML file (default RUN/report.html)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing report."),
) -> None:
    """Write RUN/report.html: one self-contained page with every figure of the run."""
    from atomicspi_bayes.report import write_report

    _refuse_overwrite([out if out is not None else run / "report.html"], force)
    path = write_report(run, out)
    console.print(f"report: {path}")


# ---- inspect --------------------------------------------------------------------------


@app.command()
def inspect(
    path: Path = typer.Argument(..., help="Particles (.star/.cs), images (.mrc/.mrcs) or model."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object."),
    allow_outside_paths: bool = typer.Option(
        False, "--allow-outside-paths", help="Accept image paths outside the file's folder."
    ),
) -> None:
    """Summarise a particle, image-stack or structure file."""
    import json

    from atomicspi_bayes.io.summary import summarize

    info = summarize(path, allow_outside_paths=allow_outside_paths)
    if as_json:
        typer.echo(json.dumps(info))
        return
    from rich.table import Table

    table = Table(title=f"{path} ({info['kind']})", show_header=False)
    for key, value in info.items():
        if key != "kind":
            table.add_row(key.replace("_", " "), "unknown" if value is None else str(value))
    console.print(table)


# ---- fit ------------------------------------------------------------------------------


def _restart_with_fixed_hash_seed() -> None:
    """Re-run this command with ``PYTHONHASHSEED=0`` (same process id): every process of a
    multi-process job must trace the same program (see ``inference.parallel``)."""
    argv = [sys.executable, "-m", "atomicspi_bayes.cli", *sys.argv[1:]]
    os.execve(sys.executable, argv, {**os.environ, "PYTHONHASHSEED": "0"})


@app.command()
def fit(
    particles: Path = typer.Argument(..., help="Particles with CTF (.star or .cs)."),
    structure: Path = typer.Option(..., "--structure", help="Reference model (.pdb/.cif)."),
    out: Path = typer.Option(..., "--out", help="Run folder to write."),
    config: Path = typer.Option(None, "--config", help="TOML recipe (e.g. models/X.toml)."),
    topology: Path = typer.Option(None, "--topology", help="Topology (PSF) for elements."),
    latent_dim: int = typer.Option(None, "--latent-dim", help="Dimension D of z."),
    poses: str = typer.Option(None, "--poses", help="fixed (from the file) or amortized."),
    epochs: int = typer.Option(None, "--epochs", help="Passes over the particles."),
    batch_size: int = typer.Option(None, "--batch-size", help="Particles per step."),
    coarse_grained: bool = typer.Option(
        None, "--coarse-grained/--all-atom", help="Residue beads or all atoms in the image."
    ),
    n_modes: int = typer.Option(None, "--n-modes", help="ANM modes driven by the decoder."),
    resolution: float = typer.Option(None, "--resolution", help="Å, highest frequency fitted."),
    seed: int = typer.Option(None, "--seed", help="Random seed.", callback=_checked_seed),
    modality: str = typer.Option("cryoem", "--modality", help="cryoem or xray (photons)."),
    posterior: str = typer.Option(
        None, "--posterior", help="refined (per-particle exact/IS, default) or amortized."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN/checkpoints."),
    force: bool = typer.Option(False, "--force", help="Overwrite a finished run."),
    progress: bool = typer.Option(True, "--progress/--quiet", help="Show a progress bar."),
    devices: int = typer.Option(None, "--devices", help="Devices sharing each batch."),
    coordinator: str = typer.Option(
        None, "--coordinator", help="host:port of process 0 (multi-process job)."
    ),
    num_processes: int = typer.Option(None, "--num-processes", help="Processes in the job."),
    process_id: int = typer.Option(None, "--process-id", help="This process's rank (0..P-1)."),
) -> None:
    """Fit conformations (and poses) of particle images to an atomic reference by SVI."""
    from atomicspi_bayes.inference import Interrupted, enable_compilation_cache
    from atomicspi_bayes.pipeline import FitConfig, read_fit_config
    from atomicspi_bayes.pipeline import fit as run_fit

    cfg = read_fit_config(config) if config is not None else FitConfig()
    cfg = cfg.replace(
        latent_dim=latent_dim, poses=poses, epochs=epochs, batch_size=batch_size,
        coarse_grained=coarse_grained, n_modes=n_modes, resolution=resolution, seed=seed,
        posterior=posterior, resume=resume or None, force=force or None, devices=devices,
        coordinator=coordinator,
        num_processes=num_processes, process_id=process_id,
    )  # fmt: skip
    if cfg.num_processes > 1 and "PYTHONHASHSEED" not in os.environ:
        _restart_with_fixed_hash_seed()
    if cfg.num_processes == 1:  # a multi-process job compiles its own (cross-process) steps
        enable_compilation_cache()
    if modality == "xray":
        _fit_xray(particles, structure, out, cfg, config, topology, progress)
        return
    if modality != "cryoem":
        from atomicspi_bayes.errors import ConfigError

        raise ConfigError(f"--modality {modality!r}: choose cryoem or xray")
    try:
        result = run_fit(particles, structure, out, cfg, topology=topology, progress=progress)
    except Interrupted as exc:
        err_console.print(f"stopped: {exc}", markup=False, highlight=False)
        raise typer.Exit(code=exc.exit_code) from None
    if result.n_excluded:
        err_console.print(
            f"warning: {result.n_excluded} particles with NaN/inf or constant images were "
            "excluded", markup=False, highlight=False,
        )  # fmt: skip
    wrote = f"wrote {result.run_dir}" if cfg.process_id == 0 else "process 0 writes the run"
    console.print(
        f"fit: {result.n_particles} particles, ELBO {result.elbo[0]:.6g} -> "
        f"{result.elbo[-1]:.6g}, {result.items_per_s:.0f} particles/s; {wrote}"
    )


# ---- simulate -------------------------------------------------------------------------


@app.command()
def simulate(
    structure: Path = typer.Argument(
        ..., help="PDB/mmCIF, or the topology (PSF...) of --trajectory."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    trajectory: Path = typer.Option(None, "--trajectory", help="MD trajectory (frames)."),
    topology: Path = typer.Option(None, "--topology", help="Topology (PSF) for elements."),
    weights: Path = typer.Option(None, "--weights", help="Per-frame weights (.npy or text)."),
    n: int = typer.Option(1000, "--n", help="Number of particles."),
    box: int = typer.Option(128, "--box", help="Box size L in pixels."),
    pixel_size: float = typer.Option(1.0, "--pixel-size", help="Pixel size in Å."),
    snr: float = typer.Option(None, "--snr", help="Whole-box SNR per image (default 0.1)."),
    noise_free: bool = typer.Option(False, "--noise-free", help="Write noise-free images."),
    defocus_min: float = typer.Option(10000.0, "--defocus-min", help="Mean defocus min, Å."),
    defocus_max: float = typer.Option(25000.0, "--defocus-max", help="Mean defocus max, Å."),
    b_factor: float = typer.Option(0.0, "--b-factor", help="Atomic B-factor in Å² (all atoms)."),
    shift_sd: float = typer.Option(0.0, "--shift-sd", help="SD of origin shifts in Å."),
    coarse_grained: bool = typer.Option(False, "--coarse-grained", help="Residue beads."),
    modality: str = typer.Option("cryoem", "--modality", help="cryoem or xray."),
    energy: float = typer.Option(None, "--energy", help="xray: photon energy, keV (6)."),
    distance: float = typer.Option(None, "--distance", help="xray: detector distance, mm (100)."),
    detector_pixel: float = typer.Option(
        None, "--detector-pixel", help="xray: pixel pitch, µm (200·128/box)."
    ),
    beam_stop: float = typer.Option(
        None, "--beam-stop", help="xray: beam-stop radius, pixels (2·box/128)."
    ),
    fluence: float = typer.Option(
        None, "--fluence", help="xray: photons/µm² per pulse (1e14: 1e12 in a 100 nm focus)."
    ),
    background: float = typer.Option(
        None, "--background", help="xray: mean background photons per pixel (0)."
    ),
    seed: int = typer.Option(
        0, "--seed", help="Random seed (same seed, same files).", callback=_checked_seed
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing dataset."),
) -> None:
    """Simulate particles with ground truth: DIR/particles.star, particles.mrcs, truth.npz.

    X-ray (``--modality xray``): diffraction patterns of the structure on a square detector
    (``--box`` pixels; ``--energy``, ``--distance``, ``--detector-pixel``, ``--beam-stop``),
    Poisson photons at ``--fluence``, all atoms unless ``--coarse-grained``.
    """
    import jax
    from rich.progress import MofNCompleteColumn, Progress, TimeRemainingColumn

    from atomicspi_bayes.errors import ConfigError

    if noise_free and snr is not None:
        raise ConfigError("--snr and --noise-free exclude each other; give one of them")
    xray_options = {
        "--energy": energy, "--distance": distance, "--detector-pixel": detector_pixel,
        "--beam-stop": beam_stop, "--fluence": fluence, "--background": background,
    }  # fmt: skip
    if modality == "xray":
        import dataclasses

        from atomicspi_bayes.synthetic.xray import (
            XrayDatasetConfig,
            default_xray_geometry,
            simulate_xray_dataset,
        )

        if (out / "particles.star").exists() and not force:
            raise ConfigError(f"{out / 'particles.star'} exists; use another --out or --force")
        geometry = default_xray_geometry(box)
        given = {
            "photon_energy_kev": energy, "distance_mm": distance,
            "pixel_size_um": detector_pixel, "beam_stop_radius_px": beam_stop,
        }  # fmt: skip
        geometry = dataclasses.replace(
            geometry, **{k: v for k, v in given.items() if v is not None}
        )
        beam = {  # photons/µm² -> photons/Å²; unset ones keep XrayDatasetConfig's defaults
            "fluence_photons_per_angstrom2": None if fluence is None else fluence / 1e8,
            "background_photons_per_pixel": background,
        }
        xcfg = XrayDatasetConfig(
            n_patterns=n, geometry=geometry, noise_free=noise_free, b_factor=b_factor,
            coarse_grained=coarse_grained,
            **{k: v for k, v in beam.items() if v is not None},
        )  # fmt: skip
        summary = simulate_xray_dataset(jax.random.key(seed), structure, out, xcfg, trajectory)
        console.print(
            f"simulate: {n} X-ray patterns in {out}, "
            f"{summary['mean_photons_per_pattern']:.0f} photons/pattern"
        )
        return
    if modality != "cryoem":
        raise ConfigError(f"--modality {modality!r}: choose cryoem or xray")
    for name, value in xray_options.items():
        if value is not None:
            raise ConfigError(f"{name} applies to --modality xray only")
    from atomicspi_bayes.synthetic import CryoEMDatasetConfig, simulate_cryoem_dataset

    cfg = CryoEMDatasetConfig(
        n_particles=n, box=box, pixel_size=pixel_size,
        snr=None if noise_free else (0.1 if snr is None else snr),
        defocus_min=defocus_min, defocus_max=defocus_max, b_factor=b_factor,
        shift_sd=shift_sd, coarse_grained=coarse_grained,
    )  # fmt: skip
    columns = (*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeRemainingColumn())
    bar = Progress(*columns, console=err_console, transient=True)
    task = bar.add_task("simulating particles", total=n)

    started = []

    def on_chunk(done: int, total: int) -> None:
        if not started:  # only once rendering begins: input errors stay one clean line
            bar.start()
            started.append(True)
        bar.update(task, completed=done)

    try:
        summary = simulate_cryoem_dataset(
            jax.random.key(seed), structure, out, cfg, trajectory_path=trajectory,
            topology_path=topology, weights=weights, force=force, progress=on_chunk,
        )  # fmt: skip
    finally:
        if started:
            bar.stop()
    console.print(
        f"simulate: {n} particles ({summary['representation']}, {box}² px at {pixel_size} Å, "
        f"SNR {'inf' if summary['snr'] is None else summary['snr']}) in {out}"
    )


# ---- diagnose / calibrate -------------------------------------------------------------


def _fitted_run(run: Path):
    """A finished run's rebuilt problem and learned params (see pipeline.runs)."""
    from atomicspi_bayes.pipeline.runs import load_fitted_run

    return load_fitted_run(run)


@app.command()
def diagnose(
    run: Path = typer.Argument(..., help="Run folder written by `atomicspi fit`."),
    ppc: bool = typer.Option(True, "--ppc/--no-ppc", help="Posterior predictive checks."),
    ppc_n: int = typer.Option(1000, "--ppc-n", help="Particles checked by the PPC (0 = all)."),
    ppc_draws: int = typer.Option(16, "--ppc-draws", help="Posterior draws per particle."),
    gap: int = typer.Option(0, "--gap", help="Particles in the amortization-gap table."),
    gap_method: str = typer.Option("auto", "--gap-method", help="auto, grid or nuts."),
    fsc: bool = typer.Option(True, "--fsc/--no-fsc", help="Half-set FSC of the ensembles."),
    seed: int = typer.Option(0, "--seed", help="Random seed.", callback=_checked_seed),
) -> None:
    """ESS/R-hat or posterior-width tables, PPC, amortization gap, FSC -> RUN/diagnostics/."""
    from atomicspi_bayes.diagnostics import DiagnoseOptions, diagnose_run, summary_tables

    options = DiagnoseOptions(
        ppc=ppc, ppc_n=ppc_n, ppc_draws=ppc_draws, gap=gap, gap_method=gap_method, fsc=fsc,
        seed=seed,
    )  # fmt: skip
    needs_model = ppc or gap > 0 or fsc
    problem, params = _fitted_run(run) if needs_model else (None, None)
    result = diagnose_run(run, problem, params, options)
    for table in summary_tables(result["summary"]):
        console.print(table)
    for note in result["summary"].notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    if result["ppc"] is not None:
        p = result["ppc"]
        console.print(
            f"PPC: {p.positions.size} particles, median χ²/dof "
            f"{sorted(p.chi2_per_dof)[p.chi2_per_dof.size // 2]:.4f}, "
            f"{int(p.flagged.sum())} flagged (outlier score > {p.threshold:.3g})"
        )
    if result["gap"] is not None:
        s = result["gap"].summary
        console.print(
            f"amortization gap ({s['method']}, {s['n_particles']} particles): median "
            f"|shift| {s['median_abs_mean_shift_sd']:.3f} sd, median sd ratio "
            f"{s['median_sd_ratio']:.3f}, reference mass in q's 90 % interval "
            f"{s['mean_ref_mass_in_q90']:.3f}"
        )
    if result["fsc"] is not None:
        f = result["fsc"]
        where = (
            f"{f.resolution:.2f} Å at 0.143"
            if f.resolution == f.resolution  # not NaN
            else f"above 0.143 up to Nyquist ({2 * f.voxel_size:.2f} Å)"
        )
        console.print(f"half-set FSC of the posterior-mean ensembles: {where}")
    console.print(f"diagnose: wrote {len(result['paths'])} files to {run / 'diagnostics'}")


@app.command()
def calibrate(
    run: Path = typer.Argument(..., help="Run folder written by `atomicspi fit`."),
    n: int = typer.Option(1000, "--n", help="Simulated particles (SBC tests)."),
    draws: int = typer.Option(99, "--draws", help="Posterior draws per simulation."),
    seed: int = typer.Option(0, "--seed", help="Random seed.", callback=_checked_seed),
    guide_scale: float = typer.Option(
        None, "--guide-scale", help="Shrink the posterior spread (0.5: a miscalibrated check)."
    ),
) -> None:
    """Simulation-based calibration of the run's reported posterior -> RUN/calibration/."""
    from rich.table import Table

    from atomicspi_bayes.diagnostics import calibrate_run

    problem, params = _fitted_run(run)
    result, paths = calibrate_run(
        run, problem, params, n_sims=n, n_draws=draws, seed=seed, guide_scale=guide_scale
    )
    table = Table(title=f"SBC: {result.n_sims} simulations, {result.n_draws} draws each")
    for col in ("coordinate", "KS p", "χ² p", "50 % cover", "90 % cover", "contraction"):
        table.add_column(col, justify="right")
    for name in result.names:
        table.add_row(
            name, f"{result.ks_pvalue[name]:.3g}", f"{result.chi2_pvalue[name]:.3g}",
            f"{result.coverage[0.5][name]:.3f}", f"{result.coverage[0.9][name]:.3f}",
            f"{result.contraction[name]:.3f}",
        )  # fmt: skip
    console.print(table)
    verdict = "calibrated" if result.passes() else "NOT calibrated"
    console.print(f"calibrate: {verdict}; wrote {len(paths)} files to {run / 'calibration'}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Demo folder (resumable)."),
    quick: bool = typer.Option(False, "--quick", help="CI-sized run (about two minutes)."),
    seed: int = typer.Option(0, "--seed", help="Random seed.", callback=_checked_seed),
) -> None:
    """Simulate AdK particles, fit, landscape, kinetics, calibration, report (no downloads)."""
    import dataclasses
    import json
    import time

    from atomicspi_bayes.pipeline.demo import DemoConfig, run_demo

    cfg = DemoConfig.quick() if quick else DemoConfig()
    cfg = dataclasses.replace(cfg, seed=seed)
    start = time.perf_counter()

    def on_stage(stage: str, skipped: bool) -> None:
        state = "done already, skipped" if skipped else "running"
        console.print(f"[bold]demo[/bold] {stage}: {state}  ({time.perf_counter() - start:.0f} s)")

    summary = run_demo(out, cfg, on_stage=on_stage, progress=True).as_dict()
    console.print(f"demo finished in {time.perf_counter() - start:.0f} s")
    console.print(json.dumps(summary, indent=2), markup=False, highlight=False)
    console.print(f"report: {summary['report']}")


# ---- landscape / kinetics -------------------------------------------------------------


@app.command()
def landscape(
    run: Path = typer.Argument(..., help="Run folder with latents.npz (from `atomicspi fit`)."),
    out: Path = typer.Option(None, "--out", help="Output folder (default RUN/landscape)."),
    grid: int = typer.Option(None, "--grid", help="Bins per axis (default 30 1-D, 20 2-D)."),
    kT: float = typer.Option(1.0, "--kT", help="Thermal energy in --energy-unit (F = -kT ln p)."),
    energy_unit: str = typer.Option(None, "--energy-unit", help="Unit of F (default kT)."),
    states: str = typer.Option("basins", "--states", help="basins, kmeans or gmm."),
    n_states: int = typer.Option(None, "--n-states", help="States for kmeans/gmm."),
    project: str = typer.Option("none", "--project", help="none, or pca for latent dim > 2."),
    draws: bool = typer.Option(False, "--draws/--no-draws", help="Use z_draws, not mean/sd."),
    samples: int = typer.Option(400, "--samples", help="NUTS draws per chain."),
    seed: int = typer.Option(0, "--seed", help="Random seed.", callback=_checked_seed),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing landscape."),
) -> None:
    """Free-energy landscape F(z) with a 5/50/95 % band and state populations."""
    from atomicspi_bayes.landscape import LandscapeConfig, landscape_from_run
    from atomicspi_bayes.landscape.output import OUTPUT_NAMES

    target = out if out is not None else (run.parent if run.suffix == ".npz" else run) / "landscape"
    _refuse_overwrite([target / name for name in OUTPUT_NAMES], force)

    cfg = LandscapeConfig(
        n_grid=grid, kT=kT, energy_unit=energy_unit or "kT",
        states=states, n_states=n_states, project=project, use_draws=draws,
        num_warmup=samples, num_samples=samples, seed=seed,
    )  # fmt: skip
    model, paths = landscape_from_run(run, out, cfg)
    q = model.states.quantiles()
    pops = ", ".join(
        f"state {s}: {q[1, s]:.3f} [{q[0, s]:.3f}, {q[2, s]:.3f}]" for s in range(q.shape[1])
    )
    console.print(f"landscape: populations (median [5 %, 95 %]) {pops}", highlight=False)
    console.print(f"landscape: wrote {', '.join(str(p) for p in paths.values())}")


@app.command()
def kinetics(
    run: Path = typer.Argument(..., help="Run folder with landscape/landscape.npz."),
    out: Path = typer.Option(None, "--out", help="Output folder (default RUN/kinetics)."),
    diffusion: float = typer.Option(1.0, "--diffusion", help="D, latent units^2 per time."),
    lag: float = typer.Option(None, "--lag", help="MSM lag time (default: slowest time / 10)."),
    n_states: int = typer.Option(2, "--states", help="PCCA+ metastable states."),
    landscape_path: Path = typer.Option(None, "--landscape", help="A landscape.npz to use."),
    max_samples: int = typer.Option(200, "--max-samples", help="Landscape draws analysed."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing kinetics results."),
) -> None:
    """Rates, MFPTs and relaxation times (5/50/95 %) from the landscape's rate matrix."""
    from atomicspi_bayes.kinetics import KineticsConfig, kinetics_from_run

    base = run if run.is_dir() else Path(landscape_path if landscape_path else run).parent
    target = out if out is not None else base / "kinetics"
    _refuse_overwrite([target / "kinetics.json", target / "kinetics.png"], force)

    cfg = KineticsConfig(diffusion=diffusion, lag=lag, n_states=n_states, max_samples=max_samples)
    model, paths = kinetics_from_run(run, out, cfg, landscape_path)
    m = model.quantiles(model.mfpt[:, 0, 1])
    t = model.quantiles(model.timescales[:, 0])
    console.print(
        f"kinetics: MFPT 0->1 {m[1]:.4g} [{m[0]:.4g}, {m[2]:.4g}], slowest relaxation "
        f"{t[1]:.4g} [{t[0]:.4g}, {t[2]:.4g}] (time unit latent^2/D, 5-95 %)",
        highlight=False,
    )
    console.print(f"kinetics: wrote {', '.join(str(p) for p in paths.values())}")


def _fit_xray(particles, structure, out, cfg, config, topology, progress) -> None:
    """``fit --modality xray``: orientation search + Poisson SVI (pipeline.fit_xray)."""
    from atomicspi_bayes.inference import Interrupted
    from atomicspi_bayes.pipeline.fit_xray import XrayFitConfig, fit_xray, read_xray_fit_config

    xcfg = read_xray_fit_config(config) if config is not None else XrayFitConfig()
    try:
        result = fit_xray(
            particles, structure, out, cfg, xcfg, topology=topology, progress=progress
        )
    except Interrupted as exc:
        err_console.print(f"stopped: {exc}", markup=False, highlight=False)
        raise typer.Exit(code=exc.exit_code) from None
    console.print(
        f"fit (xray): {result.n_particles} patterns, {result.mean_photons:.0f} photons/pattern, "
        f"ELBO {result.elbo[0]:.6g} -> {result.elbo[-1]:.6g}; wrote {result.run_dir}"
    )


if __name__ == "__main__":
    main()
