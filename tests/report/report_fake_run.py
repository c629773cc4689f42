"""A synthetic run directory with every part the report reads (used by tests and benchmarks).

The structures are real: Cα atoms of adenylate kinase open (4AKE) and closed (1AKE) from
MDAnalysisTests, linearly interpolated into a K-model ensemble. Latents follow a double-well
population along the open->closed path; the other files mimic the outputs of
``fit`` / ``landscape`` / ``kinetics`` / ``calibrate`` / ``diagnose``.
"""

from __future__ import annotations

import json
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
    if "landscape" in parts:
        folder = run_dir / "landscape"
        folder.mkdir(exist_ok=True)
        grid = np.linspace(-1.2, 1.2, 48)
        x = 0.5 - grid / 2.0
        f_true = double_well(x)
        f_true -= f_true.min()
        f_med = f_true + rng.normal(0, 0.15, grid.size)
        f_med -= f_med.min()
        half = 0.3 + 0.15 * f_true
        rows = ["grid,F_median,F_05,F_95,F_true"] + [
            f"{g:.5f},{m:.5f},{m - h:.5f},{m + h:.5f},{t:.5f}"
            for g, m, h, t in zip(grid, f_med, half, f_true, strict=True)
        ]
        (folder / "landscape.csv").write_text("\n".join(rows) + "\n")
        (folder / "states.json").write_text(
            json.dumps(
                {
                    "states": [
                        {"name": "open", "population": {"median": 0.58, "q05": 0.52, "q95": 0.64}},
                        {
                            "name": "closed",
                            "population": {"median": 0.42, "q05": 0.36, "q95": 0.48},
                        },
                    ],
                    "kT": 1.0,
                }
            )
        )
    if "kinetics" in parts:
        folder = run_dir / "kinetics"
        folder.mkdir(exist_ok=True)
        (folder / "kinetics.json").write_text(
            json.dumps(
                {
                    "diffusion": 1.0,
                    "lag": 0.5,
                    "mfpt": {
                        "open->closed": {"median": 41.2, "q05": 33.0, "q95": 52.9},
                        "closed->open": {"median": 30.1, "q05": 24.4, "q95": 38.0},
                    },
                    "timescales": {"median": [17.4, 0.9], "q05": [14.0, 0.8], "q95": [22.1, 1.0]},
                    "stationary": [0.58, 0.42],
                }
            )
        )
    if "calibration" in parts:
        folder = run_dir / "calibration"
        folder.mkdir(exist_ok=True)
        ranks = rng.integers(0, 101, size=(500, 2))
        np.savez(folder / "sbc.npz", ranks=ranks, n_draws=np.int64(100))
        (folder / "sbc.json").write_text(
            json.dumps(
                {
                    "n_draws": 100,
                    "ks_pvalue": [0.41, 0.73],
                    "coverage": {"0.5": 0.49, "0.9": 0.904},
                }
            )
        )
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
        fig = Figure(figsize=(3, 2))
        ax = fig.subplots()
        ax.hist(rng.normal(size=200), bins=20)
        ax.set_xlabel("outlier score")
        fig.savefig(folder / "outlier_scores.png")
    return run_dir
