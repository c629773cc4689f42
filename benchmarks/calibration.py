"""Calibration of the posterior `atomicspi fit` reports, on the adenylate-kinase synthetic model.

The controlled AdK model (``tests/diagnostics/adk_model.py``): open AdK beads, known poses,
D = 1 with a linear decoder along the softest ANM mode (2 Å RMSD per unit z), z ~ N(0, 1);
``--n`` images (48 px, 2 Å/px, likelihood to 8 Å) drawn from the model itself at whole-box
SNR 0.1, with 5 % pure-noise and 5 % wrong-structure (4E43) images mixed in, written as
STAR + MRC. Then the real fit path: ``pipeline.fit`` (SVI from the default initial globals,
then the reported posterior: ``posterior="refined"``, the per-particle exact grid
posterior) writes a run folder, and on that run:

- SBC (``--n-sbc`` >= 500 simulations from the fitted model, 99 draws), exactly what
  ``atomicspi calibrate RUN`` does (``diagnostics.calibrate_run``): the refined posterior
  (the run's default), the same with its spread shrunk 2x (must be rejected), the amortized
  q, and the amortized q with its sds shrunk 2x;
- PPC of every particle with refined draws: outlier-score AUC of the injected junk;
- amortization gap for ``--n-gap`` (non-junk) particles: amortized q vs the exact grid
  posterior, and on ``--n-nuts`` of them amortized and refined vs NUTS (an independent
  reference);
- half-set FSC of the posterior-mean ensembles.

Prints one JSON object per line; writes the run folder (``run/``: calibration/, diagnostics/
with the PNG figures) under ``--out``.

    python benchmarks/calibration.py [--n 2048] [--epochs 20] [--n-sbc 512] [--n-gap 200]
        [--n-nuts 24] [--out DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "diagnostics"))

import adk_model

from atomicspi_bayes.diagnostics import (
    amortization_gap,
    calibrate_run,
    half_set_fsc,
    nuts_reference,
    posterior_predictive_check,
    reported_guide,
    sbc,
    shrink_guide,
    write_amortization_gap,
    write_fsc,
    write_ppc,
    write_sbc,
)
from atomicspi_bayes.pipeline import fit


def emit(name: str, **fields) -> None:
    print(json.dumps({"name": name, **fields}, default=float), flush=True)


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the ``positive`` mask (Mann-Whitney)."""
    from scipy.stats import mannwhitneyu

    pos, neg = scores[positive], scores[~positive]
    return float(mannwhitneyu(pos, neg).statistic / (pos.size * neg.size))


