"""jax.grad of the simulator vs central finite differences, in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atomicspi_bayes.physics import cryoem as ce
from atomicspi_bayes.physics.ctf import CTFParams
from atomicspi_bayes.physics.geometry import euler_to_matrix


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(5)
    n, box, p = 16, 24, 1.5
    elements = rng.choice(["C", "N", "O", "S"], n)
    coords = rng.normal(size=(n, 3)) * 5.0
    bfac = rng.uniform(5, 25, n)
    weights = rng.normal(size=(2, 2, box, box // 2 + 1))  # random linear functional of Re, Im
    scat = ce.Scatterers.from_elements(elements, bfac)
    return scat, coords, weights, box, p


def _loss_factory(scat, weights, box, p):
    def loss(coords, angles, shifts, du, dv, dang):
        rots = euler_to_matrix(angles)
        ctf = CTFParams(
            du, dv, dang, *(jnp.full(2, v, jnp.float64) for v in (300.0, 2.7, 0.1, 0.0, 0.0, 1.0))
        )
        ft, _ = ce.simulate_batch(scat, coords, rots, shifts, ctf, box=box, pixel_size=p)
        ft = ft * 1e3  # O(1) values
        return jnp.sum(weights[:, 0] * jnp.real(ft) + weights[:, 1] * jnp.imag(ft))

    return loss


@pytest.mark.slow
def test_gradients_match_finite_differences(problem):
    scat, coords0, weights, box, p = problem
    with jax.enable_x64(True):
        args = [
            jnp.asarray(coords0, jnp.float64),
            jnp.array([[0.4, 1.2, -2.0], [2.5, 0.7, 1.1]], jnp.float64),
            jnp.array([[1.5, -0.5], [-2.0, 3.0]], jnp.float64),
            jnp.array([12000.0, 18000.0], jnp.float64),
            jnp.array([11000.0, 19500.0], jnp.float64),
            jnp.array([0.3, 1.9], jnp.float64),
        ]
        loss = jax.jit(_loss_factory(scat, jnp.asarray(weights), box, p))
        grads = jax.jit(jax.grad(loss, argnums=tuple(range(6))))(*args)
        names = ["coords", "euler", "shifts", "defocus_u", "defocus_v", "defocus_angle"]
        steps = [1e-4, 1e-6, 1e-4, 1e-2, 1e-2, 1e-6]
        rng = np.random.default_rng(0)
        for i, (name, h) in enumerate(zip(names, steps, strict=True)):
            g = np.asarray(grads[i])
            assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, name
            flat = np.asarray(args[i]).ravel()
            picks = rng.choice(flat.size, size=min(6, flat.size), replace=False)
            for idx in picks:
                plus, minus = flat.copy(), flat.copy()
                plus[idx] += h
                minus[idx] -= h
                a_p = list(args)
                a_m = list(args)
                a_p[i] = jnp.asarray(plus.reshape(args[i].shape))
                a_m[i] = jnp.asarray(minus.reshape(args[i].shape))
                fd = (float(loss(*a_p)) - float(loss(*a_m))) / (2 * h)
                scale = np.abs(g).max()
                np.testing.assert_allclose(
                    g.ravel()[idx], fd, rtol=1e-5, atol=1e-6 * scale, err_msg=name
                )


@pytest.mark.slow
def test_float32_gradient_close_to_float64(problem):
    """The float32 fast path (polynomial sin/cos) gives the same gradient to ~1e-4."""
    scat, coords0, weights, box, p = problem
    args32 = [
        jnp.asarray(coords0, jnp.float32),
        jnp.array([[0.4, 1.2, -2.0], [2.5, 0.7, 1.1]], jnp.float32),
        jnp.zeros((2, 2), jnp.float32),
    ]

    def loss(coords, angles, shifts):
        rots = euler_to_matrix(angles)
        ctf = CTFParams.create(jnp.array([12000.0, 18000.0]))
        ft, _ = ce.simulate_batch(scat, coords, rots, shifts, ctf, box=box, pixel_size=p)
        return jnp.sum(weights[:, 0] * jnp.real(ft) + weights[:, 1] * jnp.imag(ft)) * 1e3

    g32 = np.asarray(jax.jit(jax.grad(loss))(*args32))
    with jax.enable_x64(True):
        g64 = np.asarray(jax.jit(jax.grad(loss))(*(jnp.asarray(a, jnp.float64) for a in args32)))
    np.testing.assert_allclose(g32, g64, atol=2e-4 * np.abs(g64).max())
