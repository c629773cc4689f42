"""Fuzz the whole `atomicspi` command line with >= 1000 generated cases; print outcome counts.

The cases are the CI fuzz's (tests/reliability/reliability_fuzz.py): mutated copies of the
third-party files in ../shared/data and of a tiny dataset and finished run made by
`atomicspi simulate` / `atomicspi fit` (truncation, bit flips, MRC header lies, wrong modes,
huge dimensions, NaN/inf/constant images, wrong-length stacks, STAR columns dropped or
renamed, NaN/inf/negative values, `..`/absolute/unicode image paths, empty files, broken
TOML, broken run folders, hostile pickles) and bad options, driving inspect, simulate, fit,
landscape, kinetics, report, diagnose and calibrate. Every case must end in exit 2 with one
`error:` line (or typer's usage message for an unparsable option) or in exit 0 with a
checked result.

    python benchmarks/fuzz_cli.py [--cases 1000] [--workdir DIR] [--seed 0] [--families a,b]

``--families`` runs only those families (same cases as in a full run with the same seed and
--cases: each family's seed does not depend on which others run), e.g. to split a run over
two processes.

Prints one JSON object per family and a final one with the totals (STYLE §9); the exit code
is 1 when any case violated the contract (their command lines are in "violations").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "reliability"))

# share of the cases per family; a few of inspect/simulate run as fresh processes
MIX = {"inspect": 0.45, "simulate": 0.2, "fit": 0.12, "run": 0.2, "subprocess": 0.03}


def _case_runner(family: str, ws, work: Path, env: dict, violations: list[str]):
    """The body of one generated case of ``family`` (``subprocess``: a fresh process)."""
    from reliability_fuzz import SUBPROCESS_FAMILIES, fair, run_case
    from reliability_harness import accepted

    def one(data) -> None:
        r = fair(data.draw)
        real = r.choice(SUBPROCESS_FAMILIES) if family == "subprocess" else family
        try:
            kind = run_case(real, r, ws, work / "case", strict=False,
                            subprocess_env=env if family == "subprocess" else None)  # fmt: skip
        except Exception as exc:  # a harness failure must not stop the count
            violations.append(f"{real}: harness error {type(exc).__name__}: {exc}")
            return
        if not accepted(kind):
            violations.append(f"{real}: {kind}")

    return one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--families", default=",".join(MIX), help="comma-separated subset")
    args = parser.parse_args()
    chosen = [f for f in args.families.split(",") if f]
    if not chosen or set(chosen) - set(MIX):
        parser.error(f"--families: choose among {', '.join(MIX)}")

    import jax
    from hypothesis import HealthCheck, given, seed, settings
    from hypothesis import strategies as st

    work = args.workdir or Path(tempfile.mkdtemp(prefix="atomicspi-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "jax-cache"
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

    from reliability_fuzz import build_workspace
    from reliability_harness import subprocess_env

    t0 = time.perf_counter()
    ws = build_workspace(work / "workspace")
    setup_s = time.perf_counter() - t0
    env = subprocess_env(cache)
    violations: list[str] = []

    for i, (family, share) in enumerate(MIX.items()):
        if family not in chosen:
            continue
        n = max(1, round(args.cases * share))
        started = time.perf_counter()

        body = given(data=st.data())(_case_runner(family, ws, work, env, violations))
        limits = settings(
            max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        one = seed(args.seed * 1000 + i)(limits(body))

        before = sum(ws.outcomes.values())
        one()
        ran = sum(ws.outcomes.values()) - before
        if family == "subprocess":
            counts = {k: dict(v) for k, v in ws.by_family.items() if "(subprocess)" in k}
        else:
            counts = dict(ws.by_family.get(family, {}))
        seconds = round(time.perf_counter() - started, 1)
        line = {"name": "fuzz_cli", "family": family, "cases": ran, "outcomes": counts}
        print(json.dumps({**line, "seconds": seconds}), flush=True)

    total = sum(ws.outcomes.values())
    print(json.dumps({
        "name": "fuzz_cli",
        "families": chosen,
        "cases": total,
        "outcomes": dict(ws.outcomes),
        "violations": len(violations),
        "violation_cases": violations[:20],
        "setup_s": round(setup_s, 1),
        "fuzz_s": round(sum(ws.seconds.values()), 1),
        "workdir": str(work),
        "cpu_count": os.cpu_count(),
    }), flush=True)  # fmt: skip
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
