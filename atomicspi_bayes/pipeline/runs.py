"""Reopen a finished run folder: the fitted problem rebuilt from RUN/config.toml, and params."""

from __future__ import annotations

from pathlib import Path

from atomicspi_bayes.errors import ConfigError, InputFormatError


def load_fitted_run(run: str | Path):
    """``(problem, params)`` of a finished ``atomicspi fit`` run.

    The problem (data, model, guide) is rebuilt by the fit pipeline from the run's recorded
    inputs and ``config.toml``; the learned parameters come from its last checkpoint.

    Raises:
        InputFormatError: the folder holds no finished fit (no ``latents.npz``).
        ConfigError: an X-ray run (``modality = "xray"``): no rebuilt problem for it yet.
    """
    from atomicspi_bayes.diagnostics import read_run_facts, restore_params
    from atomicspi_bayes.pipeline.fit import build_problem, read_fit_config

    run = Path(run)
    facts = read_run_facts(run)
    if facts.get("modality") == "xray":
        raise ConfigError(
            f"{run}: an X-ray run (modality = 'xray'); PPC, amortization gap, FSC and calibrate "
            "rebuild the cryo-EM model only: use 'atomicspi diagnose RUN --no-ppc --no-fsc'"
        )
    if not (run / "latents.npz").is_file():
        raise InputFormatError(f"{run}: no latents.npz; the fit has not finished")
    cfg = read_fit_config(run / "config.toml")
    problem = build_problem(
        facts["particles"], facts["structure"], cfg, topology=facts.get("topology")
    )
    return problem, restore_params(run, problem)
