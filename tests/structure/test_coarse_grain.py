import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atomicspi_bayes.structure import (
    atom_coords_from_beads,
    bead_to_atom_displacements,
    ca_trace,
    coarse_grain,
)


def _peng(elements):
    # Independent of physics.scattering: gemmi's Peng (c4322) table directly.
    import gemmi

    a = np.array([gemmi.Element(e).c4322.a for e in elements], dtype=np.float64)
    b = np.array([gemmi.Element(e).c4322.b for e in elements], dtype=np.float64)
    return a, b


def _structure_factor(x, a, b, k_vectors):
    """3D F(k) = Σ_j Σ_i a_ji exp(-b_ji |k|²/4) exp(-2πi k·r_j), k in 1/Å."""
    k2 = np.sum(k_vectors**2, axis=1)
    amp = np.einsum("ji,mji->mj", a, np.exp(-b[None] * k2[:, None, None] / 4.0))
    return np.sum(amp * np.exp(-2j * np.pi * k_vectors @ x.T), axis=1)


def test_bead_model_shapes_and_conservation(adk_open):
    beads = coarse_grain(adk_open)
    assert beads.coords.shape == (214, 3) and beads.a.shape == (214, 5)
    assert beads.b.shape == (214, 5) and beads.offsets.shape == (214, 3)
    np.testing.assert_array_equal(beads.coords, ca_trace(adk_open).coords)
    # Total forward scattering conserved: Σ a over beads = Σ f(0) over atoms
    a_atoms, _ = _peng(adk_open.elements)
    assert beads.a.sum() == pytest.approx(a_atoms.sum(), rel=1e-6)
    # SCIENCE.md sanity: f(0) for C, N, O, H
    f0 = {e: _peng([e])[0].sum() for e in "CNOH"}
    assert f0 == pytest.approx({"C": 2.5088, "N": 2.2135, "O": 1.9834, "H": 0.5288}, abs=1e-4)
    # Glycine bead (residue with fewest atoms) is the lightest bead.
    gly = np.flatnonzero(adk_open.residue_names == "GLY")
    assert np.argmin(beads.a.sum(1)) in gly
    assert np.all(beads.b > 0) and np.all(np.linalg.norm(beads.offsets, axis=1) < 6.0)


def test_beads_reproduce_low_resolution_scattering(adk_open):
    beads = coarse_grain(adk_open)
    a, b = _peng(adk_open.elements)
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(64, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    errors = {}
    for resolution in (40.0, 20.0):
        k = dirs / resolution
        f_atoms = _structure_factor(adk_open.coords.astype(np.float64), a, b, k)
        centres = np.asarray(beads.scattering_coords(), dtype=np.float64)
        f_beads = _structure_factor(centres, beads.a.astype(np.float64), beads.b, k)
        f_ca = _structure_factor(beads.coords.astype(np.float64), beads.a, beads.b, k)
        err = np.linalg.norm(f_beads - f_atoms) / np.linalg.norm(f_atoms)
        err_ca = np.linalg.norm(f_ca - f_atoms) / np.linalg.norm(f_atoms)
        errors[resolution] = err
        assert err < err_ca  # the centroid offset matters
    assert errors[40.0] < 0.02 and errors[20.0] < 0.1


def test_1orc_waters_map_to_no_bead(model_1orc):
    beads = coarse_grain(model_1orc)
    assert beads.n_beads == 64
    water = np.isin(model_1orc.residue_names, ["HOH"])[model_1orc.residue_index]
    assert np.all(beads.atom_to_bead[water] == -1)
    assert np.all(beads.atom_to_bead[~water] >= 0)


def test_bead_to_atom_displacements_rigid_and_batched(adk_open):
    beads = coarse_grain(adk_open)
    disp = jax.random.normal(jax.random.key(0), (4, beads.n_beads, 3))
    out = bead_to_atom_displacements(disp, beads.atom_to_bead)
    assert out.shape == (4, adk_open.n_atoms, 3)
    # Every atom of residue r moves exactly like bead r.
    np.testing.assert_allclose(
        out[:, beads.atom_to_bead == 7],
        disp[:, 7:8].repeat(int(np.sum(beads.atom_to_bead == 7)), axis=1),
    )
    coords = atom_coords_from_beads(adk_open, beads, beads.coords[None] + disp)
    ca = ca_trace(adk_open).atom_indices
    np.testing.assert_allclose(coords[:, ca], beads.coords[None] + disp, atol=1e-5)
    # Linear map: gradient of a sum is the atom count per bead.
    g = jax.grad(lambda d: jnp.sum(bead_to_atom_displacements(d, beads.atom_to_bead)))(disp[0])
    counts = np.bincount(beads.atom_to_bead, minlength=beads.n_beads)
    np.testing.assert_allclose(g[:, 0], counts)
