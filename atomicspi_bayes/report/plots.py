"""Report figures as :class:`matplotlib.figure.Figure` objects (no pyplot global state).

Every function takes plain arrays, returns a new figure with labelled axes (units in the
labels), and never touches files; :func:`figure_png` turns a figure into PNG bytes.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy import stats

from atomicspi_bayes.diagnostics.figures import BLUE as _BLUE
from atomicspi_bayes.diagnostics.figures import GREY as _GREY
from atomicspi_bayes.diagnostics.figures import LIGHT as _LIGHT
from atomicspi_bayes.diagnostics.figures import RED as _RED
from atomicspi_bayes.diagnostics.figures import new_figure as _figure
from atomicspi_bayes.diagnostics.figures import tidy_axes as _tidy
from atomicspi_bayes.report.snapshots import SnapshotImages


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """Render a figure to PNG bytes (Agg), white background."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def running_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Centred running mean of ``x`` over ``window`` points (same length; the window shrinks
    at both ends so that the curve neither lags nor leads the data)."""
    x = np.asarray(x, dtype=np.float64)
    window = max(1, int(window))
    c = np.cumsum(np.insert(x, 0, 0.0))
    idx = np.arange(x.size)
    half = window // 2
    lo = np.maximum(idx - half, 0)
    hi = np.minimum(idx + (window - half), x.size)
    return (c[hi] - c[lo]) / (hi - lo)


def spearman_rho(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two ``(N,)`` arrays (NaN when undefined)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(stats.spearmanr(x[ok], y[ok]).statistic)


def elbo_figure(elbo: np.ndarray) -> Figure:
    """ELBO per optimisation step (higher is better): full trace and the last half, smoothed.

    Args:
        elbo: ``(T,)`` evidence lower bound per step in nats (``RUN/elbo.npy``, = -loss);
            non-finite steps are skipped and counted.
    """
    elbo = np.asarray(elbo, dtype=np.float64).reshape(-1)
    steps = np.arange(elbo.size)
    ok = np.isfinite(elbo)
    fig = _figure(10.0, 3.4)
    ax_full, ax_tail = fig.subplots(1, 2)
    x, y = steps[ok], elbo[ok]
    # large ELBOs: plot in units of 10^3k nats rather than with an offset label
    power = int(3 * (np.floor(np.log10(np.max(np.abs(y)))) // 3)) if y.size and np.any(y) else 0
    power = power if power >= 3 else 0
    unit = f"10$^{{{power}}}$ nats" if power else "nats"
    y = y / 10.0**power
    smooth = running_mean(y, max(2, y.size // 25)) if y.size else y
    ax_full.plot(x, y, color=_LIGHT, linewidth=0.8, label="per step")
    ax_full.plot(x, smooth, color=_BLUE, linewidth=1.8, label="running mean")
    if y.size and np.all(y < 0) and y.min() / min(y.max(), -1e-300) > 100:
        ax_full.set_yscale("symlog", linthresh=float(-y.max()))
    ax_full.set_xlabel("optimisation step")
    ax_full.set_ylabel(f"ELBO ({unit}, higher is better)")
    ax_full.set_title("whole run", fontsize=10)
    ax_full.legend(fontsize=8, frameon=False)
    half = x.size // 2
    xt, yt, st = x[half:], y[half:], smooth[half:]
    ax_tail.plot(xt, yt, color=_LIGHT, linewidth=0.8)
    ax_tail.plot(xt, st, color=_BLUE, linewidth=1.8)
    if yt.size:
        lo, hi = np.percentile(yt, [1, 99])
        pad = 0.1 * (hi - lo) if hi > lo else 1.0
        ax_tail.set_ylim(lo - pad, hi + pad)
        final = f"{st[-1] * 10.0**power:.5g}"
        ax_tail.set_title(f"second half (final running mean {final} nats)", fontsize=10)
    ax_tail.set_xlabel("optimisation step")
    ax_tail.set_ylabel(f"ELBO ({unit})")
    for ax in (ax_full, ax_tail):
        _tidy(ax)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    bad = int((~ok).sum())
    fig.suptitle(
        f"Optimisation: {elbo.size:,} steps" + (f" ({bad} non-finite skipped)" if bad else ""),
        fontsize=11,
    )
    return fig


def latent_truth_figure(
    z_mean: np.ndarray,
    z_sd: np.ndarray | None,
    truth: np.ndarray,
    truth_name: str,
    *,
    max_dims: int = 3,
    max_error_bars: int = 400,
) -> tuple[Figure, list[float]]:
    """Posterior mean (± sd) of each latent dimension against the true coordinate.

    Args:
        z_mean: ``(N, D)`` posterior means.
        z_sd: ``(N, D)`` posterior sds or ``None``.
        truth: ``(N,)`` true coordinate (``path_position`` in 0..1 or ``frame_index``).
        truth_name: which truth it is (sets the x label).
        max_dims: panels for at most this many latent dimensions.
        max_error_bars: error bars on an evenly spaced subset of this many particles.

    Returns:
        The figure and the Spearman rho of every latent dimension (all D, not just shown).
    """
    z_mean = np.asarray(z_mean, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    n, d = z_mean.shape
    rhos = [spearman_rho(truth, z_mean[:, j]) for j in range(d)]
    shown = min(d, max_dims)
    fig = _figure(min(max(4.2 * shown + 0.6, 7.5), 13.0), 4.0)
    axes = np.atleast_1d(fig.subplots(1, shown))
    xlabel = {
        "path_position": "true position along the path (0 → 1)",
        "frame_index": "true trajectory frame (index)",
    }.get(truth_name, f"true {truth_name}")
    sub = np.unique(np.linspace(0, n - 1, min(n, max_error_bars)).astype(int))
    alpha = float(np.clip(30.0 / np.sqrt(n), 0.08, 0.7))
    for j, ax in enumerate(axes):
        if z_sd is not None:
            ax.errorbar(
                truth[sub],
                z_mean[sub, j],
                yerr=z_sd[sub, j],
                fmt="none",
                ecolor=_LIGHT,
                elinewidth=0.6,
                alpha=0.6,
                zorder=1,
            )
        ax.scatter(truth, z_mean[:, j], s=7, color=_BLUE, alpha=alpha, linewidths=0, zorder=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(
            f"latent z$_{j + 1}$ (posterior mean" + (" ± sd)" if z_sd is not None else ")")
        )
        ax.set_title(f"z$_{j + 1}$: Spearman ρ = {rhos[j]:+.3f}", fontsize=10)
        _tidy(ax)
    best = int(np.nanargmax(np.abs(rhos))) if np.any(np.isfinite(rhos)) else 0
    fig.suptitle(
        f"Latent vs truth, {n:,} particles: best |ρ| = {abs(rhos[best]):.3f} (z$_{best + 1}$)\n"
        "the sign of a latent is arbitrary",
        fontsize=11,
    )
    return fig, rhos


def landscape_figure(
    grid: np.ndarray,
    f_median: np.ndarray,
    f_lo: np.ndarray | None = None,
    f_hi: np.ndarray | None = None,
    *,
    f_true: np.ndarray | None = None,
    f_aggregate: np.ndarray | None = None,
    state_labels: np.ndarray | None = None,
    band_label: str = "90 % credible band (5–95 %)",
    energy_unit: str = "kT",
    axis_label: str = "z",
    f_max: float = 8.0,
) -> Figure:
    """Free energy F(z) with its shaded credible band (and the truth when known).

    Args:
        grid: ``(G,)`` latent coordinate (bin centres).
        f_median, f_lo, f_hi: ``(G,)`` F in ``energy_unit`` (median, band edges);
            non-finite values (empty bins) leave gaps.
        f_true: ``(G,)`` true F, or ``None``.
        f_aggregate: ``(G,)`` F of the plain aggregate posterior, or ``None``.
        state_labels: ``(G,)`` metastable state of each bin (-1 = none): boundaries are
            drawn as dotted lines and states named at their minima.
        band_label: legend text of the band.
        f_max: the y axis is cut at this height (edges of a landscape run to +inf).
    """
    grid = np.asarray(grid, dtype=np.float64)
    f_median = np.asarray(f_median, dtype=np.float64)
    fig = _figure(8.5, 4.2)
    ax = fig.subplots()
    if f_lo is not None and f_hi is not None:
        lo, hi = np.asarray(f_lo, float), np.asarray(f_hi, float)
        ok = np.isfinite(lo) & np.isfinite(hi)
        ax.fill_between(
            grid,
            np.where(ok, lo, np.nan),
            np.where(ok, hi, np.nan),
            color=_LIGHT,
            alpha=0.6,
            linewidth=0,
            label=band_label,
        )
    if f_aggregate is not None:
        ax.plot(
            grid,
            f_aggregate,
            color=_GREY,
            linewidth=1.0,
            linestyle=":",
            label="aggregate posterior",
        )
    ax.plot(grid, f_median, color=_BLUE, linewidth=2.0, label="posterior median F")
    if f_true is not None:
        ax.plot(grid, f_true, color=_RED, linewidth=1.5, linestyle="--", label="true F")
    curves = [f_median, f_hi, f_true]
    finite = np.concatenate([np.asarray(c, float)[np.isfinite(c)] for c in curves if c is not None])
    top = float(np.max(finite)) if finite.size else 1.0
    bottom = float(np.min(finite)) if finite.size else 0.0
    cut = top > f_max
    ax.set_ylim(min(-0.3, bottom - 0.3), f_max if cut else top + 0.5)
    ax.set_xlim(grid.min(), grid.max())
    if state_labels is not None:
        labels = np.asarray(state_labels).astype(int)
        for i in np.flatnonzero(np.diff(labels) != 0):
            if labels[i] >= 0 and labels[i + 1] >= 0:
                ax.axvline(0.5 * (grid[i] + grid[i + 1]), color=_GREY, linestyle=":", lw=1)
        for state in np.unique(labels[labels >= 0]):
            sel = np.flatnonzero((labels == state) & np.isfinite(f_median))
            if sel.size:
                j = sel[np.argmin(f_median[sel])]
                ax.annotate(
                    f"state {state}",
                    (grid[j], f_median[j]),
                    textcoords="offset points",
                    xytext=(0, 10),
                    ha="center",
                    fontsize=8,
                    color=_GREY,
                )
    ax.set_xlabel(f"latent coordinate {axis_label} (latent units)")
    ax.set_ylabel(f"free energy F ({energy_unit})")
    ax.set_title(
        f"Free-energy landscape F = −kT ln p({axis_label}), minimum at 0"
        + (f" (axis cut at {f_max:g} {energy_unit})" if cut else ""),
        fontsize=11,
    )
    ax.legend(fontsize=8, frameon=False, loc="upper center", ncol=4)
    _tidy(ax)
    return fig


def landscape_2d_figure(
    centers: tuple[np.ndarray, np.ndarray],
    f_quantiles: np.ndarray,
    *,
    energy_unit: str = "kT",
    axis_labels: tuple[str, str] = ("z1", "z2"),
    f_max: float = 8.0,
) -> Figure:
    """2-D landscape: posterior median F and the width of its 90 % band, as two maps.

    Args:
        centers: bin centres ``(G0,)`` and ``(G1,)`` of the two latent axes.
        f_quantiles: ``(3, G0, G1)`` F at 5 / 50 / 95 % (NaN = undefined, left blank).
        f_max: colour scale of F is cut at this height.
    """
    x, y = (np.asarray(c, dtype=np.float64) for c in centers)
    q = np.asarray(f_quantiles, dtype=np.float64)
    fig = _figure(11.0, 4.4)
    ax_f, ax_w = fig.subplots(1, 2)
    med = np.ma.masked_invalid(q[1])
    ok = np.isfinite(q[1])
    top = min(f_max, float(np.nanmax(q[1]))) if ok.any() else f_max
    top = max(top, 1.0)
    m1 = ax_f.pcolormesh(x, y, med.T, cmap="viridis", vmin=0.0, vmax=top, shading="nearest")
    if ok.sum() > 4 and top > 1.0:
        ax_f.contour(
            x, y, med.T, levels=np.arange(1.0, top, 1.0), colors="white", linewidths=0.6, alpha=0.8
        )
    cut = f" (cut at {f_max:g})" if top >= f_max else ""
    fig.colorbar(m1, ax=ax_f, label=f"F ({energy_unit}){cut}, contours every 1")
    ax_f.set_title("posterior median F", fontsize=10)
    width = np.ma.masked_invalid(q[2] - q[0])
    m2 = ax_w.pcolormesh(x, y, width.T, cmap="magma_r", shading="nearest")
    fig.colorbar(m2, ax=ax_w, label=f"F$_{{95}}$ − F$_{{05}}$ ({energy_unit})")
    ax_w.set_title("width of the 90 % credible band", fontsize=10)
    for ax in (ax_f, ax_w):
        ax.set_xlabel(f"{axis_labels[0]} (latent units)")
        ax.set_ylabel(f"{axis_labels[1]} (latent units)")
        ax.set_aspect("auto")
        ax.tick_params(labelsize=9)
    fig.suptitle("Free-energy landscape over two latent dimensions (blank = no data)", fontsize=11)
    return fig


def rank_histogram_figure(
    ranks: np.ndarray, n_draws: int, names: list[str] | None = None, *, max_dims: int = 4
) -> Figure:
    """SBC rank histograms, one panel per latent dimension, with the uniform 99 % band.

    Args:
        ranks: ``(S, D)`` rank of the true value among ``n_draws`` posterior draws
            (values in ``0..n_draws``; uniform when the posterior is calibrated).
        n_draws: number of posterior draws per SBC test.
        names: ``(D,)`` coordinate names for the panel titles (default ``z1..zD``).
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    if ranks.ndim == 1:
        ranks = ranks[:, None]
    s, d = ranks.shape
    shown = min(d, max_dims)
    n_bins = int(np.clip(s // 20, 4, 20))
    edges = np.linspace(-0.5, n_draws + 0.5, n_bins + 1)
    p_bin = 1.0 / n_bins
    lo, hi = stats.binom.ppf([0.005, 0.995], s, p_bin)
    fig = _figure(min(3.6 * shown + 0.6, 13.0), 3.3)
    axes = np.atleast_1d(fig.subplots(1, shown, sharey=True))
    for j, ax in enumerate(axes):
        counts, _ = np.histogram(ranks[:, j], bins=edges)
        p_value = float(stats.chisquare(counts).pvalue)
        ax.axhspan(lo, hi, color="#dddddd", label="99 % band if uniform")
        ax.axhline(s * p_bin, color=_GREY, linewidth=1.0)
        ax.stairs(counts, edges, fill=True, color=_BLUE, alpha=0.85)
        name = names[j] if names else f"z{j + 1}"
        ax.set_xlabel(f"rank of true {name} (of {n_draws} draws)")
        ax.set_title(f"{name}: χ² uniformity p = {p_value:.3g}", fontsize=10)
        _tidy(ax, grid=False)
    axes[0].set_ylabel("SBC tests per bin")
    axes[0].legend(fontsize=8, frameon=False, loc="lower center")
    fig.suptitle(f"Simulation-based calibration: rank histograms ({s:,} tests)", fontsize=11)
    return fig


def coverage_figure(coverage: dict[float, float], n_tests: int | None = None) -> Figure:
    """Empirical vs nominal coverage of central credible intervals (diagonal = calibrated).

    Args:
        coverage: ``{nominal level in 0..1: empirical fraction covered}``.
        n_tests: number of tests behind each fraction, for a 95 % binomial band.
    """
    levels = np.array(sorted(coverage))
    emp = np.array([coverage[k] for k in levels])
    fig = _figure(4.2, 4.0)
    ax = fig.subplots()
    ref = np.linspace(0, 1, 101)
    if n_tests:
        lo = stats.binom.ppf(0.025, n_tests, ref) / n_tests
        hi = stats.binom.ppf(0.975, n_tests, ref) / n_tests
        ax.fill_between(
            ref, lo, hi, color="#dddddd", linewidth=0, label=f"95 % band, {n_tests:,} tests"
        )
    ax.plot([0, 1], [0, 1], color=_GREY, linewidth=1.0, linestyle="--", label="calibrated")
    ax.plot(levels, emp, "o-", color=_BLUE, label="empirical")
    for lev, e in zip(levels, emp, strict=True):
        ax.annotate(f"{e:.2f}", (lev, e), textcoords="offset points", xytext=(6, -10), fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("nominal interval level")
    ax.set_ylabel("fraction of true values inside")
    ax.set_title("Credible-interval coverage", fontsize=11)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    _tidy(ax)
    return fig


def snapshots_figure(
    snaps: SnapshotImages, labels: list[str], rmsd_in_angstroms: np.ndarray | None = None
) -> Figure:
    """Grid of projections: one column per model, one row per view, plus a difference row.

    Args:
        snaps: rendered projections (see :func:`render_snapshots`).
        labels: ``(K,)`` caption of each shown model.
        rmsd_in_angstroms: ``(K,)`` RMSD of each shown model to the first one, or ``None``.
    """
    v, k, box, _ = snaps.images.shape
    rows = v + (1 if k > 1 else 0)
    fig = _figure(min(1.9 * k + 1.2, 14.0), 1.9 * rows + 0.6)
    axes = np.asarray(fig.subplots(rows, k, squeeze=False))
    extent_half = box * snaps.pixel_size / 2
    ext = (-extent_half, extent_half, -extent_half, extent_half)
    for r in range(v):
        vmax = float(snaps.images[r].max()) or 1.0
        for c in range(k):
            axes[r, c].imshow(snaps.images[r, c], cmap="gray_r", vmin=0, vmax=vmax, extent=ext)
    diff_label = "face view − first model"
    if k > 1:
        diff = snaps.images[0] - snaps.images[0, :1]
        lim = float(np.abs(diff).max()) or 1.0
        peak = float(snaps.images[0].max()) or 1.0
        diff_label += f"\n(colour range ±{100 * lim / peak:.2g} % of peak)"
        for c in range(k):
            axes[v, c].imshow(diff[c], cmap="RdBu_r", vmin=-lim, vmax=lim, extent=ext)
    for c in range(k):
        title = labels[c]
        if rmsd_in_angstroms is not None:
            r = float(rmsd_in_angstroms[c])
            title += f"\nRMSD {r:.1f} Å" if r >= 1 or r == 0 else f"\nRMSD {r:.2g} Å"
        axes[0, c].set_title(title, fontsize=9)
    row_names = [*snaps.view_labels, diff_label][:rows]
    for r in range(rows):
        axes[r, 0].set_ylabel(row_names[r], fontsize=8)
        for c in range(k):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
    bar = 20.0 if extent_half > 25 else 10.0
    x0, y0 = -extent_half * 0.9, -extent_half * 0.85
    axes[0, 0].plot([x0, x0 + bar], [y0, y0], color=_RED, linewidth=2.5)
    axes[0, 0].text(x0, y0 + extent_half * 0.06, f"{bar:g} Å", color=_RED, fontsize=8)
    fig.suptitle(
        "Ensemble along the latent: projected Coulomb potential (darker = more)", fontsize=11
    )
    return fig
