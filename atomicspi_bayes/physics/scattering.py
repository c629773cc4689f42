"""Atomic scattering factors as sums of Gaussians (SCIENCE.md §1, §7).

Frequency symbol: every ``b`` here multiplies ``s² = (sinθ/λ)² = k²/4`` (k = 1/d, Å⁻¹):
``f(k) = Σ_i a_i exp(-b_i k²/4)``.

Tables come from gemmi (a maintained source), not hand-typed:

* electrons: ``gemmi.Element(sym).c4322`` = International Tables Vol. C, Table 4.3.2.2 =
  Peng, Ren, Dudarev & Whelan (1996) Acta Cryst A52:257, elastic, neutral atoms, 5 Gaussians
  fitted on 0 <= s <= 2 Å⁻¹ (``a`` in Å, ``b`` in Å²).
* X-rays: ``gemmi.Element(sym).it92`` = International Tables Vol. C, Table 6.1.1.4
  (Cromer-Mann), 4 Gaussians + constant (``a``, ``c`` in electrons, ``b`` in Å²).

Both are for neutral atoms; gemmi carries no ion parameters for these tables, so ions (Na⁺,
Mg²⁺, Cl⁻, Zn²⁺ ...) get their neutral element's factor (a small error at low k only).
The table lookups are NumPy (done once, at model construction); :func:`bead_gaussians` is JAX.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from atomicspi_bayes.errors import InputFormatError

__all__ = ["bead_gaussians", "cromer_mann", "element_symbols", "peng_gaussians"]


@lru_cache(maxsize=256)
def _element(symbol: str):
    import gemmi

    clean = symbol.strip()
    el = gemmi.Element(clean) if clean else None
    # gemmi maps unknown symbols to "X" (whose table rows are not zero): reject them here.
    if el is None or el.name == "X" or el.atomic_number == 0:
        raise InputFormatError(
            f"unknown chemical element {symbol!r}: give element symbols such as 'C', 'N', 'Fe' "
            "(take them from the element column or a PSF topology, not from atom names)"
        )
    return el


def element_symbols(elements: Sequence[str] | np.ndarray) -> np.ndarray:
    """Normalise element symbols (``"FE"`` -> ``"Fe"``, ``"D"`` -> ``"H"``); raise on unknowns."""
    names = [_element(str(e)).name for e in np.asarray(elements).ravel()]
    return np.array(["H" if n == "D" else n for n in names], dtype=object)


@lru_cache(maxsize=256)
def _peng_row(symbol: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    coef = _element(symbol).c4322
    a, b = (tuple(coef.a), tuple(coef.b)) if coef is not None else ((), ())
    if len(a) != 5 or sum(a) <= 0:
        raise InputFormatError(f"no Peng (1996) electron scattering factor for element {symbol!r}")
    return a, b


@lru_cache(maxsize=256)
def _it92_row(symbol: str) -> tuple[tuple[float, ...], tuple[float, ...], float]:
    coef = _element(symbol).it92
    if coef is None or len(coef.a) != 4 or sum(coef.a) + coef.c <= 0:
        raise InputFormatError(f"no Cromer-Mann (IT92) X-ray scattering factor for {symbol!r}")
    return tuple(coef.a), tuple(coef.b), float(coef.c)


def peng_gaussians(elements: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Peng (1996) electron scattering factors of ``(N,)`` element symbols.

    Returns:
        ``a`` ``(N, 5)`` float32 in Å and ``b`` ``(N, 5)`` float32 in Å², such that
        ``f_e(k) = Σ_i a_i exp(-b_i k²/4)`` (Å), with ``f_e(0) = Σ_i a_i`` (C: 2.5088 Å).
        Add an atom's B-factor to every ``b_i`` to broaden it.
    """
    rows = [_peng_row(str(e)) for e in np.asarray(elements).ravel()]
    a = np.array([r[0] for r in rows], dtype=np.float32).reshape(-1, 5)
    b = np.array([r[1] for r in rows], dtype=np.float32).reshape(-1, 5)
    return a, b


