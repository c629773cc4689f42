"""``atomicspi diagnose``: ArviZ summaries of a run's posteriors, from its files alone.

- SVI runs (``RUN/latents.npz``, ``RUN/posterior.nc``): the distribution over particles of
  the posterior sd of each latent dimension (quantiles), the posterior contraction
  ``1 - median(sd²)/prior var``, the spread of the posterior means relative to the typical
  sd (particles told apart?), and ``az.summary`` statistics of the draws of a few particles.
  ESS/R-hat do not apply to independent variational draws and are not reported for them.
- NUTS runs (``RUN/nuts.npz`` written by ``fit --nuts-subset``, or a ``posterior.nc`` with
  several chains): ``az.summary`` per particle and dimension (bulk/tail ESS, R-hat). A
  single chain is split into halves (split R-hat).

All ArviZ calls of the diagnostics live in this package.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from atomicspi_bayes.errors import InputFormatError

__all__ = ["RunSummary", "summarize_run", "summary_tables", "write_summary"]

_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class RunSummary:
    """What :func:`summarize_run` found.

    Attributes:
        run_dir: the run.
        n_particles: N.  latent_dim: D.
        sd_quantiles: ``{f"z{j}": {q: sd}}`` quantiles over particles of the posterior sd.
        contraction: ``{f"z{j}": 1 - median(sd²)}`` (prior N(0, 1)).
        separation: ``{f"z{j}": sd(z_mean) / median(sd)}``.
        svi_summary: ``az.summary`` of the first particles' draws (pandas DataFrame) or None.
        nuts_summary: ``az.summary`` of NUTS draws (DataFrame with ess_bulk, ess_tail,
            r_hat) or None.
        z_sd: ``(N, D)`` posterior sds (for the figure).
        elbo_last: mean ELBO of the last 10 % of steps (NaN when absent).
        notes: human-readable remarks.
        posterior_method: the reported posterior (``"amortized"``, or refined: ``"grid"``,
            ``"importance"``; ``latents.npz`` ``posterior_method``).
        amortized_sd_median: ``{f"z{j}": median sd of the encoder's q}`` (refined runs).
        ess_quantiles: quantiles over particles of the refinement's ESS (refined runs).
    """

    run_dir: Path
    n_particles: int
    latent_dim: int
    sd_quantiles: dict[str, dict[str, float]]
    contraction: dict[str, float]
    separation: dict[str, float]
    svi_summary: object | None
    nuts_summary: object | None
    z_sd: np.ndarray
    elbo_last: float = float("nan")
    notes: list[str] = field(default_factory=list)
    posterior_method: str = "amortized"
    amortized_sd_median: dict[str, float] | None = None
    ess_quantiles: dict[str, float] | None = None

    def to_json(self) -> dict:
        out = {
            "n_particles": self.n_particles,
            "latent_dim": self.latent_dim,
            "posterior_sd_quantiles": self.sd_quantiles,
            "contraction": self.contraction,
            "separation": self.separation,
            "elbo_last": self.elbo_last,
            "notes": self.notes,
            "posterior_method": self.posterior_method,
        }
        if self.amortized_sd_median is not None:
            out["amortized_sd_median"] = self.amortized_sd_median
        if self.ess_quantiles is not None:
            out["ess_quantiles"] = self.ess_quantiles
        if self.nuts_summary is not None:
            df = self.nuts_summary
            out["nuts"] = {
                "n_rows": len(df),
                "min_ess_bulk": float(df["ess_bulk"].min()),
                "min_ess_tail": float(df["ess_tail"].min()),
                "max_r_hat": float(df["r_hat"].max()),
            }
        return out


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: np.asarray(npz[k]) for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputFormatError(
            f"{path}: not a readable .npz archive ({exc}); re-run `atomicspi fit`"
        ) from None


def _load_npy(path: Path) -> np.ndarray:
    """A numeric ``.npy`` array as float64 (an empty/truncated/foreign file: one line)."""
    import zipfile

    try:
        return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
    except (OSError, ValueError, TypeError, zipfile.BadZipFile, EOFError) as exc:
        raise InputFormatError(
            f"{path}: not a readable numeric .npy array ({exc}); re-run `atomicspi fit`"
        ) from None


def _draws_idata(draws: np.ndarray, split: bool):
    """``(C, S, n, D)`` draws -> InferenceData (chains split in halves when ``split``)."""
    import arviz as az

    if split:
        c, s = draws.shape[:2]
        half = s // 2
        draws = draws[:, : 2 * half].reshape(c * 2, half, *draws.shape[2:])
    return az.from_dict(posterior={"z": draws}, dims={"z": ["particle", "latent_dim"]})


def nuts_summary(draws: np.ndarray):
    """``az.summary`` (mean, sd, HDI, MCSE, bulk/tail ESS, R-hat) of ``(C, S, n, D)`` draws.

    One chain is split into two halves, so R-hat is the split R-hat.
    """
    import arviz as az

    draws = np.asarray(draws)
    if draws.ndim == 3:
        draws = draws[None]
    return az.summary(_draws_idata(draws, split=draws.shape[0] == 1))


def summarize_run(run_dir: str | os.PathLike, *, n_example_particles: int = 8) -> RunSummary:
    """Summaries of ``RUN/latents.npz``, ``RUN/posterior.nc``, ``RUN/nuts.npz``, ``elbo.npy``.

    Raises:
        InputFormatError: no ``latents.npz`` (not a finished run) or unreadable files.
    """
    import arviz as az

    from atomicspi_bayes.diagnostics.export import read_posterior

    run = Path(run_dir)
    latents_path = run / "latents.npz"
    if not latents_path.is_file():
        raise InputFormatError(
            f"{run}: no latents.npz; run `atomicspi fit` first (or wait for it to finish)"
        )
    lat = _load_npz(latents_path)
    if "z_mean" not in lat or "z_sd" not in lat:
        raise InputFormatError(
            f"{latents_path}: needs z_mean and z_sd arrays; re-run `atomicspi fit`"
        )
    z_mean, z_sd = np.asarray(lat["z_mean"], np.float64), np.asarray(lat["z_sd"], np.float64)
    if z_mean.ndim != 2 or z_sd.shape != z_mean.shape:
        raise InputFormatError(
            f"{latents_path}: z_mean {z_mean.shape} and z_sd {z_sd.shape} must be (N, D)"
        )
    n, d = z_mean.shape
    notes = []
    sd_q, contraction, separation = {}, {}, {}
    for j in range(d):
        name = f"z{j + 1}"
        sd_q[name] = {f"q{int(q * 100):02d}": float(np.quantile(z_sd[:, j], q)) for q in _QUANTILES}
        med = float(np.median(z_sd[:, j]))
        contraction[name] = 1.0 - med**2
        separation[name] = float(np.std(z_mean[:, j]) / med) if med > 0 else float("inf")
        if contraction[name] < 0.1:
            notes.append(
                f"{name}: posterior sds are close to the prior's (contraction "
                f"{contraction[name]:.2f}): the data barely inform this latent"
            )
    method = str(lat["posterior_method"]) if "posterior_method" in lat else "amortized"
    amortized_med = ess_q = None
    q_sd = lat.get("z_sd_amortized")
    if q_sd is not None and q_sd.shape == z_sd.shape and np.issubdtype(q_sd.dtype, np.number):
        amortized_med = {f"z{j + 1}": float(np.median(q_sd[:, j])) for j in range(d)}
    try:
        ess = np.asarray(lat.get("ess", np.zeros(0)), np.float64).ravel()
    except (TypeError, ValueError):  # a foreign array: no ESS summary
        ess = np.zeros(0)
    if ess.size == n and np.all(np.isfinite(ess)):
        ess_q = {f"q{int(q * 100):02d}": float(np.quantile(ess, q)) for q in _QUANTILES}
        low = float(np.mean(ess < 10))
        if method == "importance" and low > 0.05:
            notes.append(
                f"importance refinement: {100 * low:.0f} % of particles have ESS < 10 (their "
                "refined posteriors are unreliable)"
            )
    svi = None
    posterior_path = run / "posterior.nc"
    nuts = None
    if posterior_path.is_file():
        idata = read_posterior(posterior_path)
        chains = int(idata.posterior.sizes.get("chain", 1))
        sel = {"particle": list(range(min(n_example_particles, n)))}
        svi = az.summary(idata, var_names=["z"], coords=sel, kind="stats")
        if chains > 1:  # MCMC run written in the same layout
            nuts = az.summary(idata, var_names=["z"])
    nuts_path = run / "nuts.npz"
    if nuts is None and nuts_path.is_file():
        nz = _load_npz(nuts_path)
        if "z_draws" in nz:
            nuts = nuts_summary(nz["z_draws"])
            r_hat = float(nuts["r_hat"].max())
            if r_hat > 1.01:
                notes.append(f"NUTS: max split R-hat {r_hat:.3f} > 1.01; sample longer")
    elbo_last = float("nan")
    if (run / "elbo.npy").is_file():
        elbo = _load_npy(run / "elbo.npy").ravel()
        tail = elbo[-max(1, elbo.size // 10) :]
        tail = tail[np.isfinite(tail)]
        elbo_last = float(tail.mean()) if tail.size else float("nan")
    return RunSummary(
        run_dir=run, n_particles=n, latent_dim=d, sd_quantiles=sd_q, contraction=contraction,
        separation=separation, svi_summary=svi, nuts_summary=nuts, z_sd=z_sd,
        elbo_last=elbo_last, notes=notes, posterior_method=method,
        amortized_sd_median=amortized_med, ess_quantiles=ess_q,
    )  # fmt: skip


def summary_tables(summary: RunSummary) -> list:
    """rich ``Table`` objects of a :class:`RunSummary` (the CLI prints them)."""
    from rich.table import Table

    tables = []
    kind = (
        "amortized q"
        if summary.posterior_method == "amortized"
        else (f"refined, {summary.posterior_method}")
    )
    t = Table(title=f"Per-particle posterior sd ({summary.n_particles} particles, {kind})")
    t.add_column("latent")
    for q in _QUANTILES:
        t.add_column(f"sd q{int(q * 100):02d}", justify="right")
    t.add_column("contraction", justify="right")
    t.add_column("sd(mean)/median sd", justify="right")
    if summary.amortized_sd_median is not None:
        t.add_column("median sd of q", justify="right")
    for name, qs in summary.sd_quantiles.items():
        extra = []
        if summary.amortized_sd_median is not None:
            extra = [f"{summary.amortized_sd_median[name]:.4g}"]
        t.add_row(
            name, *(f"{v:.4g}" for v in qs.values()), f"{summary.contraction[name]:.3f}",
            f"{summary.separation[name]:.3g}", *extra,
        )  # fmt: skip
    if summary.ess_quantiles is not None:
        label = "ESS" if summary.posterior_method == "importance" else "effective grid cells"
        t.caption = f"{label} per particle: " + ", ".join(
            f"{k} {v:.3g}" for k, v in summary.ess_quantiles.items()
        )
    tables.append(t)
    for title, df in (
        ("az.summary of the first particles' posterior draws", summary.svi_summary),
        ("az.summary of the NUTS draws (split R-hat)", summary.nuts_summary),
    ):
        if df is None:
            continue
        t = Table(title=title)
        t.add_column("")
        for col in df.columns:
            t.add_column(str(col), justify="right")
        for idx, row in df.head(20).iterrows():
            t.add_row(str(idx), *(f"{v:.4g}" for v in row.to_numpy()))
        if len(df) > 20:
            t.caption = f"first 20 of {len(df)} rows (all in nuts_summary.csv)"
        tables.append(t)
    return tables


def write_summary(summary: RunSummary, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``summary.json``, ``posterior_sd.png`` and (NUTS) ``nuts_summary.csv``."""
    from atomicspi_bayes.diagnostics.figures import posterior_sd_figure, save_figure
    from atomicspi_bayes.io._atomic import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "summary.json"]
    with atomic_path(paths[0]) as tmp:
        Path(tmp).write_text(json.dumps(summary.to_json(), indent=2, allow_nan=True) + "\n")
    paths.append(save_figure(posterior_sd_figure(summary.z_sd), out / "posterior_sd.png"))
    if summary.nuts_summary is not None:
        path = out / "nuts_summary.csv"
        with atomic_path(path) as tmp:
            summary.nuts_summary.to_csv(tmp, index_label="variable")
        paths.append(path)
    return paths
