"""Peak memory of ``atomicspi fit`` on a small vs a 10x larger memory-mapped particle stack.

The issue's target: peak RSS of the fit on 100k particles <= 1.2 x that on 10k particles
(streaming: memory must not grow with the number of particles).

What it does:

1. Simulates a *base* set of noise-free adenylate-kinase particles (MDAnalysisTests adk.psf +
   adk_dims.dcd, all atoms, uniform random poses, CTF) with ``atomicspi simulate``.
2. For every size N writes a dataset on disk: an MRC stack filled in chunks with
   ``io.new_stack`` (base image ``n % n_base`` plus fresh white noise at ``--snr``) and a
   RELION 3.1 STAR file (``io.write_star``) with the matching poses and CTFs.
3. Runs ``atomicspi fit`` on each (a subprocess, one epoch, poses fixed) and measures the
   child's peak memory three ways:

   * ``rss_*_mb``: peak resident set size, ``ru_maxrss`` of that child (``os.wait4``), what
     ``/usr/bin/time -v`` calls "Maximum resident set size". It counts *file-backed*
     pages that the process has mapped and touched (shared libraries; before issue 11's
     fix also every page of the memory-mapped stacks) as well as anonymous memory.
   * ``anon_*_mb``: peak anonymous RSS (``RssAnon`` of ``/proc/PID/status``, sampled every
     ``--poll`` s): the memory that cannot be reclaimed without swap.
   * ``file_*_mb``: peak file-backed RSS (``RssFile``). Images are now read with
     ``os.preadv`` into fresh buffers (``io.ImageStack.read``), so this holds the shared
     libraries, not the stack.

   * ``hwm_sampled_*_mb``: the child's ``VmHWM`` (its own peak RSS since ``exec``),
     sampled: a cross-check of ``rss_*_mb``. ``parent_maxrss_*_mb``: this script's own
     peak, kept small (datasets are written in subprocesses) because a child started by
     ``vfork`` + ``exec`` inherits the parent's peak into its ``ru_maxrss``.

   ``peak_anon_phase_*`` names the output file the fit wrote next after the anonymous peak
   (``config.toml`` = still reading/screening inputs and building the model, ``ckpt_*`` =
   SVI, ``elbo.npy`` = encoding all particles, ``posterior.nc``, ``particles.star`` ...).
   The children run without the persistent compilation cache (both sizes start cold).

Prints one JSON object (STYLE.md §9). ``ratio`` = rss_large / rss_small (the issue's
figure); ``ratio_anon`` likewise for anonymous memory.

Usage::

    python benchmarks/memory.py                     # 10k vs 100k at 64 px (1.7 GB on disk)
    python benchmarks/memory.py --quick             # 500 vs 5000 at 32 px (CI smoke test)
    python benchmarks/memory.py --box 128           # 128 px (100k: 6.6 GB on disk)
    python benchmarks/memory.py --sizes 5000 50000 --fit-args="--posterior amortized"

The machine is shared: wall times depend on its load (``load_avg_1min`` is recorded);
memory figures do not.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

MB = 1024.0 * 1024.0


# ---------------------------------------------------------------- measuring a child


def _proc_status(pid: int) -> dict[str, float]:
    """``VmRSS``, ``VmHWM``, ``RssAnon``, ``RssFile`` of a live process in MB ({} once it has
    exited)."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[key] = float(rest.split()[0]) / 1024.0  # kB -> MB
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def _proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process (all its threads), or None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)


