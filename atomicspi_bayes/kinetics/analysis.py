"""Kinetic quantities of a rate matrix: timescales, MFPT, transition matrices, deeptime MSMs.

Times are in the unit set by the diffusion coefficient (see :mod:`.rate_matrix`).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import eigh, expm

from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.kinetics.rate_matrix import RateMatrix

__all__ = [
    "implied_timescales",
    "markov_state_model",
    "mean_first_passage_time",
    "relaxation_spectrum",
    "transition_matrix",
]


def _symmetrized(rm: RateMatrix) -> tuple[np.ndarray, np.ndarray]:
    """S = Pi^{1/2} Q Pi^{-1/2} (symmetric by detailed balance) and sqrt(pi)."""
    sq = np.sqrt(rm.stationary)
    s = rm.Q * sq[:, None] / sq[None, :]
    return 0.5 * (s + s.T), sq


def relaxation_spectrum(rm: RateMatrix, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues mu_0 = 0 > mu_1 >= ... of Q and right eigenvectors, via the symmetric form.

    Returns:
        mu (n,) in 1/time (descending) and right eigenvectors psi (M, n) with Q psi = mu psi,
        normalised so that sum_i pi_i psi_i^2 = 1.
    """
    s, sq = _symmetrized(rm)
    m = rm.n_cells
    n = m if n is None else min(int(n), m)
    mu, v = eigh(s, subset_by_index=(m - n, m - 1))
    mu, v = mu[::-1], v[:, ::-1]
    return mu, v / sq[:, None]


def implied_timescales(rm: RateMatrix, k: int) -> np.ndarray:
    """The k slowest relaxation times t_i = -1/mu_i, i = 1..k (time units)."""
    mu, _ = relaxation_spectrum(rm, k + 1)
    return -1.0 / mu[1 : k + 1]


def mean_first_passage_time(rm: RateMatrix, source: np.ndarray, target: np.ndarray) -> float:
    """MFPT from ``source`` to ``target`` (boolean masks over the M cells), time units.

    Solves Q_XX m_X = -1 on the non-target cells X (m = 0 on the target); the start is
    distributed as pi restricted to the source (deeptime's convention).
    """
    source = np.asarray(source, dtype=bool)
    target = np.asarray(target, dtype=bool)
    if not np.any(source) or not np.any(target):
        raise ConfigError("mean_first_passage_time: source and target sets must be non-empty")
    return _mfpt_solve(rm, source, target)


def _mfpt_solve(rm: RateMatrix, source: np.ndarray, target: np.ndarray) -> float:
    rest = ~target
    m = np.zeros(rm.n_cells)
    m[rest] = np.linalg.solve(rm.Q[np.ix_(rest, rest)], -np.ones(int(rest.sum())))
    pi = rm.stationary * source
    return float(np.sum(pi * m) / np.sum(pi))


def transition_matrix(rm: RateMatrix, lag: float) -> np.ndarray:
    """T(lag) = expm(Q lag), row-stochastic (M, M); tiny negative round-off clipped."""
    if not lag > 0:
        raise ConfigError(f"lag={lag}: the lag time must be > 0 (time units)")
    t = expm(rm.Q * float(lag))
    t = np.clip(t, 0.0, None)
    return t / t.sum(axis=1, keepdims=True)


def markov_state_model(rm: RateMatrix, lag: float):
    """deeptime ``MarkovStateModel`` of T(lag) with the exact stationary distribution."""
    from deeptime.markov.msm import MarkovStateModel

    return MarkovStateModel(
        transition_matrix(rm, lag), stationary_distribution=rm.stationary, lagtime=float(lag)
    )
