"""Orientation search for X-ray diffraction patterns (pure JAX; SCIENCE.md §7).

A diffraction pattern fixes the orientation of a known model only up to a two-fold: Friedel
symmetry ``|F(k)| = |F(-k)|`` and a (nearly) flat Ewald sphere (``k_z ≈ 0`` on the detector)
make the poses ``A`` and ``R_z(π) A`` give the same pattern up to the curvature term
(:func:`friedel_twin`). The improper twin ``-A`` would be the mirror-image molecule, which a
known atomic model excludes, so this proper two-fold is the remaining ambiguity; errors are
reported modulo it (:func:`twofold_angle`).

The search is EMC-like and cheap per orientation:

1. the model's intensity ``|F(k)|²`` is tabulated once on a 3D grid of ``k``
   (:func:`intensity_map`, one GEMM of ``G³`` grid points x ``N`` scatterers);
2. for every rotation of a quasi-uniform SO(3) grid (:func:`so3_grid`, super-Fibonacci
   spiral) the detector's ``Aᵀk`` are looked up by trilinear interpolation, giving
   ``log μ (M, P)`` and ``Σμ (M,)``; the Poisson log-likelihood of all ``B`` patterns is then
   the matrix product ``counts (B, P) @ log μᵀ - Σμ`` (:func:`score_rotations`), kept as a
   running top-``K`` per pattern over chunks of rotations;
3. each of the ``K`` candidates and its two-fold partner is refined by a shrinking local
   random search on the same map (:func:`refine_rotations`), and the best is kept.

The score is exact Poisson up to the interpolation of the map (grid step ``h``; the speckle
width of a particle of diameter ``D`` is ``~1/D``, so ``h <= 1/(3D)`` keeps the error small).
Cost: ``M · P`` interpolations plus a ``B x P x M`` GEMM for the grid, ``B · K · S · T · P``
interpolations for ``T`` refinement rounds of ``S`` trial rotations.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.physics.geometry import axis_angle_to_matrix, geodesic_angle
from atomicspi_bayes.physics.xray import DetectorArrays, XrayScatterers, molecular_transform

__all__ = [
    "RZ_PI",
    "IntensityMap",
    "OrientationFit",
    "bin_detector",
    "bin_patterns",
    "friedel_twin",
    "intensity_map",
    "map_intensity",
    "mean_rotation",
    "refine_rotations",
    "score_rotations",
    "search_orientations",
    "so3_grid",
    "stack_maps",
    "twofold_angle",
]

RZ_PI = np.diag([-1.0, -1.0, 1.0]).astype(np.float32)
"""The beam-axis two-fold ``R_z(π)``: ``A`` and ``R_z(π) A`` give the same flat-Ewald pattern."""


def mean_rotation(rotations, weights) -> np.ndarray:
    """Weighted chordal mean of nearby poses: ``(..., C, 3, 3)``, weights ``(..., C)`` ->
    ``(..., 3, 3)``, the rotation closest (Frobenius) to ``Σ w_c A_c`` (SVD projection)."""
    m = np.einsum("...c,...cij->...ij", np.asarray(weights, np.float64), rotations)
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    u[..., :, 2] *= d[..., None]
    return (u @ vt).astype(np.float32)


def friedel_twin(rotations: jax.Array) -> jax.Array:
    """The two-fold partner ``R_z(π) A`` of poses ``(..., 3, 3)``."""
    return jnp.asarray(RZ_PI) @ rotations


def twofold_angle(estimate: jax.Array, truth: jax.Array) -> jax.Array:
    """Rotation error in radians modulo the two-fold: ``min(∠(A, T), ∠(A, R_z(π) T))``."""
    raw = geodesic_angle(estimate, truth)
    return jnp.minimum(raw, geodesic_angle(estimate, friedel_twin(truth)))


def so3_grid(n: int) -> np.ndarray:
    """``(n, 3, 3)`` float32 quasi-uniform rotations (super-Fibonacci spiral, Alexa 2022).

    Deterministic; the largest gap between neighbours shrinks as ``n^{-1/3}``
    (``n = 30000``: about 6°). Quaternions ``q`` and ``-q`` are the same rotation, the spiral
    covers each rotation once.
    """
    if int(n) < 1:
        raise ConfigError(f"SO(3) grid size n={n} must be >= 1")
    phi, psi = math.sqrt(2.0), 1.533751168755204288118041
    s = np.arange(n, dtype=np.float64) + 0.5
    r, big_r = np.sqrt(s / n), np.sqrt(1.0 - s / n)
    alpha, beta = 2.0 * np.pi * s / phi, 2.0 * np.pi * s / psi
    w, x = r * np.sin(alpha), r * np.cos(alpha)
    y, z = big_r * np.sin(beta), big_r * np.cos(beta)
    rot = np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )
    return rot.astype(np.float32)


# ---- binning --------------------------------------------------------------------------------


def bin_detector(detector: DetectorArrays, factor: int) -> DetectorArrays:
    """Bin ``factor x factor`` pixel blocks: mean ``k``, summed ``r_e²ΩP``, any-measured mask.

    The speckles of a particle are oversampled several-fold on a typical detector, so a bin's
    mean count is ``J0 · Σ pixel_factor · |F(k̄)|²`` to good accuracy. Pixels past the last
    full block are dropped. Returns ``(L/f, L/f)`` arrays (``k`` ``(L/f, L/f, 3)``).
    """
    f = int(factor)
    if f < 1:
        raise ConfigError(f"bin factor {factor} must be >= 1")
    n = detector.pixel_factor.shape[0] // f
    if n < 1:
        raise ConfigError(f"bin factor {f} exceeds the detector ({detector.pixel_factor.shape})")
    if f == 1:
        return detector

    def blocks(a):
        a = a[: n * f, : n * f]
        return a.reshape(n, f, n, f, *a.shape[2:])

    return DetectorArrays(
        jnp.mean(blocks(detector.k), axis=(1, 3)),
        jnp.sum(blocks(detector.pixel_factor), axis=(1, 3)),
        jnp.any(blocks(detector.mask), axis=(1, 3)),
    )


def bin_patterns(counts, factor: int) -> np.ndarray:
    """Sum ``factor x factor`` pixel blocks of ``(B, L, L)`` counts -> ``(B, L/f, L/f)``."""
    counts = np.asarray(counts, dtype=np.float32)
    f = int(factor)
    n = counts.shape[-1] // f
    c = counts[..., : n * f, : n * f]
    return c.reshape(*c.shape[:-2], n, f, n, f).sum(axis=(-3, -1))


# ---- the tabulated intensity -----------------------------------------------------------------


class IntensityMap(NamedTuple):
    """``|F(k)|²`` (electrons²) of ``C`` models on a cubic grid ``k = k0 + h · index`` (pytree).

    Attributes:
        values: ``(C, G, G, G)`` float32 intensity, axes ``(model, k_x, k_y, k_z)`` of the
            model frame (``C`` conformations; see :func:`stack_maps`).
        k0: scalar, the ``k`` (1/Å) of index 0 on every axis.
        step: scalar grid step ``h`` in 1/Å.
    """

    values: jax.Array
    k0: jax.Array
    step: jax.Array

    @property
    def n_models(self) -> int:
        return int(self.values.shape[0])


def intensity_map(
    scatterers: XrayScatterers,
    k_max: float,
    step: float,
    b_factor: float = 0.0,
    pixel_chunk: int = 8192,
) -> IntensityMap:
    """Tabulate ``|F(k)|²`` of ``scatterers`` (model frame) on ``[-k_max, k_max]³`` (1/Å).

    ``G = 2 ceil(k_max/step) + 3`` points per axis (one spare layer beyond ``k_max``). Cost
    ``G³ · N`` phases, memory ``pixel_chunk · N``, also for gradients with respect to the
    coordinates (each chunk is recomputed). Returns a one-model map (``C = 1``).
    """
    if not (np.isfinite(k_max) and k_max > 0 and np.isfinite(step) and step > 0):
        raise ConfigError(f"intensity map k_max={k_max}, step={step} must be finite and > 0")
    half = math.ceil(k_max / step) + 1
    axis = (np.arange(2 * half + 1) - half) * step
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).astype(np.float32)
    f = molecular_transform(jnp.asarray(grid), scatterers, None, b_factor, pixel_chunk)
    values = jnp.real(f) ** 2 + jnp.imag(f) ** 2
    return IntensityMap(values[None], jnp.float32(axis[0]), jnp.float32(step))


def stack_maps(maps) -> IntensityMap:
    """One ``C``-model map from maps made with the same ``k_max`` and ``step``."""
    maps = list(maps)
    shapes = {m.values.shape[1:] for m in maps}
    if len(shapes) != 1:
        raise ConfigError(f"intensity maps of different grids {sorted(shapes)} cannot be stacked")
    values = jnp.concatenate([m.values for m in maps])
    return IntensityMap(values, maps[0].k0, maps[0].step)


def map_intensity(
    imap: IntensityMap, k: jax.Array, rotation: jax.Array, model: jax.Array | int = 0
) -> jax.Array:
    """``|F_c(Aᵀ k)|²`` by trilinear interpolation: ``k`` ``(P, 3)``, ``rotation`` ``(3, 3)``.

    ``model`` selects the conformation ``c`` of the map (traced int is fine). Returns
    ``(P,)``; ``k`` outside the map gives 0.
    """
    km = k @ rotation  # rows: (Aᵀ k)ᵀ = kᵀ A
    idx = (km - imap.k0) / imap.step
    c = jnp.broadcast_to(jnp.asarray(model, idx.dtype), idx[:, 0].shape)
    return jax.scipy.ndimage.map_coordinates(
        imap.values, [c, idx[:, 0], idx[:, 1], idx[:, 2]], order=1, mode="constant", cval=0.0
    )


def _loglik_terms(imap, k, factor, fluence, background, rotations, models):
    """``log μ (C, P)`` and ``Σ μ (C,)`` for rotations ``(C, 3, 3)`` of models ``(C,)``."""
    inten = jax.vmap(lambda r, m: map_intensity(imap, k, r, m))(rotations, models)
    mu = fluence * factor[None, :] * inten + background[None, :]
    return jnp.log(jnp.maximum(mu, 1e-30)), jnp.sum(mu, axis=-1)


def score_rotations(
    imap: IntensityMap,
    k: jax.Array,
    factor: jax.Array,
    counts: jax.Array,
    rotations: jax.Array,
    fluence: float | jax.Array,
    background: jax.Array,
    models: jax.Array | int = 0,
) -> jax.Array:
    """Poisson log-likelihood (up to ``-Σ log n!``) of ``B`` patterns at ``C`` poses.

    Args:
        imap: the models' intensity map.
        k: ``(P, 3)`` measured (binned) scattering vectors, 1/Å.
        factor: ``(P,)`` ``r_e²ΩP`` of each (binned) pixel (0 = not measured).
        counts: ``(B, P)`` photons.
        rotations: ``(C, 3, 3)`` RELION poses.
        fluence: photons/Å².
        background: ``(P,)`` mean background photons per (binned) pixel (> 0 avoids log 0).
        models: ``(C,)`` int conformation of each pose (or one int for all).

    Returns:
        ``(B, C)``: ``counts @ log μᵀ - Σ μ`` (a matrix product).
    """
    models = jnp.broadcast_to(jnp.asarray(models, jnp.int32), rotations.shape[:1])
    log_mu, total = _loglik_terms(imap, k, factor, fluence, background, rotations, models)
    return counts @ log_mu.T - total[None, :]


class OrientationFit(NamedTuple):
    """Result of :func:`search_orientations`.

    Attributes:
        rotations: ``(B, 3, 3)`` best pose per pattern (one member of its two-fold pair).
        models: ``(B,)`` conformation (map model) of the best pose.
        loglik: ``(B,)`` its map log-likelihood (up to ``-Σ log n!``).
        grid_rotations: ``(B, 3, 3)`` best grid pose before refinement.
        runner_up_gap: ``(B,)`` log-likelihood gap to the best refined candidate more than
            10° (modulo the two-fold) away: small gaps flag ambiguous patterns.
        model_loglik: ``(B, C)`` map log-likelihood of every model at the best pose refined
            under that model (profile likelihood of the conformation; uniform prior over the
            models gives ``softmax(model_loglik)`` as their posterior).
        model_logmarginal: ``(B, C)`` log of the likelihood of every model averaged over
            the SO(3) grid (the orientation marginalised under the uniform prior, a grid
            quadrature: ``logsumexp_g ll(g, c) - log M``); ``softmax`` over models is their
            posterior with the orientation integrated out, which does not favour models
            whose best pose is sharper by chance (the profile's bias on ambiguous patterns).
        model_rotations: ``(B, C, 3, 3)`` the pose of every model behind ``model_loglik``
            (refined from the best pose under that model; same two-fold member).
    """

    rotations: np.ndarray
    models: np.ndarray
    loglik: np.ndarray
    grid_rotations: np.ndarray
    runner_up_gap: np.ndarray
    model_loglik: np.ndarray
    model_logmarginal: np.ndarray
    model_rotations: np.ndarray


def _top_k_scan(imap, k, factor, counts, grid, fluence, background, top_k, chunk):
    """Running top-``K`` (scores, flat (model, grid) indices) per pattern over grid chunks,
    and per model the log-sum-exp of the scores over the grid ``(B, C)``."""
    m = grid.shape[0]
    n_models = imap.values.shape[0]
    n_chunks = -(-m // chunk)
    pad = n_chunks * chunk - m
    grid_p = jnp.concatenate([grid, jnp.broadcast_to(jnp.eye(3), (pad, 3, 3))]) if pad else grid
    valid = jnp.arange(n_chunks * chunk) < m
    b = counts.shape[0]

    def body(carry, i):
        best_s, best_i, lse = carry
        c, g = divmod(i, n_chunks)
        rots = jax.lax.dynamic_slice_in_dim(grid_p, g * chunk, chunk)
        ok = jax.lax.dynamic_slice_in_dim(valid, g * chunk, chunk)
        s = score_rotations(imap, k, factor, counts, rots, fluence, background, c)
        s = jnp.where(ok[None, :], s, -jnp.inf)
        idx = jnp.broadcast_to(c * m + g * chunk + jnp.arange(chunk), s.shape)
        all_s = jnp.concatenate([best_s, s], axis=1)
        all_i = jnp.concatenate([best_i, idx], axis=1)
        top_s, pos = jax.lax.top_k(all_s, top_k)
        chunk_lse = jax.scipy.special.logsumexp(s, axis=1)
        lse = lse.at[:, c].set(jnp.logaddexp(lse[:, c], chunk_lse))
        return (top_s, jnp.take_along_axis(all_i, pos, axis=1), lse), None

    init = (
        jnp.full((b, top_k), -jnp.inf),
        jnp.zeros((b, top_k), jnp.int32),
        jnp.full((b, n_models), -jnp.inf),
    )
    (scores, index, lse), _ = jax.lax.scan(body, init, jnp.arange(n_models * n_chunks))
    return scores, index, lse - math.log(m)


def refine_rotations(
    key: jax.Array,
    imap: IntensityMap,
    k: jax.Array,
    factor: jax.Array,
    counts: jax.Array,
    starts: jax.Array,
    fluence: float | jax.Array,
    background: jax.Array,
    models: jax.Array | int = 0,
    radius: float = 0.06,
    n_trials: int = 24,
    n_rounds: int = 10,
    shrink: float = 0.7,
) -> tuple[jax.Array, jax.Array]:
    """Shrinking local random search of each start pose on the map log-likelihood.

    For one pattern ``counts (P,)`` and starts ``(S, 3, 3)`` of models ``(S,)``: each round
    tries ``n_trials`` rotations ``exp([ε]×) A`` with ``ε`` uniform in a ball of ``radius``
    (rad) around every current pose, keeps any improvement, and multiplies the radius by
    ``shrink``.

    Returns:
        ``(rotations (S, 3, 3), loglik (S,))``.
    """
    s_n = starts.shape[0]
    models = jnp.broadcast_to(jnp.asarray(models, jnp.int32), (s_n,))

    def ll(rots, mods):
        return score_rotations(imap, k, factor, counts[None], rots, fluence, background, mods)[0]

    def round_(carry, inputs):
        rots, best = carry
        key_t, r = inputs
        d = jax.random.normal(key_t, (s_n, n_trials, 3))
        u = jax.random.uniform(jax.random.fold_in(key_t, 1), (s_n, n_trials, 1))
        eps = d / jnp.linalg.norm(d, axis=-1, keepdims=True) * (u ** (1.0 / 3.0)) * r
        trial = axis_angle_to_matrix(eps) @ rots[:, None]
        mods = jnp.repeat(models, n_trials)
        s = ll(trial.reshape(-1, 3, 3), mods).reshape(s_n, n_trials)
        j = jnp.argmax(s, axis=1)
        s_best = jnp.take_along_axis(s, j[:, None], axis=1)[:, 0]
        better = s_best > best
        new = jnp.where(better[:, None, None], trial[jnp.arange(s_n), j], rots)
        return (new, jnp.maximum(best, s_best)), None

    radii = radius * shrink ** jnp.arange(n_rounds)
    keys = jax.random.split(key, n_rounds)
    (rots, best), _ = jax.lax.scan(round_, (starts, ll(starts, models)), (keys, radii))
    return rots, best


def search_orientations(
    key: jax.Array,
    imap: IntensityMap,
    k: jax.Array,
    factor: jax.Array,
    counts,
    fluence: float,
    background,
    n_grid: int = 30000,
    top_k: int = 8,
    chunk: int = 512,
    pattern_block: int | None = None,
    refine: dict | None = None,
) -> OrientationFit:
    """Grid search + local refinement of every pattern's pose (and conformation of the map).

    The ``top_k`` best (model, grid rotation) pairs of each pattern over all models of the
    map are refined locally, each together with its two-fold partner ``R_z(π) A``; the
    highest refined log-likelihood wins.

    Args:
        key: PRNG key of the local search.
        imap: :class:`IntensityMap` of one or more conformations (:func:`stack_maps`).
        k: ``(P, 3)`` scattering vectors of the measured (binned) pixels.
        factor: ``(P,)`` ``r_e²ΩP`` per (binned) pixel.
        counts: ``(B, P)`` photon counts.
        fluence: photons/Å².
        background: scalar or ``(P,)`` mean background photons per (binned) pixel; use a
            small positive value (e.g. 1e-3) if the data have none.
        n_grid: rotations of the :func:`so3_grid`.
        top_k: candidates refined per pattern (each with its two-fold partner).
        chunk: grid rotations scored together (memory ``chunk · P``).
        pattern_block: patterns scored and refined together. The refinement holds
            ``~70 B x pattern_block x max(2 top_k, C) x n_trials x P`` (9.8 GB for 64 patterns
            of 4095 pixels, 8 models), so ``None`` picks the largest block up to 64 that keeps
            it near 2 GB (64 patterns up to ~1400 pixels, 21 at 64², 5 at 128²).
        refine: keyword overrides of :func:`refine_rotations` (radius, n_trials, ...).
    """
    k = jnp.asarray(k, jnp.float32)
    factor = jnp.asarray(factor, jnp.float32)
    counts = np.asarray(counts, np.float32)
    background = jnp.broadcast_to(jnp.asarray(background, jnp.float32), factor.shape)
    grid = jnp.asarray(so3_grid(n_grid))
    m = grid.shape[0]
    opts = {**(refine or {})}
    b = counts.shape[0]
    n_models = imap.values.shape[0]
    if pattern_block is None:
        per_pattern = max(2 * top_k, n_models) * opts.get("n_trials", 24) * k.shape[0]
        pattern_block = max(1, min(64, 2**25 // per_pattern))
    block = min(int(pattern_block), b)

    top = jax.jit(
        lambda c: _top_k_scan(imap, k, factor, c, grid, fluence, background, top_k, chunk)
    )

    def refine_one(key_i, c, starts, models):
        starts = jnp.concatenate([starts, friedel_twin(starts)])
        models = jnp.concatenate([models, models])
        return refine_rotations(
            key_i, imap, k, factor, c, starts, fluence, background, models, **opts
        )

    refine_block = jax.jit(jax.vmap(refine_one))

    def per_model(key_i, c, rot):
        starts = jnp.broadcast_to(rot, (n_models, 3, 3))
        return refine_rotations(
            key_i, imap, k, factor, c, starts, fluence, background, jnp.arange(n_models), **opts
        )

    per_model_block = jax.jit(jax.vmap(per_model))

    rots_all, ll_all, mod_all, grid_best, marg_all = [], [], [], [], []
    for start in range(0, b, block):
        idx = np.arange(start, min(start + block, b))
        sel = np.concatenate([idx, np.full(block - idx.size, idx[-1])])
        c = jnp.asarray(counts[sel])
        _, index, marg = top(c)
        marg_all.append(np.asarray(marg)[: idx.size])
        models, g = index // m, index % m
        starts = grid[g]  # (block, K, 3, 3)
        keys = jax.random.split(jax.random.fold_in(key, start), block)
        rots, ll = refine_block(keys, c, starts, models)
        rots_all.append(np.asarray(rots)[: idx.size])
        ll_all.append(np.asarray(ll)[: idx.size])
        mod_all.append(np.tile(np.asarray(models), (1, 2))[: idx.size])
        grid_best.append(np.asarray(starts)[: idx.size, 0])
    rots, ll = np.concatenate(rots_all), np.concatenate(ll_all)
    mods = np.concatenate(mod_all)
    j = np.argmax(ll, axis=1)
    rows = np.arange(b)
    best_rot, best_ll = rots[rows, j], ll[rows, j]
    far = np.asarray(twofold_angle(jnp.asarray(rots), jnp.asarray(best_rot)[:, None]))
    runner = np.where(far > math.radians(10.0), ll, -np.inf).max(axis=1)
    model_ll = np.zeros((b, n_models))
    model_rot = np.zeros((b, n_models, 3, 3), np.float32)
    for start in range(0, b, block):
        idx = np.arange(start, min(start + block, b))
        sel = np.concatenate([idx, np.full(block - idx.size, idx[-1])])
        keys = jax.random.split(jax.random.fold_in(key, b + start), block)
        rot_c, ll_c = per_model_block(keys, jnp.asarray(counts[sel]), jnp.asarray(best_rot[sel]))
        model_ll[idx] = np.asarray(ll_c)[: idx.size]
        model_rot[idx] = np.asarray(rot_c)[: idx.size]
    return OrientationFit(
        best_rot, mods[rows, j], best_ll, np.concatenate(grid_best), best_ll - runner, model_ll,
        np.concatenate(marg_all), model_rot,
    )  # fmt: skip
