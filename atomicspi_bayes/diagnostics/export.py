"""ArviZ export of a fitted run: per-particle posterior draws and the SVI trace as NetCDF.

All ArviZ calls of the fit workflow live here (a later move to the ArviZ 1.x DataTree API is
then one file). Layout of ``RUN/posterior.nc`` (ArviZ 0.2x ``InferenceData``):

- ``posterior``: ``z`` (chain, draw, particle, latent_dim); with amortized poses also
  ``rotation`` (chain, draw, particle, row, col) and ``shift`` (chain, draw, particle, xy, Å).
- ``sample_stats``: ``log_q`` (chain, draw, particle), log-density of each z draw under its
  particle's amortized q (the encoder's Normal); ``elbo`` (chain, step), the ELBO estimate
  of every optimisation step.
- ``constant_data``: ``particle_index`` (particle,), row of each particle in the input file;
  ``z_mean``, ``z_sd`` (particle, latent_dim), mean and sd of the reported posterior; with a
  refined posterior also ``z_mean_amortized``, ``z_sd_amortized`` (the encoder's q) and
  ``ess`` (particle,) (importance ESS, or effective grid cells; see ``atomicspi_bayes.posterior``).
- attrs: ``posterior_method`` (``"amortized"``, ``"grid"`` or ``"importance"``).

One chain (the draws are independent draws from each particle's posterior).
"""

from __future__ import annotations

import os

import numpy as np

from atomicspi_bayes.errors import InputFormatError

__all__ = ["posterior_inference_data", "read_posterior", "write_posterior"]


def posterior_inference_data(
    z_draws: np.ndarray,
    z_mean: np.ndarray,
    z_sd: np.ndarray,
    particle_index: np.ndarray,
    elbo: np.ndarray,
    *,
    rotation_draws: np.ndarray | None = None,
    shift_draws: np.ndarray | None = None,
    z_mean_amortized: np.ndarray | None = None,
    z_sd_amortized: np.ndarray | None = None,
    ess: np.ndarray | None = None,
    posterior_method: str = "amortized",
):
    """Build the ``InferenceData`` of a run (see the module docstring for the layout).

    Args:
        z_draws: ``(S, N, D)`` posterior draws of z per particle (reported posterior).
        z_mean, z_sd: ``(N, D)`` its means and sds (for the amortized posterior, the
            parameters of the diagonal Normal q(z | y)).
        particle_index: ``(N,)`` row of each particle in the input particle file.
        elbo: ``(T,)`` ELBO per optimisation step.
        rotation_draws: optional ``(S, N, 3, 3)`` rotation draws (amortized poses).
        shift_draws: optional ``(S, N, 2)`` shift draws in Å (amortized poses).
        z_mean_amortized, z_sd_amortized: ``(N, D)`` the encoder's q when the reported
            posterior is a refined one (default: ``z_mean``, ``z_sd``).
        ess: optional ``(N,)`` per-particle ESS of the refinement.
        posterior_method: ``"amortized"``, ``"grid"`` or ``"importance"``.
    """
    import arviz as az
    import xarray as xr

    z_draws = np.asarray(z_draws)
    s, n, d = z_draws.shape
    if z_mean.shape != (n, d) or z_sd.shape != (n, d) or particle_index.shape != (n,):
        raise ValueError(
            f"shapes disagree: z_draws {z_draws.shape}, z_mean {z_mean.shape}, "
            f"z_sd {z_sd.shape}, particle_index {particle_index.shape}"
        )
    coords = {
        "chain": [0],
        "draw": np.arange(s),
        "particle": np.arange(n),
        "latent_dim": np.arange(d),
    }
    post = {"z": (("chain", "draw", "particle", "latent_dim"), z_draws[None])}
    if rotation_draws is not None:
        post["rotation"] = (("chain", "draw", "particle", "row", "col"), rotation_draws[None])
    if shift_draws is not None:
        post["shift"] = (("chain", "draw", "particle", "xy"), shift_draws[None])
    q_mean = z_mean if z_mean_amortized is None else np.asarray(z_mean_amortized)
    q_sd = z_sd if z_sd_amortized is None else np.asarray(z_sd_amortized)
    safe_sd = np.where(q_sd > 0, q_sd, np.nan)
    log_q = np.sum(
        -0.5 * ((z_draws - q_mean) / safe_sd) ** 2 - np.log(safe_sd) - 0.5 * np.log(2 * np.pi),
        axis=-1,
    )
    stats = {
        "log_q": (("chain", "draw", "particle"), log_q[None]),
        "elbo": (("chain", "step"), np.asarray(elbo, dtype=np.float64)[None]),
    }
    const = {
        "particle_index": (("particle",), np.asarray(particle_index)),
        "z_mean": (("particle", "latent_dim"), np.asarray(z_mean)),
        "z_sd": (("particle", "latent_dim"), np.asarray(z_sd)),
    }
    if z_mean_amortized is not None:
        const["z_mean_amortized"] = (("particle", "latent_dim"), np.asarray(q_mean))
        const["z_sd_amortized"] = (("particle", "latent_dim"), np.asarray(q_sd))
    if ess is not None:
        const["ess"] = (("particle",), np.asarray(ess, np.float64))
    idata = az.InferenceData(
        posterior=xr.Dataset(post, coords=coords),
        sample_stats=xr.Dataset(
            stats, coords={k: coords[k] for k in ("chain", "draw", "particle")}
        ),
        constant_data=xr.Dataset(const, coords={k: coords[k] for k in ("particle", "latent_dim")}),
    )
    idata.posterior.attrs["posterior_method"] = str(posterior_method)
    return idata


def write_posterior(path: str | os.PathLike, idata) -> None:
    """Write ``idata`` to NetCDF at ``path`` atomically (temp file in the folder + rename)."""
    from atomicspi_bayes.io._atomic import atomic_path

    with atomic_path(path) as tmp:
        idata.to_netcdf(str(tmp))


def read_posterior(path: str | os.PathLike):
    """Read ``RUN/posterior.nc`` back as ``InferenceData``.

    Raises:
        InputFormatError: the file is missing or not a NetCDF ``InferenceData``.
    """
    import arviz as az

    if not os.path.isfile(path):
        raise InputFormatError(f"{path}: posterior file not found; run `atomicspi fit` first")
    try:
        return az.from_netcdf(str(path))
    except (OSError, ValueError) as exc:
        raise InputFormatError(f"{path}: not a readable ArviZ NetCDF file ({exc})") from None
