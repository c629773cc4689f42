"""X-ray single-particle diffraction on the Ewald sphere (XFEL), with a Poisson photon model.

Conventions (SCIENCE.md §7 and the frequency symbols of SCIENCE.md):

- ``k`` is the scattering vector in 1/Å with ``|k| = 2 sinθ/λ = 1/d``; ``s = |k|/2`` is the
  Cromer-Mann argument ``sinθ/λ``; ``q = 2π|k|`` (used only for the Guinier law).
- The beam travels along +z: ``k_in = (0, 0, 1/λ)``. A pixel at lab position ``(x, y, D)``
  (``D`` the detector distance, ``r = sqrt(x² + y² + D²)``) sees ``k = (x, y, D)/(λ r) - k_in``,
  so ``k_z = -(1 - cos2θ)/λ`` carries the curvature of the Ewald sphere.
- Detector arrays are ``(L, L)`` with index ``[row, col] = [y, x]`` (like cryo-EM images):
  ``x = (col - cx)·p``, ``y = (row - cy)·p``; the default beam centre is pixel
  ``(L//2, L//2)`` (0-based), the rotation centre of SCIENCE.md §3, so the flat-detector
  Friedel mate of pixel ``(cy + i, cx + j)`` is ``(cy - i, cx - j)``.
- Pose: the RELION matrix ``A`` of the cryo-EM side rotates the model into the particle,
  ``r -> A r``. The molecular transform of the posed particle at the detector ``k`` is
  ``F(k) = Σ_j f_j(|k|/2) e^{-B|k|²/4} e^{-2πi k·(A r_j)} = F_model(Aᵀ k)``.
- Intensity (mean photons per pixel): ``μ = J0 · r_e² · Ω_pix · P · |F(k)|² (+ background)``
  with the fluence ``J0`` in photons/Å², ``r_e = 2.8179403e-5 Å``, the pixel solid angle
  ``Ω_pix = p² D / r³`` (sr) and the polarization factor ``P``. Counts ``n ~ Poisson(μ)``.

Cost. For ``P`` pixels, ``N`` scatterers and ``T`` scatterer types (elements), one pattern is
``phases = K (P, 3) @ Xᵀ (3, N)`` (a matrix product, in cycles), ``cos``/``sin`` of the ``P × N``
phases (polynomial float32 sin/cos of ``physics._fastmath``, ~1e-7 absolute error),
then ``[cos | sin] (P, N) @ W (N, T)`` (composition weights) and a ``T``-term sum with the
form factors ``f_t(|k|)`` evaluated once per pixel and type. Work and memory both scale as
``P · N`` (about ``2 P N`` transcendental evaluations plus ``2 P N (T + 3)`` multiply-adds);
the form factors cost only ``P · T``. A 128² pattern of all-atom adenylate kinase (3341 atoms,
5 elements) is 5.5e7 phases; the residue-bead model (214 beads) is 15x cheaper. The optional
``pixel_chunk`` evaluates the pixels in blocks under :func:`jax.lax.map` so memory is
``pixel_chunk · N`` instead of ``P · N``.

Everything here is pure JAX (float32, jit/vmap/grad friendly) except the constructors of the
detector and the scatterer tables, which run once in NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.physics._fastmath import sincos_turns
from atomicspi_bayes.physics.scattering import cromer_mann, element_symbols

__all__ = [
    "CLASSICAL_ELECTRON_RADIUS_ANGSTROM",
    "HC_KEV_ANGSTROM",
    "DetectorArrays",
    "DetectorGeometry",
    "XrayScatterers",
    "atomic_scatterers",
    "bead_scatterers",
    "cromer_mann_table",
    "detector_arrays",
    "form_factors",
    "intensity",
    "mean_patterns",
    "molecular_transform",
    "pixel_mask",
    "poisson_loglik",
    "polarization_factors",
    "radius_of_gyration",
    "sample_photons",
    "scattering_vectors",
    "simulate_patterns",
    "solid_angles",
]

CLASSICAL_ELECTRON_RADIUS_ANGSTROM = 2.8179403262e-5
"""Thomson scattering length r_e in Å (CODATA 2018)."""

HC_KEV_ANGSTROM = 12.398419843320026
"""h·c in keV·Å: photon wavelength λ[Å] = 12.398 / E[keV]."""

_HIGHEST = jax.lax.Precision.HIGHEST  # no TF32/bf16 shortcut on GPUs: phases need full float32


# ---- detector --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DetectorGeometry:
    """A flat square detector normal to the beam (configuration, validated on construction).

    Give exactly one of ``photon_energy_kev`` and ``wavelength_angstrom``.

    Attributes:
        n_pixels: ``L``, the detector is ``L x L`` pixels.
        pixel_size_um: pixel pitch in µm (AGIPD 200, Jungfrau 75).
        distance_mm: sample-detector distance in mm.
        photon_energy_kev: photon energy in keV (λ = 12.398/E Å).
        wavelength_angstrom: photon wavelength in Å.
        beam_center_px: ``(x, y)`` = ``(col, row)`` of the direct beam in pixels (0-based,
            may be fractional); ``None`` means ``(L//2, L//2)``.
        beam_stop_radius_px: pixels whose centre lies closer than this to the beam centre
            are not measured (0 = no beam stop).
        gap_mask: optional ``(L, L)`` bool, ``True`` where a pixel is NOT measured
            (module gaps, dead pixels).
        polarization: ``"x"`` / ``"y"`` for a beam linearly polarised along that axis
            (``P = 1 - (x/r)²`` resp. ``1 - (y/r)²``), ``"unpolarized"`` for
            ``P = (1 + cos²2θ)/2``, or ``"none"`` for ``P = 1``.
    """

    n_pixels: int
    pixel_size_um: float
    distance_mm: float
    photon_energy_kev: float | None = None
    wavelength_angstrom: float | None = None
    beam_center_px: tuple[float, float] | None = None
    beam_stop_radius_px: float = 0.0
    gap_mask: np.ndarray | None = None
    polarization: Literal["x", "y", "unpolarized", "none"] = "x"

    def __post_init__(self) -> None:
        if not isinstance(self.n_pixels, int | np.integer) or self.n_pixels < 2:
            raise ConfigError(f"detector n_pixels={self.n_pixels!r} must be an integer >= 2")
        _require_positive("pixel_size_um", self.pixel_size_um)
        _require_positive("distance_mm", self.distance_mm)
        given = (self.photon_energy_kev is not None) + (self.wavelength_angstrom is not None)
        if given != 1:
            raise ConfigError(
                "detector needs exactly one of photon_energy_kev and wavelength_angstrom, "
                f"got photon_energy_kev={self.photon_energy_kev}, "
                f"wavelength_angstrom={self.wavelength_angstrom}"
            )
        if self.photon_energy_kev is not None:
            _require_positive("photon_energy_kev", self.photon_energy_kev)
        else:
            _require_positive("wavelength_angstrom", self.wavelength_angstrom)
        if self.beam_center_px is not None:
            centre = np.asarray(self.beam_center_px, dtype=float)
            if centre.shape != (2,) or not np.all(np.isfinite(centre)):
                raise ConfigError(
                    f"beam_center_px={self.beam_center_px!r} must be two finite numbers (x, y)"
                )
        if not np.isfinite(self.beam_stop_radius_px) or self.beam_stop_radius_px < 0:
            raise ConfigError(
                f"beam_stop_radius_px={self.beam_stop_radius_px} must be finite and >= 0"
            )
        if self.gap_mask is not None:
            gaps = np.asarray(self.gap_mask)
            if gaps.shape != (self.n_pixels, self.n_pixels):
                raise ConfigError(
                    f"gap_mask shape {gaps.shape} != detector shape "
                    f"({self.n_pixels}, {self.n_pixels}); pass an (L, L) bool array"
                )
        if self.polarization not in ("x", "y", "unpolarized", "none"):
            raise ConfigError(
                f"polarization={self.polarization!r}; use 'x', 'y', 'unpolarized' or 'none'"
            )
        if not np.any(pixel_mask(self)):
            raise ConfigError(
                f"beam stop (radius {self.beam_stop_radius_px} px) and gap mask cover all "
                f"{self.n_pixels}x{self.n_pixels} pixels; shrink the beam stop or the gaps"
            )

    @property
    def wavelength(self) -> float:
        """Photon wavelength λ in Å."""
        if self.wavelength_angstrom is not None:
            return float(self.wavelength_angstrom)
        return HC_KEV_ANGSTROM / float(self.photon_energy_kev)

    @property
    def energy_kev(self) -> float:
        """Photon energy in keV."""
        return HC_KEV_ANGSTROM / self.wavelength

    @property
    def centre_px(self) -> tuple[float, float]:
        """Beam centre ``(x, y)`` = ``(col, row)`` in pixels."""
        if self.beam_center_px is None:
            half = float(self.n_pixels // 2)
            return (half, half)
        return (float(self.beam_center_px[0]), float(self.beam_center_px[1]))

    @property
    def max_k(self) -> float:
        """Largest ``|k|`` (1/Å) reached on the detector (at a corner pixel)."""
        return float(np.max(np.linalg.norm(_scattering_vectors_np(self), axis=-1)))

    def to_dict(self) -> dict:
        """Plain JSON-able description (the gap mask is reduced to its pixel count)."""
        return {
            "n_pixels": int(self.n_pixels),
            "pixel_size_um": float(self.pixel_size_um),
            "distance_mm": float(self.distance_mm),
            "photon_energy_kev": self.energy_kev,
            "wavelength_angstrom": self.wavelength,
            "beam_center_px": list(self.centre_px),
            "beam_stop_radius_px": float(self.beam_stop_radius_px),
            "n_gap_pixels": 0 if self.gap_mask is None else int(np.sum(self.gap_mask)),
            "polarization": self.polarization,
        }


def _require_positive(name: str, value: float | None) -> None:
    if value is None or not np.isfinite(value) or value <= 0:
        raise ConfigError(f"detector {name}={value} is not physical; it must be finite and > 0")


def _pixel_positions_np(geometry: DetectorGeometry) -> tuple[np.ndarray, np.ndarray, float]:
    """Lab positions (x, y) of the pixel centres, each ``(L, L)`` in Å, and D in Å."""
    n = geometry.n_pixels
    p = geometry.pixel_size_um * 1e4  # µm -> Å
    cx, cy = geometry.centre_px
    idx = np.arange(n, dtype=np.float64)
    x = np.broadcast_to((idx[None, :] - cx) * p, (n, n))
    y = np.broadcast_to((idx[:, None] - cy) * p, (n, n))
    return x, y, geometry.distance_mm * 1e7  # mm -> Å


def _scattering_vectors_np(geometry: DetectorGeometry) -> np.ndarray:
    x, y, d = _pixel_positions_np(geometry)
    lam = geometry.wavelength
    r = np.sqrt(x * x + y * y + d * d)
    return np.stack([x / (lam * r), y / (lam * r), (d / r - 1.0) / lam], axis=-1)


def scattering_vectors(geometry: DetectorGeometry) -> jax.Array:
    """Scattering vectors ``k = k_out - k_in`` of the pixel centres, ``(L, L, 3)`` in 1/Å.

    On the Ewald sphere: ``|k| = 2 sinθ/λ`` and ``k_z = -(1 - cos2θ)/λ``.
    """
    return jnp.asarray(_scattering_vectors_np(geometry), dtype=jnp.float32)


def solid_angles(geometry: DetectorGeometry) -> jax.Array:
    """Solid angle of each pixel in sr, ``Ω = p² D / r³`` (small-pixel approximation)."""
    x, y, d = _pixel_positions_np(geometry)
    p = geometry.pixel_size_um * 1e4
    r = np.sqrt(x * x + y * y + d * d)
    return jnp.asarray(p * p * d / r**3, dtype=jnp.float32)


def polarization_factors(geometry: DetectorGeometry) -> jax.Array:
    """Polarization factor ``P`` of each pixel (dimensionless, in [0, 1])."""
    x, y, d = _pixel_positions_np(geometry)
    r2 = x * x + y * y + d * d
    if geometry.polarization == "x":
        pol = 1.0 - x * x / r2  # = 1 - sin²2θ cos²φ
    elif geometry.polarization == "y":
        pol = 1.0 - y * y / r2
    elif geometry.polarization == "unpolarized":
        pol = 0.5 * (1.0 + d * d / r2)  # (1 + cos²2θ)/2
    else:
        pol = np.ones_like(r2)
    return jnp.asarray(pol, dtype=jnp.float32)


def pixel_mask(geometry: DetectorGeometry) -> np.ndarray:
    """``(L, L)`` bool NumPy array, ``True`` where a pixel is measured (not beam stop / gap)."""
    n = geometry.n_pixels
    cx, cy = geometry.centre_px
    idx = np.arange(n, dtype=np.float64)
    rho2 = (idx[None, :] - cx) ** 2 + (idx[:, None] - cy) ** 2
    mask = rho2 >= geometry.beam_stop_radius_px**2
    if geometry.gap_mask is not None:
        mask &= ~np.asarray(geometry.gap_mask, dtype=bool)
    return mask


class DetectorArrays(NamedTuple):
    """The per-pixel arrays of a detector, as a pytree to pass into jitted functions.

    Attributes:
        k: ``(L, L, 3)`` float32 scattering vectors in 1/Å.
        pixel_factor: ``(L, L)`` float32 ``r_e² · Ω · P`` in Å²·sr, zero on masked pixels;
            ``μ = J0 · pixel_factor · |F|²``.
        mask: ``(L, L)`` bool, ``True`` where the pixel is measured.
    """

    k: jax.Array
    pixel_factor: jax.Array
    mask: jax.Array


def detector_arrays(geometry: DetectorGeometry) -> DetectorArrays:
    """Evaluate the geometry once: scattering vectors, ``r_e²ΩP`` and the pixel mask."""
    mask = pixel_mask(geometry)
    factor = CLASSICAL_ELECTRON_RADIUS_ANGSTROM**2 * solid_angles(geometry)
    factor = factor * polarization_factors(geometry) * jnp.asarray(mask, dtype=jnp.float32)
    return DetectorArrays(scattering_vectors(geometry), factor, jnp.asarray(mask))


# ---- form factors and scatterers -------------------------------------------------------


def cromer_mann_table(elements) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cromer-Mann coefficients (International Tables C 6.1.1.4, gemmi ``it92``) per element.

    Thin wrapper over :func:`atomicspi_bayes.physics.scattering.cromer_mann` (unknown symbols
    raise :class:`InputFormatError`).

    Args:
        elements: ``(T,)`` element symbols (``"C"``, ``"FE"``, ``"D"`` -> ``"H"``).

    Returns:
        ``a (T, 4)`` electrons, ``b (T, 4)`` Å², ``c (T,)`` electrons, float32, with
        ``f0(s) = Σ_i a_i exp(-b_i s²) + c`` and ``s = sinθ/λ = |k|/2`` in 1/Å.
    """
    return cromer_mann(element_symbols(elements))


def form_factors(
    s: jax.Array,
    a: jax.Array,
    b: jax.Array,
    c: jax.Array,
) -> jax.Array:
    """Atomic X-ray form factors ``f0(s) = Σ_i a_i exp(-b_i s²) + c`` in electrons.

    ``s = sinθ/λ = |k|/2`` in 1/Å; output shape ``s.shape + (T,)``.
    """
    s2 = jnp.asarray(s)[..., None, None] ** 2
    return jnp.sum(a * jnp.exp(-b * s2), axis=-1) + c


class XrayScatterers(NamedTuple):
    """Point scatterers (atoms or residue beads) for the molecular transform (a pytree).

    ``F(k) = Σ_j Σ_t W_jt f_t(|k|/2) e^{-2πi k·x_j}``: scatterer ``j`` holds ``W_jt`` atoms of
    type ``t`` at ``x_j`` (one-hot ``W`` for atoms; counts per residue for beads).

    Attributes:
        coords: ``(N, 3)`` float32 positions in Å (model frame).
        composition: ``(N, T)`` float32 atom counts per scatterer and type.
        cm_a: ``(T, 4)`` float32 Cromer-Mann ``a`` (electrons).
        cm_b: ``(T, 4)`` float32 Cromer-Mann ``b`` (Å²).
        cm_c: ``(T,)`` float32 Cromer-Mann ``c`` (electrons).
    """

    coords: jax.Array
    composition: jax.Array
    cm_a: jax.Array
    cm_b: jax.Array
    cm_c: jax.Array

    @property
    def electrons(self) -> jax.Array:
        """``(N,)`` forward-scattering weight ``f(0) = Σ_t W_jt (Σa_t + c_t)`` (≈ Z) each."""
        return self.composition @ (jnp.sum(self.cm_a, axis=-1) + self.cm_c)


def atomic_scatterers(elements, coords) -> XrayScatterers:
    """All-atom scatterers: one per atom, atoms grouped by element (they share ``f(|k|)``).

    Args:
        elements: ``(N,)`` element symbols (e.g. ``AtomicModel.elements``, taken from a PSF,
            never guessed from atom names).
        coords: ``(N, 3)`` positions in Å.
    """
    symbols = np.asarray(element_symbols(elements), dtype=str)
    coords = jnp.asarray(coords, dtype=jnp.float32)
    if coords.ndim != 2 or coords.shape != (symbols.shape[0], 3):
        raise InputFormatError(
            f"coords shape {tuple(coords.shape)} does not match {symbols.shape[0]} elements; "
            "pass (N, 3) coordinates in Å"
        )
    types, type_index = np.unique(symbols, return_inverse=True)
    a, b, c = cromer_mann_table(types)
    composition = np.eye(types.shape[0], dtype=np.float32)[type_index]
    return XrayScatterers(
        coords,
        jnp.asarray(composition),
        jnp.asarray(a, jnp.float32),
        jnp.asarray(b, jnp.float32),
        jnp.asarray(c, jnp.float32),
    )


def bead_scatterers(atoms: XrayScatterers, groups, n_groups: int) -> XrayScatterers:
    """Coarse-grain atoms into beads (e.g. one per residue) for speed.

    Each bead scatters as the sum of its atoms' form factors placed at the bead centre,
    ``f_bead(s) = Σ_{j∈bead} f_j(s)``, exact at ``|k| = 0`` and accurate while
    ``|k| · (bead radius) ≪ 1`` (``d ≳ 10 Å`` for residues). The centre is the
    electron-weighted (``f(0)``) centroid, so the forward intensity and the electron-weighted
    radius of gyration up to the within-bead spread are preserved. Pure JAX: jit/grad
    through ``atoms.coords`` with ``groups`` and ``n_groups`` fixed.

    Args:
        atoms: all-atom scatterers (from :func:`atomic_scatterers`).
        groups: ``(N,)`` int bead index of each atom in ``[0, n_groups)`` (e.g.
            ``AtomicModel.residue_index``).
        n_groups: number of beads ``G`` (static).

    Returns:
        ``G`` scatterers with ``composition (G, T)`` = atom counts per element.
    """
    groups = jnp.asarray(groups, dtype=jnp.int32)
    if groups.shape != (atoms.coords.shape[0],):
        raise InputFormatError(
            f"groups shape {tuple(groups.shape)} != ({atoms.coords.shape[0]},); "
            "give one bead index per atom"
        )
    weight = atoms.electrons
    composition = jax.ops.segment_sum(atoms.composition, groups, num_segments=n_groups)
    total = jax.ops.segment_sum(weight, groups, num_segments=n_groups)
    moment = jax.ops.segment_sum(weight[:, None] * atoms.coords, groups, num_segments=n_groups)
    centres = moment / jnp.where(total > 0, total, 1.0)[:, None]
    return XrayScatterers(centres, composition, atoms.cm_a, atoms.cm_b, atoms.cm_c)


def radius_of_gyration(scatterers: XrayScatterers) -> jax.Array:
    """Electron-weighted radius of gyration in Å: weights ``f_j(0)`` about their centroid.

    This is the ``Rg`` of the Guinier law ``<|F|²>(q) ≈ |F(0)|² exp(-q² Rg²/3)``, ``q = 2π|k|``
    (up to the atoms' own electron-cloud size, ≈ 0.3 Å² in Rg² for C/N/O).
    """
    w = scatterers.electrons
    centre = jnp.sum(w[:, None] * scatterers.coords, axis=0) / jnp.sum(w)
    d2 = jnp.sum((scatterers.coords - centre) ** 2, axis=-1)
    return jnp.sqrt(jnp.sum(w * d2) / jnp.sum(w))


# ---- molecular transform and intensity --------------------------------------------------


def _transform_flat(
    k: jax.Array,
    coords: jax.Array,
    scatterers: XrayScatterers,
    b_factor,
) -> tuple[jax.Array, jax.Array]:
    """Real and imaginary parts of F at ``P`` scattering vectors (coords already posed)."""
    turns = jnp.matmul(k, coords.T, precision=_HIGHEST)  # (P, N) phase k·x in cycles
    cos, sin = sincos_turns(turns)  # polynomial sin/cos (XLA:CPU's are ~20x slower)
    w = scatterers.composition
    re_t = jnp.matmul(cos, w, precision=_HIGHEST)  # (P, T)
    im_t = -jnp.matmul(sin, w, precision=_HIGHEST)  # e^{-2πi k·x}
    k2 = jnp.sum(k * k, axis=-1)
    f = form_factors(0.5 * jnp.sqrt(k2), scatterers.cm_a, scatterers.cm_b, scatterers.cm_c)
    f = f * jnp.exp(-0.25 * b_factor * k2)[:, None]
    return jnp.sum(f * re_t, axis=-1), jnp.sum(f * im_t, axis=-1)


def _transform_parts(
    k: jax.Array,
    scatterers: XrayScatterers,
    rotation: jax.Array | None,
    b_factor,
    pixel_chunk: int | None,
) -> tuple[jax.Array, jax.Array]:
    k = jnp.asarray(k)  # dtypes follow the inputs: float32 normally, float64 under x64
    coords = jnp.asarray(scatterers.coords)
    if rotation is not None:
        coords = jnp.matmul(coords, jnp.asarray(rotation).T, precision=_HIGHEST)
    shape = k.shape[:-1]
    flat = k.reshape(-1, 3)
    n = flat.shape[0]
    if pixel_chunk is None or pixel_chunk >= n:
        re, im = _transform_flat(flat, coords, scatterers, b_factor)
    else:
        n_chunks = -(-n // pixel_chunk)
        padded = jnp.pad(flat, ((0, n_chunks * pixel_chunk - n), (0, 0)))
        re, im = jax.lax.map(  # gradients recompute each chunk: memory stays pixel_chunk · N
            jax.checkpoint(lambda kc: _transform_flat(kc, coords, scatterers, b_factor)),
            padded.reshape(n_chunks, pixel_chunk, 3),
        )
        re, im = re.reshape(-1)[:n], im.reshape(-1)[:n]
    return re.reshape(shape), im.reshape(shape)


def molecular_transform(
    k: jax.Array,
    scatterers: XrayScatterers,
    rotation: jax.Array | None = None,
    b_factor: float | jax.Array = 0.0,
    pixel_chunk: int | None = None,
) -> jax.Array:
    """Molecular transform ``F(k) = Σ_j f_j(|k|/2) e^{-B|k|²/4} e^{-2πi k·(A x_j)}`` (electrons).

    Args:
        k: ``(..., 3)`` scattering vectors in 1/Å (e.g. ``DetectorArrays.k``).
        scatterers: atoms or beads (model frame).
        rotation: ``(3, 3)`` RELION pose ``A`` (model point ``r -> A r``); ``None`` = identity.
        b_factor: isotropic temperature factor ``B`` in Å² applied to every scatterer.
        pixel_chunk: evaluate this many ``k`` at a time (bounded memory, also for gradients:
            each chunk is recomputed); ``None`` = all.

    Returns:
        complex64 array of shape ``k.shape[:-1]``. Cost ``O(P·N)``; see the module docstring.
    """
    re, im = _transform_parts(k, scatterers, rotation, b_factor, pixel_chunk)
    return jax.lax.complex(re, im)


def intensity(
    scatterers: XrayScatterers,
    rotation: jax.Array | None,
    detector: DetectorArrays,
    fluence: float | jax.Array,
    b_factor: float | jax.Array = 0.0,
    background: float | jax.Array = 0.0,
    pixel_chunk: int | None = None,
) -> jax.Array:
    """Mean photon counts per pixel ``μ = J0 r_e² Ω P |F(k)|² + background`` (0 where masked).

    Args:
        scatterers: atoms or beads in the model frame.
        rotation: ``(3, 3)`` RELION pose ``A`` or ``None``.
        detector: from :func:`detector_arrays`.
        fluence: ``J0`` in photons/Å² (1e12 photons/µm² = 1e4 photons/Å²).
        b_factor: isotropic B in Å².
        background: mean background photons per pixel (scalar or ``(L, L)``).
        pixel_chunk: see :func:`molecular_transform`.

    Returns:
        ``(L, L)`` float32 mean photons per pixel. Batched use: ``jax.vmap`` over
        ``rotation`` and/or ``scatterers`` (conformations), or :func:`simulate_patterns`.
    """
    re, im = _transform_parts(detector.k, scatterers, rotation, b_factor, pixel_chunk)
    mu = fluence * detector.pixel_factor * (re * re + im * im)
    return mu + jnp.where(detector.mask, background, 0.0)


def sample_photons(key: jax.Array, mean_counts: jax.Array) -> jax.Array:
    """Photon counts ``n ~ Poisson(μ)`` (int32, same shape as ``mean_counts``)."""
    return jax.random.poisson(key, mean_counts, dtype=jnp.int32)


def poisson_loglik(
    counts: jax.Array,
    mean_counts: jax.Array,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Poisson log-likelihood ``Σ_pixels (n log μ - μ - log n!)`` per pattern.

    Pixels outside ``mask`` (beam stop, gaps) are left out. ``n = 0`` with ``μ = 0``
    contributes 0; ``n > 0`` with ``μ = 0`` gives ``-inf`` (add a background to avoid it).

    Args:
        counts: ``(..., L, L)`` observed photons (int or float).
        mean_counts: ``(..., L, L)`` model ``μ`` (broadcastable against ``counts``).
        mask: ``(L, L)`` bool, ``True`` = measured; ``None`` = all pixels.

    Returns:
        ``(...)`` float32 log-likelihood of each pattern.
    """
    mu = jnp.asarray(mean_counts)
    n = jnp.asarray(counts).astype(mu.dtype)
    valid = jnp.ones(jnp.broadcast_shapes(n.shape, mu.shape), bool) if mask is None else mask
    # double-where: keep log(0) out of the graph so gradients stay finite on masked pixels
    positive = mu > 0
    log_mu = jnp.log(jnp.where(positive & valid, mu, 1.0))
    n_log_mu = jnp.where(n > 0, jnp.where(positive, n * log_mu, -jnp.inf), 0.0)
    ll = n_log_mu - mu - jax.scipy.special.gammaln(n + 1.0)
    return jnp.sum(jnp.where(valid, ll, 0.0), axis=(-2, -1))


def mean_patterns(
    scatterers: XrayScatterers,
    rotations: jax.Array,
    detector: DetectorArrays,
    fluence: float | jax.Array,
    b_factor: float | jax.Array = 0.0,
    background: float | jax.Array = 0.0,
    coords: jax.Array | None = None,
    batch_size: int | None = None,
    pixel_chunk: int | None = None,
) -> jax.Array:
    """Mean photon patterns ``μ`` for a batch of poses (and optionally conformations).

    Args:
        scatterers: model-frame scatterers; with ``coords`` given only their composition and
            form factors are used.
        rotations: ``(B, 3, 3)`` RELION poses.
        detector, fluence, b_factor, background, pixel_chunk: as in :func:`intensity`.
        coords: optional ``(B, N, 3)`` per-pattern scatterer positions in Å (conformations).
        batch_size: patterns evaluated together (``jax.lax.map`` with ``batch_size``, memory
            ``batch_size · P · N``); ``None`` = all ``B`` at once (``vmap``).

    Returns:
        ``(B, L, L)`` float32 mean photons per pixel.
    """
    rotations = jnp.asarray(rotations)
    if coords is None:
        coords = jnp.broadcast_to(scatterers.coords, (rotations.shape[0], *scatterers.coords.shape))

    def one(args):
        rot, x = args
        return intensity(
            scatterers._replace(coords=x),
            rot,
            detector,
            fluence,
            b_factor,
            background,
            pixel_chunk,
        )

    if batch_size is None:
        return jax.vmap(lambda r, x: one((r, x)))(rotations, coords)
    return jax.lax.map(one, (rotations, coords), batch_size=batch_size)


def simulate_patterns(
    key: jax.Array,
    scatterers: XrayScatterers,
    rotations: jax.Array,
    detector: DetectorArrays,
    fluence: float | jax.Array,
    b_factor: float | jax.Array = 0.0,
    background: float | jax.Array = 0.0,
    coords: jax.Array | None = None,
    batch_size: int | None = None,
    pixel_chunk: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Poisson photon patterns for a batch of poses (and optionally conformations).

    Arguments after ``key`` as in :func:`mean_patterns`.

    Returns:
        ``(counts (B, L, L) int32, mean_counts (B, L, L) float32)``.
    """
    mu = mean_patterns(
        scatterers,
        rotations,
        detector,
        fluence,
        b_factor,
        background,
        coords,
        batch_size,
        pixel_chunk,
    )
    return sample_photons(key, mu), mu
