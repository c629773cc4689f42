"""Shared fixtures: adenylate kinase (MDAnalysisTests) and 1orc (gemmi) as AtomicModels.

Elements of the element-less AdK PDBs come from the PSF topology (mdtraj would guess
CA -> calcium from the PDB alone).
"""

from __future__ import annotations

from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
from MDAnalysisTests.datafiles import PSF, PDB_closed, PDB_small

from atomicspi_bayes.structure import AtomicModel, bonds_from_topology

GEMMI_1ORC = Path("/work/shared/data/gemmi/1orc.pdb")


def model_from_mdtraj(traj: md.Trajectory, topology: md.Topology | None = None) -> AtomicModel:
    """AtomicModel from frame 0 of ``traj``; elements/names from ``topology`` if given."""
    top = topology if topology is not None else traj.topology
    assert top.n_atoms == traj.n_atoms
    atoms = list(top.atoms)
    residues = list(top.residues)
    chains = list(top.chains)
    return AtomicModel(
        coords=(traj.xyz[0] * 10.0).astype(np.float32),
        elements=np.array([a.element.symbol for a in atoms]),
        atom_names=np.array([a.name for a in atoms]),
        residue_index=np.array([a.residue.index for a in atoms]),
        residue_names=np.array([r.name for r in residues]),
        residue_ids=np.array([r.resSeq for r in residues]),
        chain_index=np.array([r.chain.index for r in residues]),
        chain_ids=np.array([getattr(c, "chain_id", None) or "" for c in chains]),
        bonds=bonds_from_topology(top),
    )


@pytest.fixture(scope="session")
def psf_topology() -> md.Topology:
    return md.load_psf(PSF)


@pytest.fixture(scope="session")
def adk_open(psf_topology) -> AtomicModel:
    return model_from_mdtraj(md.load(PDB_small), psf_topology)


@pytest.fixture(scope="session")
def adk_closed(psf_topology) -> AtomicModel:
    return model_from_mdtraj(md.load(PDB_closed), psf_topology)


@pytest.fixture(scope="session")
def model_1orc() -> AtomicModel:
    return model_from_mdtraj(md.load(str(GEMMI_1ORC)))
