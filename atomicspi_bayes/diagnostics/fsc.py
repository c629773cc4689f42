"""Resolution-style summary: FSC between densities of two half-sets' posterior-mean ensembles.

Half-set maps: the particles are split in two random halves; each half's map is the mean
3-D density of the structures decoded at its particles' posterior-mean latents, rendered
with the model's own scatterers (bead or atomic Gaussians) on a cubic grid:

    V(r) = 47.878 Σ_p Σ_i a_pi (4π/B_pi)^{3/2} exp(-4π² |r - r_p|² / B_pi)   (V, SCIENCE.md §1)

with ``B_pi = b_pi + B_extra`` (``B_extra`` defaults to 8π² p², one voxel of blur per axis, so
the sharp Gaussian cores do not alias on the grid).

FSC(shell) = Re Σ F1 F2* / sqrt(Σ|F1|² Σ|F2|²) over one-voxel shells (SCIENCE.md §8); the
resolution is 1/k where the curve first falls below 0.143 (linear interpolation between
shells; NaN when it never does up to Nyquist). The maps carry no noise: the FSC measures
how reproducible the ensemble-mean structure is between independent halves of the data.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.physics.cryoem import POTENTIAL_CONSTANT, Scatterers

__all__ = [
    "FSCResult",
    "fourier_shell_correlation",
    "half_set_fsc",
    "render_density",
    "resolution_at",
    "scatterer_gaussians",
    "write_fsc",
]


@dataclass(frozen=True)
class FSCResult:
    """FSC curve and resolution.

    Attributes:
        k: ``(K,)`` shell frequencies in Å⁻¹ (shell s: s / (L p)).
        fsc: ``(K,)`` correlation per shell.
        n_voxels: ``(K,)`` Fourier voxels per shell.
        threshold: the FSC threshold used (0.143 for half maps).
        resolution: Å at the threshold crossing (NaN if it never crosses).
        voxel_size: Å.  box: voxels per side.
        n_half: particles in each half.
    """

    k: np.ndarray
    fsc: np.ndarray
    n_voxels: np.ndarray
    threshold: float
    resolution: float
    voxel_size: float
    box: int
    n_half: tuple[int, int] = (0, 0)

    def to_json(self) -> dict:
        return {
            "resolution_A": self.resolution,
            "threshold": self.threshold,
            "voxel_size_A": self.voxel_size,
            "box": self.box,
            "n_half": list(self.n_half),
            "k": [float(x) for x in self.k],
            "fsc": [float(x) for x in self.fsc],
        }


def fourier_shell_correlation(
    map1: np.ndarray, map2: np.ndarray, voxel_size: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FSC of two cubic maps ``(L, L, L)`` in one-voxel shells up to Nyquist.

    Returns ``(k (K,) Å⁻¹, fsc (K,), n_voxels (K,))`` with ``K = L // 2 + 1`` shells (shell
    s holds |m| in [s - 1/2, s + 1/2), m the integer frequency index).

    Raises:
        ConfigError: shapes differ or are not cubic.
    """
    a, b = np.asarray(map1, np.float64), np.asarray(map2, np.float64)
    if a.shape != b.shape or a.ndim != 3 or len(set(a.shape)) != 1:
        raise ConfigError(f"FSC needs two cubic maps of one shape, got {a.shape} and {b.shape}")
    n = a.shape[0]
    fa, fb = np.fft.rfftn(a), np.fft.rfftn(b)
    m = np.fft.fftfreq(n) * n
    mz = np.fft.rfftfreq(n) * n
    radius = np.sqrt(m[:, None, None] ** 2 + m[None, :, None] ** 2 + mz[None, None, :] ** 2)
    shell = np.rint(radius).astype(np.int64)
    # rfft stores half of the Hermitian pairs once and the kz = 0 / Nyquist planes fully:
    # weight 2 for the interior, 1 on those planes, so sums match the full transform
    weight = np.full(mz.shape, 2.0)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    weight = np.broadcast_to(weight[None, None, :], shell.shape)
    n_shells = n // 2 + 1
    keep = shell < n_shells
    s, w = shell[keep], weight[keep]
    num = np.bincount(s, w * np.real(fa[keep] * np.conj(fb[keep])), n_shells)
    da = np.bincount(s, w * np.abs(fa[keep]) ** 2, n_shells)
    db = np.bincount(s, w * np.abs(fb[keep]) ** 2, n_shells)
    count = np.bincount(s, w, n_shells)
    with np.errstate(invalid="ignore", divide="ignore"):
        fsc = np.where((da > 0) & (db > 0), num / np.sqrt(da * db), 0.0)
    k = np.arange(n_shells) / (n * voxel_size)
    return k, fsc, count


