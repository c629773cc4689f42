"""Free-energy landscape with credible bands.

Usage: ``LandscapeEstimator(cfg).fit(latents).fetch_model()``.

Model (see :mod:`atomicspi_bayes.landscape.grid` and :mod:`.populations`): the landscape
density is a mixture of grid basis functions, p(z) = sum_k w_k phi_k(z); each particle's
latent posterior supplies its likelihood of every basis function; the weights get a
Dirichlet prior and are sampled with NUTS. Every posterior draw of w gives a landscape

    F_b = -kT ln(W_b / |bin b|),    W_b = sum of the weights of the nodes in reported bin b,

so F is a deconvolved estimate (the particles' posterior widths are modelled, not smeared in).
The plain aggregate posterior (1/N) sum_n q(z | y_n) and its Bayesian bootstrap over particles
are kept for comparison (they are blurred by the per-particle posterior widths).

Units: latent axes in latent units; F in the units of ``kT`` (``energy_unit``): with the
default kT = 1 F is in kT. Reported F is shifted so that the minimum of the posterior median
is 0; all draws and quantiles are shifted by the same constant (``offset``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import jax
import numpy as np

from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.landscape.grid import BASES, Grid, bin_masses, grid_log_likelihoods, make_grid
from atomicspi_bayes.landscape.latents import Latents, check_dim
from atomicspi_bayes.landscape.populations import (
    bayesian_bootstrap,
    em_populations,
    population_posterior,
)
from atomicspi_bayes.landscape.states import (
    basin_labels,
    fit_gmm,
    gmm_log_likelihoods,
    kmeans_centers,
    nearest_labels,
)

__all__ = ["Landscape", "LandscapeConfig", "LandscapeEstimator", "StateSummary"]

logger = logging.getLogger(__name__)

STATE_METHODS = ("basins", "kmeans", "gmm")
QUANTILES = (0.05, 0.5, 0.95)


@dataclass(frozen=True)
class LandscapeConfig:
    """Settings of :class:`LandscapeEstimator` (validated on construction).

    Attributes:
        n_grid: reported bins per latent axis (>= 3); None -> 30 in 1-D, 20 in 2-D.
        oversample: basis nodes per bin and axis; None -> 2 in 1-D, 1 in 2-D.
        grid_range: ((lo, hi), ...) outer bin edges per axis, latent units; None -> data range.
        basis: "constant" (histogram cells, default) or "linear" (hat functions). On steep
            flanks, where p changes by a large factor across one node, piecewise-linear p is a
            poor model of an exponential and biases F; histogram cells fared better in the
            double-well tests.
        kT: thermal energy in ``energy_unit`` (F = -kT ln p). 1.0 with unit "kT".
        energy_unit: label of F's unit, e.g. "kT", "kJ/mol", "kcal/mol".
        concentration: Dirichlet prior concentration per reported bin (> 0), shared by its
            ``oversample**D`` basis nodes (each node gets concentration / oversample**D), so
            the prior's pseudo-count per bin does not grow with the oversampling.
        num_warmup, num_samples, num_chains: NUTS settings for the population posterior.
        n_bootstrap: Bayesian-bootstrap draws for the aggregate-posterior comparison.
        use_draws: build likelihoods from ``z_draws`` instead of (z_mean, z_sd).
        fit_prior_sd: sd of the Normal(0, sd^2) prior the fit put on z, divided out of the
            per-particle posteriors; None treats the posteriors as likelihoods (flat prior).
        min_count: basis nodes with fewer expected particles than this (under a flat
            landscape) are left out (F undefined there, NaN).
        shape_iterations: for basis "constant": rounds of (EM estimate -> log-linear density
            inside each cell, with slopes from that estimate) before NUTS; 0 keeps uniform
            cells. Removes most of the histogram bias on steep flanks.
        compress: particles whose posterior means agree to within this fraction of the
            median posterior sd (and sds to within this relative amount) share one
            likelihood row (NUTS cost then scales with the
            number of groups); 0 disables. Not used with draws.
        states: coarse states for populations: "basins", "kmeans" or "gmm".
        n_states: number of k-means/GMM states (required for those methods).
        min_barrier: basins with a barrier below this many kT are merged.
        min_population: basins holding less than this fraction of the (median) population
            are merged into a neighbour.
        project: "none" (latent dim > 2 is an error) or "pca" (first two principal axes).
        seed: seed of the PRNG key for NUTS and bootstrap.
    """

    n_grid: int | None = None
    oversample: int | None = None
    grid_range: tuple[tuple[float, float], ...] | None = None
    basis: str = "constant"
    kT: float = 1.0
    energy_unit: str = "kT"
    concentration: float = 1.0
    num_warmup: int = 400
    num_samples: int = 400
    num_chains: int = 2
    n_bootstrap: int = 200
    use_draws: bool = False
    fit_prior_sd: float | None = None
    min_count: float = 0.5
    shape_iterations: int = 2
    compress: float = 0.1
    states: str = "basins"
    n_states: int | None = None
    min_barrier: float = 1.0
    min_population: float = 0.02
    project: str = "none"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_grid is not None and int(self.n_grid) < 3:
            raise ConfigError(f"n_grid={self.n_grid}: need at least 3 bins per axis")
        if self.oversample is not None and int(self.oversample) < 1:
            raise ConfigError(f"oversample={self.oversample}: must be >= 1")
        if self.basis not in BASES:
            raise ConfigError(f"basis={self.basis!r} is not one of {BASES}")
        if not (math.isfinite(self.kT) and self.kT > 0):
            raise ConfigError(f"kT={self.kT}: must be a positive number (energy per kT)")
        if self.energy_unit == "kT" and not math.isclose(self.kT, 1.0):
            raise ConfigError(
                f"kT={self.kT} with energy_unit='kT' is inconsistent; give the unit of kT, "
                "e.g. --kT 2.494 --energy-unit kJ/mol (300 K)"
            )
        if self.concentration <= 0:
            raise ConfigError(f"concentration={self.concentration}: must be > 0")
        if min(self.num_warmup, self.num_samples, self.num_chains, self.n_bootstrap) < 1:
            raise ConfigError("num_warmup, num_samples, num_chains and n_bootstrap must be >= 1")
        if self.fit_prior_sd is not None and self.fit_prior_sd <= 0:
            raise ConfigError(f"fit_prior_sd={self.fit_prior_sd}: must be > 0 or None")
        if int(self.shape_iterations) < 0:
            raise ConfigError(f"shape_iterations={self.shape_iterations}: must be >= 0")
        if self.compress < 0:
            raise ConfigError(f"compress={self.compress}: must be >= 0")
        if self.min_count < 0:
            raise ConfigError(f"min_count={self.min_count}: must be >= 0")
        if self.states not in STATE_METHODS:
            raise ConfigError(f"states={self.states!r} is not one of {STATE_METHODS}")
        if self.states != "basins" and (self.n_states is None or self.n_states < 1):
            raise ConfigError(f"states={self.states!r} needs n_states >= 1 (got {self.n_states})")
        if not 0 <= self.min_population < 1:
            raise ConfigError(f"min_population={self.min_population}: must be in [0, 1)")
        if self.min_barrier < 0:
            raise ConfigError(f"min_barrier={self.min_barrier}: must be >= 0 (kT)")
        if self.project not in ("none", "pca"):
            raise ConfigError(f"project={self.project!r} is not one of 'none', 'pca'")


@dataclass(frozen=True)
class StateSummary:
    """Coarse states and their population posterior.

    Attributes:
        method: "basins", "kmeans" or "gmm".
        labels: reported-bin labels, shape ``bin_shape``; -1 where F is undefined.
        populations: (S, n_states) posterior draws of state populations (sum to 1).
        bootstrap_populations: (n_bootstrap, n_states) Bayesian-bootstrap draws (comparison).
        minima: (n_states, D) position of each state's lowest median-F bin (GMM: its mean).
        responsibilities: (N, n_states) per-particle state probabilities at the posterior
            mean weights.
    """

    method: str
    labels: np.ndarray
    populations: np.ndarray
    bootstrap_populations: np.ndarray
    minima: np.ndarray
    responsibilities: np.ndarray

    @property
    def n_states(self) -> int:
        return int(self.populations.shape[1])

    def quantiles(self, q=QUANTILES) -> np.ndarray:
        """(len(q), n_states) population quantiles."""
        return np.quantile(self.populations, q, axis=0)


@dataclass(frozen=True)
class Landscape:
    """A fitted free-energy landscape (the model returned by :class:`LandscapeEstimator`).

    Arrays over reported bins have shape ``bin_shape`` ((B,) or (B1, B2)); F arrays are in
    ``energy_unit`` (= kT units when kT = 1) and NaN where undefined.

    Attributes:
        grid: the basis grid (nodes, oversample) and reported bins.
        kT, energy_unit: energy scale of F.
        free_energy_samples: (S, *bin_shape) posterior draws of F (shifted by ``offset``).
        free_energy_quantiles: (3, *bin_shape) 5/50/95 % of F.
        density: posterior-mean density per latent unit**D (bins).
        free_energy_aggregate: F of the plain aggregate posterior, min 0 (blurred).
        free_energy_bootstrap_quantiles: (3, *bin_shape) its Bayesian-bootstrap 5/50/95 %.
        density_aggregate: aggregate-posterior density per latent unit**D.
        node_weights: (S, n_nodes) posterior draws of the basis weights.
        states: :class:`StateSummary`.
        offset: constant subtracted from -kT ln(density) so that min(F median) = 0.
        diagnostics: NUTS R-hat / ESS / divergences, particle and node counts.
        axis_labels: names of the latent axes (e.g. "z1" or "PC1").
    """

    grid: Grid
    kT: float
    energy_unit: str
    free_energy_samples: np.ndarray
    free_energy_quantiles: np.ndarray
    density: np.ndarray
    free_energy_aggregate: np.ndarray
    free_energy_bootstrap_quantiles: np.ndarray
    density_aggregate: np.ndarray
    node_weights: np.ndarray
    states: StateSummary
    offset: float
    diagnostics: dict = field(default_factory=dict)
    axis_labels: tuple[str, ...] = ("z1",)

    @property
    def dim(self) -> int:
        return self.grid.dim

    @property
    def bin_shape(self) -> tuple[int, ...]:
        return self.grid.bin_shape

    @property
    def bin_edges(self) -> tuple[np.ndarray, ...]:
        return self.grid.bin_edges

    @property
    def bin_centers(self) -> tuple[np.ndarray, ...]:
        return self.grid.bin_centers

    @property
    def free_energy_median(self) -> np.ndarray:
        return self.free_energy_quantiles[1]


def _group_particles(
    z_mean: np.ndarray, z_sd: np.ndarray, compress: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group particles whose means agree to ``compress * median(z_sd)`` and whose sds agree to
    a factor ``exp(compress)`` per axis (same rounded values).

    Returns:
        inverse (N,) group of each particle, group means (G, D), group sds (G, D) (averages
        over members) and counts (G,). ``compress <= 0`` gives one group per particle.
    """
    n = z_mean.shape[0]
    if compress <= 0:
        return np.arange(n), z_mean, z_sd, np.ones(n)
    step = compress * np.median(z_sd, axis=0)
    keys = np.concatenate([np.round(z_mean / step), np.round(np.log(z_sd) / compress)], axis=1)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    g = len(counts)
    mean = np.stack([np.bincount(inverse, z_mean[:, d], g) for d in range(z_mean.shape[1])], 1)
    sd = np.stack([np.bincount(inverse, z_sd[:, d], g) for d in range(z_sd.shape[1])], 1)
    return inverse, mean / counts[:, None], sd / counts[:, None], counts.astype(np.float64)


