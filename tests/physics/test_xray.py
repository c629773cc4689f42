"""X-ray diffraction physics: geometry, form factors, brute force, Friedel, Guinier, Poisson."""

import math

import gemmi
import jax
import jax.numpy as jnp
import mdtraj as md
import numpy as np
import pytest
import scipy.stats
from jax.test_util import check_grads
from MDAnalysisTests.datafiles import DCD, PSF
from scipy.spatial.transform import Rotation

from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.physics import xray

R_E = 2.8179403262e-5  # Å, CODATA


# jitted once per module: every call below with the same shapes reuses the compiled program
_intensity = jax.jit(xray.intensity, static_argnames=("pixel_chunk",))
_simulate = jax.jit(xray.simulate_patterns, static_argnames=("batch_size", "pixel_chunk"))
_transform = jax.jit(xray.molecular_transform)
_mean = jax.jit(xray.mean_patterns, static_argnames=("batch_size", "pixel_chunk"))


def _relion_rotations(n: int, seed: int) -> np.ndarray:
    """Uniform random RELION matrices A (rows = scipy's transposed), float32."""
    return Rotation.random(n, random_state=seed).as_matrix().transpose(0, 2, 1).astype(np.float32)


@pytest.fixture(scope="module")
def adk():
    """Adenylate kinase frame 0 (3341 atoms, elements from the PSF), centred, and its beads."""
    traj = md.load_frame(DCD, 0, top=PSF)
    elements = np.array([a.element.symbol for a in traj.topology.atoms])
    residue = np.array([a.residue.index for a in traj.topology.atoms])
    xyz = traj.xyz[0].astype(np.float64) * 10.0
    xyz -= xyz.mean(axis=0)
    atoms = xray.atomic_scatterers(elements, xyz)
    beads = xray.bead_scatterers(atoms, residue, int(residue.max()) + 1)
    return {"elements": elements, "xyz": xyz, "atoms": atoms, "beads": beads, "residue": residue}


# ---- detector geometry ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"distance_mm": -100.0},
        {"distance_mm": 0.0},
        {"photon_energy_kev": 0.0},
        {"photon_energy_kev": -6.0},
        {"photon_energy_kev": math.nan},
        {"pixel_size_um": 0.0},
        {"n_pixels": 1},
        {"photon_energy_kev": None},  # neither energy nor wavelength
        {"wavelength_angstrom": 2.0},  # both
        {"beam_stop_radius_px": 1e6},  # beam stop covers the detector
        {"gap_mask": np.ones((16, 16), dtype=bool)},  # gaps cover the detector
        {"gap_mask": np.zeros((8, 8), dtype=bool)},  # wrong shape
        {"polarization": "circular"},
    ],
)
def test_non_physical_geometry_raises_config_error(kwargs):
    base = {"n_pixels": 16, "pixel_size_um": 200.0, "distance_mm": 300.0, "photon_energy_kev": 6}
    with pytest.raises(ConfigError):
        xray.DetectorGeometry(**{**base, **kwargs})


def test_unknown_element_is_an_input_error():
    with pytest.raises(InputFormatError, match="Xx"):
        xray.atomic_scatterers(["C", "Xx"], np.zeros((2, 3)))


