"""Cross-check physics.xray against skopi (an independent X-ray SPI simulator); prints JSON.

skopi is NOT a project dependency: install it in a separate virtual environment and point
``--skopi-python`` at that interpreter (the skopi part runs there, in a subprocess):

    python -m venv /tmp/skopi-venv && /tmp/skopi-venv/bin/pip install skopi
    python benchmarks/xray_vs_skopi.py --skopi-python /tmp/skopi-venv/bin/python

Same model (adenylate kinase frame 0 of MDAnalysisTests adk_dims.dcd, 3341 atoms with H,
elements from the PSF, written to a PDB with an element column), same orientation (skopi's
``Particle.rotate(q)``, i.e. ``r -> R(q) r``, and ours with ``quaternion_to_matrix(q)``),
same geometry (skopi ``SimpleSquareDetector``: beam centre between the four central pixels)
and beam (photons per pulse / focus area). skopi's full pattern path needs CUDA, so its CPU
routine ``skopi.diffraction.calculate_molecular_form_factor_square`` (numba, float64) is used
on skopi's own reciprocal pixel positions, times skopi's own ``linear_correction``
(fluence · r_e² · solid angle · polarization). Form factors: skopi's Cromer-Mann table
("CM", the same IT92 source as ours) and, as a second check, its Waasmaier-Kirfel table ("WK").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SKOPI_WORKER = r"""
import sys, json, numpy as np
import skopi as sk
import skopi.diffraction as pd
from skopi.geometry.convert import quaternion2rot3d
cfg = json.loads(sys.argv[1])
out = {}
beam = sk.Beam(photon_energy=cfg["energy_ev"], fluence=cfg["photons"],
               focus_radius=cfg["focus_radius_m"])
det = sk.SimpleSquareDetector(cfg["n"], cfg["n"] * cfg["pixel_m"], cfg["distance_m"], beam=beam)
for ff in ("CM", "WK"):
    particle = sk.Particle()
    particle.read_pdb(cfg["pdb"], ff=ff)
    particle.rotate(np.asarray(cfg["quaternion"]))
    q_pos = det.pixel_position_reciprocal[0]              # (n, n, 3) 1/m
    s = det.pixel_distance_reciprocal[0] * 1e-10 / 2.0    # sin(theta)/lambda in 1/Angstrom
    f2 = pd.calculate_molecular_form_factor_square(particle, s, q_pos)
    out[ff] = (f2 * det.linear_correction[0]).tolist()
out["k_inv_angstrom"] = (det.pixel_position_reciprocal[0] * 1e-10).tolist()
out["rotation"] = quaternion2rot3d(np.asarray(cfg["quaternion"])).tolist()
out["fluence_per_angstrom2"] = beam.get_photons_per_pulse() / beam.get_focus_area() * 1e-20
out["n_atoms"] = int(particle.atom_pos.shape[0])
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skopi-python", default="/tmp/skopi-venv/bin/python")
    parser.add_argument("--n-pixels", type=int, default=64)
    args = parser.parse_args()

    import jax.numpy as jnp
    import mdtraj as md
    from MDAnalysisTests.datafiles import DCD, PSF

    from atomicspi_bayes.physics import xray
    from atomicspi_bayes.physics.geometry import quaternion_to_matrix

    n, pixel_um, distance_mm, energy_kev = args.n_pixels, 200.0, 50.0, 6.0
    quaternion = np.array([0.8, 0.2, -0.4, 0.4])
    quaternion /= np.linalg.norm(quaternion)

    traj = md.load_frame(DCD, 0, top=PSF)
    traj.xyz -= traj.xyz.mean(axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as tmp:
        pdb = str(Path(tmp) / "adk_frame0.pdb")
        traj.save_pdb(pdb)  # element column from the PSF topology
        xyz = md.load(pdb).xyz[0].astype(np.float64) * 10.0  # exactly what skopi reads (Å)
        cfg = {
            "pdb": pdb,
            "n": n,
            "pixel_m": pixel_um * 1e-6,
            "distance_m": distance_mm * 1e-3,
            "energy_ev": energy_kev * 1e3,
            "photons": 1e12,
            "focus_radius_m": 0.1e-6,
            "quaternion": quaternion.tolist(),
        }
        t0 = time.perf_counter()
        proc = subprocess.run(
            [args.skopi_python, "-c", SKOPI_WORKER, json.dumps(cfg)],
            capture_output=True,
            text=True,
            check=False,
        )
        skopi_s = time.perf_counter() - t0
    if proc.returncode != 0:
        print(json.dumps({"name": "xray_vs_skopi", "error": proc.stderr.strip()[-2000:]}))
        sys.exit(1)
    ref = json.loads(proc.stdout.strip().splitlines()[-1])

    elements = np.array([a.element.symbol for a in traj.topology.atoms])
    geometry = xray.DetectorGeometry(
        n_pixels=n,
        pixel_size_um=pixel_um,
        distance_mm=distance_mm,
        photon_energy_kev=energy_kev,
        beam_center_px=((n - 1) / 2, (n - 1) / 2),
        polarization="x",
    )
    det = xray.detector_arrays(geometry)
    rotation = quaternion_to_matrix(jnp.asarray(quaternion, jnp.float32))
    t0 = time.perf_counter()
    ours = np.asarray(
        xray.intensity(
            xray.atomic_scatterers(elements, xyz), rotation, det, ref["fluence_per_angstrom2"]
        )
    )
    ours_s = time.perf_counter() - t0

    result = {
        "name": "xray_vs_skopi",
        "model": "AdK frame 0, all atoms",
        "n_atoms_ours": int(xyz.shape[0]),
        "n_atoms_skopi": ref["n_atoms"],
        "detector": geometry.to_dict(),
        "resolution_at_corner_angstrom": 1.0 / geometry.max_k,
        "fluence_photons_per_angstrom2": ref["fluence_per_angstrom2"],
        "rotation_max_abs_diff": float(np.abs(np.asarray(rotation) - ref["rotation"]).max()),
        "k_max_abs_diff_inv_angstrom": float(
            np.abs(np.asarray(det.k) - np.asarray(ref["k_inv_angstrom"])).max()
        ),
        "skopi_s": skopi_s,
        "ours_s": ours_s,
    }
    for ff in ("CM", "WK"):
        theirs = np.asarray(ref[ff])
        result[f"corr_{ff}"] = float(np.corrcoef(ours.ravel(), theirs.ravel())[0, 1])
        result[f"corr_log_{ff}"] = float(
            np.corrcoef(np.log(ours.ravel()), np.log(theirs.ravel()))[0, 1]
        )
        result[f"total_photons_ratio_{ff}"] = float(ours.sum() / theirs.sum())
        result[f"max_rel_diff_{ff}"] = float(np.max(np.abs(ours - theirs)) / theirs.max())
    result["total_photons_ours"] = float(ours.sum())
    result["pass_corr_ge_0.99"] = bool(min(result["corr_CM"], result["corr_WK"]) >= 0.99)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
