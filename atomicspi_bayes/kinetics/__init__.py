"""Kinetic models from free-energy landscapes: SqRA rate matrices, MSMs, MFPT, timescales.

Works on plain arrays (free energies on a 1-D/2-D grid); imports nothing of the package but
``errors``. Times are in the unit fixed by the diffusion coefficient D (latent units**2 per
unit time).

Public API (exact signatures)::

    sqra_rate_matrix(free_energy (G,) | (G1, G2), spacing, *, diffusion=1.0, kT=1.0)
        -> RateMatrix(Q, cells, stationary, grid_shape)
    implied_timescales(rm, k) -> (k,)
    relaxation_spectrum(rm, n=None) -> (mu (n,), psi (M, n))
    mean_first_passage_time(rm, source (M,) bool, target (M,) bool) -> float
    transition_matrix(rm, lag) -> (M, M);  markov_state_model(rm, lag) -> deeptime MSM
    KineticsConfig(diffusion=1.0, lag=None, n_states=2, n_timescales=3, core_threshold=0.9,
                   max_samples=200)
    KineticsEstimator(config).fit(F_samples (S, *grid), spacing, *, kT=1.0, reference=None)
        .fetch_model() -> KineticsModel
    read_landscape_npz(path) -> LandscapeSamples
    kinetics_from_landscape(landscape_path, out_dir, config=None) -> (KineticsModel, paths)
    kinetics_from_run(run, out_dir=None, config=None, landscape_path=None)
        -> (KineticsModel, paths)      # reads RUN/landscape/landscape.npz, writes RUN/kinetics
    simulate_overdamped(key, potential_fn, x0 (n, D), *, diffusion=1.0, kT=1.0, dt,
                        n_records, record_every=1) -> (n_records, n, D)
    first_passage_times(key, potential_fn, x0, target_fn, *, diffusion=1.0, kT=1.0, dt,
                        max_steps, block=100) -> (n,)
    autocorrelation(series (T, n), max_lag) -> (max_lag + 1,)
"""

from atomicspi_bayes.kinetics.analysis import (
    implied_timescales,
    markov_state_model,
    mean_first_passage_time,
    relaxation_spectrum,
    transition_matrix,
)
from atomicspi_bayes.kinetics.estimator import KineticsConfig, KineticsEstimator, KineticsModel
from atomicspi_bayes.kinetics.langevin import (
    autocorrelation,
    first_passage_times,
    simulate_overdamped,
)
from atomicspi_bayes.kinetics.output import (
    LandscapeSamples,
    find_landscape_npz,
    kinetics_from_landscape,
    kinetics_from_run,
    read_landscape_npz,
    write_kinetics,
)
from atomicspi_bayes.kinetics.rate_matrix import RateMatrix, sqra_rate_matrix

__all__ = [
    "KineticsConfig",
    "KineticsEstimator",
    "KineticsModel",
    "LandscapeSamples",
    "RateMatrix",
    "autocorrelation",
    "find_landscape_npz",
    "first_passage_times",
    "implied_timescales",
    "kinetics_from_landscape",
    "kinetics_from_run",
    "markov_state_model",
    "mean_first_passage_time",
    "read_landscape_npz",
    "relaxation_spectrum",
    "simulate_overdamped",
    "sqra_rate_matrix",
    "transition_matrix",
    "write_kinetics",
]