def run_measured(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    watch_dir: Path | None = None,
    poll_s: float = 0.1,
    cwd: str | Path | None = None,
    on_new_file: Callable[[Path], None] | None = None,
    max_wall_s: float | None = None,
) -> dict:
    """Run ``cmd`` and measure it: wall/CPU seconds, peak RSS, sampled anonymous/file RSS.

    Returns a dict: ``returncode``, ``wall_s``, ``cpu_s`` (user + system of the child),
    ``maxrss_mb`` (``ru_maxrss`` from ``os.wait4``), ``peak_anon_mb``, ``peak_file_mb``,
    ``peak_anon_t_s`` (seconds after start), ``events`` (``{file name: {"t": wall s after
    start, "cpu": child CPU s}}`` when each new file under ``watch_dir`` (and its subfolders)
    was first seen), ``stdout``, ``stderr``, ``timed_out``. ``on_new_file(path)`` is called
    (on the sampling thread) for every new file, e.g. to copy checkpoints that a run rotates
    away. After ``max_wall_s`` seconds the child is sent SIGTERM (``timed_out`` = True).
    """
    t0 = time.perf_counter()
    with (
        tempfile.TemporaryFile(mode="w+") as out,
        tempfile.TemporaryFile(mode="w+") as err,
    ):
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        peak = {"RssAnon": 0.0, "RssFile": 0.0, "VmHWM": 0.0, "t_anon": 0.0, "timed_out": False}
        events: dict[str, dict[str, float | None]] = {}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                now = time.perf_counter() - t0
                st = _proc_status(proc.pid)
                if st.get("RssAnon", 0.0) > peak["RssAnon"]:
                    peak["RssAnon"], peak["t_anon"] = st["RssAnon"], now
                peak["RssFile"] = max(peak["RssFile"], st.get("RssFile", 0.0))
                peak["VmHWM"] = max(peak["VmHWM"], st.get("VmHWM", 0.0))
                if watch_dir is not None and watch_dir.is_dir():
                    for path in watch_dir.rglob("*"):
                        name = path.name
                        if name.startswith(".") or name in events or not path.is_file():
                            continue
                        events[name] = {"t": now, "cpu": _proc_cpu_s(proc.pid)}
                        if on_new_file is not None:
                            on_new_file(path)
                if max_wall_s is not None and now > max_wall_s and not peak["timed_out"]:
                    peak["timed_out"] = True
                    proc.terminate()
                done.wait(poll_s)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        thread.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return {
        "returncode": proc.returncode,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "maxrss_mb": usage.ru_maxrss / 1024.0,  # Linux: kB
        "peak_anon_mb": peak["RssAnon"],
        "peak_file_mb": peak["RssFile"],
        "hwm_mb": peak["VmHWM"],
        "peak_anon_t_s": peak["t_anon"],
        "events": events,
        "timed_out": bool(peak["timed_out"]),
        "stdout": stdout,
        "stderr": stderr,
    }


def phase_at(t: float, events: dict[str, dict]) -> str:
    """The first output file that appeared after time ``t`` ("exit" if none did)."""
    later = sorted((e["t"], name) for name, e in events.items() if e["t"] >= t)
    if not later:
        return "exit"
    name = later[0][1]
    return "ckpt" if re.match(r"ckpt_\d+\.npz$", name) else name


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to file descriptor 1 (also by C libraries, e.g. mdtraj's DCD
    plugin) to stderr, so that stdout carries only the benchmark's one JSON object."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def machine_info() -> dict:
    """Host facts recorded with every benchmark (the machine is shared)."""
    return {
        "machine": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }


def adk_files() -> tuple[str, str]:
    """(PSF topology, DCD trajectory) of adenylate kinase in MDAnalysisTests."""
    from MDAnalysisTests.datafiles import DCD, PSF

    return PSF, DCD


def in_subprocess(func: str, *args) -> dict:
    """Run ``memory.<func>(*args)`` (str/int/float args) in a fresh Python process.

    The benchmark's own process stays small: a child started with ``vfork`` + ``exec``
    inherits the *parent's* peak RSS into its ``ru_maxrss`` (Linux ``exec_mmap`` records the
    old, borrowed address space's high-water mark), so a parent that had written a 1.6 GB
    stack made the 100k fit's ``ru_maxrss`` read 2.2 GB whatever the fit used.
    """
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
        f"import memory; memory.{func}(*{args!r})"
    )
    return run_measured([sys.executable, "-c", code])


def write_reference_pdb(path: Path) -> Path:
    """Frame 0 of the AdK trajectory (all atoms, elements from the PSF) as a PDB file."""
    from atomicspi_bayes.io import load_trajectory, write_multimodel_pdb

    psf, dcd = adk_files()
    model, frames = load_trajectory(dcd, psf)
    write_multimodel_pdb(path, model, frames[0][None])
    return path


def atomicspi_exe() -> str:
    """The ``atomicspi`` console script of the running interpreter's environment."""
    exe = Path(sys.executable).with_name("atomicspi")
    if exe.is_file():
        return str(exe)
    found = shutil.which("atomicspi")
    if found is None:
        raise SystemExit("atomicspi command not found: pip install -e . in this environment")
    return found


