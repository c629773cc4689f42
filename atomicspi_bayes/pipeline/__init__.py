"""Workflows that compose the library (glue, no numerics): ``atomicspi fit``.

Public API::

    fit(particles_path, structure_path, out_dir, cfg: FitConfig | None = None, *,
        topology=None, progress=False) -> FitResult
    FitConfig(...)  frozen settings; read_fit_config(path) / write_fit_config(path, cfg, extra)
    build_problem(particles_path, structure_path, cfg, *, topology=None) -> FitProblem
    encode_all(problem, params) -> {"z_mean", "z_sd", ...}
    grid_posterior(problem, params, positions, z_grid) -> (n, G) weights   (D = 1, fixed poses)
    nuts_posterior(problem, params, positions, key, *, num_warmup=300, num_samples=300,
                   init_z=None) -> (S, n, D)    (chain starts at the encoder means)
    pretrain_poses(problem) -> FitProblem  (sleep-phase pose-head pre-training, amortized)
"""

from atomicspi_bayes.pipeline.fit import (
    FitConfig,
    FitProblem,
    FitResult,
    build_problem,
    encode_all,
    fit,
    format_fit_config,
    grid_posterior,
    nuts_posterior,
    pretrain_poses,
    read_fit_config,
    write_fit_config,
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