def test_scattering_vectors_lie_on_the_ewald_sphere():
    g = xray.DetectorGeometry(
        n_pixels=21,
        pixel_size_um=75.0,
        distance_mm=40.0,
        photon_energy_kev=8.0,
        beam_center_px=(9.3, 11.7),
    )
    lam = 12.398419843320026 / 8.0
    assert g.wavelength == pytest.approx(lam) and g.energy_kev == pytest.approx(8.0)
    k = np.asarray(xray.scattering_vectors(g), dtype=np.float64)
    # |k + k_in| = 1/λ (elastic), |k| = 2 sinθ/λ with 2θ = atan(ρ/D)
    k_out = k + np.array([0.0, 0.0, 1.0 / lam])
    np.testing.assert_allclose(np.linalg.norm(k_out, axis=-1), 1.0 / lam, rtol=1e-6)
    rows, cols = np.mgrid[0:21, 0:21]
    rho = np.hypot((cols - 9.3) * 75e-3, (rows - 11.7) * 75e-3)  # mm
    two_theta = np.arctan(rho / 40.0)
    np.testing.assert_allclose(
        np.linalg.norm(k, axis=-1), 2 * np.sin(two_theta / 2) / lam, rtol=1e-5, atol=1e-7
    )
    # direction: kx along columns (x), ky along rows (y), k_z = -(1 - cos 2θ)/λ
    x_mm, y_mm = (cols - 9.3) * 75e-3, (rows - 11.7) * 75e-3
    r_mm = np.sqrt(x_mm**2 + y_mm**2 + 40.0**2)
    np.testing.assert_allclose(k[..., 0], x_mm / (lam * r_mm), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(k[..., 1], y_mm / (lam * r_mm), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(k[..., 2], -(1 - np.cos(two_theta)) / lam, rtol=1e-4, atol=1e-9)


def test_solid_angles_sum_to_the_detector_solid_angle_and_polarization():
    g = xray.DetectorGeometry(
        n_pixels=64,
        pixel_size_um=200.0,
        distance_mm=50.0,
        photon_energy_kev=6.0,
        beam_center_px=(31.5, 31.5),
        polarization="x",
    )
    omega = np.asarray(xray.solid_angles(g), dtype=np.float64)
    half = 32 * 0.2  # mm, half width of the square
    exact = 4 * np.arcsin(half**2 / (half**2 + 50.0**2))  # square seen from its normal axis
    assert omega.sum() == pytest.approx(exact, rel=2e-4)
    g_centred = xray.DetectorGeometry(
        n_pixels=64,
        pixel_size_um=200.0,
        distance_mm=50.0,
        photon_energy_kev=6.0,
        polarization="x",
    )
    pol = np.asarray(xray.polarization_factors(g_centred))
    two_theta = np.arctan(31 * 0.2 / 50.0)  # pixel [32, 63]: on the x axis, 31 px from centre
    assert pol[32, 63] == pytest.approx(np.cos(two_theta) ** 2, rel=1e-6)  # in the plane of E
    assert pol[63, 32] == pytest.approx(1.0, rel=1e-6)  # perpendicular to E: no loss
    g_unpol = xray.DetectorGeometry(
        n_pixels=64,
        pixel_size_um=200.0,
        distance_mm=50.0,
        photon_energy_kev=6.0,
        polarization="unpolarized",
    )
    pol_u = np.asarray(xray.polarization_factors(g_unpol))
    assert np.all((pol_u > 0.5) & (pol_u <= 1.0))


def test_beam_stop_and_gaps_are_masked_and_give_zero_counts(adk):
    gaps = np.zeros((32, 32), dtype=bool)
    gaps[:, 20:22] = True
    g = xray.DetectorGeometry(
        n_pixels=32,
        pixel_size_um=200.0,
        distance_mm=300.0,
        photon_energy_kev=6.0,
        beam_stop_radius_px=3.0,
        gap_mask=gaps,
    )
    mask = xray.pixel_mask(g)
    assert not mask[16, 16] and not mask[16, 18] and mask[16, 19] and not mask[0, 21]
    det = xray.detector_arrays(g)
    mu = np.asarray(_intensity(adk["beads"], None, det, 1e6, background=0.1))
    assert np.all(mu[~mask] == 0.0) and np.all(mu[mask] > 0.0)


# ---- form factors -----------------------------------------------------------------------


def test_form_factors_match_gemmi_it92_table():
    symbols = ["H", "C", "N", "O", "P", "S", "Fe", "Zn"]
    a, b, c = xray.cromer_mann_table(symbols)
    s = np.linspace(0.0, 2.0, 81)
    ours = np.asarray(
        xray.form_factors(
            jnp.asarray(s, jnp.float32),
            jnp.asarray(a, jnp.float32),
            jnp.asarray(b, jnp.float32),
            jnp.asarray(c, jnp.float32),
        )
    )
    ref = np.array([[gemmi.Element(e).it92.calculate_sf(stol2=x * x) for e in symbols] for x in s])
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    # f0(0) ≈ Z (SCIENCE.md: C 6.00, O 8.00, S 16.00; H ≈ 1)
    z = np.array([gemmi.Element(e).atomic_number for e in symbols])
    np.testing.assert_allclose(ours[0], z, rtol=1e-3)  # the fits are good to ~0.05 %


# ---- brute force ------------------------------------------------------------------------


def _brute_force_intensity(xyz, elements, rotation, geometry_kwargs, fluence):
    """Float64 double loop over pixels and atoms, written from SCIENCE.md §7 only."""
    n = geometry_kwargs["n_pixels"]
    lam = 12.398419843320026 / geometry_kwargs["photon_energy_kev"]
    p = geometry_kwargs["pixel_size_um"] * 1e4
    dist = geometry_kwargs["distance_mm"] * 1e7
    cx = cy = n // 2
    posed = xyz @ np.asarray(rotation, np.float64).T
    out = np.zeros((n, n))
    for row in range(n):
        for col in range(n):
            x, y = (col - cx) * p, (row - cy) * p
            r = math.sqrt(x * x + y * y + dist * dist)
            k = np.array([x / (lam * r), y / (lam * r), dist / (lam * r) - 1.0 / lam])
            s2 = (0.5 * np.linalg.norm(k)) ** 2
            re = im = 0.0
            for atom in range(len(elements)):
                f = gemmi.Element(elements[atom]).it92.calculate_sf(stol2=s2)
                phase = 2 * math.pi * float(k @ posed[atom])
                re += f * math.cos(phase)
                im -= f * math.sin(phase)
            omega = p * p * dist / r**3
            pol = 1.0 - (x / r) ** 2
            out[row, col] = fluence * R_E**2 * omega * pol * (re * re + im * im)
    return out


def test_small_model_matches_float64_brute_force_double_loop():
    rng = np.random.default_rng(3)
    elements = rng.choice(["C", "N", "O", "S", "H"], size=10)
    xyz = rng.normal(scale=6.0, size=(10, 3))
    rotation = _relion_rotations(1, seed=4)[0]
    kwargs = {"n_pixels": 16, "pixel_size_um": 200.0, "distance_mm": 5.0, "photon_energy_kev": 8.0}
    geometry = xray.DetectorGeometry(**kwargs)
    assert 1.0 / geometry.max_k < 4.0  # wide angles: phases of many radians, strong curvature
    det = xray.detector_arrays(geometry)
    mu = np.asarray(_intensity(xray.atomic_scatterers(elements, xyz), rotation, det, 1e8))
    ref = _brute_force_intensity(xyz, elements, rotation, kwargs, 1e8)
    rel = np.abs(mu - ref) / ref.max()
    assert rel.max() < 1e-5, rel.max()
    strong = ref > 1e-2 * ref.max()
    assert np.max(np.abs(mu - ref)[strong] / ref[strong]) < 1e-4


# ---- symmetry, Guinier, pose convention ---------------------------------------------------


def test_friedel_symmetry_exact_in_k_and_on_a_flat_detector(adk):
    beads = adk["beads"]
    k = jnp.asarray(np.random.default_rng(0).normal(scale=0.05, size=(500, 3)), jnp.float32)
    i_plus = np.abs(np.asarray(_transform(k, beads))) ** 2
    i_minus = np.abs(np.asarray(_transform(-k, beads))) ** 2
    np.testing.assert_allclose(i_plus, i_minus, rtol=1e-4, atol=1e-5 * i_plus.max())

    rotation = _relion_rotations(1, seed=1)[0]

    def asymmetry(energy_kev):
        # same k range (|k|max ≈ 0.07 1/Å on 33 px); curvature k_z ≈ λ|k|²/2 grows with λ
        lam = 12.398419843320026 / energy_kev
        dist = 16 * 0.1 / math.tan(2 * math.asin(0.05 * lam / 2))
        g = xray.DetectorGeometry(
            n_pixels=33,
            pixel_size_um=100.0,
            distance_mm=dist,
            photon_energy_kev=energy_kev,
            polarization="none",
        )
        mu = np.asarray(_intensity(beads, rotation, xray.detector_arrays(g), 1.0))
        return np.abs(mu - mu[::-1, ::-1]).max() / mu.max()  # pixel i <-> mirror pixel -i

    flat, curved = asymmetry(100.0), asymmetry(2.0)
    assert flat < 1e-3, flat
    assert curved > 10 * flat, (flat, curved)


def test_guinier_law_recovers_electron_weighted_radius_of_gyration(adk):
    atoms = adk["atoms"]
    # model Rg with the forward-scattering (≈ electron) weights f_j(0) from gemmi's table
    w = np.array([gemmi.Element(e).it92.calculate_sf(stol2=0.0) for e in adk["elements"]])
    centre = (w[:, None] * adk["xyz"]).sum(0) / w.sum()
    rg_model = math.sqrt((w * ((adk["xyz"] - centre) ** 2).sum(1)).sum() / w.sum())
    assert float(xray.radius_of_gyration(atoms)) == pytest.approx(rg_model, rel=1e-5)

    g = xray.DetectorGeometry(
        n_pixels=32, pixel_size_um=200.0, distance_mm=250.0, photon_energy_kev=6.0
    )
    det = xray.detector_arrays(g)
    rotations = jnp.asarray(_relion_rotations(64, seed=0))
    mean_i = jax.jit(
        lambda r: jax.lax.map(lambda a: xray.intensity(atoms, a, det, 1.0), r, batch_size=16)
    )(rotations).mean(axis=0)
    f2 = np.asarray(mean_i) / np.asarray(det.pixel_factor)  # orientation-averaged |F|²
    q = 2 * math.pi * np.linalg.norm(np.asarray(det.k), axis=-1)
    sel = (q > 0) & (q * rg_model <= 1.0)
    assert sel.sum() > 500
    slope, _ = np.polyfit(q[sel] ** 2, np.log(f2[sel]), 1)
    rg_fit = math.sqrt(-3.0 * slope)
    assert rg_fit == pytest.approx(rg_model, rel=0.02), (rg_fit, rg_model)


def test_pose_rotates_the_model_relion_convention(adk):
    beads = adk["beads"]
    rotation = jnp.asarray(_relion_rotations(1, seed=7)[0])
    k = jnp.asarray(np.random.default_rng(1).normal(scale=0.03, size=(64, 3)), jnp.float32)
    posed = _transform(k, beads, rotation)
    # rotating the atoms by A equals evaluating the unrotated model at Aᵀk
    model_frame = _transform(k @ rotation, beads)
    np.testing.assert_allclose(np.asarray(posed), np.asarray(model_frame), rtol=2e-4, atol=1e-2)


def test_beads_approximate_atoms_at_low_resolution(adk):
    g = xray.DetectorGeometry(
        n_pixels=32, pixel_size_um=200.0, distance_mm=300.0, photon_energy_kev=6.0
    )
    assert 1.0 / g.max_k > 30.0
    det = xray.detector_arrays(g)
    rotation = jnp.asarray(_relion_rotations(1, seed=2)[0])
    mu_a = np.asarray(_intensity(adk["atoms"], rotation, det, 1.0)).ravel()
    mu_b = np.asarray(_intensity(adk["beads"], rotation, det, 1.0)).ravel()
    assert np.corrcoef(mu_a, mu_b)[0, 1] > 0.999
    # forward scattering preserved exactly: same total electrons
    assert float(adk["beads"].electrons.sum()) == pytest.approx(
        float(adk["atoms"].electrons.sum()), rel=1e-6
    )


# ---- photons and likelihood -------------------------------------------------------------


@pytest.fixture(scope="module")
def photons(adk):
    """32 patterns of AdK beads on a 32² detector (with beam stop) at three fluences."""
    g = xray.DetectorGeometry(
        n_pixels=32,
        pixel_size_um=200.0,
        distance_mm=300.0,
        photon_energy_kev=6.0,
        beam_stop_radius_px=2.0,
    )
    det = xray.detector_arrays(g)
    rotations = jnp.asarray(_relion_rotations(32, seed=5))
    runs = {}
    for i, fluence in enumerate([1e5, 1e6, 1e7]):
        runs[fluence] = _simulate(
            jax.random.key(i), adk["beads"], rotations, det, fluence, background=0.001
        )
    return {"geometry": g, "det": det, "rotations": rotations, "runs": runs}


def test_total_photons_scale_linearly_with_fluence(photons):
    totals = np.array([float(np.asarray(c).sum()) for c, _ in photons["runs"].values()])
    expected = np.array([float(np.asarray(mu).sum()) for _, mu in photons["runs"].values()])
    background = 0.001 * 32 * photons["det"].mask.sum()
    signal = expected - background
    np.testing.assert_allclose(signal / signal[0], [1, 10, 100], rtol=1e-5)
    for total, mean in zip(totals, expected, strict=True):  # Poisson: total ~ N(mean, mean)
        assert abs(total - mean) < 5 * math.sqrt(mean), (total, mean)
    assert 5.0 < signal[0] < 5e4  # not a degenerate (all-zero or saturated) regime


def test_poisson_sampling_is_reproducible_and_unbiased(adk, photons):
    det, rotations = photons["det"], photons["rotations"]
    counts, _ = photons["runs"][1e6]
    again, _ = _simulate(jax.random.key(1), adk["beads"], rotations, det, 1e6, background=0.001)
    other, _ = _simulate(jax.random.key(9), adk["beads"], rotations, det, 1e6, background=0.001)
    assert counts.dtype == jnp.int32 and np.array_equal(np.asarray(counts), np.asarray(again))
    assert not np.array_equal(np.asarray(counts), np.asarray(other))
    # per-pixel mean over 3 x 32 independent patterns, rescaled by μ: E[n/μ] = 1
    ratio = sum(np.asarray(c, np.float64).sum() for c, _ in photons["runs"].values()) / sum(
        np.asarray(m, np.float64).sum() for _, m in photons["runs"].values()
    )
    assert ratio == pytest.approx(1.0, abs=0.02)
    assert np.all(np.asarray(counts)[:, ~np.asarray(det.mask)] == 0)  # masked pixels: nothing


def test_poisson_loglik_matches_scipy_and_skips_masked_pixels(photons):
    counts, mu = photons["runs"][1e7]
    mask = xray.pixel_mask(photons["geometry"])
    lls = np.asarray(xray.poisson_loglik(counts, mu, photons["det"].mask))
    assert lls.shape == (32,)
    ref = scipy.stats.poisson.logpmf(
        np.asarray(counts)[:, mask], np.asarray(mu, np.float64)[:, mask]
    ).sum(axis=1)
    np.testing.assert_allclose(lls, ref, rtol=1e-5)
    # the true μ beats a mis-scaled one (maximum of the likelihood at the true fluence)
    for factor in (0.7, 1.4):
        wrong = np.asarray(xray.poisson_loglik(counts, factor * mu, photons["det"].mask))
        assert np.all(lls > wrong)


def test_batching_chunking_jit_and_conformations_agree(adk, photons):
    det, rotations = photons["det"], photons["rotations"]
    _, mu = photons["runs"][1e6]
    mu2 = _mean(adk["beads"], rotations, det, 1e6, background=0.001, batch_size=8, pixel_chunk=300)
    np.testing.assert_allclose(np.asarray(mu), np.asarray(mu2), rtol=1e-4, atol=1e-9)
    single = _intensity(adk["beads"], rotations[3], det, 1e6, background=0.001)
    np.testing.assert_allclose(np.asarray(mu[3]), np.asarray(single), rtol=1e-4, atol=1e-9)
    # conformations: per-pattern coordinates (scaled copies; the first one is the model)
    scale = 1.0 + 0.02 * jnp.arange(32.0)
    coords = adk["beads"].coords[None] * scale[:, None, None]
    mu3 = _mean(adk["beads"], rotations, det, 1e6, background=0.001, coords=coords)
    np.testing.assert_allclose(np.asarray(mu3[0]), np.asarray(mu[0]), rtol=1e-4, atol=1e-9)
    assert not np.allclose(np.asarray(mu3[31]), np.asarray(mu[31]), rtol=1e-2)


# ---- gradients --------------------------------------------------------------------------


def _rotvec_matrix(v):
    """Rodrigues: rotation matrix of the axis-angle vector v (differentiable, any dtype)."""
    theta = jnp.sqrt(jnp.sum(v * v))
    kx = jnp.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]], v.dtype) / theta
    eye = jnp.eye(3, dtype=v.dtype)
    return eye + jnp.sin(theta) * kx + (1.0 - jnp.cos(theta)) * (kx @ kx)


