"""How the cost of rendering and of one SVI step grows with box size and atom count.

Cost model of the renderer (``physics.cryoem.project_batch``, see its module docstring): one
real GEMM per image, ``[Cy; Sy] (2(L/2+1) x P) @ [Cx | Sx] (P x 2(L/2+1))``, i.e.
``8 (L/2+1)^2 P`` flops for P scattering points, plus O(L P) phase tables and O(L^2) CTF and
assembly. Expected exponents: time per image ∝ L^2 at fixed P, ∝ P at fixed L (P = atoms for
the all-atom element layout; 5 x beads for coarse-grained beads, one point per Gaussian).

Measured (adenylate kinase, MDAnalysisTests adk.psf + adk_dims.dcd frame 0, 1.5 Å/px,
300 kV CTF, random poses, float32, CPU):

* ``render``: ``simulate_batch`` (projection x CTF, the fit's hot loop) for boxes
  64/128/256 and for residue beads (214 beads, P = 1070) and all-atom subsets of 835, 1670
  and 3341 atoms plus a doubled AdK (6682 atoms): images/s (best of ``--repeats``), CPU s
  per image, achieved GEMM GFLOP/s. ``exponent_box`` = slope of log(time/image) vs log L
  for each representation; ``exponent_points`` = slope vs log P (all-atom sets) at each L.
* ``svi``: one SVI step of the real fit (``pipeline.build_problem`` on a small simulated
  STAR/MRC set, default model and guide, poses fixed, ``inference.run_svi``) for each box,
  coarse-grained and all-atom: particles/s after compilation, the engine's compile counter,
  and XLA compilations seen *between the first and last step* (must be 0: no recompiles).
  The host->device guard (``jax.transfer_guard_host_to_device("disallow")`` on the
  training thread) proves the loop moves nothing to the device beyond the minibatch, which
  the prefetch thread places explicitly.

The machine is shared (``load_avg_1min`` recorded): wall rates are lower bounds; the
exponents come from one process, measured back to back.

Usage: ``python benchmarks/scaling.py [--quick] [--boxes 64 128 256] [--batch 16]``.
Prints one JSON object (STYLE.md §9).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from memory import adk_files, machine_info, stdout_to_stderr, write_reference_pdb

_COMPILES = [0]


def _count_compile(event: str, duration: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES[0] += 1


def slope(x, y) -> float:
    """Least-squares slope of log(y) against log(x)."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def time_call(fn, *args, repeats: int) -> tuple[float, float, float]:
    """(first call wall s incl. compile, best wall s, CPU s of the best-wall call)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    best, cpu = np.inf, np.inf
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, time.process_time() - c0
    return first, float(best), float(cpu)


# ---------------------------------------------------------------- render


def structures(quick: bool) -> dict:
    """name -> (Scatterers, coords (N,3) Å centred, points P)."""
    from atomicspi_bayes.io import load_trajectory
    from atomicspi_bayes.physics.cryoem import Scatterers
    from atomicspi_bayes.structure import coarse_grain

    psf, dcd = adk_files()
    model, frames = load_trajectory(dcd, psf, stride=1000)
    xyz = np.asarray(frames[0] - frames[0].mean(axis=0), np.float32)
    elements = np.asarray(model.elements)
    out = {}
    beads = coarse_grain(model)
    bead_xyz = np.asarray(beads.scattering_coords(), np.float32)
    bead_xyz = bead_xyz - bead_xyz.mean(axis=0)
    scat = Scatterers.from_gaussians(jnp.asarray(beads.a), jnp.asarray(beads.b))
    out["beads"] = (scat, jnp.asarray(bead_xyz), scat.n_points)
    n = xyz.shape[0]
    sizes = (n // 4, n) if quick else (n // 4, n // 2, n, 2 * n)
    for m in sizes:
        if m <= n:
            idx = np.linspace(0, n - 1, m).astype(int)
            c, e = xyz[idx], elements[idx]
        else:  # two AdK copies side by side (same elements), still within the box
            offset = np.array([6.0, 0.0, 0.0], np.float32)
            c = np.concatenate([xyz - offset, xyz + offset])[:m]
            e = np.concatenate([elements, elements])[:m]
        s = Scatterers.from_elements(e)
        out[f"atoms_{m}"] = (s, jnp.asarray(c), s.n_points)
    return out


def bench_render(boxes, pixel_size: float, batch: int, repeats: int, quick: bool) -> dict:
    from atomicspi_bayes.physics.cryoem import simulate_batch
    from atomicspi_bayes.physics.ctf import CTFParams
    from atomicspi_bayes.physics.geometry import random_rotations

    key = jax.random.PRNGKey(0)
    rots = random_rotations(key, batch)
    shifts = jnp.zeros((batch, 2), jnp.float32)
    dfu = jnp.linspace(1.2e4, 2.0e4, batch)
    ctf = CTFParams.create(defocus_u=dfu, defocus_v=dfu * 1.02, defocus_angle=0.3)
    rows = []
    for name, (scat, coords, points) in structures(quick).items():
        for box in boxes:
            fn = jax.jit(
                lambda s, c, r, t, p, box=box: simulate_batch(
                    s, c, r, t, p, box=box, pixel_size=pixel_size
                )[0]
            )
            first, best, cpu = time_call(fn, scat, coords, rots, shifts, ctf, repeats=repeats)
            gemm_flop = 8.0 * (box // 2 + 1) ** 2 * points
            rows.append(
                {
                    "structure": name,
                    "points": int(points),
                    "box": box,
                    "images_per_s": round(batch / best, 1),
                    "s_per_image": best / batch,
                    "cpu_s_per_image": cpu / batch,
                    "compile_s": round(first - best, 2),
                    "gemm_gflop_per_image": round(gemm_flop / 1e9, 4),
                    "gemm_gflop_per_s": round(gemm_flop * batch / best / 1e9, 1),
                }
            )
    return {"rows": rows, "batch": batch, "repeats": repeats}


def matmul_rate(box: int, points: int, repeats: int) -> float:
    """float32 GFLOP/s of ``jnp.dot`` on the renderer's GEMM shape (machine reference)."""
    k = 2 * (box // 2 + 1)
    a = jnp.ones((k, points), jnp.float32)
    b = jnp.ones((points, k), jnp.float32)
    f = jax.jit(jnp.dot)
    _, best, _ = time_call(f, a, b, repeats=max(repeats, 5))
    return 2.0 * k * k * points / best / 1e9


def render_exponents(rows: list[dict], boxes) -> dict:
    """Slopes of log(cost per image) vs log L (each structure) and vs log P (each L), from
    wall time (``box``, ``points``) and from CPU time (``box_cpu``, ``points_cpu``; less
    sensitive to the load of a shared machine)."""
    out: dict = {"box": {}, "points": {}, "box_cpu": {}, "points_cpu": {}}
    for name in sorted({r["structure"] for r in rows}):
        rs = sorted((r for r in rows if r["structure"] == name), key=lambda r: r["box"])
        if len(rs) > 1:
            x = [r["box"] for r in rs]
            out["box"][name] = round(slope(x, [r["s_per_image"] for r in rs]), 2)
            out["box_cpu"][name] = round(slope(x, [r["cpu_s_per_image"] for r in rs]), 2)
    for box in boxes:
        rs = sorted(
            (r for r in rows if r["box"] == box and r["structure"].startswith("atoms_")),
            key=lambda r: r["points"],
        )
        if len(rs) > 1:
            x = [r["points"] for r in rs]
            out["points"][str(box)] = round(slope(x, [r["s_per_image"] for r in rs]), 2)
            out["points_cpu"][str(box)] = round(slope(x, [r["cpu_s_per_image"] for r in rs]), 2)
    return out


# ---------------------------------------------------------------- one SVI step of the fit


class _StepLog(logging.Handler):
    """Watches the engine's per-step log records (emitted on the training thread).

    Records the XLA compile count at every finished step, and from the end of step 1 to the
    end of step ``last`` holds ``jax.transfer_guard_host_to_device("disallow")`` on that
    thread (the guard is thread-local): any implicit host->device copy in the steady-state
    loop raises. The minibatch is built and placed on the prefetch thread, outside it.
    """

    def __init__(self, last: int) -> None:
        super().__init__(logging.INFO)
        self.last = last
        self.compiles_at_step: list[int] = []
        self.clock_at_step: list[tuple[float, float]] = []  # (wall, process CPU) s
        self.guarded_steps = 0
        self.guard_live = False
        self._guard = None

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if not msg.startswith("step "):
            return
        step = int(msg.split()[1])
        self.compiles_at_step.append(_COMPILES[0])
        self.clock_at_step.append((time.perf_counter(), time.process_time()))
        if step == 1 and step < self.last:
            # compile the control's add now, so that it adds no XLA compile in the loop
            jnp.add(jnp.ones(1, jnp.float32), 1.0).block_until_ready()
            self.compiles_at_step[-1] = _COMPILES[0]
            self._guard = jax.transfer_guard_host_to_device("disallow")
            self._guard.__enter__()
        elif self._guard is not None:
            self.guarded_steps += 1
            if self.guarded_steps == 1:  # control: an implicit copy here must be refused
                try:
                    jnp.add(np.ones(1, np.float32), 1.0)
                except jax.errors.JaxRuntimeError:
                    self.guard_live = True
            if step == self.last:
                self.stop_guard()

    def stop_guard(self) -> None:
        if self._guard is not None:
            self._guard.__exit__(None, None, None)
            self._guard = None


def bench_svi(
    boxes, pixel_size: float, batch: int, steps: int, reps: list[bool], work: Path
) -> list[dict]:
    from atomicspi_bayes.inference import SVIConfig, run_svi
    from atomicspi_bayes.pipeline import FitConfig
    from atomicspi_bayes.pipeline.fit import build_problem
    from atomicspi_bayes.synthetic import CryoEMDatasetConfig, simulate_cryoem_dataset

    psf, dcd = adk_files()
    ref = write_reference_pdb(work / "reference.pdb")
    svi_logger = logging.getLogger("atomicspi_bayes.inference.svi")
    svi_logger.setLevel(logging.INFO)
    rows = []
    for box in boxes:
        data = work / f"svi_{box}"
        cfg = CryoEMDatasetConfig(
            n_particles=2 * batch, box=box, pixel_size=pixel_size, snr=1.0, coarse_grained=True
        )
        simulate_cryoem_dataset(jax.random.PRNGKey(box), psf, data, cfg, trajectory_path=dcd)
        for coarse in reps:
            fit_cfg = FitConfig(batch_size=batch, coarse_grained=coarse, latent_dim=1)
            c0 = _COMPILES[0]
            t0, p0 = time.perf_counter(), time.process_time()
            problem = build_problem(data / "particles.star", ref, fit_cfg)
            build_s, build_cpu = time.perf_counter() - t0, time.process_time() - p0
            build_compiles = _COMPILES[0] - c0
            handler = _StepLog(last=steps)
            svi_logger.addHandler(handler)
            key, svi_cfg = jax.random.PRNGKey(0), SVIConfig(num_steps=steps, log_every=1)
            guard = "passed"
            try:
                res = run_svi(key, problem.model, problem.guide, problem.batch_fn, svi_cfg)
            except jax.errors.JaxRuntimeError as exc:
                if "Disallowed host-to-device" not in str(exc):
                    raise
                guard, res = f"violated: {str(exc).splitlines()[0]}", None
            finally:
                handler.stop_guard()
                svi_logger.removeHandler(handler)
            marks, clocks = handler.compiles_at_step, handler.clock_at_step
            n_timed = (len(clocks) - 1) * batch
            cpu_pp = (clocks[-1][1] - clocks[0][1]) / n_timed if n_timed > 0 else None
            rows.append(
                {
                    "box": box,
                    "representation": "beads" if coarse else "all_atom",
                    "points": int(problem.static.scatterers.n_points),
                    "batch": batch,
                    "steps": steps,
                    "particles_per_s": round(res.items_per_s, 1) if res else None,
                    "s_per_particle": 1.0 / res.items_per_s if res and res.items_per_s else None,
                    "cpu_s_per_particle": cpu_pp,
                    "step_compilations": res.compilations if res else None,
                    "xla_compiles_after_first_step": marks[-1] - marks[0] if marks else None,
                    "host_to_device_guard": guard,
                    "guarded_steps": handler.guarded_steps,
                    "guard_live": handler.guard_live,
                    "build_problem_s": round(build_s, 1),
                    "build_problem_cpu_s": round(build_cpu, 1),
                    "build_problem_xla_compiles": build_compiles,
                    "n_scored_fourier": int(problem.static.window.n_scored),
                }
            )
    return rows


def main() -> None:
    with stdout_to_stderr():
        out = run(parse_args())
    print(json.dumps(out))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="boxes 32/64, few structures")
    ap.add_argument("--boxes", type=int, nargs="+", default=None)
    ap.add_argument("--pixel-size", type=float, default=None, help="Å (1.5; quick 3.0)")
    ap.add_argument("--batch", type=int, default=None, help="images per call (16; quick 4)")
    ap.add_argument("--repeats", type=int, default=None, help="best of (5; quick 2)")
    ap.add_argument("--svi-steps", type=int, default=None, help="(6; quick 4)")
    ap.add_argument("--no-svi", action="store_true", help="render part only")
    return ap.parse_args()