def simulate_cmd(out: Path, n: int, box: int, pixel_size: float, snr: float | None, seed: int):
    """``atomicspi simulate`` of AdK (trajectory frames, all atoms) into ``out``."""
    psf, dcd = adk_files()
    cmd = [atomicspi_exe(), "simulate", psf, "--trajectory", dcd, "--out", str(out)]
    cmd += ["--n", str(n), "--box", str(box), "--pixel-size", str(pixel_size)]
    cmd += ["--noise-free"] if snr is None else ["--snr", str(snr)]
    return [*cmd, "--seed", str(seed), "--force"]


def check(result: dict, what: str) -> None:
    if result["returncode"] != 0:
        tail = (result["stderr"] or result["stdout"]).strip().splitlines()[-5:]
        raise SystemExit(f"{what} failed (exit {result['returncode']}): " + " | ".join(tail))


# ---------------------------------------------------------------- datasets on disk


def write_dataset(out: Path, n: int, base_dir: Path, snr: float, seed: int) -> Path:
    """Write ``out/particles.mrcs`` (N images, streamed in chunks) and ``out/particles.star``.

    Image ``i`` is base image ``i % n_base`` plus white noise with variance
    ``Var(clean) / snr``; its pose and CTF are those of the base particle.
    """
    from atomicspi_bayes.io import new_stack, open_stack, read_particles, write_star
    from atomicspi_bayes.io.particles import subset_metadata

    out, base_dir = Path(out), Path(base_dir)
    base_meta = read_particles(base_dir / "particles.star")
    with open_stack(base_dir / "particles.mrcs") as stack:
        clean = np.asarray(stack[np.arange(len(stack))], dtype=np.float32)
    n_base, box = clean.shape[0], clean.shape[-1]
    sigma = np.sqrt(clean.var(axis=(1, 2)) / snr).astype(np.float32)
    pixel_size = float(base_meta.pixel_size[0])
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    chunk = max(1, (1 << 24) // (box * box))  # ~64 MB per chunk
    with new_stack(out / "particles.mrcs", n, box, pixel_size) as data:
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            src = np.arange(s, e) % n_base
            noise = rng.standard_normal((e - s, box, box), dtype=np.float32)
            data[s:e] = clean[src] + sigma[src, None, None] * noise
    src = np.arange(n) % n_base
    meta = subset_metadata(base_meta, src)
    meta = dataclasses.replace(
        meta,
        source=str(out / "particles.star"),
        image_paths=np.full(n, str((out / "particles.mrcs").resolve())),
        image_indices=np.arange(n, dtype=np.int64),
        table=None,
    )
    write_star(out / "particles.star", meta)
    truth = np.load(base_dir / "truth.npz")
    np.savez(out / "truth.npz", frame_index=truth["frame_index"][src])
    return out / "particles.star"


# ---------------------------------------------------------------- main


def fit_cmd(star: Path, ref: Path, run: Path, args: argparse.Namespace) -> list[str]:
    cmd = [atomicspi_exe(), "fit", str(star), "--structure", str(ref), "--out", str(run)]
    cmd += ["--epochs", "1", "--batch-size", str(args.batch_size)]
    cmd += ["--resolution", str(args.resolution), "--latent-dim", "1", "--poses", "fixed"]
    cmd += ["--coarse-grained"]  # residue beads, whatever FitConfig's default
    return [*cmd, "--seed", "0", "--quiet", "--force", *args.fit_args.split()]


def main() -> None:
    with stdout_to_stderr():
        out = run(parse_args())
    print(json.dumps(out))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="500 vs 5000 particles at 32 px")
    ap.add_argument("--sizes", type=int, nargs=2, default=None, help="small and large N")
    ap.add_argument("--box", type=int, default=None, help="box L in px (64; quick: 32)")
    ap.add_argument("--pixel-size", type=float, default=None, help="Å (1.5; quick: 3.0)")
    ap.add_argument("--n-base", type=int, default=None, help="distinct images (1000; quick 50)")
    ap.add_argument("--snr", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=None, help="256 (quick: 64)")
    ap.add_argument("--resolution", type=float, default=12.0, help="Å fitted (cheaper steps)")
    ap.add_argument("--poll", type=float, default=0.1, help="RSS sampling period, s")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temp folder")
    ap.add_argument("--fit-args", default="", help="more `atomicspi fit` options, one string")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    return ap.parse_args()


