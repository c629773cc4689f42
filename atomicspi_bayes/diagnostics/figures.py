"""Diagnostic figures as :class:`matplotlib.figure.Figure` objects, saved as PNG.

No pyplot global state: every function builds a new ``Figure`` (Agg canvas) from plain
arrays or result objects; :func:`save_figure` writes it atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "BAND",
    "BLUE",
    "GREY",
    "LIGHT",
    "RED",
    "amortization_figure",
    "fsc_figure",
    "new_figure",
    "posterior_sd_figure",
    "ppc_figures",
    "save_figure",
    "sbc_ecdf_figure",
    "sbc_rank_figure",
    "tidy_axes",
]

# the house style of every figure (diagnostics and report/plots.py share it)
BLUE = "#1f5fa8"
LIGHT = "#9bbbe0"
RED = "#c0392b"
GREY = "#555555"
BAND = "#dddddd"
_BLUE, _LIGHT, _RED, _GREY, _BAND = BLUE, LIGHT, RED, GREY, BAND


def new_figure(width: float, height: float) -> Figure:
    """A new constrained-layout figure of ``width`` x ``height`` inches on white."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    fig.patch.set_facecolor("white")
    return fig


def tidy_axes(ax, *, grid: bool = True) -> None:
    """House style of an axes: no top/right spines, small ticks, a light grid."""
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=9)
    if grid:
        ax.grid(True, color="#e4e4e4", linewidth=0.7)
        ax.set_axisbelow(True)


