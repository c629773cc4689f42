"""Structures: element rule (no CHARMM name guessing), B-factors, trajectories, PDB writer."""

from __future__ import annotations

import collections
import subprocess
import sys

import gemmi
import mdtraj as md
import numpy as np
import pytest
from io_shared import SHARED
from MDAnalysisTests.datafiles import DCD, PSF, PDB_closed, PDB_small

from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.io import load_structure, load_trajectory, write_multimodel_pdb
from atomicspi_bayes.io.structures import element_from_name

ORC = SHARED / "gemmi" / "1orc.pdb"

# adk.psf composition (read from the PSF masses by mdtraj): the ground truth for adk_open.pdb.
ADK_COUNTS = {"H": 1685, "C": 1040, "O": 320, "N": 289, "S": 7}


def test_adk_open_elements_from_residue_rule_not_charmm_names():
    model = load_structure(PDB_small)
    counts = collections.Counter(model.elements.tolist())
    assert set(counts) <= {"C", "N", "O", "S", "H"}
    assert not {"Ca", "Cd", "Hg", "He", "Ne", "Ce", "Nd", "Sg"} & set(counts)
    assert dict(counts) == ADK_COUNTS
    # mdtraj alone guesses wrongly on this file: the trap is real.
    guessed = collections.Counter(a.element.symbol for a in md.load(PDB_small).topology.atoms)
    assert guessed["Ca"] == 214
    # CA atoms are carbons and each residue has one.
    assert len(model.ca_indices) == model.n_residues == 214


def test_adk_open_with_psf_topology_agrees_and_has_bonds():
    by_rule = load_structure(PDB_small)
    by_psf = load_structure(PDB_small, topology=PSF)
    np.testing.assert_array_equal(by_rule.elements, by_psf.elements)
    assert by_psf.bonds.shape == (3365, 2)  # adk.psf !NBOND
    assert np.all(by_psf.bonds[:, 0] < by_psf.bonds[:, 1])


def test_adk_b_factors_and_coordinates_from_columns():
    model = load_structure(PDB_small)
    # First ATOM record: "ATOM      1 N    MET     1     -11.921  26.307  10.410  1.00 38.38"
    np.testing.assert_allclose(model.coords[0], [-11.921, 26.307, 10.410], atol=1e-4)
    assert model.b_factors is not None and model.b_factors[0] == pytest.approx(38.38)
    assert model.coords.dtype == np.float32 and model.coords.shape == (3341, 3)
    assert model.n_chains == 1 and model.chain_ids[0] == "4AKE"


def test_adk_closed_same_topology():
    a, b = load_structure(PDB_small), load_structure(PDB_closed)
    np.testing.assert_array_equal(a.elements, b.elements)
    assert np.linalg.norm(a.coords - b.coords, axis=1).max() > 5.0


def test_1orc_real_pdb_entry():
    model = load_structure(ORC)
    gst = gemmi.read_structure(str(ORC))
    gst.remove_alternative_conformations()
    atoms = [a for ch in gst[0] for r in ch for a in r]
    assert model.n_atoms == len(atoms) == 553
    np.testing.assert_array_equal(model.elements, [a.element.name for a in atoms])
    np.testing.assert_allclose(model.b_factors, [a.b_iso for a in atoms], atol=1e-3)
    np.testing.assert_allclose(model.coords, [a.pos.tolist() for a in atoms], atol=1e-3)
    assert model.n_residues == 121  # 71 protein + 50 waters
    assert set(model.chain_ids.tolist()) == {"A"}


def test_mmcif_matches_pdb(tmp_path):
    doc = gemmi.read_structure(str(ORC))
    doc.setup_entities()
    cif = tmp_path / "1orc.cif"
    doc.make_mmcif_document().write_file(str(cif))
    from_pdb, from_cif = load_structure(ORC), load_structure(cif)
    assert from_cif.n_atoms == from_pdb.n_atoms
    np.testing.assert_allclose(from_cif.coords, from_pdb.coords, atol=1e-3)
    np.testing.assert_array_equal(from_cif.elements, from_pdb.elements)
    np.testing.assert_allclose(from_cif.b_factors, from_pdb.b_factors, atol=1e-2)


@pytest.mark.parametrize(
    ("field", "res", "expected"),
    [
        (" CA ", "ALA", "C"),
        ("CA  ", "MET", "C"),  # CHARMM left-justified
        ("CD1 ", "LEU", "C"),
        ("HG1 ", "THR", "H"),
        ("1HB ", "ALA", "H"),
        ("SE  ", "MSE", "Se"),
        ("OP1 ", "DA", "O"),
        ("CA  ", "CA", "Ca"),  # calcium ion
        ("SOD ", "SOD", "Na"),
        ("CLA ", "CLA", "Cl"),
        ("FE  ", "HEM", "Fe"),  # two-letter element in cols 13-14 of a ligand
        (" C1 ", "LIG", "C"),
        ("ZZZ ", "LIG", None),
    ],
)
def test_element_rule(field, res, expected):
    assert element_from_name(field, res) == expected


