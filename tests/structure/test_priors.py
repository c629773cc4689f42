import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atomicspi_bayes.structure import (
    anm_modes,
    ca_bond_logprior,
    ca_trace,
    clash_logprior,
    clash_pairs,
    elastic_logprior,
    elastic_pairs,
    ideal_bond_lengths,
    mode_logprior,
    pad_pairs,
)
from atomicspi_bayes.structure.priors import elastic_energy


@pytest.fixture(scope="module")
def small_setup(model_1orc):
    tr = ca_trace(model_1orc)
    x0 = jnp.asarray(tr.coords)
    return tr, x0, elastic_pairs(tr.coords, size=1500), clash_pairs(tr.n_residues, size=2000)


@pytest.fixture(scope="module")
def adk_setup(adk_open):
    tr = ca_trace(adk_open)
    x0 = jnp.asarray(tr.coords)
    return tr, x0, elastic_pairs(tr.coords, size=12000), clash_pairs(tr.n_residues, size=23000)


def test_elastic_zero_with_zero_gradient_at_reference(small_setup):
    _, x0, ep, _ = small_setup
    assert ep.n_valid < ep.i.shape[0]  # padding present and harmless
    assert float(elastic_logprior(x0, x0, ep)) == 0.0
    g = jax.grad(elastic_logprior)(x0, x0, ep)
    assert float(jnp.abs(g).max()) == 0.0
    # Rigid motions cost nothing; internal deformations cost > 0.
    rot = jnp.asarray(
        [[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]], jnp.float32
    )
    moved = x0 @ rot.T + jnp.asarray([5.0, -2.0, 1.0])
    assert abs(float(elastic_energy(moved, x0, ep))) < 1e-3
    noisy = x0 + 0.1 * jax.random.normal(jax.random.key(0), x0.shape)
    assert float(elastic_energy(noisy, x0, ep)) > 1.0


def test_elastic_energy_matches_anm_quadratic_form(adk_setup):
    # For small mode displacements E ≈ (γ/2) a² λ_k (Hessian eigenvalue).
    tr, _, ep, _ = adk_setup
    m = anm_modes(tr.coords, n_modes=3)
    with jax.enable_x64(True):
        x64 = jnp.asarray(tr.coords, jnp.float64)
        for k in range(3):
            x = x64 + 1e-3 * jnp.asarray(m.vectors[k])
            e = float(elastic_energy(x, x64, ep))
            assert e == pytest.approx(0.5 * 1e-6 * m.eigenvalues[k], rel=1e-2)


def test_priors_batched_jittable_finite_gradients(small_setup):
    tr, x0, ep, cp = small_setup
    lengths = ideal_bond_lengths(tr.coords, tr.bonded)

    @jax.jit
    def total(x):
        return (
            elastic_logprior(x, x0, ep, gamma=1.0, kT=10.0)
            + ca_bond_logprior(x, tr.bonded, lengths)
            + clash_logprior(x, cp)
        )

    x = x0 + 0.5 * jax.random.normal(jax.random.key(2), (3, *x0.shape))
    val = total(x)
    assert val.shape == (3,) and bool(jnp.all(jnp.isfinite(val)))
    np.testing.assert_allclose(val[1], total(x[1]), rtol=1e-5)
    g = jax.grad(lambda x: jnp.sum(total(x)))(x)
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))
    # A collapsed structure (coincident beads) still has finite gradients.
    g0 = jax.grad(lambda x: total(x))(jnp.zeros_like(x0))
    assert bool(jnp.all(jnp.isfinite(g0)))


def test_bond_prior_peaks_at_3_8_and_cis():
    d = jnp.linspace(3.0, 4.6, 1601)
    x = jnp.zeros((d.size, 2, 3)).at[:, 1, 0].set(d)
    lp = ca_bond_logprior(x, np.array([True]))
    assert float(d[jnp.argmax(lp)]) == pytest.approx(3.80, abs=1e-3)
    # Curvature: 1/σ² with σ = 0.05 Å -> log p drops by 2 at 0.1 Å.
    i38 = int(jnp.argmax(lp))
    assert float(lp[i38] - lp[i38 + 100]) == pytest.approx(2.0, rel=1e-2)
    # Chain breaks are ignored.
    assert float(jnp.abs(ca_bond_logprior(x, np.array([False]))).max()) == 0.0
    # A cis peptide in the reference gets a 2.9 Å ideal length.
    x0 = np.array([[0, 0, 0], [3.8, 0, 0], [3.8, 2.95, 0]], dtype=np.float32)
    np.testing.assert_allclose(ideal_bond_lengths(x0, np.array([True, True])), [3.8, 2.9])


def test_adk_reference_bonds_and_no_clashes(adk_setup, adk_closed):
    tr, x0, _, cp = adk_setup
    lengths = ideal_bond_lengths(tr.coords, tr.bonded)
    assert np.sum(lengths < 3.0) == 1  # AdK has one cis peptide
    assert float(clash_logprior(x0, cp)) == 0.0
    xc = jnp.asarray(ca_trace(adk_closed).coords)
    assert float(clash_logprior(xc, cp)) == 0.0


def test_clash_penalty_shape():
    d = jnp.linspace(2.0, 6.0, 401)
    x = jnp.zeros((d.size, 4, 3)).at[:, 3, 0].set(d).at[:, 1, 1].set(30.0).at[:, 2, 1].set(60.0)
    pl = pad_pairs(np.array([[0, 3]]), size=4)
    lp = clash_logprior(x, pl, d_min=4.0, kappa=12.5)
    assert np.all(np.asarray(lp[d >= 4.0]) == 0.0)
    assert float(lp[0]) == pytest.approx(-12.5 * 4.0, rel=1e-5)
    assert np.all(np.diff(np.asarray(lp)) >= 0)


def test_mode_logprior():
    lam = jnp.asarray([0.5, 2.0])
    assert float(mode_logprior(jnp.asarray([1.0, 1.0]), lam, kT=0.5)) == pytest.approx(-2.5)
    assert mode_logprior(jnp.ones((7, 2)), lam).shape == (7,)
