"""Kinetics with uncertainty: ``KineticsEstimator(cfg).fit(F_samples, spacing).fetch_model()``.

For every sampled landscape F_s (draws from the landscape's population posterior) a SqRA
rate matrix Q_s is built (:mod:`.rate_matrix`) and analysed: relaxation (implied) timescales,
stationary populations of the metastable states, mean first-passage times between them from
the linear system on Q_s, and a deeptime MarkovStateModel of T(lag) = expm(Q_s lag) whose
timescales and (discrete-time) MFPTs are reported alongside. The metastable states are found
once, by PCCA+ on the reference landscape (the posterior median), so that they mean the same
thing in every draw; MFPTs run between their cores (cells with PCCA+ membership >=
``core_threshold``). Rates are k_ij = 1 / MFPT_ij. All times are in the unit fixed by the
diffusion coefficient D (latent units**2 per unit time).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.kinetics.analysis import (
    implied_timescales,
    markov_state_model,
    mean_first_passage_time,
)
from atomicspi_bayes.kinetics.rate_matrix import RateMatrix, sqra_rate_matrix

__all__ = ["KineticsConfig", "KineticsEstimator", "KineticsModel"]

logger = logging.getLogger(__name__)

QUANTILES = (0.05, 0.5, 0.95)


@dataclass(frozen=True)
class KineticsConfig:
    """Settings of :class:`KineticsEstimator`.

    Attributes:
        diffusion: D > 0, latent units**2 per unit time (sets the time unit).
        lag: MSM lag time (time units); None -> one tenth of the slowest relaxation time of
            the reference landscape.
        n_states: number of PCCA+ metastable states (>= 2).
        n_timescales: number of slowest relaxation times reported (>= 1).
        core_threshold: PCCA+ membership defining a state's core for MFPTs (0.5 < c <= 1).
        max_samples: at most this many landscape draws are analysed (evenly spaced).
    """

    diffusion: float = 1.0
    lag: float | None = None
    n_states: int = 2
    n_timescales: int = 3
    core_threshold: float = 0.9
    max_samples: int = 200

    def __post_init__(self) -> None:
        d = float(self.diffusion)
        if not (math.isfinite(d) and d > 0):
            raise ConfigError(
                f"diffusion={self.diffusion}: the diffusion coefficient must be a positive "
                "number (latent units^2 per unit time), e.g. --diffusion 1.0"
            )
        if self.lag is not None and not (math.isfinite(self.lag) and self.lag > 0):
            raise ConfigError(f"lag={self.lag}: the lag time must be > 0 (time units)")
        if int(self.n_states) < 2:
            raise ConfigError(f"n_states={self.n_states}: need at least 2 metastable states")
        if int(self.n_timescales) < 1:
            raise ConfigError(f"n_timescales={self.n_timescales}: must be >= 1")
        if not 0.5 < self.core_threshold <= 1.0:
            raise ConfigError(f"core_threshold={self.core_threshold}: must be in (0.5, 1]")
        if int(self.max_samples) < 1:
            raise ConfigError(f"max_samples={self.max_samples}: must be >= 1")


@dataclass(frozen=True)
class KineticsModel:
    """Kinetic quantities per landscape draw (S draws) and their quantiles.

    Attributes:
        diffusion, lag, kT: D, MSM lag time, thermal energy (units of F).
        reference: :class:`RateMatrix` of the reference (median) landscape.
        memberships: (M, n_states) PCCA+ memberships on the reference (cells of ``reference``).
        assignments: (M,) crisp state of each cell (argmax membership).
        cores: (n_states, M) boolean core sets used for MFPTs.
        timescales: (S, n_timescales) relaxation times -1/mu_i of Q, time units.
        timescales_msm: (S, n_timescales) deeptime MSM implied timescales at ``lag``.
        populations: (S, n_states) stationary probability of each crisp state.
        mfpt: (S, n_states, n_states) MFPT core i -> core j from Q (diagonal 0), time units.
        mfpt_msm: (S, n_states, n_states) deeptime MSM MFPT at ``lag`` (discrete time).
        rates: (S, n_states, n_states) 1 / mfpt (diagonal 0), 1/time.
        state_minima: (n_states,) flat grid index of each state's lowest reference-F cell.
    """

    diffusion: float
    lag: float
    kT: float
    reference: RateMatrix
    memberships: np.ndarray
    assignments: np.ndarray
    cores: np.ndarray
    timescales: np.ndarray
    timescales_msm: np.ndarray
    populations: np.ndarray
    mfpt: np.ndarray
    mfpt_msm: np.ndarray
    rates: np.ndarray
    state_minima: np.ndarray
    extra: dict = field(default_factory=dict)

    @property
    def n_states(self) -> int:
        return int(self.memberships.shape[1])

    @staticmethod
    def quantiles(samples: np.ndarray, q=QUANTILES) -> np.ndarray:
        """Quantiles over the draw axis (axis 0)."""
        return np.quantile(samples, q, axis=0)


class KineticsEstimator:
    """Rate-matrix kinetics of sampled free-energy landscapes."""

    def __init__(self, config: KineticsConfig | None = None) -> None:
        self.config = config if config is not None else KineticsConfig()
        self._model: KineticsModel | None = None

    def fetch_model(self) -> KineticsModel:
        if self._model is None:
            raise ConfigError("KineticsEstimator: call fit(...) before fetch_model()")
        return self._model

    def fit(
        self,
        free_energy_samples: np.ndarray,
        spacing: float | tuple[float, ...],
        *,
        kT: float = 1.0,
        reference: np.ndarray | None = None,
    ) -> KineticsEstimator:
        """Analyse landscape draws.

        Args:
            free_energy_samples: (S, G) or (S, G1, G2) draws of F (energy units of ``kT``);
                NaN = undefined cell (cells undefined in any draw are left out).
            spacing: grid spacing (scalar or per axis), latent units.
            kT: thermal energy in the units of F.
            reference: landscape used to define states; default: median over draws.
        """
        cfg = self.config
        f = np.asarray(free_energy_samples, dtype=np.float64)
        if f.ndim not in (2, 3) or f.shape[0] < 1:
            raise InputFormatError(
                f"free_energy_samples has shape {f.shape}; expected (S, G) or (S, G1, G2)"
            )
        finite_all = np.all(np.isfinite(f), axis=0)
        if not np.any(finite_all):
            raise InputFormatError("free_energy_samples: no grid cell is finite in every draw")
        if reference is None:
            ref = np.median(np.where(finite_all, f, 0.0), axis=0)
        else:
            ref = np.asarray(reference, dtype=np.float64)
        ref = np.where(finite_all, ref, np.nan)
        rm_ref = sqra_rate_matrix(ref, spacing, diffusion=cfg.diffusion, kT=kT)
        mask = np.zeros(ref.size, dtype=bool)
        mask[rm_ref.cells] = True
        mask = mask.reshape(ref.shape)

        lag = cfg.lag
        if lag is None:
            lag = float(implied_timescales(rm_ref, 1)[0]) / 10.0
        n_states = int(cfg.n_states)
        if n_states > rm_ref.n_cells:
            raise ConfigError(f"n_states={n_states} exceeds the {rm_ref.n_cells} grid cells")
        msm_ref = markov_state_model(rm_ref, lag)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
            chi = np.asarray(msm_ref.pcca(n_states).memberships, dtype=np.float64)
        # Order states by the position (flat index) of their lowest cell, for stable labels.
        fref = ref.reshape(-1)[rm_ref.cells]
        crisp = np.argmax(chi, axis=1)
        minima_local = []
        for j in range(n_states):
            members = np.flatnonzero(crisp == j)
            if len(members) == 0:
                raise ConfigError(
                    f"PCCA+ found an empty state with n_states={n_states}; use fewer states"
                )
            minima_local.append(members[np.argmin(fref[members])])
        order = np.argsort(rm_ref.cells[np.asarray(minima_local)])
        chi = chi[:, order]
        crisp = np.argmax(chi, axis=1)
        minima = rm_ref.cells[np.asarray(minima_local)[order]]
        cores = chi.T >= cfg.core_threshold
        for j in range(n_states):
            if not np.any(cores[j]):
                logger.warning(
                    "state %d has no cell with membership >= %.2f; its core is its crisp set",
                    j,
                    cfg.core_threshold,
                )
                cores[j] = crisp == j

        n_draws = f.shape[0]
        pick = np.unique(np.linspace(0, n_draws - 1, min(cfg.max_samples, n_draws)).astype(int))
        k = int(cfg.n_timescales)
        k_eff = min(k, rm_ref.n_cells - 1)
        out = {
            "timescales": np.full((len(pick), k), np.nan),
            "timescales_msm": np.full((len(pick), k), np.nan),
            "populations": np.zeros((len(pick), n_states)),
            "mfpt": np.zeros((len(pick), n_states, n_states)),
            "mfpt_msm": np.zeros((len(pick), n_states, n_states)),
        }
        onehot = np.eye(n_states)[crisp]  # (M, n_states)
        for i, s in enumerate(pick):
            fs = np.where(mask, f[s], np.nan)
            rm = sqra_rate_matrix(fs, spacing, diffusion=cfg.diffusion, kT=kT)
            if not np.array_equal(rm.cells, rm_ref.cells):
                raise InputFormatError(
                    f"landscape draw {s} has a different set of cells than the median"
                )
            out["timescales"][i, :k_eff] = implied_timescales(rm, k_eff)
            out["populations"][i] = rm.stationary @ onehot
            msm = markov_state_model(rm, lag)
            out["timescales_msm"][i, :k_eff] = msm.timescales(k_eff)
            for a in range(n_states):
                for b in range(n_states):
                    if a != b:
                        out["mfpt"][i, a, b] = mean_first_passage_time(rm, cores[a], cores[b])
                        out["mfpt_msm"][i, a, b] = msm.mfpt(
                            np.flatnonzero(cores[a]), np.flatnonzero(cores[b])
                        )
        with np.errstate(divide="ignore"):
            rates = np.where(out["mfpt"] > 0, 1.0 / out["mfpt"], 0.0)
        self._model = KineticsModel(
            diffusion=float(cfg.diffusion),
            lag=float(lag),
            kT=float(kT),
            reference=rm_ref,
            memberships=chi,
            assignments=crisp,
            cores=cores,
            rates=rates,
            state_minima=minima,
            extra={"draws_used": pick},
            **out,
        )
        return self
