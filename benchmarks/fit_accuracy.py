"""Accuracy of `atomicspi fit` on synthetic adenylate kinase (issue 6 "must show").

Data: ``synthetic.simulate_cryoem_dataset`` (what `atomicspi simulate` runs) on the
MDAnalysisTests AdK DIMS trajectory (adk.psf + adk_dims.dcd, 98 frames, 6.8 Å Cα-RMSD end to
end), all-atom images, 64 px at 1.5 Å/px, uniform frames, random poses, CTF 1-2.5 µm; the
reference for the fit is frame 0 (the frame the simulator superposes every frame onto).

For each SNR (poses fixed, D = 1):
- Spearman |rho| between the posterior-mean z and the true frame index;
- median Cα-RMSD (Kabsch) between each particle's decoded structure X(z_mean) and its frame;
- coverage of the 90 % credible interval of the path position: posterior draws of z are
  mapped to a path position by decoding a fine z grid and taking the nearest trajectory frame
  (Cα-RMSD), then the 5-95 % quantiles are compared with the true position;
- the ELBO of the first and last 10 % of the steps;
- against the exact grid posterior (D = 1) and NUTS (initialised at the encoder) on a subset:
  median |mean_q - mean_exact| / sd_exact and median sd_q / sd_exact;
- throughput (particles per second per SVI step, after compilation) and peak RSS.
With ``--amortized``: the same data with poses inferred; median rotation error (degrees)
after the best global rotation, for the encoder alone and after per-particle refinement.

Prints one JSON object per line.

Last measured (2026-11-26 16:10 UTC, 1000 particles, 60 epochs, the FitConfig defaults of that
day: all-atom rendering with residue-frame transport, resolution 6 Å, mode_preconditioning
0.25, elastic_weight 0.005, bond_weight 0.2; two fits at once on a loaded 2-core machine,
~34 min each incl. the refined posterior): SNR 1 |rho| 0.998, median Cα-RMSD 0.92 Å (per
20-frame bin 0.62/0.77/0.92/1.09/1.15), 90 % coverage 0.51; SNR 0.1 |rho| 0.978 (q alone
0.975), median Cα-RMSD 0.97 Å (0.75/0.87/0.95/1.20/1.71), coverage 0.59. Targets met: rho,
Cα-RMSD (0.97 <= 1.0 Å at SNR 0.1). Not met: coverage (the nearest-frame path position of
a decoded structure ~0.9 Å from every frame, frames 0.39 Å apart, is itself uncertain by
several frames; the intervals ignore that), and at SNR 0.1 the decoded path still stops at
frame 73 of 97 (SNR 1: 95). The coarse-grained bead model (``--coarse-grained``) gave 1.40 /
1.33 Å: its isotropic bead form factors pull the Cα ~1 Å off even for noise-free images of
the reference frame. Screening at SNR 0.1 (400 particles, 30 epochs, q posterior): the
per-particle priors 10x weaker (elastic_weight 0.0005, bond_weight 0.02) gave 1.21 Å instead
of 1.50 Å and a path reaching frame 67 instead of 53 (not yet confirmed at full size).
Amortized poses at SNR 1 (bead model, earlier): median rotation error 1.93° (encoder), 1.70°
(refined).

    python benchmarks/fit_accuracy.py [--n 1000] [--snr 1.0 0.1] [--epochs 60]
        [--coarse-grained] [--amortized] [--nuts 16] [--out DIR] [--seed 0] [--quick] [--reuse]
        [--set KEY=VALUE ...]

Every other fit setting is FitConfig's default (the recipe the targets are claimed for);
``--set`` overrides single settings. For fixed poses the metrics are given for the reported
posterior of latents.npz (the refined per-particle posterior by default) and, under
``"amortized"``, for the encoder's q alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import jax
import numpy as np
from scipy.stats import spearmanr

from atomicspi_bayes.io import load_trajectory, write_multimodel_pdb
from atomicspi_bayes.pipeline import (
    FitConfig,
    encode_all,
    fit,
    grid_posterior,
    nuts_posterior,
)
from atomicspi_bayes.structure import kabsch_align
from atomicspi_bayes.synthetic import CryoEMDatasetConfig, simulate_cryoem_dataset


def _rmsd(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((kabsch_align(a, b) - b) ** 2).sum(-1).mean()))


def _rotation_error_deg(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    m = np.einsum("nji,njk->nik", pred, true)
    cos = np.clip((np.trace(m, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def _global_alignment(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Best single rotation G (Procrustes) applied to the predicted poses: G @ pred."""
    u, _, vt = np.linalg.svd(np.einsum("nij,nkj->ik", true, pred))
    g = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    return np.einsum("ij,njk->nik", g, pred)


def simulate(out: Path, n: int, snr: float, seed: int, box: int, pixel: float) -> Path:
    from MDAnalysisTests.datafiles import DCD, PSF

    cfg = CryoEMDatasetConfig(n_particles=n, box=box, pixel_size=pixel, snr=snr)
    simulate_cryoem_dataset(jax.random.key(seed), PSF, out, cfg, trajectory_path=DCD, force=True)
    return out / "particles.star"


