"""Throughput of the X-ray diffraction simulator; prints one JSON object.

Patterns per second at 128² pixels for adenylate kinase (MDAnalysisTests adk.psf/adk_dims.dcd
frame 0), all-atom (3341 atoms incl. H, 5 elements) and residue beads (214), for

* ``simulate``: mean pattern + Poisson photons for a batch of random poses (jit), and
* ``simulate_grad``: value and gradient of the summed Poisson log-likelihood with respect to
  the scatterer coordinates and the per-pattern poses (axis-angle), i.e. one training step's
  forward + backward pass.

Wall-clock rates depend on what else runs on the machine (``load_avg_1min`` is recorded);
``*_cpu_s_per_pattern`` (CPU seconds of all threads) is the load-independent cost.

Usage: ``python benchmarks/xray.py [--n-pixels 128] [--batch 8] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np


def _time(fn, *args, repeats: int) -> tuple[float, float, float]:
    """(compile wall s, best wall s per call, CPU s per call of all threads)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    best, cpu = np.inf, np.inf
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return compile_s, float(best), float(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-pixels", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from MDAnalysisTests.datafiles import DCD, PSF

    from atomicspi_bayes.io import load_trajectory
    from atomicspi_bayes.physics import xray
    from atomicspi_bayes.physics.geometry import axis_angle_to_matrix, random_rotations

    model, frames = load_trajectory(DCD, PSF, stride=1000)
    xyz = frames[0] - frames[0].mean(axis=0)
    atoms = xray.atomic_scatterers(model.elements, xyz)
    beads = xray.bead_scatterers(atoms, model.residue_index, model.n_residues)
    geometry = xray.DetectorGeometry(
        n_pixels=args.n_pixels,
        pixel_size_um=200.0 * 128 / args.n_pixels,
        distance_mm=100.0,
        photon_energy_kev=6.0,
        beam_stop_radius_px=2.0 * args.n_pixels / 128,
    )
    det = xray.detector_arrays(geometry)
    fluence = 1e6  # photons/Å² = 1e14 photons/µm²
    b = args.batch
    rotations = random_rotations(jax.random.key(0), b)
    rotvecs = jax.random.normal(jax.random.key(1), (b, 3))

    result = {
        "name": "xray_simulate",
        "n_pixels": args.n_pixels,
        "batch": b,
        "detector": geometry.to_dict(),
        "resolution_at_edge_angstrom": float(
            1.0 / np.linalg.norm(np.asarray(det.k)[args.n_pixels // 2, -1])
        ),
        "fluence_photons_per_angstrom2": fluence,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "machine": platform.machine(),
    }
    for name, scat, batch_size in (("allatom", atoms, 1), ("beads", beads, None)):
        simulate = jax.jit(
            lambda key, rots, s=scat, bs=batch_size: xray.simulate_patterns(
                key, s, rots, det, fluence, background=1e-4, batch_size=bs
            )
        )
        counts, mu = simulate(jax.random.key(2), rotations)
        compile_s, run_s, cpu_s = _time(
            simulate, jax.random.key(2), rotations, repeats=args.repeats
        )

        def loglik(coords, vecs, counts=counts, s=scat, bs=batch_size):
            mu = xray.mean_patterns(
                s._replace(coords=coords),
                axis_angle_to_matrix(vecs),
                det,
                fluence,
                background=1e-4,
                batch_size=bs,
            )
            return jnp.sum(xray.poisson_loglik(counts, mu, det.mask))

        grad_fn = jax.jit(jax.value_and_grad(loglik, argnums=(0, 1)))
        gcompile_s, grun_s, gcpu_s = _time(grad_fn, scat.coords, rotvecs, repeats=args.repeats)
        result[name] = {
            "n_scatterers": int(scat.coords.shape[0]),
            "n_types": int(scat.composition.shape[1]),
            "phases_per_pattern": int(scat.coords.shape[0]) * args.n_pixels**2,
            "mean_photons_per_pattern": float(np.asarray(mu).sum(axis=(1, 2)).mean()),
            "simulate_compile_s": round(compile_s, 3),
            "simulate_s_per_batch": round(run_s, 4),
            "simulate_patterns_per_s": round(b / run_s, 2),
            "simulate_cpu_s_per_pattern": round(cpu_s / b, 4),
            "simulate_grad_compile_s": round(gcompile_s, 3),
            "simulate_grad_s_per_batch": round(grun_s, 4),
            "simulate_grad_patterns_per_s": round(b / grun_s, 2),
            "simulate_grad_cpu_s_per_pattern": round(gcpu_s / b, 4),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