def sbc_fields(result) -> dict:
    name = result.names[0]
    return {
        "n_sims": result.n_sims, "n_draws": result.n_draws,
        "ks_pvalue": result.ks_pvalue[name], "chi2_pvalue": result.chi2_pvalue[name],
        "coverage_50": result.coverage[0.5][name], "coverage_90": result.coverage[0.9][name],
        "contraction": result.contraction[name], "passed": result.passes(),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--box", type=int, default=48)
    ap.add_argument("--pixel-size", type=float, default=2.0)
    ap.add_argument("--resolution", type=float, default=8.0)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--n-sbc", type=int, default=512)
    ap.add_argument("--n-gap", type=int, default=200)
    ap.add_argument("--n-nuts", type=int, default=24)
    ap.add_argument("--snr", type=float, default=0.1)
    ap.add_argument("--out", type=Path, default=Path("calibration_benchmark"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = args.out
    key = jax.random.PRNGKey(args.seed)
    k_sbc, k_ppc, k_gap, k_fsc = jax.random.split(key, 4)

    t0 = time.perf_counter()
    cs = adk_model.make_controlled_set(
        out / "particles", args.n, box=args.box, pixel_size=args.pixel_size,
        resolution=args.resolution, snr=args.snr, junk_noise=0.05, junk_wrong=0.05,
        batch_size=args.batch_size, seed=args.seed,
    )  # fmt: skip
    emit(
        "controlled_set", n=args.n, box=args.box, pixel_size=args.pixel_size,
        resolution=args.resolution, snr=cs.snr, n_scored=cs.problem.static.window.n_scored,
        n_noise_junk=int((cs.junk == 1).sum()), n_wrong_junk=int((cs.junk == 2).sum()),
        wall_s=time.perf_counter() - t0,
    )  # fmt: skip

    t0 = time.perf_counter()
    run = out / "run"
    cfg = adk_model.controlled_config(8, args.resolution, args.batch_size, args.seed)
    cfg = cfg.replace(epochs=args.epochs, n_draws=100, force=True)
    result = fit(cs.star, cs.star.parent / "adk_open.pdb", run, cfg)
    problem, params = result.problem, result.params
    lat = np.load(run / "latents.npz")
    good = cs.junk == 0
    zt = cs.z[good, 0]
    emit(
        "fit", epochs=args.epochs, posterior=str(lat["posterior_method"]),
        wall_s=time.perf_counter() - t0, items_per_s=result.items_per_s,
        abs_corr_truth_refined=abs(float(np.corrcoef(zt, lat["z_mean"][good, 0])[0, 1])),
        abs_corr_truth_amortized=abs(
            float(np.corrcoef(zt, lat["z_mean_amortized"][good, 0])[0, 1])
        ),
        median_sd_refined=float(np.median(lat["z_sd"][good])),
        median_sd_amortized=float(np.median(lat["z_sd_amortized"][good])),
        median_grid_cells_eff=float(np.median(lat["ess"])),
    )  # fmt: skip

    t0 = time.perf_counter()
    default, _ = calibrate_run(run, problem, params, n_sims=args.n_sbc, n_draws=99)
    emit(
        "sbc", posterior=default.extra["posterior"], wall_s=time.perf_counter() - t0,
        command="calibrate_run(run) == atomicspi calibrate RUN", **sbc_fields(default),
    )  # fmt: skip
    refined = reported_guide(problem, "refined")
    cases = [
        ("sbc_refined_shrunk", "refined posterior, spread x 0.5", refined, 0.5),
        ("sbc_amortized", "amortized q", problem.guide, 1.0),
        ("sbc_amortized_shrunk", "amortized q, sds x 0.5", shrink_guide(problem.guide, 0.5), 1.0),
    ]  # fmt: skip
    for prefix, label, guide, scale in cases:
        t0 = time.perf_counter()
        res = sbc(
            k_sbc, problem, params, n_sims=args.n_sbc, n_draws=99, guide=guide,
            batch_size=args.batch_size, draw_scale=scale,
        )  # fmt: skip
        res = dataclasses.replace(res, extra={"posterior": label, "draw_scale": scale})
        write_sbc(res, run / "calibration", prefix=prefix)
        emit(prefix, posterior=label, wall_s=time.perf_counter() - t0, **sbc_fields(res))

    t0 = time.perf_counter()
    ppc = posterior_predictive_check(
        k_ppc, problem, params, batch_size=args.batch_size, guide=refined
    )
    write_ppc(ppc, run / "diagnostics")
    score = ppc.outlier_score
    keep_noise, keep_wrong = cs.junk != 2, cs.junk != 1
    emit(
        "ppc_junk", posterior="refined", wall_s=time.perf_counter() - t0,
        n_particles=int(score.size),
        auc_pure_noise=auc(score[keep_noise], cs.junk[keep_noise] == 1),
        auc_wrong_structure=auc(score[keep_wrong], cs.junk[keep_wrong] == 2),
        auc_any_junk=auc(score, cs.junk > 0), threshold=ppc.threshold,
        flagged_junk=float(np.mean(ppc.flagged[cs.junk > 0])),
        flagged_good=float(np.mean(ppc.flagged[good])),
        median_chi2_per_dof_good=float(np.median(ppc.chi2_per_dof[good])),
        median_p_value_good=float(np.median(ppc.p_value[good])),
    )  # fmt: skip

    positions = np.flatnonzero(good)[: args.n_gap]
    t0 = time.perf_counter()
    gap = amortization_gap(
        k_gap, problem, params, positions, method="grid", truth=cs.z[positions],
        batch_size=args.batch_size,
    )  # fmt: skip
    write_amortization_gap(gap, run / "diagnostics")
    emit("gap_amortized_vs_exact_grid", wall_s=time.perf_counter() - t0, **gap.summary)
    t0 = time.perf_counter()
    gap_refined = amortization_gap(
        k_gap, problem, params, positions, method="grid", truth=cs.z[positions],
        batch_size=args.batch_size, guide=refined,
    )  # fmt: skip
    emit("gap_refined_vs_exact_grid", wall_s=time.perf_counter() - t0, **gap_refined.summary)
    if args.n_nuts:
        sub = positions[: args.n_nuts]
        t0 = time.perf_counter()
        draws = nuts_reference(k_gap, problem, params, sub, num_warmup=300, num_samples=1000)
        emit("nuts", n_particles=int(sub.size), wall_s=time.perf_counter() - t0)
        for label, guide in (("amortized", problem.guide), ("refined", refined)):
            g = amortization_gap(
                k_gap, problem, params, sub, method="nuts", guide=guide, nuts_draws=draws,
                batch_size=args.batch_size,
            )  # fmt: skip
            write_amortization_gap(g, run / "diagnostics" / f"vs_nuts_{label}")
            emit(f"gap_{label}_vs_nuts", **g.summary)

    t0 = time.perf_counter()
    fsc, _, _ = half_set_fsc(k_fsc, problem, params, lat["z_mean"][good])
    write_fsc(fsc, run / "diagnostics")
    emit("fsc", wall_s=time.perf_counter() - t0, resolution_A=fsc.resolution, n_half=fsc.n_half)


if __name__ == "__main__":
    main()
