import json

import numpy as np
import prody
import pytest

from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.structure import (
    anm_hessian,
    anm_modes,
    ca_trace,
    cumulative_overlap,
    kabsch_align,
    rmsd,
    subspace_overlap,
)

prody.confProDy(verbosity="none")


def _prody_anm(x: np.ndarray, n_modes: int):
    anm = prody.ANM("ref")
    anm.buildHessian(x.astype(np.float64), cutoff=15.0, gamma=1.0)
    anm.calcModes(n_modes=n_modes, zeros=False)
    return anm


@pytest.mark.parametrize("which", ["adk_open", "adk_closed", "model_1orc"])
def test_matches_prody(which, request):
    x = ca_trace(request.getfixturevalue(which)).coords
    ours = anm_modes(x, n_modes=20, cutoff=15.0, gamma=1.0)
    ref = _prody_anm(x, 20)
    np.testing.assert_allclose(anm_hessian(x), ref.getHessian(), atol=1e-9)
    ev_ref = ref.getEigvals()
    rel = np.max(np.abs(ours.eigenvalues - ev_ref) / ev_ref)
    assert rel <= 1e-4
    vec_ref = ref.getEigvecs().T.reshape(20, -1, 3)
    rmsip = subspace_overlap(ours.vectors[:10], vec_ref[:10])
    assert rmsip >= 0.99
    # Principal angles: the mean squared cosine is the squared RMSIP.
    cosines = np.linalg.svd(
        ours.vectors[:10].reshape(10, -1) @ vec_ref[:10].reshape(10, -1).T, compute_uv=False
    )
    assert np.mean(cosines**2) >= 0.99
    print(json.dumps({"prody": which, "eig_rel_err": float(rel), "rmsip10": rmsip}))


@pytest.mark.parametrize("which", ["adk_open", "adk_closed", "model_1orc"])
def test_six_zero_modes_and_orthonormal(which, request):
    x = ca_trace(request.getfixturevalue(which)).coords
    ev = np.linalg.eigvalsh(anm_hessian(x))
    scale = np.trace(anm_hessian(x)) / ev.size
    assert np.sum(np.abs(ev) < 1e-8 * scale) == 6
    assert ev[6] > 1e-4 * scale
    m = anm_modes(x, n_modes=30)
    v = m.vectors.reshape(30, -1)
    np.testing.assert_allclose(v @ v.T, np.eye(30), atol=1e-10)
    assert np.all(np.diff(m.eigenvalues) >= 0) and m.eigenvalues[0] > 0
    np.testing.assert_allclose(m.eigenvalues[0], ev[6], rtol=1e-10)
    # Modes are orthogonal to the rigid-body motions (translations).
    for axis in range(3):
        t = np.zeros_like(x, dtype=np.float64)
        t[:, axis] = 1.0
        assert np.abs(v @ t.ravel()).max() < 1e-8


def test_rmsd_scaling(adk_open):
    x = ca_trace(adk_open).coords.astype(np.float64)
    m = anm_modes(x, n_modes=5)
    s = m.rmsd_scaled_vectors()
    amp = np.array([0.3, -0.4, 0.0, 1.2, 0.0])
    moved = x + np.einsum("k,krc->rc", amp, s)
    assert rmsd(moved, x) == pytest.approx(np.linalg.norm(amp), rel=1e-10)
    unit = x + 2.0 * m.vectors[0]
    assert rmsd(unit, x) == pytest.approx(2.0 / np.sqrt(len(x)), rel=1e-10)
    np.testing.assert_allclose(m.amplitude_sd(kT=2.0), np.sqrt(2.0 / m.eigenvalues))


def test_adk_open_to_closed_overlap(adk_open, adk_closed):
    xo = ca_trace(adk_open).coords.astype(np.float64)
    xc = ca_trace(adk_closed).coords.astype(np.float64)
    closed_on_open = kabsch_align(xc, xo)
    d = closed_on_open - xo
    m = anm_modes(xo, n_modes=20)
    co = cumulative_overlap(m, d)
    report = {f"K={k}": round(float(co[k - 1]), 4) for k in (1, 3, 10, 20)}
    print(
        json.dumps(
            {"adk_open_to_closed_cumulative_overlap": report, "rmsd": rmsd(xc, xo, superpose=True)}
        )
    )
    assert rmsd(xc, xo, superpose=True) == pytest.approx(6.91, abs=0.05)
    assert np.all(np.diff(co) >= -1e-12) and co[-1] <= 1.0 + 1e-12
    # Literature (Tama & Sanejouand 2001): a few low modes dominate the AdK closure.
    assert co[0] > 0.6 and co[9] > 0.9


def test_disconnected_chains_raise(model_1orc):
    x = ca_trace(model_1orc).coords
    two = np.concatenate([x, x + np.array([100.0, 0.0, 0.0], dtype=np.float32)])
    with pytest.raises(InputFormatError, match="2 disconnected parts"):
        anm_modes(two, n_modes=5)


@pytest.mark.parametrize("cutoff", [3.0, 4.0, 6.0])
def test_tiny_cutoff_raises(adk_open, cutoff):
    x = ca_trace(adk_open).coords
    with pytest.raises(InputFormatError, match=r"disconnected|zero eigenvalues"):
        anm_modes(x, n_modes=5, cutoff=cutoff)


def test_floppy_connected_network_raises():
    x = np.zeros((10, 3))
    x[:, 0] = np.arange(10) * 3.8  # collinear: connected but not rigid
    with pytest.raises(InputFormatError, match="zero eigenvalues"):
        anm_modes(x, n_modes=3)


def test_bad_inputs_raise():
    with pytest.raises(InputFormatError, match="no nodes"):
        anm_modes(np.zeros((0, 3)), n_modes=3)
    with pytest.raises(InputFormatError, match=r"shape \(R, 3\)"):
        anm_modes(np.zeros((5, 2)), n_modes=3)
    rng = np.random.default_rng(0)
    x = rng.normal(scale=5.0, size=(20, 3))
    with pytest.raises(ConfigError, match="n_modes"):
        anm_modes(x, n_modes=55)
    with pytest.raises(ConfigError, match="gamma"):
        anm_modes(x, n_modes=3, gamma=0.0)
