"""Full disk and read-only output folders, for real: run as a script in a private mount
namespace (``unshare --mount``, or ``--user --map-root-user --mount`` without root), where it
mounts a small tmpfs, copies a finished run into it and runs the commands in-process.

    python reliability_disk.py tmpfs|patch WORKDIR RUN DATASET STRUCTURE CONFIG

``tmpfs``: a real tmpfs (ENOSPC when full, EROFS after ``remount,ro``). ``patch``: no mount
possible here; ``tempfile.mkstemp``/``os.mkdir``/``os.unlink`` raise the same ``OSError``
instead (what the writers see first), a weaker stand-in used only where namespaces are off.

Prints one JSON line per case: command, condition, exit kind, the error line, whether the
earlier result is byte-identical and whether temporary files were left.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from reliability_harness import run_cli


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or "-tmp-" in p.name]


@contextmanager
def patched(code: int):
    """Writers fail with ``OSError(code)`` when they create, make folders or delete."""
    real = (tempfile.mkstemp, os.mkdir, os.unlink)

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(args[0]) if args else "output")

    tempfile.mkstemp, os.mkdir, os.unlink = fail, fail, fail
    try:
        yield
    finally:
        tempfile.mkstemp, os.mkdir, os.unlink = real


def cases(mnt: Path, dataset: Path, structure: Path, config: Path) -> list[tuple[str, list]]:
    run = mnt / "run"
    return [
        ("simulate", ["simulate", structure, "--out", mnt / "sim", "--n", 3, "--box", 32,
                      "--pixel-size", 2.5]),
        ("report", ["report", run, "--force"]),
        ("kinetics", ["kinetics", run, "--force", "--max-samples", 10]),
        ("landscape", ["landscape", run, "--force", "--samples", 10, "--grid", 8]),
        ("fit", ["fit", dataset / "particles.star", "--structure", structure, "--out",
                 mnt / "newfit", "--config", config, "--epochs", 1, "--batch-size", 10,
                 "--quiet"]),
        ("fit --force", ["fit", dataset / "particles.star", "--structure", structure, "--out",
                         run, "--config", config, "--epochs", 1, "--batch-size", 10, "--quiet",
                         "--force"]),
    ]  # fmt: skip


def judge(name: str, condition: str, args: list, mnt: Path) -> dict:
    before = digest(mnt / "run")
    outcome = run_cli(args)
    return {
        "command": name,
        "condition": condition,
        "kind": outcome.kind,
        "error": outcome.err.strip() if outcome.kind == "refused" else outcome.describe()[-1500:],
        "old_result_intact": digest(mnt / "run") == before,
        "temporaries": temporaries(mnt),
    }


def main() -> None:
    mode, work, run, dataset, structure, config = sys.argv[1:7]
    work, run = Path(work), Path(run)
    dataset, structure, config = Path(dataset), Path(structure), Path(config)
    mnt = work / "mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    if mode == "tmpfs":
        size_kb = 4096
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mnt)],
                       check=True)  # fmt: skip
    shutil.copytree(run, mnt / "run")
    if not (mnt / "run" / "report.html").exists():
        assert run_cli(["report", mnt / "run"]).kind == "ok"
    results = []
    # --- disk full: fill the tmpfs, leaving a few kB (config.toml fits, checkpoints do not)
    if mode == "tmpfs":
        free = shutil.disk_usage(mnt).free
        with open(mnt / "filler", "wb") as fh:
            fh.write(b"\0" * max(free - 6 * 1024, 0))
        for name, args in cases(mnt, dataset, structure, config):
            results.append(judge(name, "disk full (tmpfs)", args, mnt))
        (mnt / "filler").unlink()
        for leftover in ("sim", "newfit"):
            shutil.rmtree(mnt / leftover, ignore_errors=True)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        for name, args in cases(mnt, dataset, structure, config):
            results.append(judge(name, "read-only (tmpfs remount,ro)", args, mnt))
    else:
        for code, condition in ((errno.ENOSPC, "disk full (patched)"),
                                (errno.EROFS, "read-only (patched)")):  # fmt: skip
            for name, args in cases(mnt, dataset, structure, config):
                with patched(code):
                    results.append(judge(name, condition, args, mnt))
    for row in results:
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
