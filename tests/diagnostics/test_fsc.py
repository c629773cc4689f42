"""FSC basics (identical maps, independent noise, a known band limit) and 3-D rendering."""

import math

import numpy as np
import pytest

from atomicspi_bayes.diagnostics import fourier_shell_correlation, render_density, resolution_at
from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.physics.cryoem import POTENTIAL_CONSTANT, Scatterers

L, VOXEL = 48, 2.0


def _noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(L, L, L))


def _lowpass(vol: np.ndarray, k_cut: float) -> np.ndarray:
    ft = np.fft.rfftn(vol)
    m = np.fft.fftfreq(L, d=VOXEL)
    mz = np.fft.rfftfreq(L, d=VOXEL)
    k = np.sqrt(m[:, None, None] ** 2 + m[None, :, None] ** 2 + mz[None, None, :] ** 2)
    return np.fft.irfftn(np.where(k <= k_cut, ft, 0.0), s=vol.shape, axes=(0, 1, 2))


def test_identical_maps_correlate_perfectly():
    vol = _lowpass(_noise(0), 0.2)
    k, fsc, count = fourier_shell_correlation(vol, 3.0 * vol + 1.0, VOXEL)
    assert k.shape == (L // 2 + 1,) and k[1] == pytest.approx(1 / (L * VOXEL))
    inside = (k > 0) & (k <= 0.2)
    np.testing.assert_allclose(fsc[inside], 1.0, atol=1e-9)
    assert math.isnan(resolution_at(k[: inside.sum()], fsc[: inside.sum()]))
    # shell voxel counts of the full transform (Hermitian weights): 1 at k = 0, and the
    # 6 face + 12 edge neighbours (|m| = 1, 1.41) in shell 1
    assert count[0] == 1 and count[1] == 18


def test_independent_noise_correlates_near_zero():
    _, fsc, count = fourier_shell_correlation(_noise(1), _noise(2), VOXEL)
    shells = slice(3, None)  # enough voxels per shell for the 1/sqrt(n) scale
    assert np.all(np.abs(fsc[shells]) < 4.0 / np.sqrt(count[shells]))
    assert abs(np.mean(fsc[shells])) < 0.02


def test_known_band_limit_gives_the_resolution():
    k_cut = 0.125  # Å⁻¹ -> 8 Å
    signal = 4.0 * _lowpass(_noise(3), k_cut)
    k, fsc, _ = fourier_shell_correlation(signal + _noise(4), signal + _noise(5), VOXEL)
    below, above = (k > 0.02) & (k < k_cut - 0.02), k > k_cut + 0.02
    assert np.all(fsc[below] > 0.8) and np.all(np.abs(fsc[above]) < 0.15)
    resolution = resolution_at(k, fsc, 0.143)
    assert 1 / (k_cut + 1 / (L * VOXEL)) <= resolution <= 1 / (k_cut - 1 / (L * VOXEL))


def test_resolution_interpolates_the_crossing():
    k = np.array([0.0, 0.1, 0.2, 0.3])
    assert resolution_at(k, np.array([1.0, 0.5, 0.0, 0.0]), 0.25) == pytest.approx(1 / 0.15)
    assert math.isnan(resolution_at(k, np.ones(4)))


def test_maps_must_be_cubic_and_alike():
    with pytest.raises(ConfigError, match="cubic"):
        fourier_shell_correlation(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), 1.0)


def test_rendered_density_integral_and_centre():
    """∫V = 47.878 Σ a (SCIENCE.md §1), whatever the B; the mass sits at the atom."""
    scat = Scatterers.from_elements(np.array(["C", "O", "N"]))
    coords = np.array([[4.0, -2.0, 6.0], [4.0, -2.0, 6.0], [4.0, -2.0, 6.0]], np.float32)
    vol = render_density(coords, scat, L, VOXEL)
    f0 = 2.5088 + 1.9834 + 2.2135  # Peng f_e(0) of C, O, N (SCIENCE.md)
    assert vol.sum() * VOXEL**3 == pytest.approx(POTENTIAL_CONSTANT * f0, rel=2e-3)
    axis = (np.arange(L) - L // 2) * VOXEL
    w = vol / vol.sum()
    centre = [np.sum(w * axis[None, None, :]), np.sum(w * axis[None, :, None]),
              np.sum(w * axis[:, None, None])]  # fmt: skip
    np.testing.assert_allclose(centre, coords[0], atol=1e-3)


def test_ensemble_map_is_the_mean_of_member_maps():
    a = np.full((1, 5), 0.2, np.float32)
    b = np.array([[1.0, 3.0, 6.0, 12.0, 30.0]], np.float32)
    scat = Scatterers.from_gaussians(a, b)
    members = np.array([[[0.0, 0.0, 0.0]], [[6.0, 0.0, -4.0]]], np.float32)
    both = render_density(members, scat, 32, VOXEL, bfactor=20.0)
    single = [render_density(m, scat, 32, VOXEL, bfactor=20.0) for m in members]
    np.testing.assert_allclose(both, 0.5 * (single[0] + single[1]), rtol=1e-4, atol=1e-6)