def run(args: argparse.Namespace) -> dict:
    q = args.quick
    boxes = args.boxes or ([32, 64] if q else [64, 128, 256])
    pixel_size = args.pixel_size or (3.0 if q else 1.5)
    batch = args.batch or (4 if q else 16)
    repeats = args.repeats or (2 if q else 5)
    steps = args.svi_steps or (4 if q else 6)
    jax.monitoring.register_event_duration_secs_listener(_count_compile)

    out: dict = {"name": "scaling", "quick": q, "pixel_size": pixel_size, "boxes": boxes}
    render = bench_render(boxes, pixel_size, batch, repeats, q)
    out["render"] = render["rows"]
    out["render_batch"], out["render_repeats"] = render["batch"], render["repeats"]
    out["render_exponents"] = render_exponents(render["rows"], boxes)
    mid = boxes[len(boxes) // 2]
    n_all = max(r["points"] for r in render["rows"])
    out["matmul_gflop_per_s"] = round(matmul_rate(mid, n_all, repeats), 1)
    best = max(
        (r for r in render["rows"] if r["box"] == mid and r["points"] == n_all),
        key=lambda r: r["gemm_gflop_per_s"],
    )
    out["gemm_fraction_of_matmul"] = round(best["gemm_gflop_per_s"] / out["matmul_gflop_per_s"], 3)
    out["cost_model"] = "t_image ~ 8 (L/2+1)^2 P flops (GEMM) + O(L P) phases + O(L^2) CTF"
    if not args.no_svi:
        with tempfile.TemporaryDirectory(prefix="atomicspi-scaling-") as tmp:
            svi_boxes = boxes[-1:] if q else boxes  # quick: one fit build only
            reps = [True] if q else [True, False]
            svi = bench_svi(svi_boxes, pixel_size, batch, steps, reps, Path(tmp))
        out["svi"] = svi
        exps: dict = {}
        for rep in ("beads", "all_atom"):
            rs = [r for r in svi if r["representation"] == rep and r["s_per_particle"]]
            if len(rs) > 1:
                x = [r["box"] for r in rs]
                exps[rep] = round(slope(x, [r["s_per_particle"] for r in rs]), 2)
                exps[rep + "_cpu"] = round(slope(x, [r["cpu_s_per_particle"] for r in rs]), 2)
        out["svi_exponent_box"] = exps  # wall and CPU time per particle vs box
        ratio = {}
        for box in svi_boxes:
            pair = {r["representation"]: r for r in svi if r["box"] == box}
            if {"beads", "all_atom"} <= set(pair) and pair["beads"]["s_per_particle"]:
                cpu_atoms = pair["all_atom"]["cpu_s_per_particle"]
                ratio[str(box)] = round(cpu_atoms / pair["beads"]["cpu_s_per_particle"], 2)
        out["svi_all_atom_over_beads_cpu"] = ratio
    out.update(machine_info())
    out["jax"] = jax.__version__
    return out


if __name__ == "__main__":
    main()
