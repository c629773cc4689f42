"""A synthetic run directory with every part the report reads (used by tests and benchmarks).

The structures are real: Cα atoms of adenylate kinase open (4AKE) and closed (1AKE) from
MDAnalysisTests, linearly interpolated into a K-model ensemble. Latents follow a double-well
population along the open->closed path; the other files mimic the outputs of
``fit`` / ``landscape`` / ``kinetics`` / ``calibrate`` / ``diagnose``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import starfile
from matplotlib.figure import Figure
from MDAnalysisTests.datafiles import PDB_closed, PDB_small

ALL_PARTS = (
    "star",
    "config",
    "elbo",
    "latents",
    "truth",
    "ensemble",
    "landscape",
    "kinetics",
    "calibration",
    "diagnostics",
)


def adk_ca(path: str) -> np.ndarray:
    """``(214, 3)`` Cα coordinates in Å from an adenylate-kinase PDB (fixed columns)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("ATOM") and line[12:16].strip() == "CA":
            rows.append((float(line[30:38]), float(line[38:46]), float(line[46:54])))
    return np.asarray(rows, dtype=np.float64)


def write_ca_pdb(path: Path, coords: np.ndarray, remarks: list[str] | None = None) -> None:
    """A multi-model PDB of Cα atoms (element C), one MODEL per ``coords[k]`` (K, N, 3)."""
    lines = ["REMARK   1 FAKE ENSEMBLE FOR REPORT TESTS"]
    for k, xyz in enumerate(coords):
        if remarks:
            lines.append(f"REMARK   2 {remarks[k]}")
        lines.append(f"MODEL     {k + 1:>4d}")
        for i, (x, y, z) in enumerate(xyz):
            lines.append(
                f"ATOM  {i + 1:>5d}  CA  ALA A{i + 1:>4d}    {x:8.3f}{y:8.3f}{z:8.3f}"
                f"{1.0:6.2f}{0.0:6.2f}           C"
            )
        lines.append("ENDMDL")
    lines.append("END")
    path.write_text("\n".join(lines) + "\n")


def double_well(x: np.ndarray, barrier_kt: float = 3.0) -> np.ndarray:
    """F(x) in kT on the path coordinate x in [0, 1]: minima at 0.25 and 0.75."""
    u = (x - 0.5) / 0.25
    return barrier_kt * (u**2 - 1.0) ** 2 + 0.4 * (x - 0.5)


