"""Fixtures for the report tests: synthetic run directories built in tmp_path."""

from __future__ import annotations

import pytest
from report_fake_run import ALL_PARTS, write_fake_run


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """A run directory with every part (fit, landscape, kinetics, calibration, diagnostics)."""
    return write_fake_run(tmp_path_factory.mktemp("full_run"), ALL_PARTS)


@pytest.fixture(scope="module")
def full_report(full_run):
    """``(path, html text)`` of the report of :func:`full_run`."""
    from atomicspi_bayes.report import write_report

    path = write_report(full_run)
    return path, path.read_text(encoding="utf-8")
