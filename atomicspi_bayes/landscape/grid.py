"""Regular 1-D / 2-D grids over the latent space and per-particle grid likelihoods.

The landscape density is a finite mixture on a grid of nodes c_k with spacing h_d per axis,
``p(z) = sum_k w_k phi_k(z)``, with one of two bases:

- ``"linear"``: phi_k is the tensor-product hat function centred on node k,
  normalised to integrate to 1 (peak 1/prod(h)). p is then the piecewise-(bi)linear
  interpolation of its node values and ``p(c_k) = w_k / prod(h)`` exactly.
- ``"constant"`` (default of the estimator): phi_k is the indicator of the cell
  [c_k - h/2, c_k + h/2) divided by its volume (a histogram); ``p = w_k / prod(h)`` there.

Both bases misrepresent p inside a cell; the estimator therefore reports bins made of
``oversample`` cells per axis, whose summed weights are much less sensitive to that.
Nodes are flattened in C order (axis 0 slowest). Densities are per latent unit**D.
Pre-processing is plain NumPy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr, logsumexp, ndtr

from atomicspi_bayes.errors import ConfigError, InputFormatError

__all__ = ["BASES", "Grid", "bin_masses", "grid_log_likelihoods", "make_grid"]

BASES = ("linear", "constant")

# Floor for log-likelihoods that underflow (particle very far from a node); keeps sums finite.
LOG_FLOOR = -1.0e4


@dataclass(frozen=True)
class Grid:
    """A regular grid of basis nodes, grouped into reported bins.

    Attributes:
        nodes: ``nodes[d]`` (G_d,) node positions along latent axis d, latent units, equally
            spaced by h_d. Node j sits at the centre of the sub-cell
            [lo_d + j h_d, lo_d + (j + 1) h_d].
        oversample: nodes per reported bin and axis (G_d is a multiple of it). Reported bins
            are blocks of ``oversample**D`` nodes; a bin's population is the sum of its nodes'
            weights.
    """

    nodes: tuple[np.ndarray, ...]
    oversample: int = 1

    @property
    def dim(self) -> int:
        return len(self.nodes)

    @property
    def shape(self) -> tuple[int, ...]:
        """Nodes per axis."""
        return tuple(len(c) for c in self.nodes)

    @property
    def n_nodes(self) -> int:
        return int(np.prod(self.shape))

    @property
    def spacing(self) -> tuple[float, ...]:
        """Node spacing h_d along each axis, latent units."""
        return tuple(float(c[1] - c[0]) for c in self.nodes)

    @property
    def cell_volume(self) -> float:
        """prod(h_d): length (1-D) or area (2-D) per node, latent units**D."""
        return float(np.prod(self.spacing))

    @property
    def bin_shape(self) -> tuple[int, ...]:
        """Reported bins per axis."""
        return tuple(g // self.oversample for g in self.shape)

    @property
    def n_bins(self) -> int:
        return int(np.prod(self.bin_shape))

    @property
    def bin_spacing(self) -> tuple[float, ...]:
        """Reported bin width per axis, latent units."""
        return tuple(self.oversample * h for h in self.spacing)

    @property
    def bin_volume(self) -> float:
        return float(np.prod(self.bin_spacing))

    @property
    def bin_edges(self) -> tuple[np.ndarray, ...]:
        """(B_d + 1,) reported bin edges per axis, latent units."""
        return tuple(
            np.linspace(c[0] - 0.5 * h, c[-1] + 0.5 * h, b + 1)
            for c, h, b in zip(self.nodes, self.spacing, self.bin_shape, strict=True)
        )

    @property
    def bin_centers(self) -> tuple[np.ndarray, ...]:
        """(B_d,) reported bin centres per axis, latent units."""
        return tuple(0.5 * (e[1:] + e[:-1]) for e in self.bin_edges)

    def flat_nodes(self) -> np.ndarray:
        """(n_nodes, D) node positions in flattened C order."""
        mesh = np.meshgrid(*self.nodes, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=-1)

    def flat_bin_centers(self) -> np.ndarray:
        """(n_bins, D) reported bin centres in flattened C order."""
        mesh = np.meshgrid(*self.bin_centers, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=-1)

    def block_sum(self, values: np.ndarray) -> np.ndarray:
        """Sum node values (..., n_nodes) over each reported bin -> (..., n_bins)."""
        lead = values.shape[:-1]
        o = self.oversample
        shaped = values.reshape(*lead, *[x for b in self.bin_shape for x in (b, o)])
        axes = tuple(len(lead) + 2 * d + 1 for d in range(self.dim))
        return shaped.sum(axis=axes).reshape(*lead, self.n_bins)


def make_grid(
    z_mean: np.ndarray,
    z_sd: np.ndarray,
    n_bins: int | Sequence[int],
    grid_range: Sequence[Sequence[float]] | None = None,
    oversample: int = 1,
) -> Grid:
    """Grid of reported bins (each split into ``oversample`` basis nodes per axis).

    Args:
        z_mean, z_sd: (N, D) posterior means and sds, latent units.
        n_bins: reported bins per axis (int or one per axis), >= 3.
        grid_range: optional ((lo, hi), ...) outer bin edges per axis, latent units. Default:
            [q_0.1%(z_mean) - 3 median(z_sd), q_99.9%(z_mean) + 3 median(z_sd)] per axis.
        oversample: basis nodes per bin and axis (>= 1).
    """
    d = z_mean.shape[1]
    n = (int(n_bins),) * d if np.ndim(n_bins) == 0 else tuple(int(g) for g in n_bins)
    if len(n) != d or min(n) < 3:
        raise ConfigError(f"n_grid={n_bins!r}: need >= 3 bins for each of the {d} latent axes")
    if int(oversample) < 1:
        raise ConfigError(f"oversample={oversample}: must be an integer >= 1")
    if grid_range is None:
        lo = np.quantile(z_mean, 0.001, axis=0) - 3.0 * np.median(z_sd, axis=0)
        hi = np.quantile(z_mean, 0.999, axis=0) + 3.0 * np.median(z_sd, axis=0)
        ranges = list(zip(lo.tolist(), hi.tolist(), strict=True))
    else:
        ranges = [tuple(float(v) for v in r) for r in grid_range]
        if len(ranges) != d or any(len(r) != 2 or not r[0] < r[1] for r in ranges):
            raise ConfigError(
                f"grid_range={grid_range!r}: need one (lo, hi) with lo < hi per latent axis ({d})"
            )
    o = int(oversample)
    nodes = []
    for (lo_, hi_), g in zip(ranges, n, strict=True):
        h = (hi_ - lo_) / (g * o)
        nodes.append(lo_ + (np.arange(g * o) + 0.5) * h)
    return Grid(tuple(nodes), o)


def _second_antiderivative(x: np.ndarray) -> np.ndarray:
    """G(x) = int_{-inf}^x Phi(t) dt = x Phi(x) + phi(x)."""
    return x * ndtr(x) + np.exp(-0.5 * x**2) / np.sqrt(2.0 * np.pi)


def _axis_log_lik_linear(mean: np.ndarray, sd: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """log int hat_k(z) N(z; mean, sd^2) dz / h for each node: (N,), (N,), (G,) -> (N, G).

    With ramp(x) = max(x, 0): hat = [ramp(z-c+h) - 2 ramp(z-c) + ramp(z-c-h)] / h and
    E[ramp(z - a)] = sd G((mean - a)/sd). The particle is reflected to the left of the node
    (the hat is symmetric) so that the second difference never cancels catastrophically.
    """
    h = nodes[1] - nodes[0]
    s = sd[:, None]
    dist = -np.abs(mean[:, None] - nodes[None, :])
    val = (
        s
        / h**2
        * (
            _second_antiderivative((dist + h) / s)
            - 2.0 * _second_antiderivative(dist / s)
            + _second_antiderivative((dist - h) / s)
        )
    )
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(np.clip(val, 0.0, None)), LOG_FLOOR)


def _log_diff_ndtr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Phi(b) - Phi(a)) for a < b, accurate in both tails."""
    flip = a > 0
    lo = np.where(flip, -b, a)
    hi = np.where(flip, -a, b)
    lhi = log_ndtr(hi)
    llo = log_ndtr(lo)
    with np.errstate(divide="ignore"):
        out = lhi + np.log(-np.expm1(llo - lhi))
    return np.maximum(out, LOG_FLOOR)


