"""The ``atomicspi`` command line: parse options, call one library function, write outputs.

No numerics here. Every user-facing failure is an :class:`AtomicspiError`; :func:`main`
prints it as one line on stderr and exits with code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from atomicspi_bayes.errors import AtomicspiError

app = typer.Typer(
    name="atomicspi",
    help="Atomic models, poses and conformational landscapes from single-particle images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


@app.callback()
def _root() -> None:
    """Atomic models, poses and conformational landscapes from single-particle images."""


def main() -> None:
    """Console-script entry point: run the app, turn :class:`AtomicspiError` into exit 2.

    Typer's standalone mode already turns usage errors into exit 2 and Ctrl-C into 130.
    """
    try:
        app()
    except AtomicspiError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(2)


# ---- commands -------------------------------------------------------------------------
# Each command lives in its own section below; keep them thin (parse, call, write).


@app.command()
def version() -> None:
    """Print the package version."""
    from atomicspi_bayes import __version__

    console.print(__version__)


# ---- report ---------------------------------------------------------------------------


@app.command()
def report(
    run: Path = typer.Argument(..., help="Run folder written by `atomicspi fit`."),
    out: Path = typer.Option(None, "--out", help="Output HTML file (default RUN/report.html)."),
) -> None:
    """Write RUN/report.html: one self-contained page with every figure of the run."""
    from atomicspi_bayes.report import write_report

    path = write_report(run, out)
    console.print(f"report: {path}")


if __name__ == "__main__":
    main()
