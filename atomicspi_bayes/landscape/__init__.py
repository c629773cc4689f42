"""Free-energy landscapes with credible bands from per-particle latent posteriors.

Works on plain arrays of latents (``RUN/latents.npz``: z_mean (N, D), z_sd (N, D), optional
z_draws (S, N, D)); imports nothing else of the package but ``errors``.

Public API (exact signatures)::

    Latents(z_mean, z_sd, z_draws=None, source="arrays")
    read_latents(run: str | Path) -> Latents
    project_latents(latents, n_components=2) -> Latents
    LandscapeConfig(n_grid=None, oversample=None, grid_range=None, basis="constant", kT=1.0,
                    energy_unit="kT", concentration=1.0, num_warmup=400, num_samples=400,
                    num_chains=2, n_bootstrap=200, use_draws=False, fit_prior_sd=None,
                    min_count=0.5, shape_iterations=2, compress=0.1, states="basins",
                    n_states=None, min_barrier=1.0, min_population=0.02, project="none",
                    seed=0)
    LandscapeEstimator(config).fit(latents).fetch_model() -> Landscape
    population_posterior(key, log_lik (N, K), *, concentration=1.0, num_warmup=500,
                         num_samples=500, num_chains=2, init_weights=None) -> PopulationPosterior
    bayesian_bootstrap(key, responsibilities (N, K), n_samples=200) -> (n_samples, K)
    reweight_ensemble(key, log_lik (N, M), **nuts_options) -> EnsembleWeights
    plot_landscape(landscape) -> matplotlib.figure.Figure
    write_landscape(landscape, out_dir) -> dict[str, Path]
    landscape_from_run(run, out_dir=None, config=None) -> (Landscape, dict[str, Path])
        # reads RUN/latents.npz, writes RUN/landscape/ by default
"""

from atomicspi_bayes.landscape.estimator import (
    Landscape,
    LandscapeConfig,
    LandscapeEstimator,
    StateSummary,
)
from atomicspi_bayes.landscape.latents import Latents, project_latents, read_latents
from atomicspi_bayes.landscape.output import landscape_from_run, write_landscape
from atomicspi_bayes.landscape.plot import plot_landscape
from atomicspi_bayes.landscape.populations import (
    PopulationPosterior,
    bayesian_bootstrap,
    population_posterior,
)
from atomicspi_bayes.landscape.reweighting import EnsembleWeights, reweight_ensemble

__all__ = [
    "EnsembleWeights",
    "Landscape",
    "LandscapeConfig",
    "LandscapeEstimator",
    "Latents",
    "PopulationPosterior",
    "StateSummary",
    "bayesian_bootstrap",
    "landscape_from_run",
    "plot_landscape",
    "population_posterior",
    "project_latents",
    "read_latents",
    "reweight_ensemble",
    "write_landscape",
]
