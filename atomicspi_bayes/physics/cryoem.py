"""Cryo-EM image formation from atoms, analytic and alias-free in Fourier space (SCIENCE.md §1-3).

Forward model (RELION sign, protein white), for one image of box L and pixel size p::

    ρ_j   = (A r_j)[:2] - o                    (Å; A = RELION rotation, o = RELION origin)
    V̂(k)  = 47.878 Σ_j f_j(k) e^{-2πi k·ρ_j}   (V·Å³; f_j(k) = Σ_i a_ji e^{-b_ji k²/4})
    Î(k)  = σ_e · CTF(k) · V̂(k)                (rad·Å²)
    image = fftshift(irfft2(Î)) / p²           (phase, radians per pixel)

Fourier layout: ``numpy.fft.rfft2`` of an ``L x L`` image whose origin (the rotation centre and
the particle centre at zero shift) is pixel ``(L//2, L//2)`` (0-based, row = y, column = x), i.e.
``Î ≈ p² · rfft2(ifftshift(image))``; :func:`rfft_frequencies` gives ``(kx, ky)`` for every
entry (``kx = rfftfreq(L, p)`` along the last axis, ``ky = fftfreq(L, p)`` along rows).
:func:`image_to_fourier` and :func:`fourier_to_image` convert between the two. Sampling the
analytic transform on the DFT grid gives the band-limited image (atoms are never aliased, even
with b ≈ 0.2 Å² cores); like every DFT image it is periodic, so atoms further than L·p/2 from
the centre wrap around.

How it is computed (and why). Every Gaussian factorises, ``e^{-b(kx²+ky²)/4} = e^{-b kx²/4}
e^{-b ky²/4}``, and so does every plane wave, so the image is a matrix product over atoms. Two
further savings make it cheap:

* Atoms of one element share the Peng envelope ``f_t(|k|)``; it is applied after the product:
  ``V̂ = Σ_t f_t(|k|) S_t(k)`` with ``S_t(ky, kx) = Σ_{j∈t} w_j e^{-2πi ky y_j} e^{-2πi kx x_j}``.
  The inner dimension is the number of atoms M = N instead of 5N (per-atom B-factors stay
  separable and enter the two factors as ``e^{-B_j ky²/4}``, ``e^{-B_j kx²/4}``).
* Writing the factors as cos/sin, ``S(±ky, kx) = (CyCx ∓ SySx) - i(CySx ± SyCx)``: the products
  for ky >= 0 give the ky < 0 rows for free, so one real GEMM ``[Cy; Sy](2·(L/2+1) x M) @
  [Cx | Sx](M x 2·(L/2+1))`` yields the whole rfft half plane: 8·(L/2+1)²·M flops, half of a
  complex ``(L x M)(M x L/2+1)`` product and 1/5 of the 5-Gaussians-per-atom product.

Phase factors are evaluated with polynomial sin/cos (``_fastmath``; XLA:CPU's own are ~20x
slower). Measured alternatives (benchmarks/simulator.py, ``variants``): the complex
``(L x 5N)(5N x L/2+1)`` product and a real-space separable Gaussian render + rfft2 (which
also aliases the atomic cores) are several times slower; see benchmarks/README.md.

Scatterers (which atoms share an envelope, and per-point weights/widths) are precomputed once
by :meth:`Scatterers.from_elements` or :meth:`Scatterers.from_gaussians` (beads, or any per-atom
Gaussian table); the API-level :func:`project_fourier` / :func:`simulate_fourier` take per-atom
``(a, b)`` tables directly.
"""

from __future__ import annotations

from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.physics._fastmath import fast_exp, sincos_turns
from atomicspi_bayes.physics.ctf import CTFParams, ctf, interaction_constant
from atomicspi_bayes.physics.scattering import element_symbols, peng_gaussians

__all__ = [
    "POTENTIAL_CONSTANT",
    "Scatterers",
    "fourier_to_image",
    "frequency_mask",
    "image_to_fourier",
    "project_batch",
    "project_fourier",
    "rfft_frequencies",
    "simulate_batch",
    "simulate_fourier",
    "simulate_image",
]