def _path_metrics(z_mean, z_draws, frame, true_pos, decode, trajectory_ca, grid, dist) -> dict:
    """Accuracy of one set of latents: rank correlation, decoded Cα-RMSD, 90 % coverage."""
    decoded = decode(z_mean[:, None]).astype(np.float64)
    rmsd = np.array([_rmsd(decoded[i], trajectory_ca[f]) for i, f in enumerate(frame)])
    positions = np.arange(trajectory_ca.shape[0]) / (trajectory_ca.shape[0] - 1)
    grid_index = np.clip(np.searchsorted(grid, z_draws), 0, grid.size - 1)
    mean_index = np.clip(np.searchsorted(grid, z_mean), 0, grid.size - 1)
    out = {
        "spearman_abs_rho": float(abs(spearmanr(z_mean, frame).statistic)),
        "median_ca_rmsd": float(np.median(rmsd)),
        "median_ca_rmsd_by_frame_bin": [
            round(float(np.median(rmsd[(frame >= a) & (frame < a + 20)])), 3)
            for a in range(0, 100, 20)
        ],
    }
    # path position of a latent: the nearest trajectory frame of its decoded structure, and a
    # soft-min over frames (weights exp(-RMSD²/2τ²), τ = 0.5 Å) that averages out the frames'
    # thermal jitter (consecutive frames differ by ~0.4 Å)
    soft = np.exp(-0.5 * ((dist - dist.min(axis=1, keepdims=True)) / 0.5) ** 2)
    for name, grid_pos in (
        ("nearest", positions[dist.argmin(axis=1)]),
        ("softmin", (soft @ positions) / soft.sum(axis=1)),
    ):
        q05, q95 = np.quantile(grid_pos[grid_index], [0.05, 0.95], axis=0)
        inside = (true_pos >= q05) & (true_pos <= q95)
        out[f"coverage90_path_position_{name}"] = float(np.mean(inside))
        out[f"interval90_width_median_{name}"] = float(np.median(q95 - q05))
        out[f"spearman_abs_rho_path_position_{name}"] = float(
            abs(spearmanr(grid_pos[mean_index], frame).statistic)
        )
    return out


