"""Scattering-factor tables (checked against SCIENCE.md, i.e. Peng 1996 / IT C) and beads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.physics import scattering as sc

# SCIENCE.md §1 table (Peng et al. 1996, Table 1, verified against Bsoft): a1..a5, b1..b5
PENG = {
    "H": ([0.0349, 0.1201, 0.1970, 0.0573, 0.1195], [0.5347, 3.5867, 12.3471, 18.9525, 38.6269]),
    "C": ([0.0893, 0.2563, 0.7570, 1.0487, 0.3575], [0.2465, 1.7100, 6.4094, 18.6113, 50.2523]),
    "N": ([0.1022, 0.3219, 0.7982, 0.8197, 0.1715], [0.2451, 1.7481, 6.1925, 17.3894, 48.1431]),
    "O": ([0.0974, 0.2921, 0.6910, 0.6990, 0.2039], [0.2067, 1.3815, 4.6943, 12.7105, 32.4726]),
    "P": ([0.2548, 0.6106, 1.4541, 2.3204, 0.8477], [0.2908, 1.8740, 8.5176, 24.3434, 63.2996]),
    "S": ([0.2497, 0.5628, 1.3899, 2.1865, 0.7715], [0.2681, 1.6711, 7.0267, 19.5377, 50.3888]),
}
# SCIENCE.md §7 table (International Tables C, Table 6.1.1.4): a1 b1 a2 b2 a3 b3 a4 b4 c
CM = {
    "C": [2.3100, 20.8439, 1.0200, 10.2075, 1.5886, 0.5687, 0.8650, 51.6512, 0.2156],
    "N": [12.2126, 0.0057, 3.1322, 9.8933, 2.0125, 28.9975, 1.1663, 0.5826, -11.529],
    "O": [3.0485, 13.2771, 2.2868, 5.7011, 1.5463, 0.3239, 0.8670, 32.9089, 0.2508],
    "S": [6.9053, 1.4679, 5.2034, 22.2151, 1.4379, 0.2536, 1.5863, 56.1720, 0.8669],
}


def test_peng_matches_science_table():
    els = list(PENG)
    a, b = sc.peng_gaussians(els)
    assert a.shape == (6, 5) and b.shape == (6, 5) and a.dtype == np.float32
    for i, el in enumerate(els):
        np.testing.assert_allclose(a[i], PENG[el][0], rtol=1e-6, err_msg=el)
        np.testing.assert_allclose(b[i], PENG[el][1], rtol=1e-6, err_msg=el)
    # f_e(0) sanity numbers
    np.testing.assert_allclose(a.sum(1)[:4], [0.5288, 2.5088, 2.2135, 1.9834], atol=1e-4)


def test_peng_ions_and_metals_present_and_plausible():
    """Ion-forming elements (as neutral atoms): f(0) grows with Z within a period."""
    els = ["Na", "Mg", "K", "Ca", "Mn", "Fe", "Zn", "Cl", "Se", "Cu"]
    a, b = sc.peng_gaussians(els)
    f0 = dict(zip(els, a.sum(1), strict=True))
    assert np.all(a > 0) and np.all(b > 0)
    assert f0["Na"] < f0["K"] and f0["Mg"] < f0["Ca"]
    assert 6.0 < f0["Fe"] < 8.0 and 4.0 < f0["Cl"] < 6.0
    # Fe from SCIENCE-independent source: Peng 1996 Table 1 Fe a1 = 0.3946, b5 = 86.2265
    np.testing.assert_allclose([a[5, 0], b[5, 4]], [0.3946, 86.2265], rtol=1e-6)


def test_symbols_normalised_and_unknown_rejected():
    a, _ = sc.peng_gaussians(["FE", "fe", " C", "D"])
    np.testing.assert_allclose(a[0], a[1])
    np.testing.assert_allclose(a[3], sc.peng_gaussians(["H"])[0][0])
    assert list(sc.element_symbols(["FE", "d", "c"])) == ["Fe", "H", "C"]
    for bad in ["Xx", "", "Q"]:
        with pytest.raises(InputFormatError, match="element"):
            sc.peng_gaussians(["C", bad])


def test_cromer_mann_matches_science_table():
    els = list(CM)
    a, b, c = sc.cromer_mann(els)
    for i, el in enumerate(els):
        ref = np.array(CM[el])
        np.testing.assert_allclose(a[i], ref[0:8:2], rtol=1e-5, err_msg=el)
        np.testing.assert_allclose(b[i], ref[1:8:2], rtol=1e-5, err_msg=el)
        np.testing.assert_allclose(c[i], ref[8], rtol=1e-5, err_msg=el)
    a, b, c = sc.cromer_mann(["C", "O", "S", "H"])
    np.testing.assert_allclose(a.sum(1) + c, [6.0, 8.0, 16.0, 1.0], atol=0.01)


def test_bead_gaussians_moment_matching():
    key = jax.random.key(0)
    coords = jax.random.normal(key, (12, 3)) * 1.5 + jnp.array([5.0, -3.0, 1.0])
    a, b = sc.peng_gaussians(["C", "N", "O", "C", "S", "H"] * 2)
    groups = jnp.array([0] * 6 + [1] * 5 + [3])  # group 2 empty
    centre, amp, width = sc.bead_gaussians(a, b, coords, groups, 4)
    assert centre.shape == (4, 3) and amp.shape == (4, 5)
    np.testing.assert_allclose(amp[2], 0.0)
    np.testing.assert_allclose(amp[3], a[11])
    np.testing.assert_allclose(width[3], b[11], rtol=1e-6)  # single atom: unchanged
    np.testing.assert_allclose(centre[3], coords[11], rtol=1e-6)
    np.testing.assert_allclose(amp.sum(), a.sum(), rtol=1e-6)  # total scattering conserved
    # orientation-averaged structure factor of group 0 (exact: <e^{-2πi k·d}> = sin(x)/x,
    # x = 2π|k||d|) agrees with the bead to order k²: the error shrinks like k⁴
    d = jnp.linalg.norm(coords[:6] - centre[0], axis=-1)
    errs = []
    for kmag in (0.01, 0.02, 0.04):
        f = jnp.sum(a[:6] * jnp.exp(-b[:6] * kmag**2 / 4), -1)
        exact = jnp.sum(f * jnp.sinc(2 * kmag * d))  # np.sinc(x) = sin(πx)/(πx)
        bead = jnp.sum(amp[0] * jnp.exp(-width[0] * kmag**2 / 4))
        errs.append(abs(float(bead - exact)) / float(exact))
    assert errs[0] < 1e-5 and errs[1] < 1e-4, errs
    assert errs[2] / errs[1] > 8, errs  # fourth order
    # a naive bead (no spread broadening) is much worse
    naive = jnp.sum(
        jnp.sum(a[:6], 0) * jnp.exp(-(jnp.sum(a[:6] * b[:6], 0) / jnp.sum(a[:6], 0)) * 0.02**2 / 4)
    )
    f = jnp.sum(a[:6] * jnp.exp(-b[:6] * 0.02**2 / 4), -1)
    exact = jnp.sum(f * jnp.sinc(2 * 0.02 * d))
    assert abs(float(naive - exact)) / float(exact) > 10 * errs[1]
    # gradient w.r.t. coordinates flows
    gr = jax.grad(lambda x: sc.bead_gaussians(a, b, x, groups, 4)[2].sum())(coords)
    assert np.all(np.isfinite(gr)) and float(jnp.abs(gr).max()) > 0