def _axis_log_lik_constant(mean: np.ndarray, sd: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """log (mass of N(mean, sd^2) in cell k) / h: (N,), (N,), (G,) -> (N, G)."""
    h = nodes[1] - nodes[0]
    edges = np.concatenate([nodes - 0.5 * h, [nodes[-1] + 0.5 * h]])
    a = (edges[None, :-1] - mean[:, None]) / sd[:, None]
    b = (edges[None, 1:] - mean[:, None]) / sd[:, None]
    return _log_diff_ndtr(a, b) - np.log(h)


def _log_cell_norm(b: np.ndarray, h: float) -> np.ndarray:
    """log int_{-h/2}^{h/2} exp(-b u) du = log h + log(sinh(x)/x), x = b h / 2."""
    x = np.abs(b) * h / 2.0
    small = x < 1e-4
    xs = np.where(small, 1.0, x)
    big = xs + np.log1p(-np.exp(-2.0 * xs)) - np.log(2.0 * xs)
    return np.log(h) + np.where(small, x**2 / 6.0, big)


def _log_lik_sloped(mean: np.ndarray, sd: np.ndarray, grid: Grid, slopes: np.ndarray) -> np.ndarray:
    """(N, n_nodes) log int phi_k N(z; mean, diag sd^2) dz for log-linear cells.

    In cell k, phi_k(z) ∝ exp(-sum_d b[d, k] (z_d - c_d,k)) (normalised on the cell); per axis
    int_lo^hi exp(-b (z - c)) N(z; m, s) dz = exp(-b (m - c) + b^2 s^2 / 2)
    [Phi((hi - m')/s) - Phi((lo - m')/s)], m' = m - b s^2 (exact for any s).
    """
    centers = grid.flat_nodes()  # (K, D)
    out = np.zeros((mean.shape[0], grid.n_nodes))
    for d, h in enumerate(grid.spacing):
        b = slopes[d].reshape(-1)[None, :]
        c = centers[None, :, d]
        m, s = mean[:, d, None], sd[:, d, None]
        shifted = m - b * s**2
        out += (
            -b * (m - c)
            + 0.5 * b**2 * s**2
            + _log_diff_ndtr((c - 0.5 * h - shifted) / s, (c + 0.5 * h - shifted) / s)
            - _log_cell_norm(b, h)
        )
    return out


def _axis_log_basis_at(points: np.ndarray, nodes: np.ndarray, basis: str) -> np.ndarray:
    """log phi_k(points) along one axis: (M,) x (G,) -> (M, G)."""
    h = nodes[1] - nodes[0]
    u = np.abs(points[:, None] - nodes[None, :]) / h
    val = np.clip(1.0 - u, 0.0, None) if basis == "linear" else (u < 0.5).astype(np.float64)
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(val / h), LOG_FLOOR)


