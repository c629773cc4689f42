"""Per-particle latent posteriors as plain arrays, and reading them from a run directory.

A fitted run (``atomicspi fit``) writes ``RUN/latents.npz`` with
``z_mean (N, D)``, ``z_sd (N, D)`` (diagonal Normal posterior of each particle's
conformation latent, in latent units), optionally ``z_draws (S, N, D)`` (posterior draws)
and ``particle_index (N,)``. Landscapes are built on at most two latent dimensions; higher
dimensional latents are either rejected with a clear message or projected onto their first
principal components (:func:`project_latents`).
"""

from __future__ import annotations

import dataclasses
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atomicspi_bayes.errors import ConfigError, InputFormatError

__all__ = ["Latents", "project_latents", "read_latents"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Latents:
    """Diagonal-Normal per-particle posteriors q(z | y_n) = N(z_mean[n], diag(z_sd[n]**2)).

    Attributes:
        z_mean: (N, D) posterior means, latent units.
        z_sd: (N, D) posterior standard deviations, latent units, > 0.
        z_draws: optional (S, N, D) posterior draws, latent units.
        source: where the arrays came from (file name or "arrays"), used in messages.
        projection: optional (D_in, D) matrix the latents were projected with (PCA), and
            ``projection_center`` (D_in,) the centre subtracted before projecting.
    """

    z_mean: np.ndarray
    z_sd: np.ndarray
    z_draws: np.ndarray | None = None
    source: str = "arrays"
    projection: np.ndarray | None = None
    projection_center: np.ndarray | None = None

    def __post_init__(self) -> None:
        z_mean = np.asarray(self.z_mean, dtype=np.float64)
        z_sd = np.asarray(self.z_sd, dtype=np.float64)
        if z_mean.ndim == 1:
            z_mean = z_mean[:, None]
        if z_sd.ndim == 1:
            z_sd = z_sd[:, None]
        if z_mean.ndim != 2 or z_mean.shape[0] == 0:
            raise InputFormatError(
                f"{self.source}: z_mean has shape {z_mean.shape}, expected (N, D) with N >= 1"
            )
        if z_sd.shape != z_mean.shape:
            raise InputFormatError(
                f"{self.source}: z_sd shape {z_sd.shape} differs from z_mean shape "
                f"{z_mean.shape}; write one posterior sd per particle and latent dimension"
            )
        if not (np.all(np.isfinite(z_mean)) and np.all(np.isfinite(z_sd))):
            raise InputFormatError(
                f"{self.source}: z_mean/z_sd contain NaN or inf; the fit did not finish cleanly"
            )
        if np.any(z_sd <= 0):
            raise InputFormatError(
                f"{self.source}: z_sd has {int(np.sum(z_sd <= 0))} non-positive entries; "
                "posterior standard deviations must be > 0"
            )
        draws = self.z_draws
        if draws is not None:
            draws = np.asarray(draws, dtype=np.float64)
            if draws.ndim == 2 and z_mean.shape[1] == 1:
                draws = draws[..., None]
            if draws.ndim != 3 or draws.shape[1:] != z_mean.shape:
                raise InputFormatError(
                    f"{self.source}: z_draws shape {draws.shape} does not match "
                    f"(S, N, D) = (S, {z_mean.shape[0]}, {z_mean.shape[1]})"
                )
            if not np.all(np.isfinite(draws)):
                raise InputFormatError(f"{self.source}: z_draws contain NaN or inf")
        object.__setattr__(self, "z_mean", z_mean)
        object.__setattr__(self, "z_sd", z_sd)
        object.__setattr__(self, "z_draws", draws)

    @property
    def n_particles(self) -> int:
        return int(self.z_mean.shape[0])

    @property
    def dim(self) -> int:
        return int(self.z_mean.shape[1])


def read_latents(run: str | Path) -> Latents:
    """Read ``RUN/latents.npz`` (or an explicit ``.npz`` path) into :class:`Latents`.

    Raises:
        InputFormatError: the run directory or file is missing, unreadable, or lacks
            ``z_mean``/``z_sd`` (an unfinished fit), naming the file.
    """
    path = Path(run)
    if path.is_dir() or path.suffix != ".npz":
        if not path.exists():
            raise InputFormatError(f"{path}: run directory does not exist; run `atomicspi fit`")
        path = path / "latents.npz"
    if not path.is_file():
        raise InputFormatError(
            f"{path}: not found; the fit has not finished (run `atomicspi fit ... --out RUN`)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputFormatError(f"{path}: unreadable latents file ({exc})") from exc
    missing = [k for k in ("z_mean", "z_sd") if k not in arrays]
    if missing:
        raise InputFormatError(
            f"{path}: missing {', '.join(missing)} (has {sorted(arrays)}); the fit did not "
            "finish or wrote another format"
        )
    return Latents(
        z_mean=arrays["z_mean"],
        z_sd=arrays["z_sd"],
        z_draws=arrays.get("z_draws"),
        source=str(path),
    )


def project_latents(latents: Latents, n_components: int = 2) -> Latents:
    """Project latents onto their first ``n_components`` principal components.

    The principal axes are those of the posterior means. Means and draws are projected
    exactly; the projected posterior sd keeps the diagonal approximation,
    ``sd_j = sqrt(sum_d V[d, j]**2 * z_sd[:, d]**2)`` (cross-covariances are not stored).
    """
    if latents.dim <= n_components:
        return latents
    center = latents.z_mean.mean(axis=0)
    centered = latents.z_mean - center
    _, svals, vt = np.linalg.svd(centered, full_matrices=False)
    v = vt[:n_components].T  # (D, n_components)
    explained = svals[:n_components] ** 2 / np.sum(svals**2)
    logger.info(
        "projected %d-D latents onto %d principal components (variance explained %s)",
        latents.dim,
        n_components,
        np.round(explained, 3).tolist(),
    )
    draws = None if latents.z_draws is None else (latents.z_draws - center) @ v
    return dataclasses.replace(
        latents,
        z_mean=centered @ v,
        z_sd=np.sqrt((latents.z_sd**2) @ (v**2)),
        z_draws=draws,
        projection=v,
        projection_center=center,
    )


def check_dim(latents: Latents, project: str) -> Latents:
    """Return latents with dimension <= 2, projecting with PCA if ``project == "pca"``.

    Raises:
        ConfigError: dimension > 2 and no projection requested (says what to do).
    """
    if project not in ("none", "pca"):
        raise ConfigError(f"project={project!r} is not one of 'none', 'pca'")
    if latents.dim <= 2:
        return latents
    if project == "pca":
        return project_latents(latents, 2)
    raise ConfigError(
        f"{latents.source}: latent dimension {latents.dim} > 2; grid landscapes need 1 or 2 "
        "dimensions: pass --project pca (project onto the first 2 principal components)"
    )
