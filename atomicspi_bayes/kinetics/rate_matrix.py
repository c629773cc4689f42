"""Smoluchowski rate matrices on a free-energy grid (square-root approximation, SqRA).

Overdamped dynamics with diffusion coefficient D on F(z) (Lie, Fackeldey & Weber 2013;
Donati, Heida, Keller & Weber 2018): for grid cells i, j adjacent along axis d (spacing h_d),

    Q_ij = (D / h_d**2) * exp(-(F_j - F_i) / (2 kT)),    Q_ii = -sum_{j != i} Q_ij,

which satisfies detailed balance pi_i Q_ij = pi_j Q_ji with pi ∝ exp(-F / kT) and converges to
the Smoluchowski generator as h -> 0. Units: z and h in latent units, D in latent units**2 per
unit time (so D sets the time unit), F and kT in the same energy unit; Q in 1/time.
Cells with non-finite F are left out (no flux through them); if the remaining cells are not
connected, the largest connected component is kept.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from atomicspi_bayes.errors import ConfigError, InputFormatError

__all__ = ["RateMatrix", "neighbour_pairs", "sqra_rate_matrix"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateMatrix:
    """A continuous-time Markov generator on grid cells.

    Attributes:
        Q: (M, M) rate matrix, 1/time; rows sum to 0.
        cells: (M,) flat (C-order) grid indices of the M cells kept.
        stationary: (M,) stationary distribution pi ∝ exp(-F/kT) over the kept cells.
        grid_shape: shape of the free-energy grid.
    """

    Q: np.ndarray
    cells: np.ndarray
    stationary: np.ndarray
    grid_shape: tuple[int, ...]

    @property
    def n_cells(self) -> int:
        return int(self.Q.shape[0])

    def to_grid(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Scatter (M,) per-cell values back onto the grid (``fill`` elsewhere)."""
        out = np.full(int(np.prod(self.grid_shape)), fill, dtype=np.float64)
        out[self.cells] = values
        return out.reshape(self.grid_shape)

    def from_grid(self, values: np.ndarray) -> np.ndarray:
        """Gather grid values (grid_shape) onto the kept cells -> (M,)."""
        return np.asarray(values).reshape(-1)[self.cells]


def neighbour_pairs(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Per axis, (P_d, 2) flat indices of cells adjacent along that axis."""
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    out = []
    for axis in range(len(shape)):
        a = np.take(idx, np.arange(shape[axis] - 1), axis=axis).ravel()
        b = np.take(idx, np.arange(1, shape[axis]), axis=axis).ravel()
        out.append(np.stack([a, b], axis=1))
    return out


def sqra_rate_matrix(
    free_energy: np.ndarray,
    spacing: float | Sequence[float],
    *,
    diffusion: float = 1.0,
    kT: float = 1.0,
) -> RateMatrix:
    """SqRA rate matrix of overdamped diffusion on a 1-D or 2-D free-energy grid.

    Args:
        free_energy: (G,) or (G1, G2) F per cell, energy units of ``kT``; NaN/inf = excluded.
        spacing: cell width h (scalar or one per axis), latent units.
        diffusion: D > 0, latent units**2 per unit time.
        kT: thermal energy in the units of F (> 0).

    Raises:
        ConfigError: D <= 0, kT <= 0, bad spacing, or fewer than 2 connected finite cells.
    """
    diffusion = float(diffusion)
    if not (math.isfinite(diffusion) and diffusion > 0):
        raise ConfigError(
            f"diffusion={diffusion}: the diffusion coefficient must be a positive number "
            "(latent units^2 per unit time), e.g. --diffusion 1.0"
        )
    if not (math.isfinite(kT) and kT > 0):
        raise ConfigError(f"kT={kT}: must be a positive number")
    f = np.asarray(free_energy, dtype=np.float64)
    if f.ndim not in (1, 2):
        raise InputFormatError(f"free_energy has shape {f.shape}; expected a 1-D or 2-D grid")
    h = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (f.ndim,))
    if not np.all(np.isfinite(h) & (h > 0)):
        raise ConfigError(f"spacing={spacing}: grid spacings must be positive")
    flat = f.ravel()
    ok = np.isfinite(flat)
    rows, cols, vals = [], [], []
    for axis, pairs in enumerate(neighbour_pairs(f.shape)):
        keep = ok[pairs[:, 0]] & ok[pairs[:, 1]]
        a, b = pairs[keep, 0], pairs[keep, 1]
        rate = diffusion / h[axis] ** 2
        half = (flat[b] - flat[a]) / (2.0 * kT)
        rows += [a, b]
        cols += [b, a]
        vals += [rate * np.exp(-half), rate * np.exp(half)]
    n = flat.size
    if not rows:
        raise ConfigError("free_energy has fewer than 2 adjacent finite cells; no dynamics")
    graph = coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    ).tocsr()
    n_comp, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp[ok], minlength=n_comp)
    main = int(np.argmax(sizes))
    cells = np.flatnonzero(ok & (comp == main))
    if len(cells) < 2:
        raise ConfigError("free_energy has fewer than 2 connected finite cells; no dynamics")
    if len(cells) < int(np.sum(ok)):
        logger.warning(
            "rate matrix: kept the largest connected set of %d of %d finite cells",
            len(cells),
            int(np.sum(ok)),
        )
    q = graph[cells][:, cells].toarray()
    np.fill_diagonal(q, -q.sum(axis=1))
    fc = flat[cells]
    pi = np.exp(-(fc - fc.min()) / kT)
    return RateMatrix(Q=q, cells=cells, stationary=pi / pi.sum(), grid_shape=f.shape)
