"""Landscape figures (matplotlib Figure objects; no pyplot global state)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from atomicspi_bayes.landscape.estimator import Landscape

__all__ = ["plot_landscape"]


def plot_landscape(landscape: Landscape, *, show_aggregate: bool = True) -> Figure:
    """Posterior median F with its shaded 5-95 % band (1-D), or median and band width (2-D).

    Axes: latent coordinates in latent units; F in ``landscape.energy_unit``.
    """
    unit = landscape.energy_unit
    q = landscape.free_energy_quantiles
    labels = landscape.axis_labels
    if landscape.dim == 1:
        fig = Figure(figsize=(6.4, 4.2), layout="constrained")
        ax = fig.add_subplot()
        x = landscape.bin_centers[0]
        ax.fill_between(x, q[0], q[2], color="tab:blue", alpha=0.3, lw=0, label="90 % band")
        ax.plot(x, q[1], color="tab:blue", lw=2, label="posterior median")
        if show_aggregate:
            ax.plot(
                x,
                landscape.free_energy_aggregate,
                color="0.4",
                lw=1,
                ls="--",
                label="aggregate posterior (blurred)",
            )
        top = np.nanmax(q[1]) if np.any(np.isfinite(q[1])) else 1.0
        ax.set_ylim(-0.05 * top - 0.1, 1.15 * top + 0.1)
        ax.set_xlabel(f"{labels[0]} (latent units)")
        ax.set_ylabel(f"F ({unit})")
        ax.set_title(f"Free-energy landscape, N = {landscape.diagnostics.get('n_particles_used')}")
        ax.legend(frameon=False)
        ax.grid(alpha=0.3)
        return fig
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    ex, ey = landscape.bin_edges
    panels = (
        (q[1], f"posterior median F ({unit})", "viridis"),
        (q[2] - q[0], f"90 % band width of F ({unit})", "magma"),
    )
    for i, (values, title, cmap) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        mesh = ax.pcolormesh(ex, ey, np.ma.masked_invalid(values).T, cmap=cmap, shading="flat")
        if i == 0:
            finite = np.isfinite(values)
            if np.sum(finite) > 3 and np.nanmax(values) > 0:
                cx, cy = landscape.bin_centers
                ax.contour(
                    cx,
                    cy,
                    np.where(finite, values, np.nanmax(values)).T,
                    levels=np.arange(landscape.kT, float(np.nanmax(values)), landscape.kT),
                    colors="white",
                    linewidths=0.5,
                )
        fig.colorbar(mesh, ax=ax, label=f"F ({unit})")
        ax.set_xlabel(f"{labels[0]} (latent units)")
        ax.set_ylabel(f"{labels[1]} (latent units)")
        ax.set_title(title)
    return fig
