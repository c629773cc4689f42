"""Inference engines: streaming SVI (checkpoints, exact resume, data-parallel) and NUTS.

Knows nothing of microscopes: it runs any NumPyro ``model(batch)`` / ``guide(batch)`` pair
on any stream of minibatches.

API::

    run_svi(key, model, guide, batch_fn, config: SVIConfig, *, checkpoint_dir=None,
            resume=False, overwrite=False, fingerprint="", loss=None, optimizer=None,
            init_params=None) -> SVIResult
        batch_fn(step: int) -> pytree of arrays, deterministic in step, fixed shapes; leaves
        with ndim >= 1 have the batch axis first; "indices" (B,) ints (dict key or NamedTuple
        field) are named in NaN errors.
        SVIResult: params, losses (num_steps,), steps, wall_time_s, steps_per_s,
        items_per_s, compilations, resumed_from, checkpoint, state.
        Raises ConfigError, ConvergenceError (NaN/inf; names step and indices) and
        Interrupted(signal_number) on SIGINT/SIGTERM after saving (exit_code 130 / 143).

    SVIConfig(num_steps, learning_rate=1e-3, schedule="constant"|"cosine", warmup_steps=0,
              final_lr_fraction=0.01, clip_norm=10.0, num_particles=1, checkpoint_every=500,
              keep_checkpoints=3, devices=1, prefetch=2, progress=False, log_every=0)
    make_schedule(config) -> optax schedule;  make_optimizer(config) -> optax transformation

    run_nuts(key, model, *model_args, fixed_params=None, num_warmup=500, num_samples=500,
             num_chains=1, chain_method="sequential", target_accept_prob=0.8,
             max_tree_depth=10, progress=False, **model_kwargs) -> NUTSResult
        NUTSResult: samples {site: (chains, draws, ...)}, num_divergences, accept_prob,
        wall_time_s, mcmc.

    save_checkpoint(directory, state, *, step, losses, fingerprint, extra=None, keep=3) -> Path
    load_checkpoint(path_or_directory, template, *, fingerprint) -> Checkpoint
    latest_checkpoint(directory) -> Path | None;  config_fingerprint(obj) -> str (16 hex)

    initialize_distributed(coordinator "host:port", num_processes, process_id)
    process_slice(global_batch_size) -> slice   # this process's rows of each global batch

    enable_compilation_cache(directory=None) -> Path | None   # JAX persistent cache, CLI
        default $XDG_CACHE_HOME/atomicspi/jax; off with ATOMICSPI_NO_JAX_CACHE=1
"""

from atomicspi_bayes.inference.cache import enable_compilation_cache
from atomicspi_bayes.inference.checkpoint import (
    Checkpoint,
    config_fingerprint,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from atomicspi_bayes.inference.nuts import NUTSResult, run_nuts
from atomicspi_bayes.inference.parallel import initialize_distributed, process_slice
from atomicspi_bayes.inference.svi import (
    Interrupted,
    SVIConfig,
    SVIResult,
    make_optimizer,
    make_schedule,
    run_svi,
)

__all__ = [
    "Checkpoint",
    "Interrupted",
    "NUTSResult",
    "SVIConfig",
    "SVIResult",
    "config_fingerprint",
    "enable_compilation_cache",
    "initialize_distributed",
    "latest_checkpoint",
    "load_checkpoint",
    "make_optimizer",
    "make_schedule",
    "process_slice",
    "run_nuts",
    "run_svi",
    "save_checkpoint",
]