def _outer_sum(per_axis: list[np.ndarray]) -> np.ndarray:
    out = per_axis[0]
    for axis in per_axis[1:]:
        out = (out[:, :, None] + axis[:, None, :]).reshape(out.shape[0], -1)
    return out


def grid_log_likelihoods(
    z_mean: np.ndarray,
    z_sd: np.ndarray,
    grid: Grid,
    *,
    basis: str = "constant",
    z_draws: np.ndarray | None = None,
    fit_prior_sd: float | None = None,
    slopes: np.ndarray | None = None,
) -> np.ndarray:
    """Per-particle log-likelihood of each grid basis function, float32 (N, n_nodes).

    ``L[n, k] = int phi_k(z) p(y_n | z) dz`` up to a per-particle constant, so that the
    marginal likelihood of particle n under the landscape p = sum_k w_k phi_k is
    ``sum_k w_k L[n, k]``. The fit's per-particle posterior q(z | y_n) stands in for the
    likelihood p(y_n | z) (a flat prior). If the fit used a Normal(0, fit_prior_sd**2) prior
    on each latent axis, pass ``fit_prior_sd`` to divide it out (Normal posteriors: the
    precisions subtract; draws: importance weights 1/prior(draw)).

    With ``z_draws`` (S, N, D), L[n, k] = sum_s v_s phi_k(z_draws[s, n]) (Monte Carlo).
    Entries that underflow are floored at ``LOG_FLOOR``.

    ``slopes`` (D, *grid.shape), basis "constant" only: within cell k the density is
    log-linear, phi_k ∝ exp(-sum_d slopes[d, k] (z_d - c_d,k)) (slopes in 1/latent unit,
    i.e. dF/dz / kT), instead of uniform. With slopes taken from a first estimate of F this
    removes most of the histogram's misspecification on steep flanks.
    """
    if basis not in BASES:
        raise ConfigError(f"basis={basis!r} is not one of {BASES}")
    if z_mean.shape[1] != grid.dim:
        raise ConfigError(f"latent dimension {z_mean.shape[1]} differs from grid dim {grid.dim}")
    if z_draws is None:
        mean, sd = z_mean, z_sd
        if fit_prior_sd is not None:
            prec = 1.0 / z_sd**2 - 1.0 / fit_prior_sd**2
            if np.any(prec <= 0):
                raise InputFormatError(
                    f"fit_prior_sd={fit_prior_sd}: {int(np.sum(prec <= 0))} posterior sds are "
                    ">= the prior sd, so the prior cannot be divided out; check fit_prior_sd"
                )
            sd = 1.0 / np.sqrt(prec)
            mean = z_mean / z_sd**2 * sd**2
        if slopes is not None:
            if basis != "constant":
                raise ConfigError("slopes (log-linear cells) need basis='constant'")
            return np.maximum(_log_lik_sloped(mean, sd, grid, slopes), LOG_FLOOR).astype(np.float32)
        axis_fn = _axis_log_lik_linear if basis == "linear" else _axis_log_lik_constant
        per_axis = [axis_fn(mean[:, d], sd[:, d], grid.nodes[d]) for d in range(grid.dim)]
        return np.maximum(_outer_sum(per_axis), LOG_FLOOR).astype(np.float32)
    n_draws, n_part, _ = z_draws.shape
    if fit_prior_sd is None:
        log_v = np.full((n_draws, n_part), -np.log(n_draws))
    else:
        log_v = 0.5 * np.sum(z_draws**2, axis=-1) / fit_prior_sd**2
        log_v = log_v - logsumexp(log_v, axis=0, keepdims=True)
    if slopes is not None and basis != "constant":
        raise ConfigError("slopes (log-linear cells) need basis='constant'")
    centers = grid.flat_nodes()
    acc = np.full((n_part, grid.n_nodes), -np.inf)
    for s in range(n_draws):  # loop over draws (not particles); each step is vectorised
        per_axis = [
            _axis_log_basis_at(z_draws[s, :, d], grid.nodes[d], basis) for d in range(grid.dim)
        ]
        term = _outer_sum(per_axis) + log_v[s][:, None]
        if slopes is not None:
            for d, h in enumerate(grid.spacing):
                b = slopes[d].reshape(-1)[None, :]
                term = term + (
                    -b * (z_draws[s, :, d, None] - centers[None, :, d])
                    - _log_cell_norm(b, h)
                    + np.log(h)
                )
        acc = np.logaddexp(acc, term)
    return np.maximum(acc, LOG_FLOOR).astype(np.float32)


