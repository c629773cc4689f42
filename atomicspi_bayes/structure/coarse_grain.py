"""Coarse-graining to one bead per residue, and the map from bead motion back to atoms.

A bead's *node* sits on the residue's Cα, so the bead model, the ANM network and the Cα
priors share one set of coordinates. Its *scattering* is one 5-term Gaussian placed at the
residue's ``f(0)``-weighted centroid, carried rigidly with the node by a fixed offset
(``BeadModel.offsets``): scattering centre = node + offset. The Gaussian sums the residue's
atomic Peng Gaussians and is broadened by the spread of its atoms about the centroid
(second-order moment matching; ``physics.scattering.bead_gaussians``)::

    a_i = Σ_j a_ji,   b_i = Σ_j a_ji (b_ji + 8π² |r_j - c|² / 3) / a_i

(8π²σ² is the B-factor of an isotropic cloud with per-axis variance σ², SCIENCE.md §1).
Forward scattering (``Σ a``) is conserved exactly and the low-resolution shape is kept to
order k²; the bead model is meant for images at resolutions worse than about 4–6 Å.
Atomic B-factors are not included (coordinates, not thermal smearing, are the variables).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.physics.scattering import bead_gaussians, peng_gaussians
from atomicspi_bayes.structure.atomic_model import AtomicModel
from atomicspi_bayes.structure.graph import ca_trace

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class BeadModel:
    """One bead per protein residue.

    Attributes:
        coords: ``(R, 3)`` float32 bead node (= Cα) coordinates in Å.
        a: ``(R, 5)`` float32 Peng amplitudes of each bead in Å (sum over the residue's atoms).
        b: ``(R, 5)`` float32 Peng widths in Å² (a-weighted mean plus spread broadening).
        atom_to_bead: ``(N,)`` int64, bead of each atom of the source model, ``-1`` for atoms
            in residues without a Cα (water, ions, ligands), which the bead model drops.
        residue_index: ``(R,)`` int64 residue (in the atomic model) of each bead.
        chain_index: ``(R,)`` int64 chain of each bead.
        bonded: ``(R-1,)`` bool, bead ``r`` and ``r+1`` are peptide-bonded (no chain end/break).
        offsets: ``(R, 3)`` float32 Å, scattering centre minus node (centroid minus Cα).
    """

    coords: np.ndarray
    a: np.ndarray
    b: np.ndarray
    atom_to_bead: np.ndarray
    residue_index: np.ndarray
    chain_index: np.ndarray
    bonded: np.ndarray
    offsets: np.ndarray | None = None

    @property
    def n_beads(self) -> int:
        return int(self.coords.shape[0])

    def scattering_coords(self, coords=None):
        """Scattering centres ``(..., R, 3)`` Å for node coordinates ``(..., R, 3)`` (JAX).

        ``coords`` defaults to the reference nodes; pass deformed nodes to get the centres to
        hand to the projector together with ``a`` and ``b``.
        """
        nodes = jnp.asarray(self.coords if coords is None else coords)
        if self.offsets is None:
            return nodes
        return nodes + jnp.asarray(self.offsets, dtype=nodes.dtype)


def coarse_grain(model: AtomicModel) -> BeadModel:
    """One bead per protein residue: node on the Cα, scattering Gaussian at the centroid.

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
    a, b = peng_gaussians(np.asarray(model.elements)[keep])
    centre, a_bead, b_bead = (
        np.asarray(v, dtype=np.float64)
        for v in bead_gaussians(a, b, coords[keep], atom_to_bead[keep], trace.n_residues)
    )
    return BeadModel(
        coords=trace.coords.astype(np.float32),
        a=a_bead.astype(np.float32),
        b=b_bead.astype(np.float32),
        atom_to_bead=atom_to_bead,
        residue_index=trace.residue_index,
        chain_index=trace.chain_index,
        bonded=trace.bonded,
        offsets=(centre - trace.coords.astype(np.float64)).astype(np.float32),
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
