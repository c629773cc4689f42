"""The residue graph of an atomic model: covalent bonds, the Cα trace and neighbour lists.

Everything here runs once at set-up time on NumPy arrays (``scipy.spatial.cKDTree`` for the
neighbour search). What JAX code needs later is returned as a :class:`PairList`: pair indices
padded to a static length with a mask, so that a jitted prior never changes shape.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy.spatial import cKDTree

from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.structure.atomic_model import AtomicModel

logger = logging.getLogger(__name__)

#: Longest Cα–Cα distance (Å) still counted as a peptide bond; trans is 3.80 Å, cis 2.9 Å.
MAX_CA_BOND_LENGTH = 4.2


class PairList(NamedTuple):
    """Static-shape list of index pairs for jitted code (a JAX pytree).

    Attributes:
        i: ``(P,)`` int32 first index of each pair (padding rows hold 0).
        j: ``(P,)`` int32 second index (padding rows hold 0).
        mask: ``(P,)`` bool, ``True`` for real pairs and ``False`` for padding.
    """

    i: Any
    j: Any
    mask: Any

    @property
    def n_valid(self) -> int:
        return int(np.asarray(self.mask).sum())


@dataclass(frozen=True, eq=False)
class CATrace:
    """The Cα atoms of a model, one node per protein residue, in chain order.

    Attributes:
        atom_indices: ``(R,)`` int, index of each Cα in the atomic model.
        residue_index: ``(R,)`` int, residue (0-based, as in :class:`AtomicModel`) of each Cα.
        chain_index: ``(R,)`` int, chain of each Cα.
        coords: ``(R, 3)`` float32 Cα coordinates in Å.
        bonded: ``(R-1,)`` bool, ``True`` where Cα ``r`` and ``r+1`` are joined by a peptide
            bond: same chain and distance ≤ :data:`MAX_CA_BOND_LENGTH`; ``False`` marks a
            chain end or a chain break (missing residues).
    """

    atom_indices: np.ndarray
    residue_index: np.ndarray
    chain_index: np.ndarray
    coords: np.ndarray
    bonded: np.ndarray

    @property
    def n_residues(self) -> int:
        return int(self.atom_indices.shape[0])

    @property
    def bond_pairs(self) -> np.ndarray:
        """``(B, 2)`` int, consecutive bonded Cα pairs ``(r, r+1)``."""
        first = np.flatnonzero(self.bonded)
        return np.stack([first, first + 1], axis=1)

    @property
    def n_breaks(self) -> int:
        """Number of chain breaks inside chains (missing residues), not counting chain ends."""
        same_chain = self.chain_index[1:] == self.chain_index[:-1]
        return int(np.sum(same_chain & ~self.bonded))


def bonds_from_topology(topology: Any) -> np.ndarray:
    """Covalent bonds of an ``mdtraj.Topology`` as ``(E, 2)`` int64 atom-index pairs.

    mdtraj adds standard-residue bonds from its templates (and CONECT records) when it loads
    a PDB/mmCIF/PSF file. Pairs are ordered ``i < j``, unique and sorted.
    """
    pairs = np.array([(b[0].index, b[1].index) for b in topology.bonds], dtype=np.int64)
    if pairs.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.sort(pairs, axis=1)
    return np.unique(pairs, axis=0)


def ca_trace(model: AtomicModel, max_bond_length: float = MAX_CA_BOND_LENGTH) -> CATrace:
    """The Cα trace of ``model`` with chain ends and chain breaks marked.

    Args:
        model: the atomic model; Cα atoms are atoms named ``CA`` with element ``C``.
        max_bond_length: Å, longest Cα–Cα distance counted as bonded.

    Raises:
        InputFormatError: the model has no Cα atoms (e.g. nucleic acid only, or ``CA``
            mislabelled as calcium).
    """
    idx = model.ca_indices
    if idx.size == 0:
        raise InputFormatError(
            f"structure with {model.n_atoms} atoms has no protein Cα atoms (name CA, element C);"
            " the residue-level model needs a protein (check the element column / topology)"
        )
    res = np.asarray(model.residue_index)[idx]
    # Alternate locations can give two CA atoms in one residue: keep the first.
    _, first = np.unique(res, return_index=True)
    if first.size != idx.size:
        n_dup = idx.size - first.size
        logger.warning("%d residues have more than one CA atom; using the first", n_dup)
        keep = np.sort(first)
        idx, res = idx[keep], res[keep]
    chain = np.asarray(model.chain_index)[res]
    coords = np.asarray(model.coords, dtype=np.float32)[idx]
    dist = np.linalg.norm(np.diff(coords.astype(np.float64), axis=0), axis=1)
    bonded = (chain[1:] == chain[:-1]) & (dist <= max_bond_length)
    return CATrace(
        atom_indices=idx.astype(np.int64),
        residue_index=res.astype(np.int64),
        chain_index=chain.astype(np.int64),
        coords=coords,
        bonded=bonded,
    )


def neighbour_pairs(
    coords: np.ndarray,
    cutoff: float,
    *,
    min_separation: int = 0,
    chain_index: np.ndarray | None = None,
) -> np.ndarray:
    """All pairs of points within ``cutoff`` Å (distance ≤ cutoff), as ``(P, 2)`` int64, ``i < j``.

    Args:
        coords: ``(R, 3)`` coordinates in Å.
        cutoff: Å, inclusive (as ProDy's ANM).
        min_separation: drop pairs with ``|i - j| < min_separation`` inside one chain
            (e.g. 3 to exclude bonded and 1–3 neighbours of a Cα trace). 0 keeps all.
        chain_index: ``(R,)`` chain of each point; pairs from different chains are never
            sequence-excluded. ``None`` treats all points as one chain.
    """
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise InputFormatError(f"coords must have shape (R, 3), got {coords.shape}")
    if not cutoff > 0:
        raise ConfigError(f"neighbour cutoff must be > 0 Å, got {cutoff}")
    pairs = cKDTree(coords).query_pairs(r=float(cutoff), output_type="ndarray").astype(np.int64)
    if pairs.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.sort(pairs, axis=1)
    if min_separation > 0:
        sep_ok = (pairs[:, 1] - pairs[:, 0]) >= min_separation
        if chain_index is not None:
            chain_index = np.asarray(chain_index)
            sep_ok |= chain_index[pairs[:, 0]] != chain_index[pairs[:, 1]]
        pairs = pairs[sep_ok]
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return pairs[order]


def nonbonded_pairs(
    n_points: int, *, min_separation: int = 3, chain_index: np.ndarray | None = None
) -> np.ndarray:
    """All pairs ``i < j`` with ``|i - j| ≥ min_separation`` (or in different chains), ``(P, 2)``.

    The complete list (O(R²) pairs) used for clash checks that must stay valid at any
    deformation; for large models use :func:`neighbour_pairs` with a buffer instead.
    """
    i, j = np.triu_indices(n_points, k=1)
    keep = (j - i) >= min_separation
    if chain_index is not None:
        chain_index = np.asarray(chain_index)
        keep |= chain_index[i] != chain_index[j]
    return np.stack([i[keep], j[keep]], axis=1).astype(np.int64)


def pad_pairs(pairs: np.ndarray, size: int | None = None) -> PairList:
    """Pad ``(P, 2)`` pairs to a static length ``size`` (default ``P``) for jitted code.

    Raises:
        ConfigError: ``size < P`` (the list would be truncated).
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    n = pairs.shape[0]
    size = n if size is None else int(size)
    if size < n:
        raise ConfigError(f"pair list of {n} pairs does not fit a padded size of {size}")
    i = np.zeros(size, dtype=np.int32)
    j = np.zeros(size, dtype=np.int32)
    mask = np.zeros(size, dtype=bool)
    i[:n], j[:n], mask[:n] = pairs[:, 0], pairs[:, 1], True
    return PairList(i=i, j=j, mask=mask)


def connected_components(n_points: int, pairs: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of the graph with ``n_points`` nodes and edges ``pairs``.

    Returns ``(n_components, labels (n_points,))``.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as _cc

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    adj = coo_matrix(
        (np.ones(pairs.shape[0]), (pairs[:, 0], pairs[:, 1])), shape=(n_points, n_points)
    )
    n, labels = _cc(adj, directed=False)
    return int(n), labels
