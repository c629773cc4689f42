import dataclasses

import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform

from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.structure import ca_trace, neighbour_pairs, pad_pairs
from atomicspi_bayes.structure.graph import connected_components, nonbonded_pairs


def test_adk_bonds_are_covalent(adk_open):
    # PSF topology: 3341 atoms, bonds from mdtraj; all covalent lengths in 0.9-2.0 Å.
    bonds = adk_open.bonds
    assert bonds.shape[1] == 2 and bonds.shape[0] > adk_open.n_atoms
    assert np.all(bonds[:, 0] < bonds[:, 1])
    d = np.linalg.norm(adk_open.coords[bonds[:, 0]] - adk_open.coords[bonds[:, 1]], axis=1)
    assert d.min() > 0.9 and d.max() < 2.0
    # One connected molecule.
    n, _ = connected_components(adk_open.n_atoms, bonds)
    assert n == 1


def test_adk_ca_trace(adk_open):
    tr = ca_trace(adk_open)
    assert tr.n_residues == 214
    assert tr.coords.shape == (214, 3) and tr.coords.dtype == np.float32
    assert np.all(adk_open.elements[tr.atom_indices] == "C")
    assert tr.bonded.all() and tr.n_breaks == 0
    assert tr.bond_pairs.shape == (213, 2)


def test_chain_break_and_chain_end_detected(adk_open):
    # Drop residues 50..54: a gap inside the chain.
    keep_res = np.setdiff1d(np.arange(adk_open.n_residues), np.arange(50, 55))
    atom_keep = np.isin(adk_open.residue_index, keep_res)
    new_res = np.searchsorted(keep_res, adk_open.residue_index[atom_keep])
    chain = np.zeros(keep_res.size, dtype=int)
    chain[150:] = 1  # second "chain" starting at kept residue 150
    m = dataclasses.replace(
        adk_open,
        coords=adk_open.coords[atom_keep],
        elements=adk_open.elements[atom_keep],
        atom_names=adk_open.atom_names[atom_keep],
        residue_index=new_res,
        residue_names=adk_open.residue_names[keep_res],
        residue_ids=adk_open.residue_ids[keep_res],
        chain_index=chain,
        chain_ids=np.array(["A", "B"]),
    )
    tr = ca_trace(m)
    assert tr.n_residues == 209
    assert np.flatnonzero(~tr.bonded).tolist() == [49, 149]
    assert tr.n_breaks == 1


def test_1orc_drops_waters(model_1orc):
    tr = ca_trace(model_1orc)
    assert tr.n_residues == 64
    assert tr.bonded.all()


def test_no_ca_raises(adk_open):
    # The classic trap: CA read as calcium.
    wrong = np.where(adk_open.atom_names == "CA", "Ca", adk_open.elements)
    m = dataclasses.replace(adk_open, elements=wrong)
    with pytest.raises(InputFormatError, match="no protein Cα"):
        ca_trace(m)


def test_neighbour_pairs_match_brute_force(adk_open):
    x = ca_trace(adk_open).coords
    d = squareform(pdist(x.astype(np.float64)))
    for cutoff in (7.0, 15.0):
        got = neighbour_pairs(x, cutoff)
        i, j = np.triu_indices(len(x), 1)
        ref = np.stack([i, j], 1)[d[i, j] <= cutoff]
        np.testing.assert_array_equal(got, ref)
    got = neighbour_pairs(x, 10.0, min_separation=3)
    assert np.all(got[:, 1] - got[:, 0] >= 3)
    with pytest.raises(ConfigError):
        neighbour_pairs(x, 0.0)


def test_nonbonded_pairs_and_padding():
    p = nonbonded_pairs(6, min_separation=3)
    assert p.tolist() == [[0, 3], [0, 4], [0, 5], [1, 4], [1, 5], [2, 5]]
    p2 = nonbonded_pairs(4, min_separation=3, chain_index=np.array([0, 0, 1, 1]))
    assert p2.tolist() == [[0, 2], [0, 3], [1, 2], [1, 3]]
    pl = pad_pairs(p, 10)
    assert pl.i.shape == (10,) and pl.n_valid == 6 and not pl.mask[6:].any()
    with pytest.raises(ConfigError):
        pad_pairs(p, 3)
