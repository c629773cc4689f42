"""Coarse conformational states on a landscape grid, and per-particle state likelihoods.

Three ways to define states:

- ``basins``: steepest-descent basins of a free-energy grid (4-neighbour in 2-D), with basins
  whose barrier to a neighbouring basin is below ``min_barrier`` (energy units of F) merged
  into that neighbour (watershed with barrier merging).
- ``kmeans``: k-means (deeptime) on the particles' posterior means; grid bins are assigned to
  the nearest centre.
- ``gmm``: a Gaussian mixture of the latents (scikit-learn start, then extreme
  deconvolution of the per-particle posterior widths); each particle's
  likelihood for state k is the component convolved with its own posterior,
  ``L[n, k] = N(z_mean[n]; mu_k, Sigma_k + diag(z_sd[n]**2))``, which is the (N, K) matrix
  the population posterior needs.
"""

from __future__ import annotations

import logging

import numpy as np

from atomicspi_bayes.errors import ConfigError

__all__ = ["basin_labels", "fit_gmm", "gmm_log_likelihoods", "kmeans_centers", "nearest_labels"]

logger = logging.getLogger(__name__)


def _neighbour_pairs(shape: tuple[int, ...]) -> np.ndarray:
    """(P, 2) flat indices of adjacent grid cells (axis-aligned neighbours)."""
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    pairs = []
    for axis in range(len(shape)):
        a = np.take(idx, np.arange(shape[axis] - 1), axis=axis).ravel()
        b = np.take(idx, np.arange(1, shape[axis]), axis=axis).ravel()
        pairs.append(np.stack([a, b], axis=1))
    return np.concatenate(pairs)


def basin_labels(
    free_energy: np.ndarray,
    min_barrier: float = 1.0,
    min_population: float = 0.0,
    kT: float = 1.0,
) -> np.ndarray:
    """Label grid cells by free-energy basin; -1 where F is not finite.

    Args:
        free_energy: (G,) or (G1, G2) free energy (NaN/inf = undefined cell).
        min_barrier: basins whose lowest saddle to a neighbour lies less than this above their
            minimum are merged into that neighbour (same units as ``free_energy``).
        min_population: basins holding less than this fraction of exp(-F/kT) are merged
            into the neighbour they share the lowest saddle with (noise in sparse tails).
        kT: energy unit of F for the populations.

    Returns:
        Integer labels with the grid's shape, numbered 0.. in order of increasing basin
        minimum position (flat index).
    """
    f = np.asarray(free_energy, dtype=np.float64)
    shape = f.shape
    flat = f.ravel()
    ok = np.isfinite(flat)
    pairs = _neighbour_pairs(shape)
    pairs = pairs[ok[pairs[:, 0]] & ok[pairs[:, 1]]]
    n = flat.size
    # Steepest descent: each cell points to its lowest neighbour if that is lower than itself.
    idx = np.arange(n).reshape(shape)
    fgrid = np.where(ok, flat, np.inf).reshape(shape)
    best, target = fgrid.copy(), idx.copy()
    for axis in range(len(shape)):
        for shift in (-1, 1):
            nb_f = np.roll(fgrid, shift, axis=axis)
            nb_i = np.roll(idx, shift, axis=axis)
            edge = [slice(None)] * len(shape)
            edge[axis] = 0 if shift == 1 else -1
            nb_f[tuple(edge)] = np.inf
            better = nb_f < best
            best = np.where(better, nb_f, best)
            target = np.where(better, nb_i, target)
    target = target.ravel()
    root = target.copy()
    for _ in range(n):
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    labels = np.where(ok, root, -1)
    weight = np.where(ok, np.exp(-(flat - np.nanmin(flat)) / kT), 0.0)
    weight /= weight.sum()
    # Barrier merging: repeatedly merge the basin with the smallest barrier below min_barrier.
    while True:
        basins = np.unique(labels[labels >= 0])
        if len(basins) < 2:
            break
        la, lb = labels[pairs[:, 0]], labels[pairs[:, 1]]
        cross = la != lb
        if not np.any(cross):
            break
        saddle_vals = np.maximum(flat[pairs[cross, 0]], flat[pairs[cross, 1]])
        keys = np.stack([la[cross], lb[cross]], axis=1)
        minima = {int(b): float(np.min(flat[labels == b])) for b in basins}
        saddles: dict[tuple[int, int], float] = {}
        for (x, y), s in zip(keys.tolist(), saddle_vals.tolist(), strict=True):
            key = (min(x, y), max(x, y))
            saddles[key] = min(saddles.get(key, np.inf), s)
        best_pair, best_barrier = None, np.inf
        for (x, y), s in saddles.items():
            # the shallower basin (higher minimum) is the one that would be absorbed
            shallow, deep = (x, y) if minima[x] >= minima[y] else (y, x)
            barrier = s - minima[shallow]
            if barrier < best_barrier:
                best_pair, best_barrier = (shallow, deep), barrier
        if best_pair is not None and best_barrier < min_barrier:
            labels[labels == best_pair[0]] = best_pair[1]
            continue
        # then basins with too small a population, smallest first
        pops = {int(b): float(np.sum(weight[labels == b])) for b in basins}
        small = min(pops, key=pops.get)
        if pops[small] >= min_population:
            break
        partner = min(
            ((s, x if y == small else y) for (x, y), s in saddles.items() if small in (x, y)),
            default=None,
        )
        if partner is None:
            break
        labels[labels == small] = partner[1]
    out = np.full(n, -1, dtype=np.int64)
    for new, old in enumerate(np.unique(labels[labels >= 0])):
        out[labels == old] = new
    return out.reshape(shape)


