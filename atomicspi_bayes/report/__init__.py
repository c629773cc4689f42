"""Report: figures (matplotlib, no pyplot state) and one self-contained HTML page per run.

Public API:
    write_report(run_dir, out=None) -> Path      # RUN/report.html, atomic write
    render_report(artifacts) -> str              # the HTML text
    scan_run(run_dir) -> RunArtifacts            # what a run folder holds, parts optional
    render_snapshots(coords (K,N,3) Å, elements=None, *, max_models=6, box=96,
                     blur_in_angstroms=2.0) -> SnapshotImages
    plots: elbo_figure, latent_truth_figure, landscape_figure, rank_histogram_figure,
           coverage_figure, snapshots_figure, figure_png, spearman_rho
"""

from atomicspi_bayes.report import plots
from atomicspi_bayes.report.artifacts import RunArtifacts, scan_run
from atomicspi_bayes.report.html import render_report, write_report
from atomicspi_bayes.report.snapshots import SnapshotImages, render_snapshots

__all__ = [
    "RunArtifacts",
    "SnapshotImages",
    "plots",
    "render_report",
    "render_snapshots",
    "scan_run",
    "write_report",
]