POTENTIAL_CONSTANT = 47.878
"""h²/(2π m0 e) in V·Å²: projected potential V̂_z(k) = 47.878 × f_e(k) (SCIENCE.md §1)."""


class Scatterers(eqx.Module):
    """Points that scatter, grouped in blocks that share a Fourier envelope.

    Point ``p`` sits on atom ``atom_index[p]`` and contributes
    ``weight[p] · exp(-width[p] k²/4) · env_t(k) · e^{-2πi k·ρ}`` with
    ``env_t(k) = Σ_i env_a[t, i] exp(-env_b[t, i] k²/4)`` for the block ``t`` it belongs to.
    Points are stored block by block (``block_sizes``, static).

    Attributes:
        atom_index: ``(P,)`` int32, row of the coordinate array each point takes.
        weight: ``(P,)`` float32 amplitude multiplier (dimensionless for elements, Å for
            Gaussians).
        width: ``(P,)`` float32 per-point Gaussian width in Å² (B-factor; ignored when
            ``has_width`` is False).
        env_a: ``(T, K)`` float32 envelope amplitudes in Å (Peng ``a``).
        env_b: ``(T, K)`` float32 envelope widths in Å² (Peng ``b`` + common B).
        block_sizes: number of points of each block (static).
        has_width: whether per-point widths are used (static).
        n_atoms: number of coordinate rows expected (static).
        repeats: K if point ``p`` is atom ``p // K`` (Gaussian layout), 0 if ``atom_index`` is
            a permutation of the atoms (element layout); lets the gather have a cheap transpose.
    """

    atom_index: Array
    weight: Array
    width: Array
    env_a: Array
    env_b: Array
    block_sizes: tuple[int, ...] = eqx.field(static=True)
    has_width: bool = eqx.field(static=True)
    n_atoms: int = eqx.field(static=True)
    repeats: int = eqx.field(static=True, default=0)

    @property
    def n_points(self) -> int:
        return int(sum(self.block_sizes))

    @classmethod
    def from_elements(cls, elements, b_factors: np.ndarray | float | None = None) -> Scatterers:
        """Atoms with Peng (1996) factors, one block per element (the fast all-atom layout).

        Args:
            elements: ``(N,)`` element symbols.
            b_factors: ``(N,)`` per-atom B-factors in Å², a scalar for all atoms, or None (0).
                A uniform B is folded into the envelopes; varying ones become point widths.
        """
        elements = np.asarray(elements).ravel()
        n = elements.shape[0]
        if n == 0:
            raise ConfigError("no atoms to simulate: the structure selection is empty")
        a, b = peng_gaussians(elements)
        bf = np.zeros(n, np.float32) if b_factors is None else np.asarray(b_factors, np.float32)
        bf = np.broadcast_to(bf, (n,)).astype(np.float32)
        if not np.all(np.isfinite(bf)) or np.any(bf < 0):
            raise ConfigError("B-factors must be finite and >= 0 Å²")
        uniform = bool(np.all(bf == bf[0]))
        # one block per element (same Peng table), file order kept inside a block
        symbols = element_symbols(elements).astype(str)
        uniq, first, inverse = np.unique(symbols, return_index=True, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        sizes = tuple(int(c) for c in np.bincount(inverse, minlength=len(uniq)))
        common = bf[0] if uniform else 0.0
        return cls(
            atom_index=jnp.asarray(order, dtype=jnp.int32),
            weight=jnp.ones(n, jnp.float32),
            width=jnp.asarray(np.zeros(n, np.float32) if uniform else bf[order]),
            env_a=jnp.asarray(a[first]),
            env_b=jnp.asarray(b[first] + common),
            block_sizes=sizes,
            has_width=not uniform,
            n_atoms=n,
        )

    @classmethod
    def from_gaussians(cls, a: Array, b: Array) -> Scatterers:
        """Arbitrary per-atom Gaussian tables, e.g. coarse-grained beads: one point per Gaussian.

        Args:
            a: ``(N, K)`` amplitudes in Å.
            b: ``(N, K)`` widths in Å² (B-factors included). May be traced (jit/grad-able).
        """
        a = jnp.asarray(a, dtype=jnp.float32)
        b = jnp.asarray(b, dtype=jnp.float32)
        n, k = a.shape
        return cls(
            atom_index=jnp.repeat(jnp.arange(n, dtype=jnp.int32), k),
            weight=a.reshape(-1),
            width=b.reshape(-1),
            env_a=jnp.ones((1, 1), jnp.float32),
            env_b=jnp.zeros((1, 1), jnp.float32),
            block_sizes=(n * k,),
            has_width=True,
            n_atoms=n,
            repeats=k,
        )


# ---- grids ---------------------------------------------------------------------------------


def _frequency_grid(box: int, pixel_size: float) -> np.ndarray:
    kx = np.fft.rfftfreq(box, d=pixel_size)
    ky = np.fft.fftfreq(box, d=pixel_size)
    return np.stack(np.meshgrid(kx, ky, indexing="xy"), axis=-1)


def rfft_frequencies(box: int, pixel_size: float) -> Array:
    """``(L, L//2+1, 2)`` float32 spatial frequencies ``(kx, ky)`` in Å⁻¹ of the rfft2 layout."""
    return jnp.asarray(_frequency_grid(box, pixel_size), dtype=jnp.float32)


def frequency_mask(box: int, pixel_size: float, k_max: float | None = None) -> Array:
    """``(L, L//2+1)`` bool, True where ``|k| <= k_max`` (Å⁻¹; all True when None)."""
    if k_max is None:
        return jnp.ones((box, box // 2 + 1), dtype=bool)
    f = _frequency_grid(box, pixel_size)
    return jnp.asarray(np.hypot(f[..., 0], f[..., 1]) <= k_max)


@partial(jax.jit, static_argnames=("pixel_size",))
def image_to_fourier(images: Array, pixel_size: float) -> Array:
    """Real images ``(..., L, L)`` (origin at pixel (L//2, L//2)) -> ``(..., L, L//2+1)``
    samples of their continuous Fourier transform: ``p² · rfft2(ifftshift(images))``."""
    shifted = jnp.fft.ifftshift(images, axes=(-2, -1))
    return jnp.fft.rfft2(shifted) * (pixel_size * pixel_size)


@partial(jax.jit, static_argnames=("box", "pixel_size"))
def fourier_to_image(ft: Array, box: int, pixel_size: float) -> Array:
    """Inverse of :func:`image_to_fourier`: ``fftshift(irfft2(ft, (L, L))) / p²``."""
    img = jnp.fft.irfft2(ft, s=(box, box))
    return jnp.fft.fftshift(img, axes=(-2, -1)) / (pixel_size * pixel_size)


def _band(box: int, pixel_size: float, k_max: float | None) -> tuple[int, int]:
    """Highest |row| index m_max and column index j_max needed for |k| <= k_max."""
    half = box // 2
    if k_max is None:
        return half, half
    if k_max <= 0:
        raise ConfigError(f"k_max must be > 0 Å⁻¹, got {k_max}")
    m = int(np.floor(k_max * box * pixel_size + 1e-6))
    m = min(m, half)
    return m, m


# ---- the projection ------------------------------------------------------------------------


def _envelopes(scat: Scatterers, box: int, pixel_size: float, m_max: int, j_max: int) -> Array:
    """Block envelopes ``env_t(|k|)`` on the compact grid, tiled 2x2: ``(T, 2 Mr, 2 J)``."""
    delta = 1.0 / (box * pixel_size)
    m = np.arange(m_max + 1)
    j = np.arange(j_max + 1)
    k2 = jnp.asarray((delta * delta) * (m[:, None] ** 2 + j[None, :] ** 2), jnp.float32)
    env = jnp.sum(
        scat.env_a[:, :, None, None] * jnp.exp(-0.25 * scat.env_b[:, :, None, None] * k2), axis=1
    )
    return jnp.tile(env, (1, 2, 2))


def _half_plane_products(
    scat: Scatterers, env: Array, xy: Array, box: int, pixel_size: float, m_max: int, j_max: int
) -> Array:
    """Compact transform of one image, real ``(2(m_max+1), 2(j_max+1))`` = [[CyCx, CySx],
    [SyCx, SySx]] summed over blocks with their envelopes (potential in Å, without 47.878)."""
    delta = 1.0 / (box * pixel_size)
    m = jnp.arange(m_max + 1, dtype=xy.dtype)
    j = jnp.arange(j_max + 1, dtype=xy.dtype)
    # phases in turns: u = k · r = (index · Δ) · r
    ux = (xy[:, 0:1] * delta) * j[None, :]  # (P, J)
    uy = (xy[:, 1:2] * delta) * m[None, :]  # (P, Mr)
    cx, sx = sincos_turns(ux)
    cy, sy = sincos_turns(uy)
    wy = scat.weight[:, None]
    if scat.has_width:
        gx = fast_exp((-0.25 * delta * delta) * scat.width[:, None] * (j * j)[None, :])
        gy = fast_exp((-0.25 * delta * delta) * scat.width[:, None] * (m * m)[None, :])
        cx, sx = cx * gx, sx * gx
        wy = wy * gy
    cy, sy = cy * wy, sy * wy
    left = jnp.concatenate([cy, sy], axis=1)  # (P, 2 Mr)
    right = jnp.concatenate([cx, sx], axis=1)  # (P, 2 J)
    acc = None
    start = 0
    for t, size in enumerate(scat.block_sizes):
        sl = slice(start, start + size)
        start += size
        prod = jnp.matmul(left[sl].T, right[sl], preferred_element_type=xy.dtype)
        term = prod * env[t]
        acc = term if acc is None else acc + term
    return acc


def _to_complex(acc: Array) -> tuple[Array, Array]:
    """``(..., 2 Mr, 2 J)`` products -> complex ``pos`` (ky = +mΔ) and ``neg`` (ky = -mΔ)."""
    n_r, n_c = acc.shape[-2] // 2, acc.shape[-1] // 2
    p1, p3 = acc[..., :n_r, :n_c], acc[..., :n_r, n_c:]  # CyCx, CySx
    p4, p2 = acc[..., n_r:, :n_c], acc[..., n_r:, n_c:]  # SyCx, SySx
    pos = jax.lax.complex(p1 - p2, -(p3 + p4))
    neg = jax.lax.complex(p1 + p2, -(p3 - p4))
    return pos, neg


def _assemble(pos: Array, neg: Array, box: int) -> Array:
    """Place compact ``(..., m_max+1, j_max+1)`` blocks in the ``(..., L, L//2+1)`` layout."""
    m_max = pos.shape[-2] - 1
    n_pos_rows = min((box + 1) // 2, m_max + 1)  # rows 0..ceil(L/2)-1 hold ky >= 0
    top = pos[..., :n_pos_rows, :]
    bottom = neg[..., m_max:0:-1, :]  # rows L-m_max .. L-1 hold ky = -m_max·Δ .. -Δ
    n_mid = box - n_pos_rows - m_max
    batch = pos.shape[:-2]
    mid = jnp.zeros((*batch, n_mid, pos.shape[-1]), pos.dtype)
    full = jnp.concatenate([top, mid, bottom], axis=-2)
    pad = box // 2 + 1 - pos.shape[-1]
    if pad:
        full = jnp.concatenate([full, jnp.zeros((*batch, box, pad), pos.dtype)], axis=-1)
    return full


@jax.custom_vjp
def _permute(x: Array, perm: Array, inverse: Array) -> Array:
    """``x[..., perm, :]`` whose transpose is the gather ``[..., inverse, :]`` (no scatter-add,
    which is slow on XLA:CPU)."""
    return jnp.take(x, perm, axis=-2)


def _permute_fwd(x, perm, inverse):
    return jnp.take(x, perm, axis=-2), (perm, inverse)


def _permute_bwd(res, g):
    _, inverse = res
    return jnp.take(g, inverse, axis=-2), None, None


_permute.defvjp(_permute_fwd, _permute_bwd)


def _points(scat: Scatterers, coords: Array) -> Array:
    """Positions of the scattering points ``(..., P, 3)`` from atom coordinates ``(..., N, 3)``."""
    if scat.repeats:  # broadcast + reshape: its transpose is a sum, not a scatter-add
        k = scat.repeats
        expanded = jnp.broadcast_to(coords[..., :, None, :], (*coords.shape[:-1], k, 3))
        return expanded.reshape(*coords.shape[:-2], coords.shape[-2] * k, 3)
    inverse = jnp.argsort(scat.atom_index)
    return _permute(coords, scat.atom_index, inverse.astype(jnp.int32))


def _points_xy(scat: Scatterers, points: Array, rotation: Array, shift: Array) -> Array:
    """In-plane positions ``(P, 2)`` Å of the scattering points: ``(A r)[:2] - o``."""
    return points @ rotation[:2, :].T - shift


def _check_coords(scat: Scatterers, coords: Array) -> None:
    if coords.shape[-2] != scat.n_atoms or coords.shape[-1] != 3:
        raise ConfigError(
            f"coordinates of shape {tuple(coords.shape)} do not match the {scat.n_atoms} atoms "
            "of the scatterers: pass (N, 3) or (B, N, 3) in Å"
        )


@partial(jax.jit, static_argnames=("box", "pixel_size", "k_max", "chunk"))
def project_batch(
    scatterers: Scatterers,
    coords: Array,
    rotations: Array,
    shifts: Array,
    *,
    box: int,
    pixel_size: float,
    k_max: float | None = None,
    chunk: int | None = None,
) -> tuple[Array, Array]:
    """Projected potential of a batch of particles in Fourier space (the fit's hot loop).

    Args:
        scatterers: from :meth:`Scatterers.from_elements` / :meth:`Scatterers.from_gaussians`.
        coords: ``(N, 3)`` (shared) or ``(B, N, 3)`` atom positions in Å (model frame).
        rotations: ``(B, 3, 3)`` RELION matrices A.
        shifts: ``(B, 2)`` RELION origins ``(rlnOriginXAngst, rlnOriginYAngst)`` in Å.
        box, pixel_size: image side L (pixels) and Å per pixel; static (Python numbers): each
            new value compiles anew.
        k_max: if given (Å⁻¹), only ``|k| <= k_max`` is computed (cheaper: the cost scales
            with (k_max·L·p)²); entries outside are 0.
        chunk: images rendered together (vmapped) per step of a ``lax.map`` over the batch;
            default 1 on CPU, the whole batch on accelerators.

    Returns:
        ``ft`` ``(B, L, L//2+1)`` complex64, ``V̂_z(k)`` in V·Å³, and ``mask`` ``(L, L//2+1)``
        bool (``|k| <= k_max``, all True without k_max).
    """
    coords = jnp.asarray(coords)
    _check_coords(scatterers, coords)
    m_max, j_max = _band(box, pixel_size, k_max)
    env = _envelopes(scatterers, box, pixel_size, m_max, j_max)
    n_images = rotations.shape[0]
    if chunk is None:
        # XLA:CPU runs one GEMM per image fastest (cache-resident operands, its batched GEMM
        # is ~4x slower); accelerators want the whole batch vmapped.
        chunk = 1 if jax.default_backend() == "cpu" else n_images
    points = _points(scatterers, coords)
    if points.ndim == 2:
        # shared atoms: map over a broadcast copy rather than closing over them, so reverse
        # mode sums per-image cotangents once instead of threading them through the scan
        points = jnp.broadcast_to(points, (n_images, *points.shape))

    # Rematerialise each image in the backward pass: storing every image's phase tables for
    # reverse mode (B x P x 4(L/2+1) floats) is slower on CPU than recomputing them.
    @jax.checkpoint
    def one(args):
        r, s, c = args
        xy = _points_xy(scatterers, c, r, s)
        return _half_plane_products(scatterers, env, xy, box, pixel_size, m_max, j_max)

    acc = jax.lax.map(one, (rotations, shifts, points), batch_size=max(1, min(chunk, n_images)))
    pos, neg = _to_complex(acc)
    ft = _assemble(pos, neg, box) * POTENTIAL_CONSTANT
    mask = frequency_mask(box, pixel_size, k_max)
    if k_max is not None:
        ft = jnp.where(mask, ft, 0.0)
    return ft, mask


def _ctf_grid(params: CTFParams, box: int, pixel_size: float) -> Array:
    """σ_e(kV) · CTF on the rfft grid for ``(B,)``-leaf params -> ``(B, L, L//2+1)``."""
    freqs = rfft_frequencies(box, pixel_size)
    pb = CTFParams(*(jnp.asarray(x)[..., None, None] for x in params))
    sigma_e = interaction_constant(pb.voltage_kv)
    return ctf(freqs, pb) * sigma_e


@partial(jax.jit, static_argnames=("box", "pixel_size", "k_max", "chunk"))
def simulate_batch(
    scatterers: Scatterers,
    coords: Array,
    rotations: Array,
    shifts: Array,
    ctf_params: CTFParams,
    *,
    box: int,
    pixel_size: float,
    k_max: float | None = None,
    chunk: int | None = None,
) -> tuple[Array, Array]:
    """Fourier transform of noise-free RELION-sign phase-contrast images (the fit's hot loop).

    As :func:`project_batch` times ``σ_e(voltage) · CTF(k)``; ``ctf_params`` has ``(B,)``
    leaves. Returns ``ft`` ``(B, L, L//2+1)`` complex64 in rad·Å² (``fourier_to_image`` gives
    phase per pixel in radians) and ``mask`` ``(L, L//2+1)`` bool.
    """
    ft, mask = project_batch(
        scatterers,
        coords,
        rotations,
        shifts,
        box=box,
        pixel_size=pixel_size,
        k_max=k_max,
        chunk=chunk,
    )
    return ft * _ctf_grid(ctf_params, box, pixel_size), mask


# ---- single-image convenience (API contract) -------------------------------------------------


@partial(jax.jit, static_argnames=("box", "pixel_size"))
def project_fourier(
    coords: Array,
    a: Array,
    b: Array,
    rotation: Array,
    shift: Array,
    box: int,
    pixel_size: float,
) -> Array:
    """Projected potential ``V̂_z(k)`` (V·Å³) of one particle, ``(L, L//2+1)`` complex64.

    Args:
        coords: ``(N, 3)`` Å; ``a`` ``(N, K)`` Å and ``b`` ``(N, K)`` Å² Gaussian tables
            (Peng ``b`` + B-factor); ``rotation`` ``(3, 3)`` RELION A; ``shift`` ``(2,)`` Å origin;
            ``box`` L pixels; ``pixel_size`` Å.

    Uses the general one-point-per-Gaussian layout; for many images of the same atoms build a
    :class:`Scatterers` once and call :func:`project_batch` (up to 5x cheaper for elements).
    """
    scat = Scatterers.from_gaussians(a, b)
    ft, _ = project_batch(
        scat, coords, rotation[None], jnp.asarray(shift)[None], box=box, pixel_size=pixel_size
    )
    return ft[0]


@partial(jax.jit, static_argnames=("box", "pixel_size"))
def simulate_fourier(
    coords: Array,
    a: Array,
    b: Array,
    rotation: Array,
    shift: Array,
    ctf_params: CTFParams,
    box: int,
    pixel_size: float,
) -> Array:
    """``σ_e · CTF · V̂_z`` of one particle, ``(L, L//2+1)`` complex64 in rad·Å² (scalar-leaf
    ``ctf_params``). RELION sign: the low-resolution image of a protein is positive (white)."""
    ft = project_fourier(coords, a, b, rotation, shift, box, pixel_size)
    params = CTFParams(*(jnp.asarray(x, jnp.float32)[None] for x in ctf_params))
    return ft * _ctf_grid(params, box, pixel_size)[0]


@partial(jax.jit, static_argnames=("box", "pixel_size"))
def simulate_image(
    coords: Array,
    a: Array,
    b: Array,
    rotation: Array,
    shift: Array,
    ctf_params: CTFParams,
    box: int,
    pixel_size: float,
) -> Array:
    """Noise-free image ``(L, L)`` float32: phase in radians per pixel, RELION sign, origin at
    pixel (L//2, L//2). ``= fourier_to_image(simulate_fourier(...))``; vmap it for batches."""
    ft = simulate_fourier(coords, a, b, rotation, shift, ctf_params, box, pixel_size)
    return fourier_to_image(ft, box, pixel_size)
