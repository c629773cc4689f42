"""Fuzzed command lines (issue 12): mutated real files and bad options drive every command;
each case ends in exit 2 with one ``error:`` line or in exit 0 with a checked result.

CI runs a few hundred derandomized cases (family sizes below; scale them all with
``ATOMICSPI_CLI_FUZZ_SCALE``, e.g. 4); ``benchmarks/fuzz_cli.py`` runs >= 1000 and prints
the outcome counts. The cases are defined in ``reliability_fuzz.py``.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_fuzz import FAMILIES, SUBPROCESS_FAMILIES, fair, run_case
from reliability_harness import accepted, subprocess_env

SCALE = float(os.environ.get("ATOMICSPI_CLI_FUZZ_SCALE", "1"))
# in-process cases per family (inspect is cheap; fit and run-folder cases compile models)
CASES = {"inspect": 160, "simulate": 30, "fit": 10, "run": 30}
SUBPROCESS_CASES = 6  # fresh processes: inspect, simulate, damaged DCD trajectories


def _fuzz(family: str, n: int):
    @pytest.mark.slow
    @settings(
        max_examples=max(1, int(n * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def test(workspace, data):
        run_case(family, fair(data.draw), workspace, workspace.root / "cases" / family)

    test.__name__ = f"test_fuzz_{family}"
    return test


test_fuzz_inspect = _fuzz("inspect", CASES["inspect"])
test_fuzz_simulate = _fuzz("simulate", CASES["simulate"])
test_fuzz_fit = _fuzz("fit", CASES["fit"])
test_fuzz_run_folders = _fuzz("run", CASES["run"])


@pytest.mark.slow
@settings(
    max_examples=max(1, int(SUBPROCESS_CASES * SCALE)),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_fuzz_as_subprocesses(workspace, jax_cache_dir, data):
    r = fair(data.draw)
    family = r.choice(SUBPROCESS_FAMILIES)
    run_case(family, r, workspace, workspace.root / "cases" / "subprocess",
             subprocess_env=subprocess_env(jax_cache_dir))  # fmt: skip


@pytest.mark.slow
def test_fuzz_outcome_counts(workspace):
    """Runs after the families above (file order): print the counts, no violation kinds."""
    summary = {
        "outcomes": dict(workspace.outcomes),
        "by_family": {k: dict(v) for k, v in workspace.by_family.items()},
        "seconds": {k: round(v, 1) for k, v in workspace.seconds.items()},
    }
    print(json.dumps(summary))
    assert all(accepted(kind) for kind in workspace.outcomes), workspace.outcomes
    assert set(FAMILIES) <= set(workspace.by_family) or not workspace.by_family
