"""Geometry checks of (deformed) bead / Cα models: bond lengths, clashes, RMSD."""

from __future__ import annotations

import numpy as np

from atomicspi_bayes.structure.align import rmsd
from atomicspi_bayes.structure.graph import nonbonded_pairs
from atomicspi_bayes.structure.priors import CA_BOND_CIS, CLASH_DISTANCE


def geometry_report(
    coords: np.ndarray,
    bonded: np.ndarray,
    ideal_lengths: np.ndarray,
    *,
    chain_index: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    bond_tolerance: float = 0.1,
    clash_distance: float = CLASH_DISTANCE,
    severe_clash_distance: float = CLASH_DISTANCE - 0.4,
) -> dict[str, float | int]:
    """Bond and clash statistics of Cα/bead coordinates ``(R, 3)`` Å, as a JSON-able dict.

    Keys: ``trans_bond_min/max`` (Å), ``trans_bonds_off`` (trans bonds outside
    ``ideal ± bond_tolerance``), ``cis_bond_min/max`` (Å, NaN without cis bonds),
    ``min_nonbonded`` (Å, over pairs with ``|i-j| ≥ 3`` or different chains),
    ``clashes`` (pairs below ``clash_distance``), ``severe_clashes`` (below
    ``severe_clash_distance``, i.e. an overlap > 0.4 Å as in MolProbity), and with a
    ``reference``: ``ca_rmsd`` (same frame) and ``ca_rmsd_superposed`` (Kabsch).
    """
    x = np.asarray(coords, dtype=np.float64)
    bonded = np.asarray(bonded, dtype=bool)
    ideal = np.asarray(ideal_lengths, dtype=np.float64)
    d = np.linalg.norm(np.diff(x, axis=0), axis=1)
    trans = bonded & (ideal > CA_BOND_CIS + 0.01)
    cis = bonded & ~trans
    pairs = nonbonded_pairs(x.shape[0], min_separation=3, chain_index=chain_index)
    dn = np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=1)
    out: dict[str, float | int] = {
        "trans_bond_min": float(d[trans].min()),
        "trans_bond_max": float(d[trans].max()),
        "trans_bonds_off": int(np.sum(np.abs(d[trans] - ideal[trans]) > bond_tolerance)),
        "cis_bond_min": float(d[cis].min()) if cis.any() else float("nan"),
        "cis_bond_max": float(d[cis].max()) if cis.any() else float("nan"),
        "min_nonbonded": float(dn.min()),
        "clashes": int(np.sum(dn < clash_distance)),
        "severe_clashes": int(np.sum(dn < severe_clash_distance)),
    }
    if reference is not None:
        out["ca_rmsd"] = rmsd(x, reference)
        out["ca_rmsd_superposed"] = rmsd(x, reference, superpose=True)
    return out
