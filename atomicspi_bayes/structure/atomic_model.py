"""The atomic model of a particle: atoms with their chemistry and covalent graph."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class AtomicModel:
    """Atoms of one structure, all arrays indexed by atom.

    Attributes:
        coords: ``(N, 3)`` float32 Cartesian coordinates in Å.
        elements: ``(N,)`` element symbols, capitalised (``"C"``, ``"Fe"``); never guessed
            from a CHARMM atom name (``CA`` in a protein is carbon, not calcium).
        atom_names: ``(N,)`` atom names as in the file (``"CA"``, ``"HG1"``).
        residue_index: ``(N,)`` int, 0-based running index of the residue the atom belongs to.
        residue_names: ``(R,)`` residue names (``"ALA"``), one per residue.
        residue_ids: ``(R,)`` int, residue sequence numbers as in the file.
        chain_index: ``(R,)`` int, 0-based chain of each residue.
        chain_ids: ``(C,)`` chain identifiers as in the file (may be ``""``).
        b_factors: ``(N,)`` float32 isotropic B-factors in Å², or ``None`` if the file has none.
        bonds: ``(E, 2)`` int, covalent bonds as pairs of atom indices (``i < j``).
    """

    coords: np.ndarray
    elements: np.ndarray
    atom_names: np.ndarray
    residue_index: np.ndarray
    residue_names: np.ndarray
    residue_ids: np.ndarray
    chain_index: np.ndarray
    chain_ids: np.ndarray
    b_factors: np.ndarray | None = None
    bonds: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))

    @property
    def n_atoms(self) -> int:
        return int(self.coords.shape[0])

    @property
    def n_residues(self) -> int:
        return int(self.residue_names.shape[0])

    @property
    def n_chains(self) -> int:
        return int(self.chain_ids.shape[0])

    @property
    def ca_indices(self) -> np.ndarray:
        """``(R_ca,)`` atom indices of the Cα atoms (protein residues only), in chain order."""
        is_ca = (self.atom_names == "CA") & (self.elements == "C")
        return np.flatnonzero(is_ca)

    def with_coords(self, coords: np.ndarray) -> AtomicModel:
        """The same model with new ``(N, 3)`` coordinates in Å (e.g. a trajectory frame)."""
        coords = np.asarray(coords, dtype=np.float32)
        if coords.shape != self.coords.shape:
            raise ValueError(f"coords shape {coords.shape} != model shape {self.coords.shape}")
        return AtomicModel(**{**self.__dict__, "coords": coords})