def cromer_mann(elements: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cromer-Mann X-ray form factors of ``(N,)`` element symbols.

    Returns:
        ``a`` ``(N, 4)`` (electrons), ``b`` ``(N, 4)`` (Å²), ``c`` ``(N,)`` (electrons), float32:
        ``f0(k) = Σ_i a_i exp(-b_i k²/4) + c`` with ``f0(0) ≈ Z`` (C 6.00, O 8.00, S 16.00).
    """
    rows = [_it92_row(str(e)) for e in np.asarray(elements).ravel()]
    a = np.array([r[0] for r in rows], dtype=np.float32).reshape(-1, 4)
    b = np.array([r[1] for r in rows], dtype=np.float32).reshape(-1, 4)
    c = np.array([r[2] for r in rows], dtype=np.float32)
    return a, b, c


@partial(jax.jit, static_argnames=("n_groups",))
def bead_gaussians(
    a: Array, b: Array, coords: Array, groups: Array, n_groups: int
) -> tuple[Array, Array, Array]:
    """Coarse-grain atoms into one Gaussian bead per group (e.g. per residue).

    Args:
        a: ``(N, K)`` Gaussian amplitudes of the atoms (Å, Peng ``a``).
        b: ``(N, K)`` Gaussian widths in Å² (Peng ``b`` plus the atom's B-factor).
        coords: ``(N, 3)`` atom positions in Å.
        groups: ``(N,)`` int, the group (bead) of each atom, in ``[0, n_groups)``.
        n_groups: number of beads G (static).

    Returns:
        ``bead_coords`` ``(G, 3)`` Å, ``bead_a`` ``(G, K)`` Å, ``bead_b`` ``(G, K)`` Å².

    The approximation (second-order moment matching, isotropic): the bead sits at the
    ``f(0)``-weighted centroid ``c = Σ_j f_j(0) r_j / Σ_j f_j(0)`` of its atoms, each Gaussian
    component keeps the summed amplitude ``A_i = Σ_j a_ji``, and its width is the
    amplitude-weighted mean width plus the spread of the atoms about the centroid::

        B_i = Σ_j a_ji (b_ji + 8π² |r_j - c|² / 3) / A_i

    (8π²σ² is the B-factor of an isotropic Gaussian with per-axis variance σ² = |d|²/3).
    The bead's scattering factor then equals the group's orientation-averaged structure factor
    Σ_j f_j(k) e^{-2πi k·(r_j - c)} to order k²: exact at k = 0 (total scattering conserved),
    good for |k| ≲ 1/(2π·R_g) of the group (≈ 1/13 Å⁻¹ for a residue, i.e. resolutions worse
    than ~10 Å), and increasingly blurred beyond. Empty groups give zero amplitude.
    Differentiable in ``coords`` (use it inside a model whose atoms move).
    """
    a = jnp.asarray(a)
    b = jnp.asarray(b)
    coords = jnp.asarray(coords)
    groups = jnp.asarray(groups)
    seg = jax.ops.segment_sum
    f0 = jnp.sum(a, axis=-1)  # (N,)
    w = seg(f0, groups, num_segments=n_groups)  # (G,)
    safe_w = jnp.where(w > 0, w, 1.0)
    centre = seg(f0[:, None] * coords, groups, num_segments=n_groups) / safe_w[:, None]
    d2 = jnp.sum((coords - centre[groups]) ** 2, axis=-1)  # (N,)
    spread_b = (8.0 * jnp.pi**2 / 3.0) * d2  # (N,)
    amp = seg(a, groups, num_segments=n_groups)  # (G, K)
    safe_amp = jnp.where(amp > 0, amp, 1.0)
    width = seg(a * (b + spread_b[:, None]), groups, num_segments=n_groups) / safe_amp
    return centre, amp, width