def evaluate_fixed(result, truth: dict, trajectory_ca: np.ndarray, n_exact: int, seed: int):
    """Metrics of the reported posterior (latents.npz z_*) and of the encoder's q alone."""
    problem, params = result.problem, result.params
    lat = np.load(result.run_dir / "latents.npz")
    rows = lat["particle_index"]
    frame = truth["frame_index"][rows]
    true_pos = truth["path_position"][rows]

    def decode(z):
        return problem.decode(params, z)

    z_mean, z_draws = lat["z_mean"][:, 0], lat["z_draws"][..., 0]
    if "z_mean_amortized" in lat:
        q_mean, q_sd = lat["z_mean_amortized"][:, 0], lat["z_sd_amortized"][:, 0]
        method = str(lat["posterior_method"])
    else:  # a run written before the refined posterior existed
        q_mean, q_sd, method = z_mean, lat["z_sd"][:, 0], "amortized"
    eps = np.random.default_rng(seed).standard_normal((z_draws.shape[0], q_mean.size))
    q_draws = q_mean[None] + q_sd[None] * eps
    lo, hi = np.quantile(np.concatenate([z_draws.ravel(), q_draws.ravel()]), [0.0005, 0.9995])
    grid = np.linspace(lo, hi, 161)
    grid_ca = decode(grid[:, None]).astype(np.float64)
    dist = np.array([[_rmsd(g, t) for t in trajectory_ca] for g in grid_ca])
    args = (frame, true_pos, decode, trajectory_ca, grid, dist)
    reported = _path_metrics(z_mean, z_draws, *args)
    amortized = _path_metrics(q_mean, q_draws, *args)

    subset = np.linspace(0, rows.size - 1, n_exact).astype(int)
    z_grid = np.linspace(-5.0, 5.0, 201)
    w = grid_posterior(problem, params, subset, z_grid)
    g_mean = w @ z_grid
    g_sd = np.sqrt(np.maximum(w @ z_grid**2 - g_mean**2, 1e-12))
    nuts = nuts_posterior(problem, params, subset, jax.random.PRNGKey(seed))[..., 0]
    n_mean, n_sd = nuts.mean(axis=0), nuts.std(axis=0)
    k = max(1, result.elbo.size // 10)
    q_err_grid = np.abs(q_mean[subset] - g_mean) / g_sd
    q_err_nuts = np.abs(q_mean[subset] - n_mean) / n_sd
    return {
        "posterior_method": method,
        **reported,
        "amortized": amortized,
        "decoded_path_end_frames": [int(dist[0].argmin()), int(dist[-1].argmin())],
        "floor_best_decoded_vs_frame_median": float(np.median(dist.min(axis=0))),
        "elbo_first10pct": float(result.elbo[:k].mean()),
        "elbo_last10pct": float(result.elbo[-k:].mean()),
        "q_vs_grid_mean_diff_in_sd_median": float(np.median(q_err_grid)),
        "q_vs_grid_sd_ratio_median": float(np.median(q_sd[subset] / g_sd)),
        "q_vs_nuts_mean_diff_in_sd_median": float(np.median(q_err_nuts)),
        "q_vs_nuts_mean_diff_in_sd_max": float(np.max(q_err_nuts)),
        "nuts_vs_grid_mean_diff_in_sd_median": float(np.median(np.abs(n_mean - g_mean) / g_sd)),
        "n_exact_subset": int(n_exact),
    }


def evaluate_amortized(result, truth: dict) -> dict:
    problem, params = result.problem, result.params
    lat = np.load(result.run_dir / "latents.npz")
    rows = lat["particle_index"]
    true = truth["rotations"][rows]
    refined = lat["rotation_mean"]

    plain = encode_all(
        dataclasses.replace(problem, cfg=problem.cfg.replace(refine_steps=0)), params
    )
    out = {}
    for name, pred in (("encoder", plain["rotation_mean"]), ("refined", refined)):
        err = _rotation_error_deg(_global_alignment(pred, true), true)
        out[f"median_rotation_error_deg_{name}"] = float(np.median(err))
        out[f"fraction_below_5deg_{name}"] = float(np.mean(err < 5.0))
    out["spearman_abs_rho"] = float(
        abs(spearmanr(lat["z_mean"][:, 0], truth["frame_index"][rows]).statistic)
    )
    return out


def _reopen(run_dir: Path):
    """A finished run as the fields of a FitResult the evaluation uses."""
    from types import SimpleNamespace

    from atomicspi_bayes.pipeline.runs import load_fitted_run

    problem, params = load_fitted_run(run_dir)
    elbo = np.load(run_dir / "elbo.npy")
    return SimpleNamespace(
        problem=problem, params=params, run_dir=run_dir, elbo=elbo,
        n_particles=problem.n_particles, items_per_s=float("nan"),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--snr", type=float, nargs="+", default=[1.0, 0.1])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--pixel-size", type=float, default=1.5)
    ap.add_argument("--all-atom", action="store_true", help="all-atom rendering (the default)")
    ap.add_argument("--coarse-grained", action="store_true", help="one bead per residue")
    ap.add_argument("--amortized", action="store_true", help="also fit with latent poses")
    ap.add_argument("--amortized-only", action="store_true")
    ap.add_argument("--nuts", type=int, default=16, help="particles in the NUTS/grid subset")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--reuse", action="store_true", help="evaluate existing data/runs in --out")
    ap.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE",
        help="FitConfig overrides as TOML values, e.g. --set elastic_weight=0.01 epochs=80",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.epochs, args.snr, args.nuts = 128, 2, [1.0], 4

    from MDAnalysisTests.datafiles import DCD, PSF

    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides.update(tomllib.loads(f"{key} = {value}"))
    root = args.out or Path(tempfile.mkdtemp(prefix="fit_accuracy_"))
    model, frames = load_trajectory(DCD, PSF)
    trajectory_ca = frames[:, model.ca_indices].astype(np.float64)
    reference = root / "reference_frame0.pdb"
    root.mkdir(parents=True, exist_ok=True)
    write_multimodel_pdb(reference, model, frames[:1])

    for snr in args.snr:
        data = root / f"snr{snr:g}"
        t0 = time.perf_counter()
        if args.reuse and (data / "truth.npz").is_file():
            star = data / "particles.star"
        else:
            star = simulate(data, args.n, snr, args.seed, args.box, args.pixel_size)
        sim_s = time.perf_counter() - t0
        truth = dict(np.load(data / "truth.npz"))
        modes = [] if args.amortized_only else ["fixed"]
        if args.amortized or args.amortized_only:
            modes.append("amortized")
        for poses in modes:
            cfg = FitConfig(poses=poses, epochs=args.epochs, seed=args.seed, force=True)
            if args.all_atom or args.coarse_grained:
                cfg = cfg.replace(coarse_grained=args.coarse_grained)
            if args.quick:
                cfg = cfg.replace(n_modes=16, pose_pretrain_steps=20, refine_steps=5)
            cfg = FitConfig.from_dict({**cfg.to_dict(), **overrides}, source="--set")
            t0 = time.perf_counter()
            run_dir = root / f"run_{poses}_snr{snr:g}"
            if args.reuse and (run_dir / "latents.npz").is_file():
                result = _reopen(run_dir)
            else:
                result = fit(star, reference, run_dir, cfg)
            fit_s = time.perf_counter() - t0
            row = {
                "name": f"fit_accuracy_{poses}",
                "snr": snr,
                "n_particles": result.n_particles,
                "box": args.box,
                "pixel_size": args.pixel_size,
                "epochs": args.epochs,
                "coarse_grained": cfg.coarse_grained,
                "overrides": overrides,
                "simulate_s": round(sim_s, 1),
                "fit_s": round(fit_s, 1),
                "particles_per_s": round(result.items_per_s, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
            if poses == "fixed":
                row.update(evaluate_fixed(result, truth, trajectory_ca, args.nuts, args.seed))
            else:
                row.update(evaluate_amortized(result, truth))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