def resolution_at(k: np.ndarray, fsc: np.ndarray, threshold: float = 0.143) -> float:
    """Å where ``fsc`` first drops below ``threshold`` after shell 0 (linear interpolation
    in k between the shells around the crossing); NaN when it never does."""
    k, fsc = np.asarray(k, np.float64), np.asarray(fsc, np.float64)
    below = np.flatnonzero(fsc[1:] < threshold)
    if below.size == 0:
        return float("nan")
    j = int(below[0]) + 1  # first shell below threshold; j - 1 is above
    f0, f1 = fsc[j - 1], fsc[j]
    t = (f0 - threshold) / (f0 - f1) if f0 != f1 else 0.0
    kc = k[j - 1] + t * (k[j] - k[j - 1])
    return float(1.0 / kc) if kc > 0 else float("inf")


def scatterer_gaussians(scat: Scatterers) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expand :class:`~atomicspi_bayes.physics.cryoem.Scatterers` into 3-D Gaussians.

    Returns ``(point_atom (P,), amplitude (P, K) Å, width (P, K) Å²)``: point p of row
    ``point_atom[p]`` of the coordinates contributes ``Σ_i amplitude[p, i] ·
    exp(-width[p, i] k²/4)`` to the scattering factor.
    """
    sizes = np.asarray(scat.block_sizes)
    block = np.repeat(np.arange(sizes.size), sizes)
    env_a, env_b = np.asarray(scat.env_a), np.asarray(scat.env_b)
    weight = np.asarray(scat.weight)[:, None]
    amplitude = weight * env_a[block]
    width = env_b[block]
    if scat.has_width:
        width = width + np.asarray(scat.width)[:, None]
    return np.asarray(scat.atom_index), amplitude, width


@jax.jit
def _render_chunk(centres, amplitude, width, axis):
    """Density of Gaussians ``(T,)`` at centres ``(T, 3)`` on the grid ``axis`` (L,)."""
    var = width / (8.0 * jnp.pi**2)  # per-axis variance, Å²
    norm = amplitude * (4.0 * jnp.pi / width) ** 1.5
    g = jnp.exp(-0.5 * (axis[None, None, :] - centres[:, :, None]) ** 2 / var[:, None, None])
    gx, gy, gz = g[:, 0], g[:, 1], g[:, 2]  # (T, L) each; volume index order (z, y, x)
    zy = (norm[:, None] * gz)[:, :, None] * gy[:, None, :]  # (T, L, L)
    return jnp.einsum("tzy,tx->zyx", zy, gx)


def render_density(
    coords: np.ndarray,
    scat: Scatterers,
    box: int,
    voxel_size: float,
    *,
    bfactor: float | None = None,
    chunk: int = 4096,
) -> np.ndarray:
    """``(box, box, box)`` float32 potential in V of points ``(..., N, 3)`` Å (centred frame).

    Leading axes of ``coords`` are structures averaged into one map (an ensemble mean).
    The grid origin (voxel ``box // 2``) is the coordinate origin; array order ``(z, y, x)``.

    Args:
        coords: rendered point coordinates (the rows ``scat`` indexes), Å.
        scat: the scatterers of the points.
        box: voxels per side.  voxel_size: Å.
        bfactor: extra B in Å² on every Gaussian (default 8π² voxel², one voxel sd per axis).
        chunk: Gaussians per compiled chunk (bounds memory: chunk × box² floats).
    """
    coords = np.asarray(coords, np.float32)
    structures = coords.reshape(-1, *coords.shape[-2:])
    n_struct = structures.shape[0]
    point_atom, amplitude, width = scatterer_gaussians(scat)
    extra = 8.0 * math.pi**2 * voxel_size**2 if bfactor is None else float(bfactor)
    width = width + extra
    if np.any(width <= 0):
        raise ConfigError("Gaussian widths must be positive; raise bfactor")
    k = amplitude.shape[1]
    centres = structures[:, point_atom, :]  # (S, P, 3)
    centres = np.repeat(centres[:, :, None, :], k, axis=2).reshape(-1, 3)
    amp = np.tile(amplitude.reshape(-1), n_struct) * (POTENTIAL_CONSTANT / n_struct)
    wid = np.tile(width.reshape(-1), n_struct)
    keep = amp != 0
    centres, amp, wid = centres[keep], amp[keep], wid[keep]
    total = amp.size
    pad = (-total) % chunk
    centres = np.concatenate([centres, np.zeros((pad, 3), np.float32)])
    amp = np.concatenate([amp, np.zeros(pad)]).astype(np.float32)
    wid = np.concatenate([wid, np.ones(pad)]).astype(np.float32)
    axis = jnp.asarray((np.arange(box) - box // 2) * voxel_size, jnp.float32)
    volume = jnp.zeros((box, box, box), jnp.float32)
    for start in range(0, amp.size, chunk):
        sl = slice(start, start + chunk)
        volume = volume + _render_chunk(
            jnp.asarray(centres[sl]), jnp.asarray(amp[sl]), jnp.asarray(wid[sl]), axis
        )
    return np.asarray(volume)


def half_set_fsc(
    key: jax.Array,
    problem,
    params: dict,
    z_mean: np.ndarray,
    *,
    max_per_half: int = 128,
    box: int | None = None,
    voxel_size: float | None = None,
    bfactor: float | None = None,
    threshold: float = 0.143,
    halves: np.ndarray | None = None,
    max_gaussians: int = 300_000,
) -> tuple[FSCResult, np.ndarray, np.ndarray]:
    """FSC between the posterior-mean ensemble maps of two half-sets.

    Args:
        key: PRNG key (random halves and the per-half subsample).
        problem, params: the fitted problem and its SVI parameters (the decoder).
        z_mean: ``(N, D)`` posterior-mean latents of the particles (``latents.npz``).
        max_per_half: structures rendered per half (a random subsample beyond that).
        box, voxel_size: map grid (default: the images' box and pixel size).
        bfactor: extra B, Å² (see :func:`render_density`).
        threshold: FSC threshold (0.143 for half maps).
        halves: optional ``(N,)`` 1/2 labels (e.g. rlnRandomSubset); default random halves.
        max_gaussians: cap on rendered Gaussians per half (points x terms x structures); the
            structures per half are reduced to stay below it (all-atom models).

    Returns:
        ``(FSCResult, map1, map2)``.
    """
    from atomicspi_bayes.model import decode_nodes, decoder_from_params, rendered_points

    z_mean = np.asarray(z_mean, np.float32)
    n = z_mean.shape[0]
    if n < 2:
        raise ConfigError(f"half-set FSC needs at least 2 particles, got {n}")
    window = problem.static.window
    box = int(box or window.box)
    voxel_size = float(voxel_size or window.pixel_size)
    k_split, k_sub = jax.random.split(key)
    if halves is None:
        order = np.asarray(jax.random.permutation(k_split, n))
        halves = np.ones(n, np.int64)
        halves[order[n // 2 :]] = 2
    halves = np.asarray(halves)
    decoder = decoder_from_params(params, problem.static)
    per_structure = int(np.asarray(scatterer_gaussians(problem.static.scatterers)[1]).size)
    max_per_half = max(1, min(max_per_half, max_gaussians // max(per_structure, 1)))
    maps, sizes = [], []
    for h, kh in zip((1, 2), jax.random.split(k_sub), strict=True):
        members = np.flatnonzero(halves == h)
        if members.size == 0:
            raise ConfigError(f"half-set {h} is empty")
        if members.size > max_per_half:
            members = np.sort(
                np.asarray(jax.random.choice(kh, members, (max_per_half,), replace=False))
            )
        _, nodes = decode_nodes(decoder, jnp.asarray(z_mean[members]), problem.static)
        points = np.asarray(rendered_points(nodes, problem.static))
        maps.append(
            render_density(points, problem.static.scatterers, box, voxel_size, bfactor=bfactor)
        )
        sizes.append(int(members.size))
    k, curve, count = fourier_shell_correlation(maps[0], maps[1], voxel_size)
    result = FSCResult(
        k=k, fsc=curve, n_voxels=count, threshold=threshold,
        resolution=resolution_at(k, curve, threshold), voxel_size=voxel_size, box=box,
        n_half=(sizes[0], sizes[1]),
    )  # fmt: skip
    return result, maps[0], maps[1]


def write_fsc(result: FSCResult, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``fsc.json`` (curve, resolution) and ``fsc.png``."""
    from atomicspi_bayes.diagnostics.figures import fsc_figure, save_figure
    from atomicspi_bayes.io._atomic import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "fsc.json"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(result.to_json(), indent=2, allow_nan=True) + "\n")
    return [path, save_figure(fsc_figure(result), out / "fsc.png")]
