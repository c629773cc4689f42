"""Coarse-graining to one bead per residue, and the map from bead motion back to atoms.

A bead sits on the residue's Cα (so the bead model, the ANM network and the Cα priors share
one set of nodes). Its scattering factor is the sum of the residue's atomic Peng Gaussians,
broadened by the spread of the residue's atoms about the Cα:

    f_bead(s) = Σ_i a_i exp(-b_i s²),  a_i = Σ_j a_ji,
    b_i = (Σ_j a_ji b_ji) / a_i + 8π² σ²,  σ² = Σ_j w_j |r_j - r_CA|² / (3 Σ_j w_j),

with ``w_j = f_j(0) = Σ_i a_ji``. The broadening is the Debye–Waller form of an isotropic
Gaussian cloud of per-axis variance σ² (SCIENCE.md §1: B = 8π²⟨u_x²⟩). The bead reproduces
the residue's forward scattering exactly (``Σ a`` is conserved) and its low-resolution shape
approximately; it is meant for images at ≳ 4 Å resolution.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.structure.atomic_model import AtomicModel
from atomicspi_bayes.structure.graph import ca_trace

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class BeadModel:
    """One bead per protein residue.

    Attributes:
        coords: ``(R, 3)`` float32 bead (= Cα) coordinates in Å.
        a: ``(R, 5)`` float32 Peng amplitudes of each bead in Å (sum over the residue's atoms).
        b: ``(R, 5)`` float32 Peng widths in Å² (a-weighted mean plus 8π²σ² broadening).
        atom_to_bead: ``(N,)`` int64, bead of each atom of the source model, ``-1`` for atoms
            in residues without a Cα (water, ions, ligands), which the bead model drops.
        residue_index: ``(R,)`` int64 residue (in the atomic model) of each bead.
        chain_index: ``(R,)`` int64 chain of each bead.
        bonded: ``(R-1,)`` bool, bead ``r`` and ``r+1`` are peptide-bonded (no chain end/break).
    """

    coords: np.ndarray
    a: np.ndarray
    b: np.ndarray
    atom_to_bead: np.ndarray
    residue_index: np.ndarray
    chain_index: np.ndarray
    bonded: np.ndarray

    @property
    def n_beads(self) -> int:
        return int(self.coords.shape[0])


def _peng_gaussians(elements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 5)`` Peng a (Å) and b (Å²) from gemmi's ``c4322`` table."""
    # TODO(struct): switch to physics.scattering.peng_gaussians once committed.
    import gemmi

    table: dict[str, tuple[list[float], list[float]]] = {}
    for sym in np.unique(elements):
        el = gemmi.Element(str(sym))
        if el.atomic_number == 0:
            raise InputFormatError(f"unknown element symbol {sym!r}: no Peng scattering factors")
        table[str(sym)] = (list(el.c4322.a), list(el.c4322.b))
    a = np.array([table[str(s)][0] for s in elements], dtype=np.float64)
    b = np.array([table[str(s)][1] for s in elements], dtype=np.float64)
    return a, b


def _bead_gaussians(
    a: np.ndarray, b: np.ndarray, coords: np.ndarray, centres: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sum atomic Gaussians ``(N, 5)`` into ``(G, 5)`` beads centred on ``centres`` ``(G, 3)``."""
    n_groups = centres.shape[0]
    a_bead = np.zeros((n_groups, 5))
    np.add.at(a_bead, groups, a)
    ab = np.zeros((n_groups, 5))
    np.add.at(ab, groups, a * b)
    w = a.sum(axis=1)
    r2 = np.sum((coords - centres[groups]) ** 2, axis=1)
    wr2 = np.zeros(n_groups)
    np.add.at(wr2, groups, w * r2)
    wsum = np.zeros(n_groups)
    np.add.at(wsum, groups, w)
    var_per_axis = wr2 / (3.0 * wsum)
    b_bead = ab / a_bead + 8.0 * np.pi**2 * var_per_axis[:, None]
    return a_bead, b_bead


def coarse_grain(model: AtomicModel) -> BeadModel:
    """One bead per protein residue, on the Cα, with the residue's summed scattering.

    Raises:
        InputFormatError: the model has no Cα atoms, or an element is unknown.
    """
    trace = ca_trace(model)
    n_res = model.n_residues
    res_to_bead = np.full(n_res, -1, dtype=np.int64)
    res_to_bead[trace.residue_index] = np.arange(trace.n_residues)
    atom_to_bead = res_to_bead[np.asarray(model.residue_index)]
    keep = atom_to_bead >= 0
    if not keep.all():
        logger.info("coarse_grain drops %d atoms in residues without CA", int((~keep).sum()))
    coords = np.asarray(model.coords, dtype=np.float64)
    a, b = _peng_gaussians(np.asarray(model.elements)[keep])
    centres = trace.coords.astype(np.float64)
    a_bead, b_bead = _bead_gaussians(a, b, coords[keep], centres, atom_to_bead[keep])
    return BeadModel(
        coords=trace.coords.astype(np.float32),
        a=a_bead.astype(np.float32),
        b=b_bead.astype(np.float32),
        atom_to_bead=atom_to_bead,
        residue_index=trace.residue_index,
        chain_index=trace.chain_index,
        bonded=trace.bonded,
    )


def bead_to_atom_displacements(bead_displacements: jnp.ndarray, atom_to_bead: np.ndarray):
    """Map bead displacements ``(..., R, 3)`` Å to atom displacements ``(..., N, 3)`` Å.

    Rigid per residue: every atom moves with its residue's bead (a translation; side-chain
    rotations are not modelled). Atoms without a bead (``atom_to_bead == -1``) stay put.
    Pure JAX, differentiable and batched over leading dimensions.
    """
    atom_to_bead = np.asarray(atom_to_bead)
    safe = np.where(atom_to_bead >= 0, atom_to_bead, 0)
    moved = jnp.take(jnp.asarray(bead_displacements), safe, axis=-2)
    keep = jnp.asarray((atom_to_bead >= 0)[:, None])
    return jnp.where(keep, moved, 0.0)


def atom_coords_from_beads(
    model: AtomicModel, beads: BeadModel, bead_coords: jnp.ndarray
) -> jnp.ndarray:
    """All-atom coordinates ``(..., N, 3)`` Å for deformed bead coordinates ``(..., R, 3)`` Å."""
    disp = jnp.asarray(bead_coords) - jnp.asarray(beads.coords)
    return jnp.asarray(model.coords) + bead_to_atom_displacements(disp, beads.atom_to_bead)
