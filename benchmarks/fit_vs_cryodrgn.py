"""``atomicspi fit`` vs cryoDRGN ``train_vae`` on the same synthetic particles and poses.

Data: ``atomicspi simulate`` of adenylate kinase along the MDAnalysisTests open<->closed
trajectory (adk.psf + adk_dims.dcd, 98 frames, all atoms), uniform random poses, CTF, white
noise at ``--snr``; truth.npz gives every particle's frame index.

* ours: ``atomicspi fit particles.star --structure frame0.pdb --latent-dim 1 --poses fixed``
  (default model settings; a checkpoint every epoch, copied as it appears; the latent means
  of every epoch are computed afterwards from those checkpoints with the run's own encoder).
* cryoDRGN (``train_vae --zdim 1``, ``--checkpoint 1``: ``z.EPOCH.pkl`` every epoch) on the
  same ``particles.mrcs``, with poses and CTFs converted from the same STAR file by its own
  ``cryodrgn parse_pose_star`` / ``parse_ctf_star``. cryoDRGN is never a project dependency:
  install it in its own environment (a CPU torch wheel)::

      python3 -m venv /tmp/cryodrgn-venv
      /tmp/cryodrgn-venv/bin/pip install torch==2.13.0 cryodrgn

  and pass ``--cryodrgn /tmp/cryodrgn-venv/bin/cryodrgn`` (the default) or set CRYODRGN.

Accuracy per epoch = Spearman |rho| between the 1-D latent mean and the true frame index.
Times are wall seconds from the start of each command (start-up, data loading and JIT
included) to the moment the epoch's output file appeared, plus the command's CPU seconds at
that moment (all threads; less sensitive to the load of the shared machine).

Figures: ``time_ratio`` = cryoDRGN's wall time to its final epoch / our wall time to first
reach at least cryoDRGN's final |rho| (> 1: we are faster; null if we never reach it);
``cpu_ratio`` likewise in CPU seconds. With ``--cryodrgn-max-wall-s`` cryoDRGN is stopped
after that time and its last finished epoch counts as final (``stopped_at_max_wall_s``).
The two methods solve different problems: cryoDRGN learns a volume decoder from scratch,
ours deforms a known atomic reference (frame 0).

``--parallel`` trains both at the same time (each then sees the same load of the shared
machine; the CPU-second ratio is the less load-dependent figure either way).

Usage::

    python benchmarks/fit_vs_cryodrgn.py [--quick] [--n 1000] [--box 64] [--snr 1.0]
        [--epochs-ours 20] [--epochs-cryodrgn 10] [--parallel] [--no-cryodrgn]

Prints one JSON object (STYLE.md §9).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from memory import (
    atomicspi_exe,
    check,
    machine_info,
    run_measured,
    simulate_cmd,
    stdout_to_stderr,
    write_reference_pdb,
)

DEFAULT_CRYODRGN = "/tmp/cryodrgn-venv/bin/cryodrgn"


def spearman_abs(z: np.ndarray, truth: np.ndarray) -> float:
    """|Spearman rho| of a 1-D latent against the true frame index."""
    from scipy.stats import spearmanr

    rho = spearmanr(np.asarray(z).reshape(-1), np.asarray(truth).reshape(-1)).statistic
    return float(abs(rho)) if np.isfinite(rho) else 0.0


# ---------------------------------------------------------------- ours


def write_fit_recipe(path: Path, checkpoint_every: int) -> Path:
    """A TOML recipe that only sets the checkpoint cadence (everything else default/CLI)."""
    path.write_text(f"[fit]\ncheckpoint_every = {int(checkpoint_every)}\n")
    return path


def ours_epoch_latents(
    run_dir: Path, checkpoints: list[tuple[int, Path]], star: Path, ref: Path
) -> dict[int, np.ndarray]:
    """``{step: z_mean (N,)}`` of every saved checkpoint, encoded with the run's guide."""
    import jax
    from numpyro.infer import SVI, Trace_ELBO

    from atomicspi_bayes.inference import SVIConfig, load_checkpoint, make_optimizer
    from atomicspi_bayes.inference.svi import _init_state
    from atomicspi_bayes.pipeline import read_fit_config
    from atomicspi_bayes.pipeline.fit import build_problem, encode_all

    cfg = read_fit_config(run_dir / "config.toml")
    problem = build_problem(star, ref, cfg)
    # same optimizer structure as the fit (clip + adam with a schedule): the template state
    optim = make_optimizer(SVIConfig(num_steps=2, warmup_steps=1, schedule="cosine"))
    svi = SVI(problem.model, problem.guide, optim, Trace_ELBO())
    template = _init_state(svi, jax.random.PRNGKey(0), problem.batch_fn(0), None)
    out = {}
    for step, path in checkpoints:
        state = load_checkpoint(path, template, fingerprint=None).state
        enc = encode_all(problem, svi.get_params(state))
        out[step] = np.asarray(enc["z_mean"])[:, 0]
    return out


