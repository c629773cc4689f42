import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.structure import anm_modes, ca_trace, deform, rmsd


@pytest.fixture(scope="module")
def modes_1orc(model_1orc):
    x0 = ca_trace(model_1orc).coords
    return x0, anm_modes(x0, n_modes=8)


def test_shapes_batching_and_linearity(modes_1orc):
    x0, m = modes_1orc
    vecs = jnp.asarray(m.rmsd_scaled_vectors(), dtype=jnp.float32)
    amps = jax.random.normal(jax.random.key(1), (5, 3, 8))
    x = deform(x0, vecs, amps)
    assert x.shape == (5, 3, 64, 3) and x.dtype == jnp.float32
    np.testing.assert_allclose(deform(x0, vecs, jnp.zeros(8)), x0)
    # Batched result equals per-sample evaluation.
    one = deform(x0, vecs, amps[2, 1])
    np.testing.assert_allclose(x[2, 1], one, atol=1e-5)
    # RMSD-scaled vectors: RMSD equals |a| in Å.
    assert rmsd(np.asarray(one), x0) == pytest.approx(float(jnp.linalg.norm(amps[2, 1])), rel=1e-4)
    # Refinement broadcast against the batch
    ref = 0.1 * jnp.ones((64, 3))
    np.testing.assert_allclose(deform(x0, vecs, amps, ref), x + 0.1, atol=1e-5)


def test_jit_vmap_and_gradients(modes_1orc):
    x0, m = modes_1orc
    vecs = jnp.asarray(m.vectors, dtype=jnp.float32)

    with jax.enable_x64(True):
        x64, v64 = jnp.asarray(x0, jnp.float64), jnp.asarray(m.vectors, jnp.float64)

        def loss(a, r):
            return jnp.sum(jnp.sin(deform(x64, v64, a, r)))

        check_grads(loss, (0.5 * jnp.ones(8), 0.1 * jnp.ones((64, 3))), order=1, modes=["rev"])

    a = 0.5 * jnp.ones(8)
    batched = jax.jit(jax.vmap(lambda a: deform(x0, vecs, a)))(jnp.ones((4, 8)))
    assert batched.shape == (4, 64, 3)
    # d X / d a_k = u_k
    jac = jax.jacobian(lambda a: deform(x0, vecs, a))(a)
    np.testing.assert_allclose(jnp.moveaxis(jac, -1, 0), vecs, atol=1e-6)


def test_shape_errors(modes_1orc):
    x0, m = modes_1orc
    with pytest.raises(InputFormatError, match="amplitudes"):
        deform(x0, m.vectors, np.zeros(3))
    with pytest.raises(InputFormatError, match="vectors shape"):
        deform(x0[:10], m.vectors, np.zeros(8))
