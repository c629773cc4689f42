"""CTF: constants, RELION sign, analytic zeros, astigmatism convention."""

import jax.numpy as jnp
import numpy as np
import pytest

from atomicspi_bayes.physics.ctf import CTFParams, ctf, electron_wavelength, interaction_constant


def test_wavelength_and_interaction_constant():
    np.testing.assert_allclose(
        electron_wavelength(jnp.array([300.0, 200.0, 120.0])),
        [0.019687, 0.025079, 0.033492],
        atol=2e-6,
    )
    # textbook closed form 12.2643/sqrt(V(1 + 0.978466e-6 V))
    v = 300e3
    np.testing.assert_allclose(
        electron_wavelength(300.0), 12.2643 / np.sqrt(v * (1 + 0.978466e-6 * v)), rtol=1e-5
    )
    np.testing.assert_allclose(
        interaction_constant(jnp.array([300.0, 200.0, 120.0])),
        [6.526e-4, 7.288e-4, 8.638e-4],
        rtol=5e-4,
    )


def _radial(k, angle=0.3):
    return jnp.stack([k * jnp.cos(angle), k * jnp.sin(angle)], -1)


def test_ctf_sign_at_zero_and_low_frequency():
    p = CTFParams.create(15000.0, amplitude_contrast=0.1)
    np.testing.assert_allclose(ctf(jnp.zeros(2), p), 0.1, atol=1e-7)
    assert float(ctf(_radial(jnp.array(0.02)), p)) > 0.1  # rises to the first maximum
    p = CTFParams.create(15000.0, amplitude_contrast=0.1, bfactor=100.0, scale=0.5)
    np.testing.assert_allclose(ctf(jnp.zeros(2), p), 0.05, atol=1e-7)


@pytest.mark.parametrize(("amp", "cs", "expected"), [(0.0, 0.0, 0.07127), (0.1, 2.7, 0.0702)])
def test_first_zero_at_analytic_frequency(amp, cs, expected):
    p = CTFParams.create(10000.0, voltage_kv=300.0, cs_mm=cs, amplitude_contrast=amp)
    k = jnp.linspace(0.03, 0.09, 60001)
    c = np.asarray(ctf(_radial(k), p))
    first = np.flatnonzero(np.sign(c[1:]) != np.sign(c[:-1]))[0]
    np.testing.assert_allclose(float(k[first]), expected, atol=2e-4)
    if cs == 0.0 and amp == 0.0:  # closed form 1/sqrt(λΔz)
        np.testing.assert_allclose(
            float(k[first]), 1 / np.sqrt(electron_wavelength(300.0) * 1e4), atol=2e-6
        )


def test_astigmatism_angle_convention():
    """Δz = dU along azimuth θ_a (from +x, CCW), dV perpendicular."""
    du, dv, ang = 20000.0, 10000.0, np.deg2rad(30.0)
    p = CTFParams.create(du, dv, ang, cs_mm=0.0, amplitude_contrast=0.0)
    lam = float(electron_wavelength(300.0))
    for theta, dz in [
        (ang, du),
        (ang + np.pi / 2, dv),
        (ang + np.pi, du),
        (ang + np.pi / 4, 0.5 * (du + dv)),
    ]:
        k0 = 1 / np.sqrt(lam * dz)  # first zero along this direction
        vals = ctf(_radial(jnp.array([0.98 * k0, 1.02 * k0]), theta), p)
        assert float(vals[0]) > 0 > float(vals[1]), (theta, dz)
    # swapping U and V and rotating by 90 degrees gives the same CTF
    q = CTFParams.create(dv, du, ang + np.pi / 2, cs_mm=0.0, amplitude_contrast=0.0)
    f = jnp.stack(jnp.meshgrid(jnp.linspace(-0.2, 0.2, 33), jnp.linspace(-0.2, 0.2, 33)), -1)
    np.testing.assert_allclose(ctf(f, p), ctf(f, q), atol=2e-5)


def test_ctf_batched_params_broadcast():
    p = CTFParams.create(jnp.array([10000.0, 20000.0, 30000.0]))
    assert p.defocus_v.shape == (3,) and p.cs_mm.shape == (3,)
    f = jnp.zeros((8, 5, 2)) + 0.05
    pb = CTFParams(*(x[:, None, None] for x in p))
    out = ctf(f, pb)
    assert out.shape == (3, 8, 5)
    np.testing.assert_allclose(out[1], ctf(f, CTFParams(*(x[1] for x in p))), atol=1e-6)