def write_fake_run(
    run_dir: Path,
    parts: tuple[str, ...] = ALL_PARTS,
    *,
    seed: int = 0,
    n_total: int = 400,
    n_fit: int = 360,
    n_models: int = 5,
) -> Path:
    """Write the requested parts of a synthetic run into ``run_dir`` (created)."""
    rng = np.random.default_rng(seed)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fine = np.linspace(0.0, 1.0, 2001)
    p = np.exp(-double_well(fine))
    cdf = np.cumsum(p) / p.sum()
    position = np.interp(rng.uniform(size=n_total), cdf, fine)
    index = np.sort(rng.choice(n_total, size=n_fit, replace=False))

    if "star" in parts:
        optics = pd.DataFrame(
            {
                "rlnOpticsGroup": [1],
                "rlnOpticsGroupName": ["opticsGroup1"],
                "rlnImagePixelSize": [1.5],
                "rlnImageSize": [64],
                "rlnVoltage": [300.0],
                "rlnSphericalAberration": [2.7],
                "rlnAmplitudeContrast": [0.1],
            }
        )
        particles = pd.DataFrame(
            {
                "rlnImageName": [f"{i + 1:06d}@particles.mrcs" for i in index],
                "rlnOpticsGroup": 1,
                "rlnDefocusU": rng.uniform(8000, 20000, n_fit),
                "rlnDefocusV": rng.uniform(8000, 20000, n_fit),
                "rlnDefocusAngle": rng.uniform(0, 180, n_fit),
                "rlnAngleRot": rng.uniform(-180, 180, n_fit),
                "rlnAngleTilt": rng.uniform(0, 180, n_fit),
                "rlnAnglePsi": rng.uniform(-180, 180, n_fit),
            }
        )
        starfile.write({"optics": optics, "particles": particles}, run_dir / "particles.star")
    if "config" in parts:
        (run_dir / "config.toml").write_text(
            '[fit]\nlatent_dim = 2\nposes = "fixed"\nepochs = 20\nbatch_size = 32\nseed = 0\n'
            '[model]\nstructure = "adk_open.pdb"\nn_modes = 4\n'
        )
    if "elbo" in parts:
        t = np.arange(600)
        loss = 2.0e4 * np.exp(-t / 60.0) + 1.5e3 + rng.normal(0, 60.0, t.size)
        np.save(run_dir / "elbo.npy", -loss.astype(np.float32))  # ELBO = -loss
    if "latents" in parts:
        z1 = -2.0 * (position[index] - 0.5) + rng.normal(0, 0.12, n_fit)
        z2 = rng.normal(0, 1.0, n_fit)
        z_mean = np.stack([z1, z2], axis=1).astype(np.float32)
        z_sd = np.full_like(z_mean, 0.12)
        np.savez(
            run_dir / "latents.npz",
            z_mean=z_mean,
            z_sd=z_sd,
            particle_index=index,
            z_draws=(z_mean[None] + 0.12 * rng.normal(size=(8, *z_mean.shape))).astype(np.float32),
        )
    if "truth" in parts:
        np.savez(
            run_dir / "truth.npz",
            path_position=position.astype(np.float32),
            frame_index=np.round(position * 97).astype(np.int64),
            snr=np.float32(0.1),
        )
    if "ensemble" in parts:
        open_, closed = adk_ca(PDB_small), adk_ca(PDB_closed)
        w = np.linspace(0.0, 1.0, n_models)
        coords = (1 - w)[:, None, None] * open_ + w[:, None, None] * closed
        write_ca_pdb(
            run_dir / "ensemble.pdb",
            coords,
            [f"z = {z:+.2f}" for z in np.linspace(1.0, -1.0, n_models)],
        )
    if "landscape" in parts:  # layout of atomicspi_bayes.landscape.output
        folder = run_dir / "landscape"
        folder.mkdir(exist_ok=True)
        edges = np.linspace(-1.2, 1.2, 49)
        grid = 0.5 * (edges[1:] + edges[:-1])
        f_true = double_well(0.5 - grid / 2.0)
        f_true -= f_true.min()
        samples = f_true + rng.normal(0, 0.15, (200, 1)) + rng.normal(0, 0.1, (200, grid.size))
        samples[:, 0] = np.nan  # an empty edge bin
        samples -= np.nanmin(samples, axis=1, keepdims=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN edge bin
            q = np.nanquantile(samples, (0.05, 0.5, 0.95), axis=0)
        labels = np.where(grid > 0, 0, 1)
        np.savez(
            folder / "landscape.npz",
            free_energy_samples=samples.astype(np.float32),
            free_energy_quantiles=q,
            density=np.exp(-q[1]),
            free_energy_aggregate=q[1] + 0.05,
            state_labels=labels,
            kT=np.asarray(1.0),
            energy_unit=np.asarray("kT"),
            axis_labels=np.asarray(["z1"]),
            bin_edges_0=edges,
            bin_centers_0=grid,
        )
        rows = ["z1,F_median,F_05,F_95,p,state"] + [
            f"{g:.6g},{m:.6g},{lo:.6g},{hi:.6g},{np.exp(-m):.6g},{lab}"
            for g, lo, m, hi, lab in zip(grid, *q, labels, strict=True)
        ]
        (folder / "landscape.csv").write_text("\n".join(rows).replace("nan", "") + "\n")
        interval = lambda m, lo, hi: {"p05": lo, "p50": m, "p95": hi, "mean": m}  # noqa: E731
        (folder / "states.json").write_text(
            json.dumps(
                {
                    "method": "basins",
                    "kT": 1.0,
                    "energy_unit": "kT",
                    "states": [
                        {
                            "id": 0,
                            "minimum": [0.5],
                            "n_bins": 24,
                            "population": interval(0.58, 0.52, 0.64),
                            "free_energy_vs_state_0": interval(0.0, 0.0, 0.0),
                        },
                        {
                            "id": 1,
                            "minimum": [-0.5],
                            "n_bins": 24,
                            "population": interval(0.42, 0.36, 0.48),
                            "free_energy_vs_state_0": interval(0.32, 0.12, 0.52),
                        },
                    ],
                    "diagnostics": {"r_hat_max": 1.004, "ess_min": 512.0, "num_divergences": 0},
                }
            )
        )
    if "kinetics" in parts:  # layout of atomicspi_bayes.kinetics.output
        folder = run_dir / "kinetics"
        folder.mkdir(exist_ok=True)
        q3 = lambda m, lo, hi: {"p05": lo, "p50": m, "p95": hi}  # noqa: E731
        (folder / "kinetics.json").write_text(
            json.dumps(
                {
                    "diffusion": 1.0,
                    "time_unit": "(latent unit)^2 / D",
                    "lag": 0.5,
                    "kT": 1.0,
                    "states": [
                        {
                            "id": 0,
                            "minimum": [0.5],
                            "n_cells": 24,
                            "population": q3(0.58, 0.52, 0.64),
                        },
                        {
                            "id": 1,
                            "minimum": [-0.5],
                            "n_cells": 24,
                            "population": q3(0.42, 0.36, 0.48),
                        },
                    ],
                    "timescales": [
                        {"index": 1, **q3(17.4, 14.0, 22.1)},
                        {"index": 2, **q3(0.9, 0.8, 1.0)},
                    ],
                    "mfpt": [
                        {"from": 0, "to": 1, **q3(41.2, 33.0, 52.9)},
                        {"from": 1, "to": 0, **q3(30.1, 24.4, 38.0)},
                    ],
                    "method": "SqRA rate matrix of overdamped diffusion on F",
                }
            )
        )
        _png(folder / "kinetics.png", rng, "relaxation time")
    if "calibration" in parts:  # layout of atomicspi_bayes.diagnostics.sbc.write_sbc
        folder = run_dir / "calibration"
        folder.mkdir(exist_ok=True)
        for prefix, ranks in (
            ("sbc", rng.integers(0, 101, size=(500, 2))),
            ("sbc_shrunk", np.clip(np.round(100 * rng.beta(0.4, 0.4, size=(500, 2))), 0, 100)),
        ):
            np.savez(
                folder / f"{prefix}.npz",
                ranks=ranks.astype(np.int64),
                n_draws=np.asarray(100),
                names=np.asarray(["z1", "z2"]),
            )
            good = prefix == "sbc"
            (folder / f"{prefix}.json").write_text(
                json.dumps(
                    {
                        "n_sims": 500,
                        "n_draws": 100,
                        "names": ["z1", "z2"],
                        "coverage": {"0.5": 0.49 if good else 0.27, "0.9": 0.904 if good else 0.6},
                        "coverage_by_coordinate": {
                            "0.5": {"z1": 0.5, "z2": 0.48},
                            "0.9": {"z1": 0.9, "z2": 0.908},
                        },
                        "ks_pvalue": {"z1": 0.41, "z2": 0.73} if good else {"z1": 1e-9, "z2": 2e-8},
                        "chi2_pvalue": {"z1": 0.35, "z2": 0.6},
                        "passed": good,
                        "criteria": "KS p > 0.01 for all, 90 % coverage in [0.85, 0.95]",
                        "guide_scale": 1.0 if good else 0.5,
                    }
                )
            )
        _png(folder / "sbc_shrunk_ranks.png", rng, "rank")
    if "diagnostics" in parts:
        folder = run_dir / "diagnostics"
        folder.mkdir(exist_ok=True)
        (folder / "summary.json").write_text(
            json.dumps(
                {
                    "z_sd": {"median": 0.12, "q05": 0.1, "q95": 0.15},
                    "n_particles": n_fit,
                }
            )
        )
        (folder / "ppc.csv").write_text(
            "defocus_group,n,chi2_per_dof\n1,120,1.02\n2,120,0.98\n3,120,1.05\n"
        )
        _png(folder / "outlier_scores.png", rng, "outlier score")
    return run_dir


def _png(path: Path, rng: np.random.Generator, xlabel: str) -> None:
    fig = Figure(figsize=(3, 2))
    ax = fig.subplots()
    ax.hist(rng.normal(size=200), bins=20)
    ax.set_xlabel(xlabel)
    fig.savefig(path)
