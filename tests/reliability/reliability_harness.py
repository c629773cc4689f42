"""Run the ``atomicspi`` command line in-process or as a subprocess and judge the outcome.

The exit-code contract (DESIGN.md, STYLE.md §7): bad input ends in exit code 2 with exactly
one line on stderr (``error: ...``), never a traceback; anything else ends in exit code 0
with a correct result. :func:`run_cli` calls :func:`atomicspi_bayes.cli.main` with
``sys.argv`` patched, so the real error mapping is exercised without a new interpreter; it
captures what the command prints on stdout/stderr and, separately (``notes``), what a fresh
process would also print on stderr: log records of level WARNING and above (logging's
last-resort handler) and Python warnings shown by default, which pytest would otherwise
swallow.

Outcome classes (:func:`classify`):

- ``"refused"``: exit 2 and exactly one stderr line starting with ``error:`` (log warnings
  printed before it are counted in ``notes``, see :attr:`CliOutcome.n_notes`);
- ``"usage"``: exit 2 from the option parser (typer's usage box, for unparsable option
  values); an accepted convention of typer, counted separately;
- ``"ok"``: exit 0 (the caller then checks the result);
- violations: ``"traceback"`` (an exception escaped ``main``), ``"bad_stderr"`` (exit 2 with
  other than one ``error:`` line), ``"exit_<code>"`` (any other exit code).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ACCEPTED = ("refused", "usage", "ok")


def accepted(kind: str) -> bool:
    return kind in ACCEPTED


# what the fit tests use: a small model that trains in seconds on 2 cores
TINY_FIT_TOML = """\
[fit]
n_modes = 4
decoder_hidden = [8]
encoder_hidden = [16]
n_draws = 4
n_ensemble = 2
checkpoint_every = 4
resolution = 10.0
warmup_steps = 2
"""


@dataclass
class CliOutcome:
    """What one command line did: exit ``code`` (None: an exception escaped), captured
    ``out``/``err`` text and, for escaped exceptions, the formatted traceback."""

    args: list[str]
    code: int | None
    out: str
    err: str
    exc: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def n_notes(self) -> int:
        """Log warnings / Python warnings a fresh process would print before ``err``."""
        return len(self.notes)

    @property
    def kind(self) -> str:
        return classify(self)

    def describe(self) -> str:
        body = self.exc if self.exc is not None else "".join(self.notes) + self.err
        return f"atomicspi {' '.join(self.args)} -> {self.kind} (code {self.code}):\n{body}"


def classify(outcome: CliOutcome) -> str:
    if outcome.code is None:
        return "traceback"
    if outcome.code == 0:
        return "ok"
    if outcome.code == 2:
        lines = outcome.err.rstrip("\n").split("\n")
        if len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) > 8:
            return "refused"
        if lines[0].startswith("Usage: atomicspi") and "Traceback" not in outcome.err:
            return "usage"
        return "bad_stderr"
    return f"exit_{outcome.code}"


class _LogNotes(logging.Handler):
    """Collect what logging's last-resort handler would print (WARNING and above) in a
    fresh process, instead of pytest's capture handlers."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage() + "\n")

    def __enter__(self) -> _LogNotes:
        root = logging.getLogger()
        self._handlers = root.handlers[:]
        for handler in self._handlers:
            root.removeHandler(handler)
        root.addHandler(self)
        return self

    def __exit__(self, *exc_info) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        for handler in self._handlers:
            root.addHandler(handler)


def run_cli(args: list, *, cwd: str | os.PathLike | None = None) -> CliOutcome:
    """Run ``atomicspi ARGS`` in this process through :func:`atomicspi_bayes.cli.main`."""
    from atomicspi_bayes.cli import main

    argv = ["atomicspi", *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    code: int | None = None
    exc_text = None
    old_argv, old_cwd = sys.argv, os.getcwd()
    logs = _LogNotes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's default filters: these are not shown
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                         ResourceWarning):  # fmt: skip
            warnings.filterwarnings("ignore", category=category)
        try:
            sys.argv = argv
            if cwd is not None:
                os.chdir(cwd)
            with (
                contextlib.redirect_stdout(out),
                contextlib.redirect_stderr(err),
                logs,
            ):
                try:
                    main()
                    code = 0
                except SystemExit as exc:
                    if exc.code is None:
                        code = 0
                    elif isinstance(exc.code, int):
                        code = exc.code
                    else:  # sys.exit("text") prints the text and exits 1
                        err.write(f"{exc.code}\n")
                        code = 1
                except BaseException:  # the harness reports every escape
                    exc_text = traceback.format_exc()
        finally:
            sys.argv = old_argv
            os.chdir(old_cwd)
    shown = [warnings.formatwarning(w.message, w.category, w.filename, w.lineno, None)
             for w in caught]  # fmt: skip
    return CliOutcome(
        [str(a) for a in args], code, out.getvalue(), err.getvalue(), exc_text,
        notes=logs.lines + shown,
    )  # fmt: skip


def subprocess_env(cache_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Environment of a CLI subprocess: CPU JAX, optional persistent compilation cache."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    if cache_dir is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    return env


def cli_command() -> list[str]:
    """The ``atomicspi`` entry point of this interpreter (works without the console script)."""
    return [sys.executable, "-c", "from atomicspi_bayes.cli import main; main()"]


def run_cli_subprocess(args: list, *, timeout: float = 300, env: dict | None = None) -> CliOutcome:
    """Run ``atomicspi ARGS`` in a fresh interpreter (what a user's shell does)."""
    proc = subprocess.run(
        [*cli_command(), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else subprocess_env(),
    )
    exc = proc.stderr if "Traceback (most recent call last)" in proc.stderr else None
    code = None if exc is not None else proc.returncode
    lines = proc.stderr.splitlines(keepends=True)
    # the command's own error line is the last; earlier lines are log warnings ("notes")
    cut = len(lines) - 1 if code == 2 and lines and lines[-1].startswith("error: ") else 0
    return CliOutcome(
        [str(a) for a in args], code, proc.stdout, "".join(lines[cut:]), exc, notes=lines[:cut]
    )


def adk_paths() -> tuple[Path, Path, Path]:
    """(adk_open.pdb, adk.psf, adk_dims.dcd) from MDAnalysisTests."""
    from MDAnalysisTests.datafiles import DCD, PSF, PDB_small

    return Path(PDB_small), Path(PSF), Path(DCD)


def shared_data() -> Path:
    shared = Path(
        os.environ.get(
            "ATOMICSPI_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"
        )
    )
    if not shared.is_dir():  # missing data is an error, never a skip
        raise FileNotFoundError(f"shared test data not found at {shared}")
    return shared
