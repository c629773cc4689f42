"""Reading a finished run back for the model-based diagnostics (SBC, PPC, gap, FSC).

The run's model and guide are rebuilt by the fit pipeline (``pipeline.build_problem`` from
``RUN/config.toml``; the CLI does that, since diagnostics may not import pipeline); this
module reads the ``[run]`` facts and restores the learned parameters from the newest
checkpoint in ``RUN/checkpoints/``, and runs every diagnostic on a run directory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from atomicspi_bayes.errors import ConfigError, InputFormatError

__all__ = [
    "DiagnoseOptions",
    "calibrate_run",
    "diagnose_run",
    "read_run_facts",
    "reported_guide",
    "restore_params",
]

logger = logging.getLogger(__name__)


def read_run_facts(run_dir: str | os.PathLike) -> dict:
    """The ``[run]`` table of ``RUN/config.toml`` (particles, structure, num_steps, ...).

    Raises:
        InputFormatError: missing/unreadable config or no ``[run]`` table.
    """
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise InputFormatError(
            f"{path}: not found; is {run_dir} a run folder written by `atomicspi fit`?"
        )
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputFormatError(f"{path}: not valid TOML ({exc})") from None
    facts = data.get("run")
    if not isinstance(facts, dict) or "particles" not in facts or "structure" not in facts:
        raise InputFormatError(
            f"{path}: no [run] table with particles/structure; re-run `atomicspi fit`"
        )
    return facts


def restore_params(run_dir: str | os.PathLike, problem) -> dict:
    """SVI parameters (constrained values) from the newest ``RUN/checkpoints/ckpt_*.npz``.

    The SVI state template comes from ``SVI.init`` of ``problem.model``/``problem.guide`` on
    the first minibatch with the engine's optimizer layout
    (``inference.make_optimizer``: clip + Adam); the checkpoint's leaves are checked against
    it leaf by leaf (``inference.load_checkpoint``).

    Raises:
        InputFormatError: no checkpoint or one of another model.
    """
    from numpyro.infer import SVI, Trace_ELBO

    from atomicspi_bayes.inference import SVIConfig, load_checkpoint, make_optimizer

    folder = Path(run_dir) / "checkpoints"
    optimizer = make_optimizer(SVIConfig(num_steps=2, learning_rate=1e-3, clip_norm=10.0))
    svi = SVI(problem.model, problem.guide, optimizer, Trace_ELBO())
    template = jax.jit(lambda k, b: svi.init(k, b))(jax.random.PRNGKey(0), problem.batch_fn(0))
    ckpt = load_checkpoint(folder, template, fingerprint=None)
    logger.info("restored parameters of step %d from %s", ckpt.step, ckpt.path)
    return svi.get_params(ckpt.state)


def reported_guide(problem, posterior: str | None = None):
    """The posterior a run reports, as a guide or sampler for SBC/PPC draws.

    ``posterior``: ``"refined"`` (``posterior.refined_sampler``: exact grid for fixed poses
    and D <= 2, importance sampling otherwise) or ``"amortized"`` (``problem.guide``);
    default: the run's setting ``problem.cfg.posterior`` (``"amortized"`` when the problem
    has none).

    Raises:
        ConfigError: unknown ``posterior``.
    """
    from atomicspi_bayes.posterior import refined_sampler

    if posterior is None:
        posterior = getattr(getattr(problem, "cfg", None), "posterior", "amortized")
    if posterior not in ("refined", "amortized"):
        raise ConfigError(f"posterior must be 'refined' or 'amortized', got {posterior!r}")
    return refined_sampler(problem) if posterior == "refined" else problem.guide


@dataclass(frozen=True)
class DiagnoseOptions:
    """What :func:`diagnose_run` does beyond the file summary.

    Attributes:
        ppc: run posterior predictive checks.  ppc_n: particles checked (0 = all).
        ppc_draws: posterior draws per particle.
        gap: particles in the amortization-gap table (0 = skip).
        gap_method: ``"auto"``, ``"grid"`` or ``"nuts"``.
        fsc: half-set FSC of the posterior-mean ensembles.
        seed: PRNG seed.
    """

    ppc: bool = True
    ppc_n: int = 1000
    ppc_draws: int = 16
    gap: int = 0
    gap_method: str = "auto"
    fsc: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.ppc_n < 0 or self.ppc_draws < 1 or self.gap < 0:
            raise ConfigError(
                f"diagnose: ppc_n >= 0, ppc_draws >= 1, gap >= 0 needed; got {self.ppc_n}, "
                f"{self.ppc_draws}, {self.gap}"
            )
        if self.gap_method not in ("auto", "grid", "nuts"):
            raise ConfigError(f"gap method must be auto, grid or nuts; got {self.gap_method!r}")


def diagnose_run(
    run_dir: str | os.PathLike, problem=None, params: dict | None = None,
    options: DiagnoseOptions | None = None,
) -> dict:  # fmt: skip
    """Write ``RUN/diagnostics/``: summary (always); PPC, gap, FSC when a problem is given.

    Returns ``{"summary": RunSummary, "ppc": PPCResult | None, "gap": ..., "fsc": ...,
    "paths": [written files]}``.
    """
    from atomicspi_bayes.diagnostics.amortization import amortization_gap, write_amortization_gap
    from atomicspi_bayes.diagnostics.fsc import half_set_fsc, write_fsc
    from atomicspi_bayes.diagnostics.ppc import posterior_predictive_check, write_ppc
    from atomicspi_bayes.diagnostics.summary import summarize_run, write_summary

    options = options or DiagnoseOptions()
    run = Path(run_dir)
    out = run / "diagnostics"
    summary = summarize_run(run)
    paths = write_summary(summary, out)
    result = {"summary": summary, "ppc": None, "gap": None, "fsc": None}
    if problem is None:
        result["paths"] = paths
        return result
    key = jax.random.PRNGKey(options.seed)
    k_ppc, k_gap, k_fsc, k_sel = jax.random.split(key, 4)
    n = problem.n_particles
    if options.ppc:
        positions = None
        if options.ppc_n and options.ppc_n < n:
            positions = np.sort(
                np.asarray(jax.random.choice(k_sel, n, (options.ppc_n,), replace=False))
            )
        ppc = posterior_predictive_check(
            k_ppc, problem, params, positions=positions, n_draws=options.ppc_draws,
            guide=reported_guide(problem),
        )  # fmt: skip
        paths += write_ppc(ppc, out)
        result["ppc"] = ppc
    if options.gap:
        positions = np.arange(min(options.gap, n))
        gap = amortization_gap(k_gap, problem, params, positions, method=options.gap_method)
        paths += write_amortization_gap(gap, out)
        result["gap"] = gap
    if options.fsc:
        from atomicspi_bayes.diagnostics.summary import _load_npz

        z_mean = _load_npz(run / "latents.npz")["z_mean"]
        fsc, _, _ = half_set_fsc(k_fsc, problem, params, z_mean)
        paths += write_fsc(fsc, out)
        result["fsc"] = fsc
    result["paths"] = paths
    return result


def calibrate_run(
    run_dir: str | os.PathLike,
    problem=None,
    params: dict | None = None,
    *,
    n_sims: int = 1000,
    n_draws: int = 99,
    seed: int = 0,
    guide_scale: float | None = None,
    posterior: str | None = None,
) -> tuple[object, list[Path]]:
    """SBC of the posterior a run reports, written to ``RUN/calibration/``.

    Files: ``sbc.json``, ``sbc.npz``, ``sbc_ranks.png``, ``sbc_ecdf.png`` (the layout
    ``report.artifacts`` reads). ``posterior`` (default: the run's ``posterior`` setting,
    see :func:`reported_guide`) picks the refined per-particle posterior or the amortized
    q. ``guide_scale`` shrinks the posterior's spread first (a deliberately miscalibrated
    posterior, e.g. 0.5: the amortized guide's z sds, or each particle's refined draws
    about their mean) and is recorded in the JSON.

    Args:
        run_dir: the run folder.
        problem, params: the run's fitted problem and SVI parameters, e.g. ``FitResult.problem``
            and ``FitResult.params`` of ``pipeline.fit``, or ``pipeline.build_problem`` +
            :func:`restore_params` (what ``atomicspi calibrate`` does).
        n_sims, n_draws, seed: SBC size and PRNG seed.

    Raises:
        ConfigError: no problem/params given.
    """
    from atomicspi_bayes.diagnostics.predictive import shrink_guide
    from atomicspi_bayes.diagnostics.sbc import sbc, write_sbc

    if problem is None or params is None:
        raise ConfigError(
            "calibrate_run needs the run's problem and params (FitResult.problem/.params, or "
            "pipeline.build_problem + diagnostics.restore_params as `atomicspi calibrate` does)"
        )
    guide = reported_guide(problem, posterior)
    draw_scale = 1.0
    if guide_scale is not None:
        if hasattr(guide, "sample"):
            draw_scale = float(guide_scale)
        else:
            guide = shrink_guide(guide, guide_scale)
    result = sbc(
        jax.random.PRNGKey(seed), problem, params, n_sims=n_sims, n_draws=n_draws, guide=guide,
        draw_scale=draw_scale,
    )  # fmt: skip
    method = getattr(guide, "method", "amortized")
    extra = {
        "seed": seed, "guide_scale": 1.0 if guide_scale is None else float(guide_scale),
        "posterior": "amortized" if method == "amortized" else f"refined ({method})",
    }  # fmt: skip
    result = dataclasses.replace(result, extra=extra)
    return result, write_sbc(result, Path(run_dir) / "calibration")
