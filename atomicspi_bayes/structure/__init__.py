"""Atomic models as graphs: coarse-graining, ANM normal modes, deformation and physics priors.

Public API:

- ``AtomicModel`` (atoms, residues, chains, bonds; shared with ``io``).
- ``ca_trace(model, max_bond_length=4.2) -> CATrace``; ``bonds_from_topology(topology)``;
  ``neighbour_pairs(coords, cutoff, *, min_separation=0, chain_index=None) -> (P, 2)``;
  ``pad_pairs(pairs, size=None) -> PairList``.
- ``coarse_grain(model) -> BeadModel(coords (R,3), a (R,5), b (R,5), atom_to_bead (N,), ...)``;
  ``bead_to_atom_displacements(disp (...,R,3), atom_to_bead) -> (...,N,3)``;
  ``atom_coords_from_beads(model, beads, bead_coords (...,R,3)) -> (...,N,3)``.
- ``anm_modes(coords (R,3), n_modes=20, cutoff=15.0, gamma=1.0) -> NormalModes(eigenvalues
  (K,), vectors (K,R,3))``; ``anm_hessian``; ``cumulative_overlap``; ``subspace_overlap``.
- ``kabsch_align(mobile, target)``, ``kabsch_transform(mobile, target) -> (R, t)``,
  ``rmsd(a, b, *, superpose=False)``; ``geometry_report(coords, bonded, ideal_lengths, *,
  chain_index=None, reference=None) -> dict`` (bond/clash/RMSD checks, numpy).
- ``fit_to_images(beads, images (B,L,L), rotations (B,3,3), shifts (B,2), *, pixel_size,
  noise_sigma, ctf_params=None, modes=None, config=FitConfig()) -> FitResult`` (MAP fit of
  mode amplitudes + per-bead refinement with the priors, optax Adam, known poses).
- ``deform(x0 (R,3), vectors (K,R,3), amplitudes (...,K), refinement=None) -> (...,R,3)``.
- priors (pure JAX, for ``numpyro.factor``): ``elastic_logprior``, ``ca_bond_logprior``,
  ``clash_logprior``, ``mode_logprior``; set-up: ``elastic_pairs``, ``clash_pairs``,
  ``ideal_bond_lengths``.
"""

from atomicspi_bayes.structure.align import kabsch_align, kabsch_transform, rmsd
from atomicspi_bayes.structure.anm import (
    NormalModes,
    anm_hessian,
    anm_modes,
    cumulative_overlap,
    subspace_overlap,
)
from atomicspi_bayes.structure.atomic_model import AtomicModel
from atomicspi_bayes.structure.coarse_grain import (
    BeadModel,
    atom_coords_from_beads,
    bead_to_atom_displacements,
    coarse_grain,
)
from atomicspi_bayes.structure.deform import deform
from atomicspi_bayes.structure.fitting import FitConfig, FitResult, fit_to_images
from atomicspi_bayes.structure.graph import (
    CATrace,
    PairList,
    bonds_from_topology,
    ca_trace,
    neighbour_pairs,
    pad_pairs,
)
from atomicspi_bayes.structure.priors import (
    ca_bond_logprior,
    clash_logprior,
    clash_pairs,
    elastic_logprior,
    elastic_pairs,
    ideal_bond_lengths,
    mode_logprior,
)
from atomicspi_bayes.structure.validation import geometry_report

__all__ = [
    "AtomicModel",
    "BeadModel",
    "CATrace",
    "FitConfig",
    "FitResult",
    "NormalModes",
    "PairList",
    "anm_hessian",
    "anm_modes",
    "atom_coords_from_beads",
    "bead_to_atom_displacements",
    "bonds_from_topology",
    "ca_bond_logprior",
    "ca_trace",
    "clash_logprior",
    "clash_pairs",
    "coarse_grain",
    "cumulative_overlap",
    "deform",
    "elastic_logprior",
    "elastic_pairs",
    "fit_to_images",
    "geometry_report",
    "ideal_bond_lengths",
    "kabsch_align",
    "kabsch_transform",
    "mode_logprior",
    "neighbour_pairs",
    "pad_pairs",
    "rmsd",
    "subspace_overlap",
]
