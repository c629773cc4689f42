"""Deformed ensembles written as a multi-model PDB that ChimeraX/PyMOL (and gemmi) open."""

import gemmi
import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.io import write_multimodel_pdb
from atomicspi_bayes.structure import anm_modes, atom_coords_from_beads, coarse_grain, deform


def test_mode_ensemble_round_trip(tmp_path, adk_open):
    beads = coarse_grain(adk_open)
    modes = anm_modes(beads.coords, n_modes=3)
    amps = jnp.zeros((5, 3)).at[:, 0].set(jnp.linspace(-2.0, 2.0, 5))  # Å RMSD along mode 1
    bead_xyz = deform(beads.coords, jnp.asarray(modes.rmsd_scaled_vectors()), amps)
    atoms = np.asarray(atom_coords_from_beads(adk_open, beads, bead_xyz))
    assert atoms.shape == (5, adk_open.n_atoms, 3)
    path = tmp_path / "ensemble.pdb"
    write_multimodel_pdb(path, adk_open, atoms)

    st = gemmi.read_structure(str(path))
    assert len(st) == 5
    for k, model in enumerate(st):
        ca = np.array([a.pos.tolist() for ch in model for r in ch for a in r if a.name == "CA"])
        assert ca.shape == (214, 3)
        np.testing.assert_allclose(ca, bead_xyz[k], atol=2e-3)  # PDB has 3 decimals
        elements = {a.element.name for ch in model for r in ch for a in r if a.name == "CA"}
        assert elements == {"C"}
    # Middle model is the reference structure.
    np.testing.assert_allclose(atoms[2], adk_open.coords, atol=1e-4)