def run_ours(data: Path, ref: Path, work: Path, args: argparse.Namespace) -> dict:
    run_dir = work / "ours"
    saved = work / "ours_epochs"
    saved.mkdir(parents=True, exist_ok=True)
    n_kept = args.n  # every simulated image is finite and non-constant
    bsz = min(args.batch_size, n_kept)
    steps_per_epoch = max(1, n_kept // bsz)
    recipe = write_fit_recipe(work / "ours.toml", steps_per_epoch)
    lock = threading.Lock()

    def keep(path: Path) -> None:
        if re.match(r"ckpt_\d+\.npz$", path.name):
            with lock:
                try:
                    shutil.copy2(path, saved / path.name)
                except FileNotFoundError:  # rotated away before we copied it
                    pass

    cmd = [atomicspi_exe(), "fit", str(data / "particles.star"), "--structure", str(ref)]
    cmd += ["--out", str(run_dir), "--config", str(recipe), "--latent-dim", "1"]
    cmd += ["--poses", "fixed", "--epochs", str(args.epochs_ours), "--batch-size", str(bsz)]
    cmd += ["--seed", "0", "--quiet", "--force"]
    res = run_measured(cmd, watch_dir=run_dir, on_new_file=keep)
    check(res, "atomicspi fit")
    truth = np.load(data / "truth.npz")["frame_index"]
    latents = np.load(run_dir / "latents.npz")
    rows = latents["particle_index"]
    # per-epoch rho comes from the encoder's means, so the final one must too; the reported
    # (refined) posterior mean of the run is given beside it
    encoder_key = "z_mean_amortized" if "z_mean_amortized" in latents else "z_mean"
    final_rho = spearman_abs(latents[encoder_key][:, 0], truth[rows])
    reported_rho = spearman_abs(latents["z_mean"][:, 0], truth[rows])

    ckpts = sorted(
        (int(m.group(1)), p)
        for p in saved.glob("ckpt_*.npz")
        if (m := re.match(r"ckpt_(\d+)\.npz$", p.name))
    )
    z_by_step = ours_epoch_latents(run_dir, ckpts, data / "particles.star", ref)
    elbo = np.load(run_dir / "elbo.npy")
    truth_kept = truth[latents["particle_index"]]
    epochs = []
    for step, _ in ckpts:
        ev = res["events"].get(f"ckpt_{step:09d}.npz", {})
        lo = max(0, step - steps_per_epoch)
        epochs.append(
            {
                "epoch": round(step / steps_per_epoch, 3),
                "step": step,
                "t_s": round(ev.get("t", float("nan")), 1),
                "cpu_s": None if ev.get("cpu") is None else round(ev["cpu"], 1),
                "abs_rho": round(spearman_abs(z_by_step[step], truth_kept), 4),
                "mean_elbo": float(np.mean(elbo[lo:step])),
            }
        )
    m = re.search(r"([0-9.]+) particles/s", res["stdout"])
    return {
        "wall_s": round(res["wall_s"], 1),
        "cpu_s": round(res["cpu_s"], 1),
        "maxrss_mb": round(res["maxrss_mb"], 1),
        "particles_per_s": float(m.group(1)) if m else None,
        "final_abs_rho": round(final_rho, 4),
        "final_abs_rho_reported_posterior": round(reported_rho, 4),
        "epochs": epochs,
        "batch_size": bsz,
    }


# ---------------------------------------------------------------- cryoDRGN


def convert_for_cryodrgn(exe: str, data: Path, box: int, pixel: float) -> dict:
    """pose.pkl / ctf.pkl from particles.star with cryoDRGN's own parsers; checks them."""
    from atomicspi_bayes.io import cryodrgn_poses, load_cryodrgn_pickle
    from atomicspi_bayes.physics.geometry import geodesic_angle

    star = str(data / "particles.star")
    for sub, out in (("parse_pose_star", "pose.pkl"), ("parse_ctf_star", "ctf.pkl")):
        opt = "--outpkl" if sub == "parse_pose_star" else "-o"
        cmd = [exe, sub, star, opt, str(data / out), "-D", str(box), "--Apix", str(pixel)]
        check(run_measured(cmd), f"cryodrgn {sub}")
    rots, shifts = cryodrgn_poses(
        load_cryodrgn_pickle(data / "pose.pkl", allow_pickle=True), box, pixel
    )
    truth = np.load(data / "truth.npz")
    err = np.degrees(np.asarray(geodesic_angle(rots, truth["rotations"].astype(np.float32))))
    shift_err = 0.0 if shifts is None else float(np.abs(shifts - truth["shifts"]).max())
    ctf = np.asarray(load_cryodrgn_pickle(data / "ctf.pkl", allow_pickle=True))
    dfu_err = float(np.abs(ctf[:, 2] - truth["defocus_u"]).max())
    return {
        "pose_max_err_deg": round(float(err.max()), 4),
        "shift_max_err_a": round(shift_err, 4),
        "defocus_u_max_err_a": round(dfu_err, 3),
    }


def run_cryodrgn(exe: str, data: Path, work: Path, args: argparse.Namespace) -> dict:
    out_dir = work / "cryodrgn"
    cmd = [exe, "train_vae", str(data / "particles.mrcs"), "--poses", str(data / "pose.pkl")]
    cmd += ["--ctf", str(data / "ctf.pkl"), "--zdim", "1", "-n", str(args.epochs_cryodrgn)]
    cmd += ["-o", str(out_dir), "--enc-dim", str(args.net_dim), "--dec-dim", str(args.net_dim)]
    cmd += ["--enc-layers", str(args.net_layers), "--dec-layers", str(args.net_layers)]
    cmd += ["-b", str(args.cryodrgn_batch), "--checkpoint", "1", "--no-analysis", "--seed", "0"]
    res = run_measured(cmd, watch_dir=out_dir, max_wall_s=args.cryodrgn_max_wall_s)
    if not res["timed_out"]:
        check(res, "cryodrgn train_vae")
    from atomicspi_bayes.io import load_cryodrgn_pickle

    truth = np.load(data / "truth.npz")["frame_index"]
    log = (out_dir / "run.log").read_text() if (out_dir / "run.log").is_file() else ""
    losses = [float(x) for x in re.findall(r"Average gen loss = ([0-9.eE+-]+)", log)]
    epochs = []
    for e in range(1, args.epochs_cryodrgn + 1):
        path = out_dir / f"z.{e}.pkl"
        if not path.is_file():
            continue
        z = np.asarray(load_cryodrgn_pickle(path, allow_pickle=True))
        ev = res["events"].get(path.name, {})
        epochs.append(
            {
                "epoch": e,
                "t_s": round(ev.get("t", float("nan")), 1),
                "cpu_s": None if ev.get("cpu") is None else round(ev["cpu"], 1),
                "abs_rho": round(spearman_abs(z[:, 0], truth), 4),
                "gen_loss": losses[e - 1] if e - 1 < len(losses) else None,
            }
        )
    if not epochs:
        raise SystemExit(f"cryodrgn train_vae wrote no z.EPOCH.pkl in {out_dir}")
    return {
        "wall_s": round(res["wall_s"], 1),
        "cpu_s": round(res["cpu_s"], 1),
        "maxrss_mb": round(res["maxrss_mb"], 1),
        "final_abs_rho": epochs[-1]["abs_rho"],
        "epochs": epochs,
        "stopped_at_max_wall_s": res["timed_out"],
        "net": f"{args.net_layers}x{args.net_dim} encoder and decoder",
        "batch_size": args.cryodrgn_batch,
    }


def time_to_reach(epochs: list[dict], target: float, key: str) -> float | None:
    """``key`` ("t_s" or "cpu_s") of the first epoch with abs_rho >= target, or None."""
    for e in epochs:
        if e["abs_rho"] >= target and e.get(key) is not None:
            return float(e[key])
    return None


# ---------------------------------------------------------------- main


def main() -> None:
    with stdout_to_stderr():
        out = run(parse_args())
    print(json.dumps(out))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke test)")
    ap.add_argument("--n", type=int, default=None, help="particles (1000; quick 128)")
    ap.add_argument("--box", type=int, default=None, help="px (64; quick 32)")
    ap.add_argument("--pixel-size", type=float, default=None, help="Å (1.5; quick 3.0)")
    ap.add_argument("--snr", type=float, default=1.0)
    ap.add_argument("--epochs-ours", type=int, default=None, help="(20; quick 2)")
    ap.add_argument("--epochs-cryodrgn", type=int, default=None, help="(10; quick 1)")
    ap.add_argument("--batch-size", type=int, default=64, help="ours")
    ap.add_argument("--cryodrgn-batch", type=int, default=8, help="cryoDRGN -b (its default)")
    ap.add_argument("--net-dim", type=int, default=None, help="cryoDRGN width (256; quick 32)")
    ap.add_argument("--net-layers", type=int, default=None, help="cryoDRGN depth (3; quick 1)")
    ap.add_argument("--cryodrgn", default=os.environ.get("CRYODRGN", DEFAULT_CRYODRGN))
    ap.add_argument("--no-cryodrgn", action="store_true", help="run our side only")
    ap.add_argument(
        "--cryodrgn-max-wall-s",
        type=float,
        default=None,
        help="stop cryoDRGN after this many s; its last finished epoch counts as final",
    )
    ap.add_argument("--parallel", action="store_true", help="run both trainings concurrently")
    ap.add_argument("--workdir", type=Path, default=None)
    return ap.parse_args()