_figure, _tidy = new_figure, tidy_axes


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically; returns the path."""
    from atomicspi_bayes.io._atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi, facecolor="white")
    return path


# ---------------------------------------------------------------- SBC


def sbc_rank_figure(result: Any, *, max_panels: int = 6) -> Figure:
    """Rank histograms (one panel per coordinate) with the 99 % band of a uniform histogram."""
    from scipy import stats

    names = result.names[:max_panels]
    s, n_bins = result.n_sims, result.n_bins
    lo, hi = stats.binom.ppf([0.005, 0.995], s, 1.0 / n_bins)
    fig = _figure(min(max(3.4 * len(names) + 0.6, 5.6), 14.0), 3.2)
    axes = np.atleast_1d(fig.subplots(1, len(names), sharey=True))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for j, (ax, name) in enumerate(zip(axes, names, strict=True)):
        counts, _ = np.histogram(result.pit[:, j], bins=edges)
        ax.axhspan(lo, hi, color=_BAND)
        ax.axhline(s / n_bins, color=_GREY, linewidth=1.0)
        ax.stairs(counts, edges * (result.n_draws + 1), fill=True, color=_BLUE, alpha=0.85)
        ax.set_xlabel(f"rank of true {name} (of {result.n_draws} draws)")
        ax.set_title(
            f"{name}: KS p = {result.ks_pvalue[name]:.3g}, χ² p = {result.chi2_pvalue[name]:.3g}",
            fontsize=9,
        )
        _tidy(ax, grid=False)
    axes[0].set_ylabel("simulations per bin")
    fig.suptitle(
        f"SBC rank histograms ({s:,} simulations)\ngrey: 99 % band of a uniform histogram",
        fontsize=10,
    )
    return fig


def sbc_ecdf_figure(result: Any, *, max_panels: int = 6) -> Figure:
    """ECDF of the PIT values minus the uniform CDF, with the 99 % simultaneous KS band."""
    names = result.names[:max_panels]
    s = result.n_sims
    band = 1.628 / np.sqrt(s)  # Kolmogorov 99 % quantile / sqrt(S)
    grid = np.linspace(0.0, 1.0, 201)
    fig = _figure(4.6, 3.4)
    ax = fig.subplots()
    ax.fill_between(grid, -band, band, color=_BAND, linewidth=0, label="99 % KS band")
    for j, name in enumerate(names):
        ecdf = np.searchsorted(np.sort(result.pit[:, j]), grid, side="right") / s
        ax.plot(grid, ecdf - grid, linewidth=1.5, label=name)
    ax.axhline(0.0, color=_GREY, linewidth=0.8)
    ax.set_xlabel("fractional rank u")
    ax.set_ylabel("ECDF(u) − u")
    ax.set_title("SBC: ECDF difference (inside the band = calibrated)", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    _tidy(ax)
    return fig


# ---------------------------------------------------------------- summaries


def posterior_sd_figure(z_sd: np.ndarray, prior_sd: float = 1.0) -> Figure:
    """Histogram of per-particle posterior sds, one panel per latent dimension."""
    z_sd = np.asarray(z_sd)
    d = z_sd.shape[1]
    fig = _figure(min(3.4 * d + 0.6, 14.0), 3.2)
    axes = np.atleast_1d(fig.subplots(1, d, sharey=True))
    for j, ax in enumerate(axes):
        ax.hist(z_sd[:, j], bins=40, color=_BLUE, alpha=0.85)
        ax.axvline(prior_sd, color=_RED, linewidth=1.2, label="prior sd")
        ax.set_xlabel(f"posterior sd of z{j + 1} (latent units)")
        _tidy(ax)
    axes[0].set_ylabel("particles")
    axes[0].legend(fontsize=8, frameon=False)
    fig.suptitle("Per-particle posterior widths", fontsize=11)
    return fig


# ---------------------------------------------------------------- PPC


def ppc_figures(result: Any) -> dict[str, Figure]:
    """``{name: figure}``: residual spectrum, log-likelihoods, outlier scores, groups."""
    figs = {}
    k = result.shell_k
    fig = _figure(5.2, 3.6)
    ax = fig.subplots()
    q05, q50, q95 = np.nanquantile(result.shell_power, [0.05, 0.5, 0.95], axis=0)
    r05, r95 = np.nanquantile(result.shell_power_rep, [0.05, 0.95], axis=0)
    ax.fill_between(k, r05, r95, color=_BAND, linewidth=0, label="replicated 5-95 %")
    ax.fill_between(k, q05, q95, color=_LIGHT, alpha=0.6, linewidth=0, label="observed 5-95 %")
    ax.plot(k, q50, color=_BLUE, linewidth=1.6, label="observed median")
    ax.axhline(1.0, color=_GREY, linewidth=0.8, linestyle="--", label="noise model")
    ax.set_xlabel("spatial frequency |k| (Å⁻¹)")
    ax.set_ylabel("residual power / noise power")
    ax.set_title("Residual radial power spectrum per particle", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    _tidy(ax)
    figs["ppc_spectrum"] = fig

    fig = _figure(5.2, 3.6)
    ax = fig.subplots()
    obs, rep = result.loglik_obs, result.loglik_rep
    lo = np.nanmin([np.nanquantile(obs, 0.001), np.nanquantile(rep, 0.001)])
    hi = np.nanmax([obs.max(), rep.max()])
    bins = np.linspace(lo, hi, 60)
    ax.hist(rep, bins=bins, color=_GREY, alpha=0.5, density=True, label="replicated")
    ax.hist(obs, bins=bins, color=_BLUE, alpha=0.7, density=True, label="observed")
    ax.set_xlabel("log p(y | θ) per particle (nats, posterior mean over draws)")
    ax.set_ylabel("density")
    ax.set_title("Log-likelihood: observed vs replicated images", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    _tidy(ax)
    figs["ppc_loglik"] = fig

    fig = _figure(5.2, 3.6)
    ax = fig.subplots()
    score = result.outlier_score
    ax.hist(score, bins=80, color=_BLUE, alpha=0.85, log=True)
    ax.axvline(result.threshold, color=_RED, linewidth=1.2, label=f"threshold {result.threshold:g}")
    ax.set_xlabel("outlier score (standardised signal-weighted residual)")
    ax.set_ylabel("particles")
    ax.set_title(
        f"{int(np.sum(score > result.threshold))} of {score.size} particles flagged", fontsize=10
    )
    ax.legend(fontsize=8, frameon=False)
    _tidy(ax)
    figs["ppc_outlier_score"] = fig

    fig = _figure(5.2, 3.6)
    ax = fig.subplots()
    g = result.groups
    centres = 0.5 * (g["defocus_min"] + g["defocus_max"]) / 1e4
    ax.errorbar(
        centres, g["chi2_per_dof"], yerr=2 * g["expected_sd"], fmt="o", color=_BLUE,
        capsize=3, label="observed ± 2 sd (noise model)",
    )  # fmt: skip
    ax.axhline(1.0, color=_GREY, linewidth=0.8, linestyle="--", label="noise model")
    ax.set_xlabel("defocus (µm), group centre")
    ax.set_ylabel("χ² per scored coefficient")
    ax.set_title("χ²/dof per defocus group", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    _tidy(ax)
    figs["ppc_defocus_groups"] = fig
    return figs


# ---------------------------------------------------------------- amortization gap


def amortization_figure(table: dict[str, np.ndarray]) -> Figure:
    """Mean shift (in reference sds) and sd ratio of q vs the reference posterior."""
    fig = _figure(8.4, 3.4)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.hist(table["mean_shift_sd"], bins=40, color=_BLUE, alpha=0.85)
    ax1.axvline(0.0, color=_GREY, linewidth=0.8)
    ax1.set_xlabel("(mean_q − mean_ref) / sd_ref")
    ax1.set_ylabel("particle × latent")
    _tidy(ax1)
    ax2.hist(table["sd_ratio"], bins=40, color=_BLUE, alpha=0.85)
    ax2.axvline(1.0, color=_GREY, linewidth=0.8)
    ax2.set_xlabel("sd_q / sd_ref")
    _tidy(ax2)
    fig.suptitle("Amortization gap: q(z | y) vs the per-particle reference posterior", fontsize=11)
    return fig


# ---------------------------------------------------------------- FSC


def fsc_figure(result: Any) -> Figure:
    """FSC curve between half-set maps with the 0.143 threshold and the resolution."""
    fig = _figure(5.2, 3.6)
    ax = fig.subplots()
    ax.plot(result.k, result.fsc, color=_BLUE, linewidth=1.6, label="FSC")
    ax.axhline(result.threshold, color=_RED, linewidth=1.0, linestyle="--",
               label=f"{result.threshold:g}")  # fmt: skip
    if np.isfinite(result.resolution):
        ax.axvline(1.0 / result.resolution, color=_GREY, linewidth=0.8)
        ax.set_title(
            f"Half-set FSC: {result.resolution:.2f} Å at {result.threshold:g}", fontsize=10
        )
    else:
        ax.set_title(f"Half-set FSC: above {result.threshold:g} to Nyquist", fontsize=10)
    ax.set_xlabel("spatial frequency |k| (Å⁻¹)")
    ax.set_ylabel("Fourier shell correlation")
    ax.set_ylim(-0.1, 1.05)
    ax.legend(fontsize=8, frameon=False)
    _tidy(ax)
    return fig