def cell_slopes(grid: Grid, density: np.ndarray, max_change: float = 8.0) -> np.ndarray:
    """Slopes b = -d ln p / dz (1/latent unit) at every cell from a bin density estimate.

    Central differences of -ln p between bin centres (0 where undefined), interpolated
    linearly to the cell centres; |b| h is capped at ``max_change`` (units of kT per cell).

    Returns:
        (D, *grid.shape) slopes per axis and cell.
    """
    from scipy.interpolate import RegularGridInterpolator

    with np.errstate(divide="ignore"):
        f = -np.log(np.asarray(density, dtype=np.float64).reshape(grid.bin_shape))
    f = np.where(np.isfinite(f), f, np.nan)
    centers = grid.bin_centers
    out = []
    mesh = np.meshgrid(*grid.nodes, indexing="ij")
    points = np.stack([m.ravel() for m in mesh], axis=-1)
    for d in range(grid.dim):
        if grid.bin_shape[d] < 2:
            out.append(np.zeros(grid.shape))
            continue
        g = np.gradient(f, centers[d], axis=d)
        g = np.where(np.isfinite(g), g, 0.0)
        interp = RegularGridInterpolator(centers, g, bounds_error=False, fill_value=None)
        cap = max_change / grid.spacing[d]
        out.append(np.clip(interp(points), -cap, cap).reshape(grid.shape))
    return np.stack(out)