def test_unknown_ligand_element_without_column_is_refused(tmp_path):
    p = tmp_path / "lig.pdb"
    p.write_text("HETATM    1 QQ1  LIG A   1       0.000   0.000   0.000  1.00  0.00\nEND\n")
    with pytest.raises(InputFormatError, match="element"):
        load_structure(p)


def test_trajectory_psf_dcd_in_angstrom():
    model, coords = load_trajectory(DCD, PSF)
    assert coords.shape == (98, 3341, 3) and coords.dtype == np.float32
    assert dict(collections.Counter(model.elements.tolist())) == ADK_COUNTS
    np.testing.assert_array_equal(model.coords, coords[0])
    ca = model.ca_indices
    # Å, not nm: Cα-Cα distances of consecutive residues are 3.8 Å.
    d = np.linalg.norm(np.diff(coords[0][ca], axis=0), axis=1)
    assert np.median(d) == pytest.approx(3.8, abs=0.05)
    # Open <-> closed: CA displacement of several Å end to end (DESIGN.md: RMSD 6.8 Å after fit).
    assert np.linalg.norm(coords[-1][ca] - coords[0][ca], axis=1).max() > 5.0
    _, strided = load_trajectory(DCD, PSF, stride=10)
    assert strided.shape[0] == 10
    np.testing.assert_array_equal(strided[1], coords[10])


def test_dcd_reader_prints_nothing_on_stdout():
    """mdtraj's DCD plugin printf()s ``dcdplugin) ...`` on file descriptor 1 (C level, not
    sys.stdout): a fresh process (its C buffers flushed at exit) must print only its own line,
    and the plugin's text goes to the debug log."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)\n"
        "from atomicspi_bayes.io import load_trajectory\n"
        f"_, c = load_trajectory({str(DCD)!r}, {str(PSF)!r})\n"
        "print('frames', c.shape[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=True)  # fmt: skip
    assert done.stdout == "frames 98\n", done.stdout
    assert "dcdplugin" in done.stderr  # what was printed is kept in the log


def test_multimodel_pdb_roundtrip_in_gemmi_and_here(tmp_path):
    model, coords = load_trajectory(DCD, PSF, stride=20)
    out = tmp_path / "ensemble.pdb"
    write_multimodel_pdb(out, model, coords)
    st = gemmi.read_structure(str(out))
    assert len(st) == coords.shape[0]
    for k in range(len(st)):
        atoms = [a for ch in st[k] for r in ch for a in r]
        assert len(atoms) == model.n_atoms
        np.testing.assert_allclose([a.pos.tolist() for a in atoms], coords[k], atol=6e-4)
        assert [a.element.name for a in atoms] == model.elements.tolist()
    back = load_structure(out)  # element column is read: no name rule needed
    np.testing.assert_array_equal(back.elements, model.elements)
    assert back.chain_ids.tolist() == ["4AKE"]
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_writer_refuses_bad_coords(tmp_path):
    model = load_structure(PDB_small)
    with pytest.raises(InputFormatError, match="shape"):
        write_multimodel_pdb(tmp_path / "x.pdb", model, np.zeros((2, 5, 3)))
    bad = np.repeat(model.coords[None], 2, axis=0)
    bad[1, 0, 0] = np.nan
    with pytest.raises(InputFormatError, match="NaN"):
        write_multimodel_pdb(tmp_path / "x.pdb", model, bad)
    assert not (tmp_path / "x.pdb").exists()


@pytest.mark.parametrize(
    ("content", "name", "match"),
    [
        (None, "missing.pdb", "not found"),
        ("hello world\n", "junk.pdb", "no ATOM"),
        ("ATOM      1  CA  ALA A   1      xx.xxx   0.000   0.000\n", "bad.pdb", "not numbers"),
        ("data", "model.xyzq", "unknown structure extension"),
        ("", "empty.cif", "unreadable mmCIF"),  # gemmi raised IndexError
    ],
)
def test_bad_structures(tmp_path, content, name, match):
    p = tmp_path / name
    if content is not None:
        p.write_text(content)
    with pytest.raises(InputFormatError, match=match):
        load_structure(p)


def test_topology_mismatch_refused():
    with pytest.raises(InputFormatError, match="topology"):
        load_structure(ORC, topology=PSF)


@pytest.mark.parametrize("content", ["garbage\n", ""])
def test_unreadable_psf_topology_is_one_line(tmp_path, content):
    """mdtraj's PSFError derives from Exception only: it must still become one line."""
    top = tmp_path / "t.psf"
    top.write_text(content)
    with pytest.raises(InputFormatError, match="unreadable topology") as info:
        load_trajectory(DCD, top)
    assert "\n" not in str(info.value)