@pytest.mark.slow
def test_gradients_match_finite_differences_in_float64(adk):
    g = xray.DetectorGeometry(
        n_pixels=12,
        pixel_size_um=200.0,
        distance_mm=60.0,
        photon_energy_kev=6.0,
        beam_stop_radius_px=1.0,
    )
    beads32 = adk["beads"]._replace(
        coords=adk["beads"].coords[:20], composition=adk["beads"].composition[:20]
    )
    det32 = xray.detector_arrays(g)
    counts = xray.sample_photons(
        jax.random.key(0), xray.intensity(beads32, None, det32, 1e8, background=0.05)
    )

    def make_loss(beads, det):
        @jax.jit
        def loss(coords, rotvec, b_factor):
            mu = xray.intensity(
                beads._replace(coords=coords),
                _rotvec_matrix(rotvec),
                det,
                1e8,
                b_factor=b_factor,
                background=0.05,
            )
            return xray.poisson_loglik(counts, mu, det.mask)

        return loss

    args32 = (beads32.coords, jnp.array([0.3, -0.2, 0.5]), jnp.array(20.0))
    grad32 = jax.jit(jax.grad(make_loss(beads32, det32), argnums=(0, 1, 2)))(*args32)
    with jax.enable_x64(True):

        def to64(a):
            return jnp.asarray(a, jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a

        loss64 = make_loss(jax.tree.map(to64, beads32), jax.tree.map(to64, det32))
        args = jax.tree.map(to64, args32)
        check_grads(loss64, args, order=1, modes=["rev"], eps=1e-5, atol=1e-5, rtol=1e-5)
        grad64 = jax.jit(jax.grad(loss64, argnums=(0, 1, 2)))(*args)
    # the float32 production path agrees with the float64 gradient
    for g32, g64 in zip(grad32, grad64, strict=True):
        g32, g64 = np.asarray(g32), np.asarray(g64)
        assert np.all(np.isfinite(g32))
        np.testing.assert_allclose(g32, g64, rtol=1e-2, atol=1e-3 * np.abs(g64).max())