def kmeans_centers(z_mean: np.ndarray, n_states: int, seed: int = 0) -> np.ndarray:
    """(n_states, D) k-means++ centres of the posterior means (deeptime)."""
    from deeptime.clustering import KMeans

    if n_states < 1 or n_states > len(z_mean):
        raise ConfigError(f"n_states={n_states}: need 1 <= n_states <= {len(z_mean)} particles")
    est = KMeans(n_clusters=n_states, init_strategy="kmeans++", fixed_seed=seed, max_iter=500)
    centers = np.asarray(est.fit(np.ascontiguousarray(z_mean)).fetch_model().cluster_centers)
    return centers[np.lexsort(centers.T[::-1])]


def nearest_labels(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(M,) index of the nearest centre for each of (M, D) points."""
    d2 = np.sum((points[:, None, :] - centers[None, :, :]) ** 2, axis=-1)
    return np.argmin(d2, axis=1)


def fit_gmm(
    z_mean: np.ndarray,
    n_states: int,
    seed: int = 0,
    z_sd: np.ndarray | None = None,
    n_iter: int = 300,
) -> tuple[np.ndarray, np.ndarray]:
    """Full-covariance Gaussian mixture of the latents, deconvolved from posterior widths.

    A scikit-learn GMM on the posterior means starts "extreme deconvolution" EM (Bovy, Hogg &
    Roweis 2011) when ``z_sd`` is given: each particle is a noisy draw with its own diagonal
    covariance diag(z_sd[n]**2), so the components describe the latents, not the latents
    blurred by their posterior widths (which would be counted twice by
    :func:`gmm_log_likelihoods`).

    Returns:
        means (K, D) and covariances (K, D, D), latent units, sorted by position.
    """
    from sklearn.mixture import GaussianMixture

    if n_states < 1 or n_states > len(z_mean):
        raise ConfigError(f"n_states={n_states}: need 1 <= n_states <= {len(z_mean)} particles")
    gmm = GaussianMixture(n_components=n_states, covariance_type="full", random_state=seed)
    gmm.fit(z_mean)
    means, covs, weights = (np.asarray(a, dtype=np.float64) for a in
                            (gmm.means_, gmm.covariances_, gmm.weights_))  # fmt: skip
    if z_sd is not None:
        means, covs = _extreme_deconvolution(z_mean, z_sd, means, covs, weights, n_iter)
    order = np.lexsort(means.T[::-1])
    return means[order], covs[order]


def _extreme_deconvolution(
    x: np.ndarray,
    sd: np.ndarray,
    means: np.ndarray,
    covs: np.ndarray,
    weights: np.ndarray,
    n_iter: int,
    tol: float = 1e-7,
) -> tuple[np.ndarray, np.ndarray]:
    """EM for a GMM observed with per-point diagonal Gaussian noise (Bovy et al. 2011)."""
    d = x.shape[1]
    noise = np.eye(d)[None] * (sd[:, :, None] ** 2)  # (N, D, D)
    floor = 1e-6 * np.eye(d) * np.mean(sd**2)
    prev = -np.inf
    for _ in range(n_iter):
        t = covs[None] + noise[:, None]  # (N, K, D, D)
        diff = x[:, None, :] - means[None]  # (N, K, D)
        t_inv = np.linalg.inv(t)
        sol = np.einsum("nkij,nkj->nki", t_inv, diff)
        _, logdet = np.linalg.slogdet(t)
        log_r = np.log(weights)[None] - 0.5 * (np.sum(diff * sol, -1) + logdet)
        log_norm = np.logaddexp.reduce(log_r, axis=1, keepdims=True)
        r = np.exp(log_r - log_norm)  # (N, K)
        b = means[None] + np.einsum("kij,nkj->nki", covs, sol)  # E[z | x, k]
        cov_post = covs[None] - np.einsum("kij,nkjl,klm->nkim", covs, t_inv, covs)
        rk = r.sum(axis=0)
        weights = rk / rk.sum()
        means = np.einsum("nk,nki->ki", r, b) / rk[:, None]
        dev = b - means[None]
        covs = (
            np.einsum("nk,nki,nkj->kij", r, dev, dev) + np.einsum("nk,nkij->kij", r, cov_post)
        ) / rk[:, None, None] + floor
        loglik = float(np.sum(log_norm))
        if abs(loglik - prev) < tol * abs(loglik):
            break
        prev = loglik
    return means, covs


def gmm_log_likelihoods(
    z_mean: np.ndarray, z_sd: np.ndarray, means: np.ndarray, covariances: np.ndarray
) -> np.ndarray:
    """(N, K) log N(z_mean[n]; mu_k, Sigma_k + diag(z_sd[n]**2)) for diagonal posteriors."""
    cov = covariances[None, :, :, :] + np.eye(z_mean.shape[1])[None, None] * (
        z_sd[:, None, :, None] ** 2
    )  # (N, K, D, D)
    diff = z_mean[:, None, :] - means[None, :, :]  # (N, K, D)
    chol = np.linalg.cholesky(cov)
    sol = np.linalg.solve(chol, diff[..., None])[..., 0]
    logdet = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    d = z_mean.shape[1]
    return -0.5 * (np.sum(sol**2, axis=-1) + logdet + d * np.log(2.0 * np.pi))