def _free_energy(density: np.ndarray, kT: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        f = -kT * np.log(density)
    return np.where(np.isfinite(f), f, np.nan)


class LandscapeEstimator:
    """Estimate a free-energy landscape from per-particle latent posteriors.

    Example:
        >>> model = LandscapeEstimator(LandscapeConfig(n_grid=30)).fit(latents).fetch_model()
    """

    def __init__(self, config: LandscapeConfig | None = None) -> None:
        self.config = config if config is not None else LandscapeConfig()
        self._model: Landscape | None = None

    def fetch_model(self) -> Landscape:
        if self._model is None:
            raise ConfigError("LandscapeEstimator: call fit(latents) before fetch_model()")
        return self._model

    def fit(self, latents: Latents) -> LandscapeEstimator:
        """Fit the landscape to ``latents`` (a :class:`Latents`); returns self."""
        cfg = self.config
        lat = check_dim(latents, cfg.project)
        if cfg.use_draws and lat.z_draws is None:
            raise ConfigError(f"{lat.source}: use_draws=True but the latents have no z_draws")
        draws = lat.z_draws if cfg.use_draws else None
        oversample = cfg.oversample if cfg.oversample is not None else (2 if lat.dim == 1 else 1)
        n_grid = cfg.n_grid if cfg.n_grid is not None else (30 if lat.dim == 1 else 20)
        grid = make_grid(lat.z_mean, lat.z_sd, n_grid, cfg.grid_range, oversample)
        key_nuts, key_boot, key_states = jax.random.split(jax.random.key(cfg.seed), 3)

        log_lik = grid_log_likelihoods(
            lat.z_mean,
            lat.z_sd,
            grid,
            basis=cfg.basis,
            z_draws=draws,
            fit_prior_sd=cfg.fit_prior_sd,
        ).astype(np.float64)
        lik_unit = np.exp(log_lik) * grid.cell_volume  # (N, K): integrates phi_k * q
        support = lik_unit.sum(axis=1)
        keep = support >= 1e-3
        n_dropped = int(np.sum(~keep))
        if n_dropped:
            logger.warning(
                "%d of %d particles lie outside the grid and are left out; widen grid_range",
                n_dropped,
                lat.n_particles,
            )
        if not np.any(keep):
            raise ConfigError("no particle lies on the grid; check grid_range")
        log_lik, lik_unit = log_lik[keep], lik_unit[keep]
        z_mean, z_sd = lat.z_mean[keep], lat.z_sd[keep]
        z_draws = None if draws is None else draws[:, keep]
        counts = (lik_unit / lik_unit.sum(axis=1, keepdims=True)).sum(axis=0)
        active = counts >= cfg.min_count

        # Group particles whose posteriors agree to within compress * median sd (exact rows
        # are then shared; NUTS cost scales with the number of groups, not particles).
        inverse, g_mean, g_sd, g_count = _group_particles(
            z_mean, z_sd, cfg.compress if z_draws is None else 0.0
        )
        if z_draws is None:
            ll_active = grid_log_likelihoods(
                g_mean, g_sd, grid, basis=cfg.basis, fit_prior_sd=cfg.fit_prior_sd
            ).astype(np.float64)[:, active]
        else:
            ll_active = log_lik[:, active]

        w0 = em_populations(ll_active, n_iter=200, counts=g_count)
        slopes = None
        for _ in range(cfg.shape_iterations if cfg.basis == "constant" else 0):
            # Log-linear cells: slopes from the current (EM) estimate of F, then re-estimate.
            w_full = np.zeros(grid.n_nodes)
            w_full[active] = w0
            slopes = cell_slopes(grid, grid.block_sum(w_full) / grid.bin_volume)
            ll_active = grid_log_likelihoods(
                g_mean,
                g_sd,
                grid,
                basis=cfg.basis,
                z_draws=z_draws,
                fit_prior_sd=cfg.fit_prior_sd,
                slopes=slopes,
            ).astype(np.float64)[:, active]
            w0 = em_populations(ll_active, n_iter=200, counts=g_count)
        lik_unit = np.zeros((len(g_count), grid.n_nodes))
        lik_unit[:, active] = np.exp(ll_active) * grid.cell_volume
        lik_unit = lik_unit[inverse]  # back to one row per particle

        post = population_posterior(
            key_nuts,
            ll_active,
            concentration=cfg.concentration / oversample**lat.dim,
            num_warmup=cfg.num_warmup,
            num_samples=cfg.num_samples,
            num_chains=cfg.num_chains,
            init_weights=w0,
            counts=g_count,
        )
        weights = np.zeros((post.weights.shape[0], grid.n_nodes))
        weights[:, active] = post.weights
        bin_w = grid.block_sum(weights)  # (S, n_bins)
        f_samples = _free_energy(bin_w / grid.bin_volume, cfg.kT)
        with np.errstate(all="ignore"):
            f_q = np.quantile(f_samples, QUANTILES, axis=0)
        offset = float(np.nanmin(f_q[1]))
        f_samples = f_samples - offset
        f_q = f_q - offset
        density = bin_w.mean(axis=0) / grid.bin_volume

        # Plain aggregate posterior and its Bayesian bootstrap over particles (comparison).
        masses = bin_masses(z_mean, z_sd, grid, z_draws=z_draws).astype(np.float64)
        density_agg = masses.mean(axis=0) / grid.bin_volume
        f_agg = _free_energy(density_agg, cfg.kT)
        f_agg = f_agg - np.nanmin(f_agg)
        g = np.asarray(
            jax.random.exponential(key_boot, (cfg.n_bootstrap, masses.shape[0])), np.float64
        )
        boot_w = (g / g.sum(axis=1, keepdims=True)) @ masses
        f_boot = _free_energy(boot_w / grid.bin_volume, cfg.kT)
        with np.errstate(all="ignore"):
            f_boot_q = np.quantile(f_boot, QUANTILES, axis=0)
        f_boot_q = f_boot_q - np.nanmin(f_boot_q[1])

        # Per-particle node responsibilities at the posterior-mean weights.
        w_mean = weights.mean(axis=0)
        resp_nodes = lik_unit * w_mean[None, :]
        resp_nodes /= np.maximum(resp_nodes.sum(axis=1, keepdims=True), 1e-300)

        states = self._states(
            key_states,
            grid,
            f_q[1],
            bin_w,
            masses,
            resp_nodes,
            z_mean,
            z_sd,
            g / g.sum(axis=1, keepdims=True),
        )
        shape = grid.bin_shape
        r_hat_max = float(np.nanmax(post.r_hat)) if np.any(np.isfinite(post.r_hat)) else None
        diagnostics = {
            "shape_iterations": int(cfg.shape_iterations if cfg.basis == "constant" else 0),
            "n_particles": int(lat.n_particles),
            "n_particles_used": int(np.sum(keep)),
            "n_particles_outside_grid": n_dropped,
            "n_nodes": int(grid.n_nodes),
            "n_active_nodes": int(np.sum(active)),
            "n_likelihood_rows": len(g_count),
            "node_spacing": list(grid.spacing),
            "bin_width": list(grid.bin_spacing),
            "median_posterior_sd": np.median(z_sd, axis=0).tolist(),
            "basis": cfg.basis,
            "r_hat_max": r_hat_max,
            "ess_min": float(np.min(post.ess)),
            "num_divergences": int(post.num_divergences),
            "num_draws": int(post.weights.shape[0]),
        }
        if lat.projection is not None:
            diagnostics["projection"] = "pca"
        axis_labels = (
            tuple(f"PC{d + 1}" for d in range(lat.dim))
            if lat.projection is not None
            else tuple(f"z{d + 1}" for d in range(lat.dim))
        )
        self._model = Landscape(
            grid=grid,
            kT=float(cfg.kT),
            energy_unit=cfg.energy_unit,
            free_energy_samples=f_samples.reshape(-1, *shape),
            free_energy_quantiles=f_q.reshape(3, *shape),
            density=density.reshape(shape),
            free_energy_aggregate=f_agg.reshape(shape),
            free_energy_bootstrap_quantiles=f_boot_q.reshape(3, *shape),
            density_aggregate=density_agg.reshape(shape),
            node_weights=weights,
            states=states,
            offset=offset,
            diagnostics=diagnostics,
            axis_labels=axis_labels,
        )
        return self

    def _states(
        self,
        key: jax.Array,
        grid: Grid,
        f_median: np.ndarray,
        bin_w: np.ndarray,
        masses: np.ndarray,
        resp_nodes: np.ndarray,
        z_mean: np.ndarray,
        z_sd: np.ndarray,
        boot_v: np.ndarray,
    ) -> StateSummary:
        cfg = self.config
        centers = grid.flat_bin_centers()
        finite = np.isfinite(f_median)
        node_bin = grid.block_sum(np.eye(grid.n_nodes)).argmax(axis=1)  # (n_nodes,)
        if cfg.states == "gmm":
            means, covs = fit_gmm(z_mean, int(cfg.n_states), seed=cfg.seed, z_sd=z_sd)
            ll = gmm_log_likelihoods(z_mean, z_sd, means, covs)
            key_nuts, key_boot = jax.random.split(key)
            post = population_posterior(
                key_nuts,
                ll,
                concentration=1.0,
                num_warmup=cfg.num_warmup,
                num_samples=cfg.num_samples,
                num_chains=cfg.num_chains,
                init_weights=em_populations(ll, n_iter=200),
            )
            w_mean = post.weights.mean(axis=0)
            log_r = ll + np.log(w_mean)[None]
            resp = np.exp(log_r - np.logaddexp.reduce(log_r, axis=1, keepdims=True))
            prior_c = gmm_log_likelihoods(centers, np.zeros_like(centers), means, covs)
            labels = np.where(finite, np.argmax(prior_c + np.log(w_mean), axis=1), -1)
            boot = bayesian_bootstrap(key_boot, resp, n_samples=boot_v.shape[0])
            return StateSummary(
                method="gmm",
                labels=labels.reshape(grid.bin_shape),
                populations=post.weights,
                bootstrap_populations=boot,
                minima=means,
                responsibilities=resp,
            )
        if cfg.states == "kmeans":
            ctr = kmeans_centers(z_mean, int(cfg.n_states), seed=cfg.seed)
            labels = np.where(finite, nearest_labels(centers, ctr), -1)
        else:
            labels = basin_labels(
                f_median.reshape(grid.bin_shape),
                cfg.min_barrier * cfg.kT,
                cfg.min_population,
                cfg.kT,
            )
            labels = labels.ravel()
        n_states = int(labels.max()) + 1
        onehot = np.zeros((grid.n_bins, n_states))
        onehot[labels >= 0, labels[labels >= 0]] = 1.0
        pops = bin_w @ onehot
        pops /= pops.sum(axis=1, keepdims=True)
        boot = (boot_v @ masses) @ onehot
        boot /= boot.sum(axis=1, keepdims=True)
        resp = resp_nodes @ onehot[node_bin]
        minima = np.stack(
            [
                centers[np.flatnonzero(labels == s)[np.argmin(f_median[labels == s])]]
                for s in range(n_states)
            ]
        )
        return StateSummary(
            method=cfg.states,
            labels=labels.reshape(grid.bin_shape),
            populations=pops,
            bootstrap_populations=boot,
            minima=minima,
            responsibilities=resp,
        )