def run(args: argparse.Namespace) -> dict:
    small, large = args.sizes or ((500, 5000) if args.quick else (10_000, 100_000))
    box = args.box or (32 if args.quick else 64)
    pixel = args.pixel_size or (3.0 if args.quick else 1.5)
    n_base = args.n_base or (50 if args.quick else 1000)
    args.batch_size = args.batch_size or (64 if args.quick else 256)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="atomicspi-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    need = (small + large + n_base) * box * box * 4 * 1.05 + 50 * MB
    free = shutil.disk_usage(work).free
    if free < need:
        raise SystemExit(
            f"{work}: {free / 1e9:.1f} GB free, the stacks need {need / 1e9:.1f} GB; "
            "use a smaller --box or another --workdir"
        )
    try:
        env = dict(os.environ)
        # Both sizes start cold: no persistent compilation cache (the second fit would
        # otherwise find the first one's compilations, and use less memory for them).
        env["ATOMICSPI_NO_JAX_CACHE"] = "1"
        base = work / "base"
        sim = run_measured(simulate_cmd(base, n_base, box, pixel, None, 1), env=env)
        check(sim, "atomicspi simulate")
        ref = work / "reference.pdb"
        check(in_subprocess("write_reference_pdb", str(ref)), "reference PDB")
        out: dict = {"name": "memory", "quick": args.quick}
        runs = {}
        for label, n in (("small", small), ("large", large)):
            t0 = time.perf_counter()
            star = work / f"data_{n}" / "particles.star"
            gen = in_subprocess("write_dataset", str(star.parent), n, str(base), args.snr, n)
            check(gen, f"dataset of {n} particles")
            parent_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            gen_s = time.perf_counter() - t0
            run_dir = work / f"run_{n}"
            res = run_measured(
                fit_cmd(star, ref, run_dir, args), env=env, watch_dir=run_dir, poll_s=args.poll
            )
            check(res, f"atomicspi fit on {n} particles")
            m = re.search(r"([0-9.]+) particles/s", res["stdout"])
            runs[label] = res
            out[f"n_{label}"] = n
            out[f"stack_{label}_mb"] = round(n * box * box * 4 / MB, 1)
            out[f"generate_{label}_s"] = round(gen_s, 1)
            out[f"fit_{label}_wall_s"] = round(res["wall_s"], 1)
            out[f"fit_{label}_cpu_s"] = round(res["cpu_s"], 1)
            out[f"fit_{label}_particles_per_s"] = float(m.group(1)) if m else None
            out[f"rss_{label}_mb"] = round(res["maxrss_mb"], 1)
            out[f"anon_{label}_mb"] = round(res["peak_anon_mb"], 1)
            out[f"file_{label}_mb"] = round(res["peak_file_mb"], 1)
            out[f"hwm_sampled_{label}_mb"] = round(res["hwm_mb"], 1)
            out[f"parent_maxrss_{label}_mb"] = round(parent_maxrss, 1)
            out[f"peak_anon_phase_{label}"] = phase_at(res["peak_anon_t_s"], res["events"])
            if not args.keep:
                shutil.rmtree(work / f"data_{n}", ignore_errors=True)
        # the names: rss_10k_mb / rss_100k_mb for the default sizes
        out["rss_10k_mb" if small == 10_000 else "rss_small_mb"] = out["rss_small_mb"]
        out["rss_100k_mb" if large == 100_000 else "rss_large_mb"] = out["rss_large_mb"]
        out["ratio"] = round(out["rss_large_mb"] / out["rss_small_mb"], 3)
        out["ratio_anon"] = round(out["anon_large_mb"] / out["anon_small_mb"], 3)
        out["target_ratio"] = 1.2
        out.update(box=box, pixel_size=pixel, n_base=n_base, snr=args.snr)
        out.update(batch_size=args.batch_size, resolution=args.resolution, epochs=1)
        out.update(fit_args=args.fit_args)
        out.update(machine_info())
        return out
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
