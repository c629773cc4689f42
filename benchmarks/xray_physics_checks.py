"""The X-ray physics checks of tests/physics/test_xray.py as numbers; prints one JSON object.

(The tests assert thresholds; this prints the measured values for reports.)
Usage: ``python benchmarks/xray_physics_checks.py``.
"""

from __future__ import annotations

import json
import math

import gemmi
import jax
import jax.numpy as jnp
import numpy as np
from MDAnalysisTests.datafiles import DCD, PSF
from scipy.spatial.transform import Rotation

from atomicspi_bayes.io import load_trajectory
from atomicspi_bayes.physics import xray

HC = 12.398419843320026
R_E = 2.8179403262e-5


def _rotations(n, seed):
    return Rotation.random(n, random_state=seed).as_matrix().transpose(0, 2, 1).astype(np.float32)


def brute_force(xyz, elements, rotation, n, pixel_um, dist_mm, energy, fluence):
    lam, p, dist, c = HC / energy, pixel_um * 1e4, dist_mm * 1e7, n // 2
    posed = xyz @ rotation.astype(np.float64).T
    out = np.zeros((n, n))
    for row in range(n):
        for col in range(n):
            x, y = (col - c) * p, (row - c) * p
            r = math.sqrt(x * x + y * y + dist * dist)
            k = np.array([x / (lam * r), y / (lam * r), dist / (lam * r) - 1.0 / lam])
            s2 = (0.5 * np.linalg.norm(k)) ** 2
            re = im = 0.0
            for j, e in enumerate(elements):
                f = gemmi.Element(e).it92.calculate_sf(stol2=s2)
                phase = 2 * math.pi * float(k @ posed[j])
                re, im = re + f * math.cos(phase), im - f * math.sin(phase)
            out[row, col] = (
                fluence * R_E**2 * p * p * dist / r**3 * (1 - (x / r) ** 2) * (re * re + im * im)
            )
    return out


def main() -> None:
    res = {"name": "xray_physics_checks"}
    # form factors vs gemmi it92
    symbols = ["H", "C", "N", "O", "P", "S", "Fe", "Zn"]
    a, b, c = xray.cromer_mann_table(symbols)
    s = np.linspace(0.0, 2.0, 81)
    ours = np.asarray(xray.form_factors(jnp.asarray(s, jnp.float32), a, b, c))
    ref = np.array([[gemmi.Element(e).it92.calculate_sf(stol2=x * x) for e in symbols] for x in s])
    res["form_factor_max_abs_diff_e"] = float(np.abs(ours - ref).max())
    res["f0_at_0"] = dict(zip(symbols, np.round(ours[0], 4).tolist(), strict=True))

    # brute force, 10 atoms, 16² pixels, wide angles (d_min ~ 3 Å)
    rng = np.random.default_rng(3)
    elements = rng.choice(["C", "N", "O", "S", "H"], size=10)
    xyz = rng.normal(scale=6.0, size=(10, 3))
    rot = _rotations(1, 4)[0]
    g = xray.DetectorGeometry(
        n_pixels=16, pixel_size_um=200.0, distance_mm=5.0, photon_energy_kev=8.0
    )
    mu = np.asarray(
        xray.intensity(xray.atomic_scatterers(elements, xyz), rot, xray.detector_arrays(g), 1e8)
    )
    bf = brute_force(xyz, elements, rot, 16, 200.0, 5.0, 8.0, 1e8)
    res["brute_force_max_abs_diff_over_max"] = float(np.abs(mu - bf).max() / bf.max())
    res["brute_force_d_min_angstrom"] = 1.0 / g.max_k

    # AdK
    model, frames = load_trajectory(DCD, PSF, stride=1000)
    x0 = frames[0] - frames[0].mean(axis=0)
    atoms = xray.atomic_scatterers(model.elements, x0)
    beads = xray.bead_scatterers(atoms, model.residue_index, model.n_residues)

    # Friedel
    k = jnp.asarray(np.random.default_rng(0).normal(scale=0.05, size=(500, 3)), jnp.float32)
    ip = np.abs(np.asarray(xray.molecular_transform(k, beads))) ** 2
    im_ = np.abs(np.asarray(xray.molecular_transform(-k, beads))) ** 2
    res["friedel_exact_max_rel_diff"] = float(np.abs(ip - im_).max() / ip.max())
    rot1 = _rotations(1, 1)[0]
    for energy in (100.0, 2.0):
        lam = HC / energy
        dist = 16 * 0.1 / math.tan(2 * math.asin(0.05 * lam / 2))
        g = xray.DetectorGeometry(
            n_pixels=33,
            pixel_size_um=100.0,
            distance_mm=dist,
            photon_energy_kev=energy,
            polarization="none",
        )
        mu = np.asarray(xray.intensity(beads, rot1, xray.detector_arrays(g), 1.0))
        res[f"friedel_detector_asymmetry_{energy:g}keV"] = float(
            np.abs(mu - mu[::-1, ::-1]).max() / mu.max()
        )

    # Guinier: orientation average of |F|² (64 poses, all atoms), fit q·Rg <= 1
    g = xray.DetectorGeometry(
        n_pixels=32, pixel_size_um=200.0, distance_mm=250.0, photon_energy_kev=6.0
    )
    det = xray.detector_arrays(g)
    mean_i = jax.jit(
        lambda r: jax.lax.map(lambda a: xray.intensity(atoms, a, det, 1.0), r, batch_size=16)
    )(jnp.asarray(_rotations(64, 0)))
    f2 = np.asarray(mean_i).mean(0) / np.asarray(det.pixel_factor)
    q = 2 * math.pi * np.linalg.norm(np.asarray(det.k), axis=-1)
    rg = float(xray.radius_of_gyration(atoms))
    sel = (q > 0) & (q * rg <= 1.0)
    slope = np.polyfit(q[sel] ** 2, np.log(f2[sel]), 1)[0]
    res["guinier_rg_model_electron_weighted"] = rg
    res["guinier_rg_fit"] = math.sqrt(-3 * slope)
    res["guinier_rel_error"] = math.sqrt(-3 * slope) / rg - 1

    # fluence: total photons
    g = xray.DetectorGeometry(
        n_pixels=32,
        pixel_size_um=200.0,
        distance_mm=300.0,
        photon_energy_kev=6.0,
        beam_stop_radius_px=2.0,
    )
    det = xray.detector_arrays(g)
    rots = jnp.asarray(_rotations(32, 5))
    totals = {}
    for i, fl in enumerate((1e5, 1e6, 1e7)):
        counts, mu = xray.simulate_patterns(jax.random.key(i), beads, rots, det, fl)
        totals[f"{fl:g}"] = [int(np.asarray(counts).sum()), float(np.asarray(mu).sum())]
    res["fluence_total_photons_counted_expected_32_patterns"] = totals
    print(json.dumps(res))


if __name__ == "__main__":
    main()