def run(args: argparse.Namespace) -> dict:
    q = args.quick
    args.n = args.n or (128 if q else 1000)
    box = args.box or (32 if q else 64)
    pixel = args.pixel_size or (3.0 if q else 1.5)
    args.epochs_ours = args.epochs_ours or (2 if q else 20)
    args.epochs_cryodrgn = args.epochs_cryodrgn or (1 if q else 10)
    args.net_dim = args.net_dim or (32 if q else 256)
    args.net_layers = args.net_layers or (1 if q else 3)
    if not args.no_cryodrgn and not Path(args.cryodrgn).is_file():
        raise SystemExit(
            f"cryoDRGN not found at {args.cryodrgn}: python3 -m venv /tmp/cryodrgn-venv && "
            "/tmp/cryodrgn-venv/bin/pip install torch==2.13.0 cryodrgn (or pass --no-cryodrgn)"
        )

    work = args.workdir or Path(tempfile.mkdtemp(prefix="atomicspi-vs-cryodrgn-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        data = work / "data"
        sim = run_measured(simulate_cmd(data, args.n, box, pixel, args.snr, seed=0))
        check(sim, "atomicspi simulate")
        ref = write_reference_pdb(work / "reference.pdb")
        out: dict = {"name": "fit_vs_cryodrgn", "quick": q, "n": args.n, "box": box}
        out.update(pixel_size=pixel, snr=args.snr, simulate_wall_s=round(sim["wall_s"], 1))
        if args.no_cryodrgn:
            out["ours"] = ours = run_ours(data, ref, work, args)
            out["cryodrgn"] = None
        else:
            out["conversion"] = convert_for_cryodrgn(args.cryodrgn, data, box, pixel)
            if args.parallel:  # both at once: they see the same machine load
                with ThreadPoolExecutor(1) as pool:
                    future = pool.submit(run_cryodrgn, args.cryodrgn, data, work, args)
                    out["ours"] = ours = run_ours(data, ref, work, args)
                    out["cryodrgn"] = cd = future.result()
            else:
                out["ours"] = ours = run_ours(data, ref, work, args)
                out["cryodrgn"] = cd = run_cryodrgn(args.cryodrgn, data, work, args)
            out["concurrent"] = args.parallel
            target = cd["final_abs_rho"]
            t_cd, c_cd = cd["epochs"][-1]["t_s"], cd["epochs"][-1]["cpu_s"]
            t_us = time_to_reach(ours["epochs"], target, "t_s")
            c_us = time_to_reach(ours["epochs"], target, "cpu_s")
            out["target_abs_rho"] = target
            out["ours_wall_s_to_target"] = t_us
            out["cryodrgn_wall_s_to_final"] = t_cd
            out["time_ratio"] = None if not t_us else round(t_cd / t_us, 2)
            out["cpu_ratio"] = None if not (c_us and c_cd) else round(c_cd / c_us, 2)
            out["final_abs_rho_ours_vs_cryodrgn"] = [ours["final_abs_rho"], target]
        out.update(machine_info())
        return out
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
