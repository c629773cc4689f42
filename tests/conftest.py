"""Session-wide test setup: where the third-party files of ../shared/data are.

The files live beside the repository (``<repo>/../shared/data``). A clone elsewhere finds
them through ``ATOMICSPI_SHARED_DATA``, a ``shared/data`` folder above the clone, or
``/work/shared/data``; tests read the path from ``ATOMICSPI_SHARED_DATA``.
"""

import os
import sys
from pathlib import Path

import pytest


def _find_shared_data() -> Path | None:
    here = Path(__file__).resolve()
    candidates = [parent / "shared" / "data" for parent in here.parents]
    candidates.append(Path("/work/shared/data"))
    return next((c for c in candidates if (c / "cryodrgn").is_dir()), None)


if "ATOMICSPI_SHARED_DATA" not in os.environ:
    found = _find_shared_data()
    if found is not None:
        os.environ["ATOMICSPI_SHARED_DATA"] = str(found)


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """``atomicspi ARGS...`` in this process: ``run_cli(args) -> (exit code, stdout, stderr)``."""
    from atomicspi_bayes.cli import main

    def run(args) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["atomicspi", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
