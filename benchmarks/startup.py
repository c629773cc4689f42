"""Start-up of a repeated small ``atomicspi fit`` without and with the compilation cache.

The CLI turns on JAX's persistent compilation cache (``$XDG_CACHE_HOME/atomicspi/jax``,
off with ``ATOMICSPI_NO_JAX_CACHE=1``): building a fit runs about a hundred small XLA
compilations, which a repeated run of the same shapes finds on disk. This script simulates
a tiny AdK set (``atomicspi simulate``, all atoms) and runs the same 20-step fit four times
back to back: ``no_cache`` (opted out), ``cache_cold`` (empty cache folder), ``cache_warm``
and ``cache_warm2`` (repeats). Per run: wall and CPU seconds (the child, all threads), peak
RSS, and ``built_*`` = when ``config.toml`` appeared (inputs read, images screened, model
and guide built: the start-up proper), ``trained_cpu_s`` = CPU seconds when ``elbo.npy``
appeared (after the SVI steps). Prints one JSON object.

Usage::

    python benchmarks/startup.py            # 80 particles, 32 px
    python benchmarks/startup.py --quick    # 40 particles (CI smoke test)

The machine is shared: wall times depend on its load (recorded per run); CPU seconds less.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import (
    atomicspi_exe,
    check,
    machine_info,
    run_measured,
    simulate_cmd,
    stdout_to_stderr,
    write_reference_pdb,
)


def fit_cmd(work: Path, run: Path) -> list[str]:
    cmd = [atomicspi_exe(), "fit", str(work / "sim" / "particles.star"), "--structure"]
    cmd += [str(work / "ref.pdb"), "--out", str(run), "--epochs", "2", "--batch-size", "8"]
    cmd += ["--resolution", "12", "--latent-dim", "1", "--poses", "fixed", "--n-modes", "10"]
    return [*cmd, "--seed", "0", "--quiet", "--force"]


def run(args: argparse.Namespace) -> dict:
    n = 40 if args.quick else 80
    work = Path(tempfile.mkdtemp(prefix="atomicspi-startup-"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
        env.update(JAX_PLATFORMS="cpu", XDG_CACHE_HOME=str(work / "xdg"))
        env["ATOMICSPI_NO_JAX_CACHE"] = "1"  # the simulation leaves the cache empty
        sim = simulate_cmd(work / "sim", n, 32, 3.0, 1.0, 0)
        check(run_measured(sim, env=env), "atomicspi simulate")
        write_reference_pdb(work / "ref.pdb")
        out: dict = {"name": "startup", "quick": args.quick, "n_particles": n, "box": 32}
        for label in ("no_cache", "cache_cold", "cache_warm", "cache_warm2"):
            env["ATOMICSPI_NO_JAX_CACHE"] = "1" if label == "no_cache" else ""
            run_dir = work / label
            res = run_measured(fit_cmd(work, run_dir), env=env, watch_dir=run_dir, poll_s=0.05)
            check(res, f"atomicspi fit ({label})")
            ev = res["events"]
            out[label] = {
                "wall_s": round(res["wall_s"], 1),
                "cpu_s": round(res["cpu_s"], 1),
                "maxrss_mb": round(res["maxrss_mb"]),
                "built_wall_s": round(ev["config.toml"]["t"], 1),
                "built_cpu_s": ev["config.toml"]["cpu"],
                "trained_cpu_s": ev.get("elbo.npy", {}).get("cpu"),
                "load_avg_1min": round(os.getloadavg()[0], 1),
            }
        files = [f for f in (work / "xdg").rglob("*") if f.is_file()]
        out["cache_files"] = len(files)
        out["cache_mb"] = round(sum(f.stat().st_size for f in files) / 2**20, 1)
        no, warm = out["no_cache"], out["cache_warm2"]
        out["cpu_ratio_no_cache_over_warm"] = round(no["cpu_s"] / warm["cpu_s"], 2)
        out["built_cpu_ratio_no_cache_over_warm"] = round(
            no["built_cpu_s"] / warm["built_cpu_s"], 2
        )
        out.update(machine_info())
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="40 particles")
    args = ap.parse_args()
    with stdout_to_stderr():
        out = run(args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
