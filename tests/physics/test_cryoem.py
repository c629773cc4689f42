"""Fourier-space projection: brute-force agreement, closed forms, conventions, sign."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.physics import cryoem as ce
from atomicspi_bayes.physics.ctf import CTFParams, interaction_constant
from atomicspi_bayes.physics.geometry import euler_to_matrix, random_rotations
from atomicspi_bayes.physics.scattering import peng_gaussians

RNG = np.random.default_rng(0)
N = 30
COORDS = (RNG.normal(size=(N, 3)) * 7).astype(np.float32)
ELEMENTS = RNG.choice(["C", "N", "O", "S", "H"], N)
A_TAB, B_TAB = peng_gaussians(ELEMENTS)


def _brute(coords, a, b, rot, shift, box, p):
    """Direct float64 sum of SCIENCE.md §1: 47.878 Σ_j Σ_i a e^{-b k²/4} e^{-2πi k·ρ_j}."""
    f = np.asarray(ce.rfft_frequencies(box, p), np.float64)
    k2 = (f**2).sum(-1)
    xy = np.asarray(coords, np.float64) @ np.asarray(rot, np.float64)[:2].T - np.asarray(shift)
    out = np.zeros(k2.shape, complex)
    for j in range(len(coords)):
        fj = (a[j][:, None, None] * np.exp(-b[j][:, None, None] * k2 / 4)).sum(0)
        out += fj * np.exp(-2j * np.pi * (f[..., 0] * xy[j, 0] + f[..., 1] * xy[j, 1]))
    return 47.878 * out


@pytest.mark.parametrize("box", [32, 33])
@pytest.mark.parametrize("varying_b", [False, True])
def test_matches_direct_sum(box, varying_b):
    p = 1.3
    bf = RNG.uniform(0, 30, N).astype(np.float32) if varying_b else np.full(N, 5.0, np.float32)
    rot = euler_to_matrix(jnp.array([0.3, 1.1, -0.7]))
    shift = jnp.array([1.5, -2.0])
    ref = _brute(COORDS, A_TAB, B_TAB + bf[:, None], rot, shift, box, p)
    scale = np.abs(ref).max()
    scat = ce.Scatterers.from_elements(ELEMENTS, bf)
    assert scat.has_width == varying_b and len(scat.block_sizes) == 5
    ft, mask = ce.project_batch(scat, COORDS, rot[None], shift[None], box=box, pixel_size=p)
    assert ft.shape == (1, box, box // 2 + 1) and ft.dtype == jnp.complex64 and bool(mask.all())
    np.testing.assert_allclose(ft[0], ref, atol=2e-6 * scale)
    ft2 = ce.project_fourier(COORDS, A_TAB, B_TAB + bf[:, None], rot, shift, box, p)
    np.testing.assert_allclose(ft2, ref, atol=2e-6 * scale)
    # band-limited evaluation: same values inside |k| <= k_max, exact zeros outside
    ftk, mask = ce.project_batch(
        scat, COORDS, rot[None], shift[None], box=box, pixel_size=p, k_max=0.2
    )
    f = np.asarray(ce.rfft_frequencies(box, p))
    np.testing.assert_array_equal(mask, np.hypot(f[..., 0], f[..., 1]) <= 0.2)
    np.testing.assert_allclose(np.where(mask, ftk[0], 0), np.where(mask, ref, 0), atol=2e-6 * scale)
    assert float(jnp.abs(jnp.where(mask, 0, ftk[0])).max()) == 0.0


def test_batches_per_image_coordinates_and_chunks():
    scat = ce.Scatterers.from_elements(ELEMENTS)
    rots = random_rotations(jax.random.key(1), 5)
    shifts = jnp.asarray(RNG.normal(size=(5, 2)), jnp.float32)
    coords = jnp.asarray(COORDS)[None] + jnp.arange(5.0)[:, None, None]
    ref, _ = ce.project_batch(scat, coords, rots, shifts, box=24, pixel_size=2.0, chunk=1)
    for chunk in (2, 5):
        out, _ = ce.project_batch(scat, coords, rots, shifts, box=24, pixel_size=2.0, chunk=chunk)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-3)
    one = ce.project_fourier(coords[3], A_TAB, B_TAB, rots[3], shifts[3], 24, 2.0)
    np.testing.assert_allclose(ref[3], one, rtol=1e-5, atol=1e-3)
    with pytest.raises(ConfigError, match="atoms"):
        ce.project_batch(scat, coords[:, :-1], rots, shifts, box=24, pixel_size=2.0)


def test_single_atom_integral_and_real_space_profile():
    """Σ_pixels V_z p² = V̂_z(0) = 47.878 Σ a_i, and pixel values = the analytic projected
    Gaussian 47.878 Σ a_i (4π/(b_i+B)) exp(-4π²ρ²/(b_i+B)) (band-limited case)."""
    box, p, bfac = 64, 0.5, 40.0
    a, b = peng_gaussians(["C"])
    ft = ce.project_fourier(jnp.zeros((1, 3)), a, b + bfac, jnp.eye(3), jnp.zeros(2), box, p)
    np.testing.assert_allclose(ft[0, 0].real, 47.878 * 2.5088, rtol=1e-5)  # 120.1 V·Å³
    img = ce.fourier_to_image(ft, box, p)
    np.testing.assert_allclose(float(img.sum()) * p * p, 47.878 * a.sum(), rtol=1e-4)
    x = (np.arange(box) - box // 2) * p
    r2 = x[None, :] ** 2 + x[:, None] ** 2
    bb = (b[0] + bfac)[:, None, None]
    analytic = 47.878 * np.sum(
        a[0][:, None, None] * (4 * np.pi / bb) * np.exp(-4 * np.pi**2 * r2 / bb), 0
    )
    np.testing.assert_allclose(img, analytic, atol=1e-4 * analytic.max())
    assert np.unravel_index(int(np.argmax(img)), img.shape) == (box // 2, box // 2)


def _peak(img):
    return np.unravel_index(int(np.argmax(np.asarray(img))), img.shape)


def test_pose_and_shift_conventions_in_real_space():
    """A(90°,0,0) sends model +x to image -y (row = y, column = x, origin (L//2, L//2));
    the atom is drawn at ρ - o (RELION origin)."""
    box, p = 32, 1.0
    a, b = peng_gaussians(["S"])
    b = b + 20.0
    atom = jnp.array([[5.0, 0.0, 0.0]])
    img = ce.fourier_to_image(
        ce.project_fourier(atom, a, b, jnp.eye(3), jnp.zeros(2), box, p), box, p
    )
    assert _peak(img) == (16, 21)  # (row y, col x)
    rot = euler_to_matrix(jnp.array([np.pi / 2, 0.0, 0.0]))
    img = ce.fourier_to_image(ce.project_fourier(atom, a, b, rot, jnp.zeros(2), box, p), box, p)
    assert _peak(img) == (11, 16)
    img = ce.fourier_to_image(
        ce.project_fourier(atom, a, b, rot, jnp.array([3.0, -2.0]), box, p), box, p
    )
    assert _peak(img) == (13, 13)
    # odd box: origin still at L//2
    img = ce.fourier_to_image(
        ce.project_fourier(atom, a, b, jnp.eye(3), jnp.zeros(2), 33, p), 33, p
    )
    assert _peak(img) == (16, 21)


def test_fourier_round_trip():
    img = jax.random.normal(jax.random.key(0), (3, 20, 20))
    back = ce.fourier_to_image(ce.image_to_fourier(img, 1.7), 20, 1.7)
    np.testing.assert_allclose(back, img, atol=1e-5)


def test_relion_sign_protein_white():
    """With CTF_RELION (CTF(0) = +A) the low-pass image of positive potential is positive."""
    box, p = 48, 2.0
    ctf = CTFParams.create(10000.0, amplitude_contrast=0.1)
    img = ce.simulate_image(
        jnp.asarray(COORDS), A_TAB, B_TAB, jnp.eye(3), jnp.zeros(2), ctf, box, p
    )
    ft = ce.image_to_fourier(img, p)
    proj = ce.project_fourier(jnp.asarray(COORDS), A_TAB, B_TAB, jnp.eye(3), jnp.zeros(2), box, p)
    np.testing.assert_allclose(
        ft[0, 0].real, 0.1 * float(interaction_constant(300.0)) * proj[0, 0].real, rtol=1e-4
    )
    assert float(img.sum()) > 0
    # low-pass filtered (k < first CTF zero) centre is white
    f = ce.rfft_frequencies(box, p)
    lp = jnp.where(jnp.hypot(f[..., 0], f[..., 1]) < 0.05, ft, 0)
    low = ce.fourier_to_image(lp, box, p)
    assert float(low[box // 2, box // 2]) > 0


def test_element_and_gaussian_layouts_agree_on_batches():
    scat_e = ce.Scatterers.from_elements(ELEMENTS, 10.0)
    scat_g = ce.Scatterers.from_gaussians(A_TAB, B_TAB + 10.0)
    rots = random_rotations(jax.random.key(3), 4)
    shifts = jnp.zeros((4, 2))
    ctf = CTFParams.create(
        jnp.array([8000.0, 12000.0, 16000.0, 20000.0]),
        jnp.array([9000.0, 12000, 15000, 25000]),
        jnp.array([0.1, 0.5, 1.0, 2.0]),
    )
    e, _ = ce.simulate_batch(scat_e, COORDS, rots, shifts, ctf, box=32, pixel_size=1.5)
    g, _ = ce.simulate_batch(scat_g, COORDS, rots, shifts, ctf, box=32, pixel_size=1.5)
    np.testing.assert_allclose(e, g, atol=1e-5 * float(jnp.abs(g).max()))
    single = ce.simulate_fourier(jnp.asarray(COORDS), A_TAB, B_TAB + 10.0, rots[2], shifts[2],
                                 CTFParams(*(x[2] for x in ctf)), 32, 1.5)  # fmt: skip
    np.testing.assert_allclose(e[2], single, atol=1e-5 * float(jnp.abs(g).max()))


def test_bad_k_max():
    scat = ce.Scatterers.from_elements(ELEMENTS)
    with pytest.raises(ConfigError):
        ce.project_batch(
            scat, COORDS, jnp.eye(3)[None], jnp.zeros((1, 2)), box=16, pixel_size=1.0, k_max=0.0
        )
    with pytest.raises(ConfigError, match="empty"):
        ce.Scatterers.from_elements([])
