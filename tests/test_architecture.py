"""The import rules of ARCHITECTURE.md, checked on the source (one table, one place)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "atomicspi_bayes"

ALLOWED = {
    "errors": set(),
    "atomic_files": {"errors"},
    "physics": {"errors", "physics"},
    "structure": {"errors", "physics", "structure"},
    "io": {"errors", "structure", "physics", "io"},
    "model": {"errors", "physics", "structure"},
    "guides": {"errors", "model", "physics", "guides"},
    "inference": {"errors", "inference"},
    "posterior": {"errors", "physics", "structure", "model", "guides"},
    "landscape": {"errors", "landscape"},
    "kinetics": {"errors", "kinetics"},
    "synthetic": {"errors", "io", "physics", "structure", "synthetic"},
    "diagnostics": {
        "errors",
        "io",
        "physics",
        "structure",
        "model",
        "guides",
        "inference",
        "posterior",
        "diagnostics",
    },
    "report": {
        "errors",
        "io",
        "structure",
        "physics",
        "landscape",
        "kinetics",
        "diagnostics",
        "report",
    },
}
# any package may import the atomic writers (ARCHITECTURE.md), which import only errors
EVERYONE_MAY_IMPORT = {"atomic_files"}
for _unit_name, _allowed in ALLOWED.items():
    if _unit_name not in {"errors", *EVERYONE_MAY_IMPORT}:
        _allowed |= EVERYONE_MAY_IMPORT
NO_NUMPYRO = {"errors", "atomic_files", "physics", "structure", "io"}


def _unit(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if _unit(p) in ALLOWED)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_architecture(path):
    unit = _unit(path)
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "atomicspi_bayes" and len(parts) > 1:
            assert parts[1].removesuffix(".py") in ALLOWED[unit] | {"__init__"}, (
                f"{path.relative_to(PACKAGE)} imports {name}, not allowed for {unit}"
            )
        if unit in NO_NUMPYRO:
            assert parts[0] != "numpyro", f"{path.relative_to(PACKAGE)} imports numpyro"


def test_every_package_is_ruled():
    units = {_unit(p) for p in PACKAGE.rglob("*.py")}
    assert units - set(ALLOWED) <= {"__init__", "cli", "pipeline"}
