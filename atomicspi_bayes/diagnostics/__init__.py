"""Posterior diagnostics and calibration: ArviZ summaries, SBC, PPC, amortization gap, FSC.

All ArviZ calls live in this package. Submodules load on first use (PEP 562), except
``sbc``, whose function shares the submodule's name and is bound eagerly (a lazily
resolved name would be shadowed by the submodule once it is imported).

Public API (``problem``: a fitted problem, e.g. ``pipeline.FitProblem``: ``model(batch)``,
``guide(batch)``, ``model_cfg``, ``static``, ``batch(positions)``, ``n_particles``;
``params``: SVI parameters)::

    sbc(key, problem, params, *, n_sims=1000, n_draws=99, batch_size=64, n_bins=20,
        levels=(0.5, 0.9), guide=None, positions=None) -> SBCResult
    rank_statistics(key, ranks (S,) | (S, C), n_draws, *, names=None, n_bins=20,
        levels=(0.5, 0.9), contraction=None) -> SBCResult
        SBCResult: ranks, pit, n_draws, names, ks_pvalue, chi2_pvalue, coverage
        {level: {name: frac}}, contraction, acceptance_rate, truth; passes(alpha=0.01,
        level=0.9, tolerance=0.05); to_json()
    write_sbc(result, out_dir, *, prefix="sbc") -> [paths]   # .json, .npz, *_ranks/_ecdf.png
    shrink_guide(guide, factor, sites=("z",)) -> guide   # deliberately miscalibrated copy
    posterior_predictive_check(key, problem, params, *, positions=None, n_draws=16,
        n_replicas=4, batch_size=64, n_shells=12, n_groups=4, threshold=None, guide=None)
        -> PPCResult
    write_ppc(result, out_dir) -> [paths]   # ppc.csv, ppc_groups.csv, ppc.json, ppc_*.png
    amortization_gap(key, problem, params, positions, *, method="auto"|"grid"|"nuts",
        z_grid=None, n_q_draws=4000, num_warmup=300, num_samples=1000, batch_size=32,
        truth=None, guide=None) -> AmortizationGap(table, method, summary)
    write_amortization_gap(gap, out_dir) -> [paths]   # amortization_gap.csv/.json/.png
    fourier_shell_correlation(map1, map2, voxel_size) -> (k, fsc, n_voxels)
    resolution_at(k, fsc, threshold=0.143) -> Å
    render_density(coords (..., N, 3), scatterers, box, voxel_size, *, bfactor=None) -> map
    half_set_fsc(key, problem, params, z_mean, *, max_per_half=128, box=None,
        voxel_size=None, bfactor=None, threshold=0.143, halves=None) -> (FSCResult, m1, m2)
    write_fsc(result, out_dir) -> [paths]   # fsc.json, fsc.png
    summarize_run(run_dir) -> RunSummary; summary_tables(summary) -> [rich Table];
    write_summary(summary, out_dir) -> [paths]   # summary.json, posterior_sd.png, nuts_summary.csv
    read_run_facts(run_dir) -> dict; restore_params(run_dir, problem) -> params
    diagnose_run(run_dir, problem=None, params=None, options=DiagnoseOptions()) -> dict
    calibrate_run(run_dir, problem, params, *, n_sims=1000, n_draws=99, seed=0,
        guide_scale=None, posterior=None) -> (SBCResult, [paths])   # run's posterior setting
    reported_guide(problem, posterior=None) -> refined sampler | amortized guide
    grid_guide(problem, params, z_grid) -> guide   # exact grid posterior (D = 1) as a guide
    grid_posterior_weights(problem, params, batch, z_grid) -> (B, G)
    nuts_reference(key, problem, params, positions, *, num_warmup=300, num_samples=1000)
        -> (S, n, D) NUTS draws (globals fixed)
    simulate_images(key, problem, params, template_batch, latents) -> (B, L, L)
    sample_prior(key, problem, params, template_batches) -> (latents, acceptance_rate)
    posterior_inference_data / read_posterior / write_posterior   (export, ArviZ NetCDF)
"""

from __future__ import annotations

import importlib

from atomicspi_bayes.diagnostics.sbc import (
    SBCResult as SBCResult,
)
from atomicspi_bayes.diagnostics.sbc import (
    rank_statistics as rank_statistics,
)
from atomicspi_bayes.diagnostics.sbc import (
    sbc as sbc,
)
from atomicspi_bayes.diagnostics.sbc import (
    write_sbc as write_sbc,
)

_EAGER = ["SBCResult", "rank_statistics", "sbc", "write_sbc"]
_EXPORTS = {
    "posterior_inference_data": "export",
    "read_posterior": "export",
    "write_posterior": "export",
    "shrink_guide": "predictive",
    "simulate_images": "predictive",
    "sample_prior": "predictive",
    "prior_latents": "predictive",
    "PPCResult": "ppc",
    "posterior_predictive_check": "ppc",
    "write_ppc": "ppc",
    "AmortizationGap": "amortization",
    "amortization_gap": "amortization",
    "write_amortization_gap": "amortization",
    "FSCResult": "fsc",
    "fourier_shell_correlation": "fsc",
    "half_set_fsc": "fsc",
    "render_density": "fsc",
    "resolution_at": "fsc",
    "write_fsc": "fsc",
    "RunSummary": "summary",
    "summarize_run": "summary",
    "summary_tables": "summary",
    "write_summary": "summary",
    "grid_guide": "reference",
    "grid_posterior_weights": "reference",
    "nuts_reference": "reference",
    "DiagnoseOptions": "run",
    "calibrate_run": "run",
    "diagnose_run": "run",
    "read_run_facts": "run",
    "reported_guide": "run",
    "restore_params": "run",
}

__all__ = sorted([*_EXPORTS, *_EAGER])


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"atomicspi_bayes.diagnostics.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'atomicspi_bayes.diagnostics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
