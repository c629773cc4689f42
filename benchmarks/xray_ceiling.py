"""Ceiling of X-ray conformation recovery at a given fluence (orientation at truth); one JSON.

Same data as ``benchmarks/xray_fit.py`` (AdK DIMS frames simulated all-atom on a 64²
detector, 6 keV, 70 mm, 400 µm pixels, Poisson photons at ``--fluence`` photons/Å²; scored
as the fit's search does: ``--bin-factor`` bins, ``|k| <= 1/--resolution``, default every
pixel unbinned). For every pattern the exact Poisson
log-likelihood of each candidate conformation is evaluated at the **true** orientation on the
tabulated all-atom maps (``physics.xray_orientation``, the fit's own scoring), giving the
posterior over candidates under a uniform prior and its mean path position. Its Spearman rho
against the true path position is the best any method can reach with these photons
(the Bayes posterior mean with the true ensemble known and no orientation error):

- ``oracle``: candidates = the DIMS frames themselves (every ``--frame-stride``-th);
- ``oracle_profile``: the same, but the pose is re-optimised locally for each candidate
  (``refine_rotations`` from the truth) -- what a search that has found the right basin sees;
- ``interp``: candidates = ``--n-interp`` structures interpolated linearly between frame 0
  and the last frame (Kabsch-superposed): the template path of ``fit_xray``.

``--unknown-pose``: the same candidates with the orientation unknown, searched on the
``--n-grid`` SO(3) grid as the fit does (``search_orientations``): the grid-marginal and
profile posteriors over the candidates.

Also reports the mean posterior sd of the path position (a per-pattern Fisher-like width)
and, for ``--frames ends``, the AUC of open vs closed from the posterior mean.

Usage: ``python benchmarks/xray_ceiling.py [--n-patterns 200] [--fluence 1e6] [--frames all]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-patterns", type=int, default=200)
    parser.add_argument("--fluence", type=float, default=1e6, help="photons/Å²")
    parser.add_argument("--frames", choices=("ends", "all"), default="all")
    parser.add_argument("--frame-stride", type=int, default=2)
    parser.add_argument("--n-interp", type=int, default=6)
    parser.add_argument("--map-step", type=float, default=0.003)
    parser.add_argument("--resolution", type=float, default=0.0, help="Å, scored pixels (0 = all)")
    parser.add_argument("--profile", action="store_true", help="also the pose-refined profile")
    parser.add_argument(
        "--unknown-pose", action="store_true",
        help="also the orientation-marginal posterior (grid search, as the fit does)",
    )  # fmt: skip
    parser.add_argument("--n-grid", type=int, default=20000)
    parser.add_argument("--bin-factor", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t_start = time.perf_counter()

    from MDAnalysisTests.datafiles import DCD, PSF
    from scipy.stats import spearmanr

    from atomicspi_bayes.io import load_trajectory, write_multimodel_pdb
    from atomicspi_bayes.physics import xray_orientation as xo
    from atomicspi_bayes.pipeline import FitConfig
    from atomicspi_bayes.pipeline.fit_xray import XrayFitConfig, _Setup
    from atomicspi_bayes.synthetic.xray import (
        XrayDatasetConfig,
        default_xray_geometry,
        simulate_xray_dataset,
    )

    work = Path(tempfile.mkdtemp(prefix="xray_ceiling_"))
    model, frames = load_trajectory(DCD, PSF)
    write_multimodel_pdb(work / "reference.pdb", model, frames[0][None])
    geometry = dataclasses.replace(default_xray_geometry(64), distance_mm=70.0)
    ends = (*range(10), *range(88, 98))
    dcfg = XrayDatasetConfig(
        n_patterns=args.n_patterns, geometry=geometry,
        fluence_photons_per_angstrom2=args.fluence, coarse_grained=False,
        frame_indices=ends if args.frames == "ends" else None, batch_size=8,
    )  # fmt: skip
    summary = simulate_xray_dataset(
        jax.random.key(args.seed), PSF, work / "data", dcfg, trajectory_path=DCD
    )
    cfg = FitConfig()
    xcfg = XrayFitConfig(
        map_step=args.map_step, search_bin_factor=args.bin_factor,
        search_resolution=args.resolution,
    )  # fmt: skip
    setup = _Setup(work / "data", work / "reference.pdb", cfg, xcfg, None)
    truth = np.load(work / "data" / "truth.npz")
    path, true_rot = truth["path_position"], jnp.asarray(truth["rotations"])
    n_frames = frames.shape[0]

    # simulator frame: each frame centred on its own atom mean, not superposed
    centred = np.asarray(frames, np.float64) - np.asarray(frames, np.float64).mean(1, keepdims=1)
    keep = setup.atom_keep

    def maps_of(xyz_list):
        out = []
        for xyz in xyz_list:
            atoms = setup.atoms._replace(coords=jnp.asarray(xyz, jnp.float32))
            out.append(xo.intensity_map(atoms, setup.k_max_map, xcfg.map_step))
        return xo.stack_maps(out)

    px = setup.search
    k, factor, bg, counts = (jnp.asarray(a) for a in (px.k, px.factor, px.background, px.counts))

    def true_pose_loglik(imap):
        n_models = imap.values.shape[0]

        def one(c, rot):
            rots = jnp.broadcast_to(rot, (n_models, 3, 3))
            return xo.score_rotations(
                imap, k, factor, c[None], rots, setup.fluence, bg, jnp.arange(n_models)
            )[0]

        return np.asarray(jax.lax.map(lambda a: one(*a), (counts, true_rot), batch_size=16))

    def profile_loglik(imap):
        n_models = imap.values.shape[0]

        def one(key, c, rot):
            starts = jnp.broadcast_to(rot, (n_models, 3, 3))
            return xo.refine_rotations(
                key, imap, k, factor, c, starts, setup.fluence, bg, jnp.arange(n_models),
                radius=0.03, n_trials=16, n_rounds=6,
            )[1]  # fmt: skip

        keys = jax.random.split(jax.random.key(args.seed + 1), setup.n)
        return np.asarray(jax.lax.map(lambda a: one(*a), (keys, counts, true_rot), batch_size=8))

    def unknown_pose(imap, positions, name):
        t_u = time.perf_counter()
        opts = dict(n_grid=args.n_grid, top_k=8)
        grid_only = xo.search_orientations(
            jax.random.key(args.seed + 2), imap, k, factor, px.counts, setup.fluence, bg,
            **opts,
        )  # fmt: skip
        result[f"{name}_unknown_pose_grid_marginal"] = summarise(
            grid_only.model_logmarginal, positions
        )
        result[f"{name}_unknown_pose_profile"] = summarise(grid_only.model_loglik, positions)
        result[f"{name}_unknown_pose_s"] = round(time.perf_counter() - t_u, 1)

    def summarise(ll, positions):
        w = np.exp(ll - ll.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        mean = w @ positions
        sd = np.sqrt(np.maximum(w @ positions**2 - mean**2, 0.0))
        map_pos = positions[np.argmax(ll, axis=1)]
        closed = path < 0.5
        out = {
            "spearman_rho_posterior_mean": float(spearmanr(mean, path).statistic),
            "spearman_rho_map": float(spearmanr(map_pos, path).statistic),
            "mean_posterior_sd": float(sd.mean()),
            "rmse_path_position": float(np.sqrt(np.mean((mean - path) ** 2))),
        }
        if closed.any() and (~closed).any():
            a = float(np.mean(mean[~closed][:, None] > mean[closed][None, :]))
            out["auc_open_vs_closed"] = a
            out["accuracy_open_vs_closed"] = float(np.mean((mean > 0.5) == ~closed))
        return out

    result = {}
    t0 = time.perf_counter()
    cand = np.arange(0, n_frames, args.frame_stride)
    if n_frames - 1 not in cand:
        cand = np.append(cand, n_frames - 1)
    frame_maps = maps_of([centred[f][keep] for f in cand])
    positions = cand / (n_frames - 1)
    result["oracle"] = summarise(true_pose_loglik(frame_maps), positions)
    result["oracle"]["n_candidates"] = int(cand.size)
    if args.profile:
        result["oracle_profile"] = summarise(profile_loglik(frame_maps), positions)
    if args.unknown_pose:
        unknown_pose(frame_maps, positions, "oracle")
    t_oracle = time.perf_counter() - t0

    ref = centred[0][keep]
    other = centred[-1][keep]
    u, _, vt = np.linalg.svd(other.T @ ref)
    d = np.sign(np.linalg.det(u @ vt))
    other = other @ (u @ np.diag([1.0, 1.0, d]) @ vt)
    t = np.linspace(0.0, 1.0, args.n_interp)
    interp_maps = maps_of([ref + ti * (other - ref) for ti in t])
    result["interp"] = summarise(true_pose_loglik(interp_maps), t)
    result["interp"]["n_candidates"] = int(args.n_interp)
    if args.unknown_pose:
        unknown_pose(interp_maps, t, "interp")

    print(
        json.dumps(
            {
                "name": "xray_ceiling_adk",
                "n_patterns": args.n_patterns,
                "frames": args.frames,
                "seed": args.seed,
                "fluence_photons_per_angstrom2": args.fluence,
                "fluence_photons_per_um2": args.fluence * 1e8,
                "mean_photons_per_pattern": summary["mean_photons_per_pattern"],
                "n_scored_pixels": int(px.k.shape[0]),
                **result,
                "oracle_s": round(t_oracle, 1),
                "total_s": round(time.perf_counter() - t_start, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
