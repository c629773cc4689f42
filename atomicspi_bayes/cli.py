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


# ---- inspect --------------------------------------------------------------------------


@app.command()
def inspect(
    path: Path = typer.Argument(..., help="Particles (.star/.cs), images (.mrc/.mrcs) or model."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object."),
    allow_outside_paths: bool = typer.Option(
        False, "--allow-outside-paths", help="Accept image paths outside the file's folder."
    ),
) -> None:
    """Summarise a particle, image-stack or structure file."""
    import json

    from atomicspi_bayes.io.summary import summarize

    info = summarize(path, allow_outside_paths=allow_outside_paths)
    if as_json:
        typer.echo(json.dumps(info))
        return
    from rich.table import Table

    table = Table(title=f"{path} ({info['kind']})", show_header=False)
    for key, value in info.items():
        if key != "kind":
            table.add_row(key.replace("_", " "), "unknown" if value is None else str(value))
    console.print(table)


if __name__ == "__main__":
    main()
