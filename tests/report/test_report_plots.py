"""Report figures: labelled axes with units, honest statistics, PNG output, no pyplot."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from scipy import stats

from atomicspi_bayes.report import plots
from atomicspi_bayes.report.snapshots import principal_axes, render_snapshots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _labels(fig) -> list[tuple[str, str]]:
    return [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]


def test_no_pyplot_import():
    folder = Path(plots.__file__).parent
    for src in folder.glob("*.py"):
        for node in ast.walk(ast.parse(src.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            assert not any(n.startswith("matplotlib.pyplot") for n in names), src


def test_running_mean_matches_direct_average():
    x = np.arange(10.0) ** 2
    got = plots.running_mean(x, 3)
    want = [x[max(0, i - 1) : i + 2].mean() for i in range(10)]
    np.testing.assert_allclose(got, want)


def test_spearman_matches_scipy_and_handles_degenerate_input():
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    y = x**3 + rng.normal(scale=0.5, size=200)
    assert plots.spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert plots.spearman_rho(x, -np.exp(x)) == pytest.approx(-1.0)
    assert np.isnan(plots.spearman_rho(x, np.ones_like(x)))


def test_elbo_figure_labels_and_png():
    t = np.arange(500.0)
    elbo = -(1e4 * np.exp(-t / 50) + 100 + np.sin(t))
    elbo[10] = np.nan
    fig = plots.elbo_figure(elbo)
    assert all("step" in xl and "ELBO (10$^{3}$ nats" in yl for xl, yl in _labels(fig))
    assert fig.axes[0].get_yscale() == "symlog"  # spans two decades
    assert "10$^{3}$ nats" in fig.axes[0].get_ylabel()  # no offset text on the axis
    assert "1 non-finite" in fig._suptitle.get_text()
    png = plots.figure_png(fig)
    assert png[:8] == PNG_MAGIC


def test_latent_truth_figure_reports_rho_per_dimension():
    rng = np.random.default_rng(2)
    truth = rng.uniform(size=300)
    z = np.stack([-3 * truth + rng.normal(0, 0.1, 300), rng.normal(size=300)], axis=1)
    fig, rhos = plots.latent_truth_figure(z, np.full_like(z, 0.1), truth, "path_position")
    assert len(rhos) == 2
    assert rhos[0] == pytest.approx(stats.spearmanr(truth, z[:, 0]).statistic)
    assert abs(rhos[1]) < 0.2
    assert f"{rhos[0]:+.3f}" in fig.axes[0].get_title()
    assert "path" in fig.axes[0].get_xlabel() and "z" in fig.axes[0].get_ylabel()


def test_landscape_figure_shades_the_band_in_kt():
    grid = np.linspace(-2, 2, 41)
    f = (grid**2 - 1) ** 2 * 3
    f[0] = np.inf  # an empty edge bin
    fig = plots.landscape_figure(grid, f, f - 0.5, f + 0.5, f_true=f)
    ax = fig.axes[0]
    assert "kT" in ax.get_ylabel() and "latent" in ax.get_xlabel()
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1
    lo, hi = ax.get_ylim()
    assert lo < 0 and hi == pytest.approx(8.0)  # F runs to 27 kT: axis cut at 8 kT
    assert "cut" in ax.get_title()
    assert plots.figure_png(fig)[:8] == PNG_MAGIC


def test_rank_histogram_detects_overconfidence_in_title():
    rng = np.random.default_rng(3)
    uniform = rng.integers(0, 101, size=(1000, 1))
    # an over-confident posterior puts the truth at the extremes: U-shaped ranks
    u_shape = np.clip(np.round(100 * rng.beta(0.4, 0.4, size=(1000, 1))), 0, 100)
    p_ok = float(plots.rank_histogram_figure(uniform, 100).axes[0].get_title().split("= ")[1])
    p_bad = float(plots.rank_histogram_figure(u_shape, 100).axes[0].get_title().split("= ")[1])
    assert p_ok > 0.01 and p_bad < 1e-6


def test_coverage_figure():
    fig = plots.coverage_figure({0.5: 0.48, 0.9: 0.91}, 500)
    ax = fig.axes[0]
    assert "nominal" in ax.get_xlabel() and "fraction" in ax.get_ylabel()
    assert plots.figure_png(fig)[:8] == PNG_MAGIC


def test_principal_axes_is_a_rotation_along_the_spread():
    rng = np.random.default_rng(4)
    pts = rng.normal(size=(500, 3)) * np.array([1.0, 10.0, 3.0])
    axes = principal_axes(pts)
    np.testing.assert_allclose(axes @ axes.T, np.eye(3), atol=1e-10)
    assert np.linalg.det(axes) == pytest.approx(1.0)
    assert abs(axes[0, 1]) > 0.99 and abs(axes[1, 2]) > 0.99 and abs(axes[2, 0]) > 0.99


def test_snapshots_are_the_projected_potential_where_the_atoms_are():
    # an asymmetric 3-D molecule: the heavy sulfur sits off-centre
    xyz = [[-15.0, 0, 1], [15.0, 0, -1], [0, 6.0, 2], [0, -6.0, -2], [10.0, 4.0, 3.0]]
    coords = np.array([xyz])
    elements = np.array(["C", "C", "C", "C", "S"])
    snaps = render_snapshots(coords, elements, box=128, blur_in_angstroms=1.5)
    axes = principal_axes(coords[0])
    local = (coords[0] - coords[0].mean(axis=0)) @ axes.T
    # Peng f_e(0) in Å (SCIENCE.md §1 table): C 2.5088, S 5.1604
    f0 = np.array([2.5088] * 4 + [5.1604])
    pix = snaps.pixel_size
    centres = (np.arange(128) - 64) * pix  # pixel L//2 is the origin
    for view, (u, v) in enumerate([(0, 1), (0, 2)]):
        img = snaps.images[view, 0].astype(np.float64)
        # integral of the projected potential = V̂(0) = 47.878 V·Å² Σ f_e(0)
        assert img.sum() * pix**2 == pytest.approx(47.878 * f0.sum(), rel=2e-3)
        col_mean = (img.sum(axis=0) * centres).sum() / img.sum()
        row_mean = (img.sum(axis=1) * centres[::-1]).sum() / img.sum()  # rows run top-down
        assert col_mean == pytest.approx((f0 * local[:, u]).sum() / f0.sum(), abs=0.05)
        assert row_mean == pytest.approx((f0 * local[:, v]).sum() / f0.sum(), abs=0.05)


def test_snapshots_figure_from_a_moving_ensemble():
    rng = np.random.default_rng(5)
    base = rng.normal(size=(50, 3)) * np.array([12.0, 8.0, 4.0])
    coords = np.stack([base + np.array([k * 2.0, 0, 0]) * (base[:, :1] > 0) for k in range(9)])
    snaps = render_snapshots(coords, None, max_models=4)
    np.testing.assert_array_equal(snaps.model_index, [0, 3, 5, 8])
    assert snaps.images.shape[:2] == (2, 4)
    rmsd = np.sqrt(((coords[snaps.model_index] - coords[0]) ** 2).sum(-1).mean(-1))
    fig = plots.snapshots_figure(snaps, ["a", "b", "c", "d"], rmsd)
    assert len(fig.axes) == 12  # 2 views + difference row, 4 models
    assert "RMSD" in fig.axes[1].get_title()
    assert plots.figure_png(fig)[:8] == PNG_MAGIC