def bin_masses(
    z_mean: np.ndarray, z_sd: np.ndarray, grid: Grid, *, z_draws: np.ndarray | None = None
) -> np.ndarray:
    """Mass of each particle's posterior in each reported bin, float32 (N, n_bins).

    Normal posteriors: products of per-axis CDF differences over the bin edges; draws: the
    fraction of the particle's draws in each bin. Rows sum to the mass inside the grid.
    """
    edges = grid.bin_edges
    if z_draws is None:
        per_axis = []
        for d in range(grid.dim):
            a = (edges[d][None, :-1] - z_mean[:, d, None]) / z_sd[:, d, None]
            b = (edges[d][None, 1:] - z_mean[:, d, None]) / z_sd[:, d, None]
            per_axis.append(_log_diff_ndtr(a, b))
        return np.exp(_outer_sum(per_axis)).astype(np.float32)
    n_draws, n_part, _ = z_draws.shape
    flat = np.zeros((n_part, grid.n_bins))
    idx = np.zeros((n_draws, n_part), dtype=np.int64)
    inside = np.ones((n_draws, n_part), dtype=bool)
    for d in range(grid.dim):
        k = np.searchsorted(edges[d], z_draws[..., d], side="right") - 1
        inside &= (k >= 0) & (k < len(edges[d]) - 1)
        idx = idx * (len(edges[d]) - 1) + np.clip(k, 0, len(edges[d]) - 2)
    rows = np.broadcast_to(np.arange(n_part), (n_draws, n_part))
    np.add.at(flat, (rows[inside], idx[inside]), 1.0 / n_draws)
    return flat.astype(np.float32)
