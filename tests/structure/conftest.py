"""Shared fixtures: adenylate kinase (MDAnalysisTests) and 1orc (gemmi) as AtomicModels.

Loaded with ``io.load_structure``; the element-less AdK PDBs take their elements from the PSF
topology (mdtraj alone would guess CA -> calcium).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from MDAnalysisTests.datafiles import PSF, PDB_closed, PDB_small

from atomicspi_bayes.io import load_structure
from atomicspi_bayes.structure import AtomicModel

GEMMI_1ORC = Path(os.environ["ATOMICSPI_SHARED_DATA"]) / "gemmi" / "1orc.pdb"


@pytest.fixture(scope="session")
def adk_open() -> AtomicModel:
    return load_structure(PDB_small, topology=PSF)


@pytest.fixture(scope="session")
def adk_closed() -> AtomicModel:
    return load_structure(PDB_closed, topology=PSF)


@pytest.fixture(scope="session")
def model_1orc() -> AtomicModel:
    return load_structure(GEMMI_1ORC)
