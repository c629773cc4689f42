"""Calibration of the amortized posterior on the adenylate-kinase synthetic model.

The controlled AdK model (``tests/diagnostics/adk_model.py``): open AdK beads, known poses,
D = 1 with a linear decoder along the softest ANM mode (2 Å RMSD per unit z), z ~ N(0, 1);
2048 images (48 px, 2 Å/px, likelihood to 8 Å) drawn from the model itself at whole-box
SNR 0.1, with 5 % pure-noise and 5 % wrong-structure (4E43) images mixed in. The encoder
(the fit pipeline's amortized guide) is trained by the SVI engine on these particles, the
globals starting at the truth. Then:

- SBC (>= 500 simulations, 99 draws): the amortized guide, the same guide with its sds
  shrunk 2x, the exact grid-posterior guide, and the grid guide with its draws shrunk 2x;
- PPC of every particle: outlier-score AUC of the pure-noise and the wrong-structure junk;
- amortization gap for 200 (non-junk) particles against the exact grid posterior;
- half-set FSC of the posterior-mean ensembles.

Prints one JSON object per line; writes the tables and PNG figures under ``--out`` in the
run-folder layout (``calibration/``, ``diagnostics/``).

    python benchmarks/calibration.py [--n 2048] [--box 48] [--pixel-size 2.0]
        [--resolution 8.0] [--steps 1500] [--n-sbc 512] [--n-gap 200] [--out DIR] [--seed 0]
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
    grid_guide,
    half_set_fsc,
    posterior_predictive_check,
    sbc,
    shrink_guide,
    write_amortization_gap,
    write_fsc,
    write_ppc,
    write_sbc,
)
from atomicspi_bayes.pipeline import encode_all


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
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--n-sbc", type=int, default=512)
    ap.add_argument("--n-gap", type=int, default=200)
    ap.add_argument("--snr", type=float, default=0.1)
    ap.add_argument("--out", type=Path, default=Path("calibration_benchmark"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = args.out
    key = jax.random.PRNGKey(args.seed)
    k_train, k_sbc, k_ppc, k_gap, k_fsc = jax.random.split(key, 5)

    t0 = time.perf_counter()
    cs = adk_model.make_controlled_set(
        out / "particles", args.n, box=args.box, pixel_size=args.pixel_size,
        resolution=args.resolution, snr=args.snr, junk_noise=0.05, junk_wrong=0.05,
        batch_size=args.batch_size, seed=args.seed,
    )  # fmt: skip
    problem = cs.problem
    emit(
        "controlled_set", n=args.n, box=args.box, pixel_size=args.pixel_size,
        resolution=args.resolution, snr=cs.snr, n_scored=problem.static.window.n_scored,
        n_noise_junk=int((cs.junk == 1).sum()), n_wrong_junk=int((cs.junk == 2).sum()),
        wall_s=time.perf_counter() - t0,
    )  # fmt: skip

    t0 = time.perf_counter()
    params = adk_model.train_guide(k_train, problem, cs.truth_params, args.steps)
    enc = encode_all(problem, params)
    good = cs.junk == 0
    zt, zm, zs = cs.z[good, 0], enc["z_mean"][good, 0], enc["z_sd"][good, 0]
    emit(
        "train", steps=args.steps, wall_s=time.perf_counter() - t0,
        corr_truth=float(np.corrcoef(zt, zm)[0, 1]), median_q_sd=float(np.median(zs)),
        truth_in_q90=float(np.mean(np.abs(zt - zm) / zs < 1.6449)),
    )  # fmt: skip

    z_grid = np.linspace(-5.0, 5.0, 201)
    exact = grid_guide(problem, params, z_grid)
    shrunk = shrink_guide(problem.guide, 0.5)
    cases = [
        ("sbc", "amortized guide", None, 1.0),
        ("sbc_amortized_shrunk", "amortized guide, sds x 0.5", shrunk, 1.0),
        ("sbc_exact", "exact grid posterior", exact, 1.0),
        ("sbc_exact_shrunk", "exact grid posterior, spread x 0.5", exact, 0.5),
    ]  # fmt: skip
    for prefix, label, guide, scale in cases:
        t0 = time.perf_counter()
        result = sbc(
            k_sbc, problem, params, n_sims=args.n_sbc, n_draws=99, guide=guide,
            batch_size=args.batch_size, draw_scale=scale,
        )  # fmt: skip
        result = dataclasses.replace(result, extra={"guide": label, "draw_scale": scale})
        write_sbc(result, out / "calibration", prefix=prefix)
        emit(prefix, guide=label, wall_s=time.perf_counter() - t0, **sbc_fields(result))

    t0 = time.perf_counter()
    ppc = posterior_predictive_check(k_ppc, problem, params, batch_size=args.batch_size)
    write_ppc(ppc, out / "diagnostics")
    score = ppc.outlier_score
    keep_noise, keep_wrong = cs.junk != 2, cs.junk != 1
    emit(
        "ppc_junk", wall_s=time.perf_counter() - t0, n_particles=int(score.size),
        auc_pure_noise=auc(score[keep_noise], cs.junk[keep_noise] == 1),
        auc_wrong_structure=auc(score[keep_wrong], cs.junk[keep_wrong] == 2),
        auc_any_junk=auc(score, cs.junk > 0), threshold=ppc.threshold,
        flagged_junk=float(np.mean(ppc.flagged[cs.junk > 0])),
        flagged_good=float(np.mean(ppc.flagged[good])),
        median_chi2_per_dof_good=float(np.median(ppc.chi2_per_dof[good])),
        median_p_value_good=float(np.median(ppc.p_value[good])),
    )  # fmt: skip

    t0 = time.perf_counter()
    positions = np.flatnonzero(good)[: args.n_gap]
    gap = amortization_gap(
        k_gap, problem, params, positions, method="grid", truth=cs.z[positions],
        batch_size=args.batch_size,
    )  # fmt: skip
    write_amortization_gap(gap, out / "diagnostics")
    emit("amortization_gap", wall_s=time.perf_counter() - t0, **gap.summary)

    t0 = time.perf_counter()
    fsc, _, _ = half_set_fsc(k_fsc, problem, params, enc["z_mean"][good])
    write_fsc(fsc, out / "diagnostics")
    emit("fsc", wall_s=time.perf_counter() - t0, resolution_A=fsc.resolution, n_half=fsc.n_half)


if __name__ == "__main__":
    main()
