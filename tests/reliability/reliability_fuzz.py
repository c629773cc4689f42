"""Fuzz cases for the whole command line: mutated real files and bad options -> every command.

Each case family draws (through hypothesis ``data.draw``) a command, its inputs and a
mutation of real files — the third-party files in ``../shared/data`` and a tiny dataset and
finished run made by ``atomicspi simulate`` / ``atomicspi fit`` — writes them to a fresh
folder, runs the command in-process (:func:`reliability_harness.run_cli`) and judges it:

- exit 2 with exactly one ``error:`` line (or typer's usage box for an unparsable option), or
- exit 0 with a result that passes the family's checks (files complete and loadable, counts
  consistent, no NaN, nothing left half-written),

and never a traceback, another exit code, or a file created by a hostile pickle.

Mutations: truncation, bit flips, random byte runs, appended garbage, empty files, MRC header
lies (dimensions up to 2**31-1, modes, NSYMBT, cell, map/machine stamps), NaN/inf/constant
images, wrong-length stacks, STAR columns dropped/renamed, bad values (NaN, inf, negative or
huge numbers, text), ``..``/absolute/unicode image paths, broken TOML recipes, mutated PDB
files, and broken run folders (files deleted, truncated, arrays replaced by NaN, wrong shapes
or a pickle that calls ``os.system``).

Used by ``test_cli_fuzz.py`` (a few hundred cases in CI) and ``benchmarks/fuzz_cli.py``
(>= 1000 cases, outcome counts as JSON).
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import shutil
import signal
import struct
import time
import tomllib
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hypothesis import strategies as st
from reliability_harness import (
    TINY_FIT_TOML,
    CliOutcome,
    accepted,
    run_cli,
    run_cli_subprocess,
    shared_data,
)

FAMILIES = ("inspect", "simulate", "fit", "run")
CASE_TIMEOUT_S = 600


class CaseTimeout(BaseException):
    """A case ran longer than :data:`CASE_TIMEOUT_S` (a hang is a failure too)."""


# ---------------------------------------------------------------- workspace


@dataclass
class Workspace:
    """Base files every case copies and mutates.

    Attributes:
        root: folder of the workspace.
        structure: the reference PDB (1orc, two Cro chains, 553 atoms).
        dataset: folder with ``particles.star``, ``particles.mrcs`` (20 images, 32 px,
            2.5 Å) and ``truth.npz`` written by ``atomicspi simulate``.
        config: a tiny fit recipe (TOML).
        run: a finished ``atomicspi fit`` run of the dataset, with ``landscape/`` and
            ``kinetics/`` outputs.
    """

    root: Path
    structure: Path
    dataset: Path
    config: Path
    run: Path
    outcomes: Counter = field(default_factory=Counter)
    by_family: dict = field(default_factory=dict)
    seconds: Counter = field(default_factory=Counter)

    def record(self, family: str, kind: str, seconds: float) -> None:
        self.outcomes[kind] += 1
        self.by_family.setdefault(family, Counter())[kind] += 1
        self.seconds[family] += seconds


def _must(outcome: CliOutcome) -> CliOutcome:
    if outcome.kind != "ok":
        raise RuntimeError(f"workspace setup failed: {outcome.describe()}")
    return outcome


def build_workspace(root: Path) -> Workspace:
    """Simulate the tiny dataset, fit it, compute landscape and kinetics (all via the CLI)."""
    root.mkdir(parents=True, exist_ok=True)
    structure = root / "1orc.pdb"
    shutil.copyfile(shared_data() / "gemmi" / "1orc.pdb", structure)
    config = root / "tiny.toml"
    config.write_text(TINY_FIT_TOML)
    dataset, run = root / "dataset", root / "run"
    _must(run_cli(["simulate", structure, "--out", dataset, "--n", 20, "--box", 32,
                   "--pixel-size", 2.5, "--seed", 3]))  # fmt: skip
    _must(run_cli(["fit", dataset / "particles.star", "--structure", structure, "--out", run,
                   "--config", config, "--epochs", 1, "--batch-size", 10, "--quiet"]))  # fmt: skip
    _must(run_cli(["landscape", run, "--samples", 10, "--grid", 8]))
    _must(run_cli(["kinetics", run, "--max-samples", 10]))
    return Workspace(root, structure, dataset, config, run)


# ---------------------------------------------------------------- byte/text mutations

_INT_LIES = [0, -1, 1, 2, 3, 4, 5, 6, 7, 12, 101, 255, 401, 65536, 10**6, 2**31 - 1, -(2**31)]
_FLOAT_LIES = [0.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e30, 1e-30]
# MRC header words: NX NY NZ MODE NXSTART MX MY MZ CELLA.x CELLA.z MAPC ISPG NSYMBT MAP MACHST
_MRC_WORDS = {0: "<i", 4: "<i", 8: "<i", 12: "<i", 16: "<i", 28: "<i", 32: "<i", 36: "<i",
              40: "<f", 48: "<f", 64: "<i", 88: "<i", 92: "<i", 208: "4s", 212: "<i"}  # fmt: skip
BAD_VALUES = [
    "nan",
    "NaN",
    "inf",
    "-inf",
    "-1",
    "0",
    "-0",
    "1e400",
    "-1e400",
    "1e30",
    "abc",
    '""',
    "1,5",
    "0x10",
    "3.5e38",
    "-2.5",
    "99999999999999999999999",
    "ü",
    "1.5",
]
BAD_PATHS = [
    "../../etc/passwd",
    "/etc/passwd",
    "sub/../../x.mrcs",
    "ünï çødé.mrcs",
    "..",
    ".",
    "a b.mrcs",
    "/",
    "~/p.mrcs",
    "C:\\p.mrcs",
    "%s%n.mrcs",
    "missing.mrcs",
    "/dev/zero",
    "../dataset/particles.mrcs",
    "particles.mrcs/../particles.mrcs",
]


def mutate_bytes(data: bytes, r: Fair) -> bytes:
    kind = r.choice(["truncate", "flip", "run", "empty", "append"])
    buf = bytearray(data)
    if kind == "empty" or not buf:
        return b""
    if kind == "truncate":
        return bytes(buf[: r.randint(0, len(buf) - 1)])
    if kind == "append":
        return bytes(buf) + r.bytes(1, 256)
    if kind == "flip":
        for _ in range(r.randint(1, 16)):
            pos = r.randint(0, len(buf) - 1)
            buf[pos] ^= 1 << r.randint(0, 7)
        return bytes(buf)
    start = r.randint(0, len(buf) - 1)
    run = r.bytes(1, 64)
    buf[start : start + len(run)] = run
    return bytes(buf)


def mutate_mrc(data: bytes, r: Fair) -> bytes:
    """Header lies, NaN/inf/constant images, wrong lengths, or plain byte damage."""
    kind = r.choice(["header", "header", "images", "length", "bytes"])
    buf = bytearray(data)
    if len(buf) < 1024 or kind == "bytes":
        return mutate_bytes(bytes(buf), r)
    nx, ny, nz, mode = struct.unpack("<4i", buf[:16])
    nsymbt = struct.unpack("<i", buf[92:96])[0]
    if kind == "header":
        for _ in range(r.randint(1, 3)):
            off = r.choice(sorted(_MRC_WORDS))
            fmt = _MRC_WORDS[off]
            if fmt == "<i":
                value = struct.pack(fmt, r.choice(_INT_LIES))
            elif fmt == "<f":
                value = struct.pack(fmt, r.choice(_FLOAT_LIES))
            else:
                value = r.choice([b"MAP ", b"XXXX", b"\0\0\0\0"])
            buf[off : off + 4] = value
        return bytes(buf)
    image_bytes = nx * ny * 4
    start = 1024 + max(nsymbt, 0)
    if kind == "length":  # wrong-length stack: whole images missing or extra
        n_keep = r.randint(0, max(nz - 1, 0))
        if r.coin():
            return bytes(buf[: start + n_keep * image_bytes])
        return bytes(buf) + bytes(image_bytes * r.randint(1, 3))
    if mode != 2 or nz < 1 or start + nz * image_bytes > len(buf):
        return mutate_bytes(bytes(buf), r)
    images = np.frombuffer(bytes(buf[start : start + nz * image_bytes]), dtype="<f4")
    images = images.reshape(nz, ny, nx).copy()
    for _ in range(r.randint(1, max(1, nz))):
        i = r.randint(0, nz - 1)
        what = r.choice(["nan", "inf", "constant", "pixel_nan", "huge"])
        if what == "nan":
            images[i] = np.nan
        elif what == "inf":
            images[i] = -np.inf
        elif what == "constant":
            images[i] = r.choice([0.0, 7.0])
        elif what == "pixel_nan":
            images[i, r.randint(0, ny - 1), r.randint(0, nx - 1)] = np.nan
        else:
            images[i] = 3.0e38
    buf[start : start + nz * image_bytes] = images.astype("<f4").tobytes()
    return bytes(buf)


def _data_rows(lines: list[str]) -> list[int]:
    skip = ("_", "#", "data_", "loop_")
    return [i for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith(skip)]


def mutate_star(text: str, r: Fair) -> bytes:
    """STAR damage: columns dropped/renamed, bad values, hostile image paths, rows, blocks."""
    ops = ["drop_column", "rename_column", "value", "column_value", "image_path",
           "image_index", "drop_rows", "tokens", "block", "truncate", "bytes"]  # fmt: skip
    lines = text.split("\n")
    for _ in range(r.randint(1, 3)):
        op = r.choice(ops)
        headers = [i for i, ln in enumerate(lines) if ln.lstrip().startswith("_")]
        rows = _data_rows(lines)
        if op == "drop_column" and headers:
            del lines[r.choice(headers)]
        elif op == "rename_column" and headers:
            i = r.choice(headers)
            new = r.choice(["_rlnX", "_rln", "_", "_rlnImageNameé", "_rlnImageName"])
            lines[i] = new + " " + " ".join(lines[i].split()[1:])
        elif op in ("value", "column_value") and rows:
            targets = rows if op == "column_value" else [r.choice(rows)]
            width = len(lines[targets[0]].split())
            j = r.randint(0, max(width - 1, 0))
            value = r.choice(BAD_VALUES)
            for i in targets:
                tokens = lines[i].split()
                if j < len(tokens):
                    tokens[j] = value
                    lines[i] = " ".join(tokens)
        elif op in ("image_path", "image_index") and rows:
            everywhere = r.coin()
            targets = rows if everywhere else [r.choice(rows)]
            bad = r.choice(BAD_PATHS if op == "image_path" else BAD_VALUES)
            for i in targets:
                tokens = lines[i].split()
                for k, tok in enumerate(tokens):
                    if "@" in tok:
                        index, path = tok.split("@", 1)
                        tokens[k] = f"{index}@{bad}" if op == "image_path" else f"{bad}@{path}"
                        break
                lines[i] = " ".join(tokens)
        elif op == "drop_rows" and rows:
            keep = r.randint(0, len(rows) - 1)
            drop = set(rows[keep:]) if r.coin() else {r.choice(rows)}
            lines = [ln for i, ln in enumerate(lines) if i not in drop]
        elif op == "tokens" and rows:
            i = r.choice(rows)
            tokens = lines[i].split()
            if r.coin() and tokens:
                tokens.pop(r.randint(0, len(tokens) - 1))
            else:
                tokens.append(r.choice(BAD_VALUES))
            lines[i] = " ".join(tokens)
        elif op == "block":
            choice = r.choice(["rename", "no_loop", "double", "optics_only"])
            if choice == "rename":
                lines = [ln.replace("data_particles", "data_x") for ln in lines]
            elif choice == "no_loop":
                lines = [ln for ln in lines if ln.strip() != "loop_"]
            elif choice == "double":
                lines = lines + lines
            else:
                cut = next((i for i, ln in enumerate(lines) if "data_particles" in ln), len(lines))
                lines = lines[:cut]
        elif op == "truncate":
            text = "\n".join(lines)
            lines = text[: r.randint(0, len(text))].split("\n")
        elif op == "bytes":
            return mutate_bytes("\n".join(lines).encode(), r)
    return "\n".join(lines).encode("utf-8", errors="surrogateescape")


def mutate_pdb(text: str, r: Fair) -> bytes:
    kind = r.choice(["columns", "coords", "no_atoms", "bytes"])
    lines = text.splitlines(keepends=True)
    atoms = [i for i, ln in enumerate(lines) if ln.startswith(("ATOM", "HETATM"))]
    if kind == "bytes" or not atoms:
        return mutate_bytes(text.encode(), r)
    if kind == "no_atoms":
        return "".join(ln for ln in lines if not ln.startswith(("ATOM", "HETATM"))).encode()
    for _ in range(r.randint(1, 6)):
        i = r.choice(atoms)
        line = lines[i].ljust(80)
        if kind == "coords":
            col = r.choice([30, 38, 46])
            value = r.choice(["     nan", "     inf", " 1.0e+30", "********", "   -0.0 "])
            lines[i] = line[:col] + value + line[col + 8 :].rstrip() + "\n"
        else:
            col = r.randint(0, 79)
            ch = r.choice(list("X9 -.*é\t"))
            lines[i] = line[:col] + ch + line[col + 1 :].rstrip() + "\n"
    return "".join(lines).encode("utf-8")


def mutate_toml(text: str, r: Fair) -> bytes:
    kind = r.choice(["value", "unknown", "table", "bytes"])
    if kind == "bytes":
        return mutate_bytes(text.encode(), r)
    lines = text.splitlines()
    if kind == "unknown":
        lines.append(r.choice(["bogus = 1", "epochs = 1", 'poses = "x"']))
    elif kind == "table":
        lines = [r.choice(["fit = 3", "[fit.sub]", "[other]", "[fit]"]), *lines]
    else:
        keys = [i for i, ln in enumerate(lines) if "=" in ln]
        i = r.choice(keys)
        name = lines[i].split("=")[0].strip()
        value = r.choice(
            [
                '"abc"',
                "-1",
                "0",
                "1e400",
                "nan",
                "inf",
                "[]",
                "[0]",
                "true",
                "1.5",
                "99999999999",
                "[-3]",
                '"fixed"',
                "{}",
            ]
        )
        lines[i] = f"{name} = {value}"
    return "\n".join(lines).encode()


# ---------------------------------------------------------------- checks of exit-0 results


class Fair:
    """Uniform choices from a seeded ``random.Random``.

    Hypothesis draws the seed (``st.randoms(use_true_random=True)``), so it generates,
    counts and replays the cases; the choices themselves are uniform (hypothesis' own
    strategies favour the first/smallest values: ``sampled_from`` would pick the first
    mutation and ``integers(0, k) == 0`` would be true far more often than 1/(k+1)).
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choice(self, seq):
        seq = list(seq)
        return seq[self.rng.randrange(len(seq))]

    def randint(self, a: int, b: int) -> int:
        return self.rng.randint(a, b)

    def coin(self, p: float = 0.5) -> bool:
        return self.rng.random() < p

    def bytes(self, min_size: int, max_size: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(min_size, max_size))

    def sample(self, seq, k: int) -> list:
        return self.rng.sample(list(seq), k)


def fair(draw) -> Fair:
    """A :class:`Fair` chooser seeded by hypothesis."""
    return Fair(draw(st.randoms(use_true_random=True)))


class WrongResult(AssertionError):
    """Exit 0, but the result is wrong (missing, unloadable, NaN, inconsistent)."""


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise WrongResult(what)


def _no_temporaries(folder: Path) -> None:
    left = [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".ckpt-tmp-" in p.name]
    _expect(not left, f"temporary files left behind: {left[:3]}")


def _check_inspect(outcome: CliOutcome, path: Path, as_json: bool) -> None:
    if not as_json:
        _expect(bool(outcome.out.strip()), "inspect printed nothing")
        return
    info = json.loads(outcome.out)
    kind = info["kind"]
    if kind == "images":
        n, box = info["n_images"], info["box_size"]
        _expect(n >= 1 and box >= 1, f"inspect: {info}")
        # 4-bit images (mode 101) need half a byte per pixel: the claim must fit the file
        _expect(path.stat().st_size >= 1024 + n * box * box // 2, f"claims beyond file: {info}")
        px = info["pixel_size"]  # rounded to 6 decimals: a 1e-30 Å header prints as 0.0
        _expect(px is None or (math.isfinite(px) and px >= 0), f"pixel size {px}")
    elif kind == "particles":
        _expect(info["n_particles"] >= 1, f"inspect: {info}")
        px = info["pixel_size"]
        _expect(px is None or (math.isfinite(px) and px > 0), f"pixel size {px}")
        _expect(info["box_size"] is None or info["box_size"] >= 1, f"box {info}")
    elif kind == "structure":
        _expect(info["n_atoms"] >= 1 and info["n_residues"] >= 1, f"inspect: {info}")
    else:
        raise WrongResult(f"unknown kind {kind}")


def _check_simulate(out: Path, n: int, box: int, modality: str) -> None:
    from atomicspi_bayes.io import open_stack, read_particles

    _no_temporaries(out)
    if modality == "xray":
        _expect(any(out.iterdir()), "xray simulate wrote nothing")
        return
    meta = read_particles(out / "particles.star")
    _expect(len(meta) == n, f"{len(meta)} particles, asked {n}")
    stack = open_stack(out / "particles.mrcs")
    images = stack[np.arange(len(stack))]
    _expect(images.shape == (n, box, box), f"stack {images.shape}")
    _expect(bool(np.all(np.isfinite(images))), "simulated images hold NaN/inf")
    with np.load(out / "truth.npz", allow_pickle=False) as truth:
        _expect(truth["rotations"].shape == (n, 3, 3), "truth rotations")


def _check_fit(run: Path, star: Path, n_rows_hint: int | None) -> None:
    _no_temporaries(run)
    with np.load(run / "latents.npz", allow_pickle=False) as lat:
        z_mean, z_sd = lat["z_mean"], lat["z_sd"]
        index = lat["particle_index"]
    _expect(bool(np.all(np.isfinite(z_mean)) and np.all(z_sd > 0)), "latents NaN or sd <= 0")
    _expect(z_mean.shape[0] == index.shape[0] >= 1, "latent rows")
    facts = tomllib.loads((run / "config.toml").read_text())["run"]
    _expect(facts["n_particles"] == z_mean.shape[0], "n_particles vs latents")
    if n_rows_hint is not None:
        total = facts["n_particles"] + facts["n_excluded"]
        _expect(total == n_rows_hint, f"kept {facts['n_particles']} + excluded "
                f"{facts['n_excluded']} != {n_rows_hint} input particles")  # fmt: skip
    elbo = np.load(run / "elbo.npy", allow_pickle=False)
    _expect(bool(np.all(np.isfinite(elbo))), "ELBO holds NaN/inf")
    for name in ("posterior.nc", "particles.star", "ensemble.pdb"):
        _expect((run / name).stat().st_size > 0, f"{name} empty")


def _check_run_command(command: str, run: Path) -> None:
    _no_temporaries(run)
    if command == "landscape":
        with np.load(run / "landscape" / "landscape.npz", allow_pickle=False) as npz:
            q = npz["free_energy_quantiles"]
        _expect(bool(np.any(np.isfinite(q))), "landscape is all NaN")
    elif command == "kinetics":
        json.loads((run / "kinetics" / "kinetics.json").read_text())
    elif command == "report":
        text = (run / "report.html").read_text()
        _expect(text.rstrip().endswith("</html>"), "report.html incomplete")
    elif command == "diagnose":
        json.loads((run / "diagnostics" / "summary.json").read_text())
    elif command == "calibrate":
        json.loads((run / "calibration" / "sbc.json").read_text())


# ---------------------------------------------------------------- hostile pickles


class _Hostile:
    """Unpickling this calls ``os.system`` (the attack the loaders must refuse)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_npz(path: Path, marker: Path, names: list[str]) -> None:
    """An ``.npz`` whose arrays are object arrays pickling a call to ``os.system``."""
    arrays = {}
    for name in names:
        obj = np.empty(1, dtype=object)
        obj[0] = _Hostile(marker)
        arrays[name] = obj
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # numpy pickles object arrays when saving
    path.write_bytes(buf.getvalue())


# ---------------------------------------------------------------- the families


def _sources() -> dict[str, list[Path]]:
    shared = shared_data()
    cryo = shared / "cryodrgn"
    return {
        "mrc": [cryo / "hand.5.mrcs", shared / "rosettasciio" / "HAADFscan.mrc",
                shared / "gemmi" / "5i55_tiny.ccp4", cryo / "toymodel_small_nocenter.mrc",
                cryo / "relion31.mrcs"],
        "star": [cryo / "relion31.v2.star", cryo / "relion31.star", cryo / "relion5.star",
                 cryo / "toy_projections.star",
                 cryo / "FinalRefinement-OriginalParticles-PfCRT.star",
                 shared / "starfile" / "rln3.1_data_style.star",
                 shared / "starfile" / "empty_loop.star"],
        "cs": [cryo / "cryosparc_P12_J24_001_particles.cs"],
        "pdb": [shared / "gemmi" / "1orc.pdb"],
        "txt": [cryo / "toy_projections.txt"],
        "pkl": [cryo / "ctf1.pkl", cryo / "pose.star.pkl"],
    }  # fmt: skip


def _link_stacks(folder: Path) -> None:
    """Make the stacks the shared STAR/.txt files name reachable from ``folder``."""
    cryo = shared_data() / "cryodrgn"
    for name in ("relion31.mrcs", "toy_projections.mrcs", "hand.mrcs"):
        target = folder / name
        if not target.exists():
            target.symlink_to(cryo / name)


def case_inspect(r: Fair, ws: Workspace, tmp: Path) -> tuple[list, callable]:
    sources = _sources()
    kind = r.choice(["mrc", "mrc", "star", "star", "cs", "pdb", "txt", "pkl",
                                 "dataset_star", "dataset_mrcs"])  # fmt: skip
    if kind.startswith("dataset"):
        src = ws.dataset / ("particles.star" if kind == "dataset_star" else "particles.mrcs")
        if kind == "dataset_star":  # the stack its rows name
            shutil.copyfile(ws.dataset / "particles.mrcs", tmp / "particles.mrcs")
    else:
        src = r.choice(sources[kind])
        _link_stacks(tmp)
    raw = src.read_bytes()
    if src.suffix in (".star",):
        data = mutate_star(raw.decode("utf-8", errors="replace"), r)
    elif src.suffix in (".mrc", ".mrcs", ".ccp4"):
        data = mutate_mrc(raw, r)
    elif src.suffix == ".pdb":
        data = mutate_pdb(raw.decode(), r)
    else:
        data = mutate_bytes(raw, r)
    name = r.choice(["f", "ünï çødé", "a b", "x.y"]) + src.suffix
    path = tmp / name
    path.write_bytes(data)
    as_json = not r.coin(1 / 5)
    args = ["inspect", path, *(["--json"] if as_json else [])]
    if r.coin(1 / 10):
        args.append("--allow-outside-paths")
    return args, lambda outcome: _check_inspect(outcome, path, as_json)


def _random_options(
    r: Fair, options: dict[str, list[str]], p_option: float, flags: tuple, p_flag: float
) -> list[str]:
    """Each option (with a value drawn from its list) with chance ``p_option``, then each
    flag with chance ``p_flag``."""
    args: list[str] = []
    for option, values in options.items():
        if r.coin(p_option):
            args += [option, r.choice(values)]
    for flag in flags:
        if r.coin(p_flag):
            args.append(flag)
    return args


def case_simulate(r: Fair, ws: Workspace, tmp: Path) -> tuple[list, callable]:
    structure = ws.structure
    if r.coin(1 / 5):
        structure = tmp / "s.pdb"
        structure.write_bytes(mutate_pdb(ws.structure.read_text(), r))
    out = tmp / r.choice(["out", "öut dir", "nested/deeper/out"])
    where = r.choice(["fresh"] * 5 + ["file", "dataset", "under_file"])
    if where == "file":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("not a folder")
    elif where == "dataset":
        shutil.copytree(ws.dataset, out)
    elif where == "under_file":
        (tmp / "afile").write_text("x")
        out = tmp / "afile" / "out"
    # valid values are listed twice: most cases then differ from a good one in one place
    n = r.choice([1, 2, 3, 1, 2, 3, 0, -1])
    box = r.choice([16, 24, 16, 24, 0, 7, -16])
    pixel = r.choice(["5.0", "4.0", "5.0", "4.0", "0", "-1", "nan", "inf", "1e-9",
                                  "1e30"])  # fmt: skip
    args = ["simulate", structure, "--out", out, "--n", n, "--box", box, "--pixel-size", pixel]
    optional = {
        "--snr": ["0.1", "1", "0", "-1", "nan", "inf", "1e-30"],
        "--defocus-min": ["5000", "8000", "-5", "nan", "30000"],
        "--defocus-max": ["20000", "30000", "-5", "inf", "1e30"],
        "--b-factor": ["10", "50", "-1", "nan", "1e30"],
        "--shift-sd": ["1", "2", "-1", "inf", "1e30"],
        "--modality": ["cryoem", "cryoem", "xray", "bogus", ""],
        "--seed": ["0", "7", "-1", str(2**64), str(2**63 - 1)],
        "--fluence": ["1e14", "3e13", "0", "-1", "nan", "inf"],
        "--distance": ["70", "100", "0", "-5", "nan"],
        "--energy": ["6", "2", "0", "nan"],
    }
    args += _random_options(
        r, optional, 1 / 5, ("--noise-free", "--coarse-grained", "--force"), 1 / 5
    )
    if r.coin(1 / 7):
        weights = tmp / r.choice(["w.txt", "w.npy"])
        what = r.choice(["text", "nan", "hostile", "garbage"])
        if what == "hostile":
            obj = np.empty(1, dtype=object)
            obj[0] = _Hostile(tmp / "PWNED")
            np.save(weights, obj, allow_pickle=True)
        elif what == "garbage":
            weights.write_bytes(mutate_bytes(b"1 2 3\n", r))
        else:
            weights.write_text("1 2\nnan\n" if what == "nan" else "1\n2\n")
        args += ["--weights", weights]
    modality = args[args.index("--modality") + 1] if "--modality" in args else "cryoem"
    return args, lambda outcome: _check_simulate(out, n, box, modality)


def case_fit(r: Fair, ws: Workspace, tmp: Path) -> tuple[list, callable]:
    data = tmp / r.choice(["data", "dätä sp ace"])
    shutil.copytree(ws.dataset, data)
    star, stack = data / "particles.star", data / "particles.mrcs"
    structure, config = ws.structure, ws.config
    kinds = ["star", "mrcs", "images", "structure", "config", "options"]
    targets = {r.choice(kinds) for _ in range(r.randint(1, 2))}
    if "star" in targets:
        star.write_bytes(mutate_star(star.read_text(), r))
    if "mrcs" in targets:
        stack.write_bytes(mutate_mrc(stack.read_bytes(), r))
    if "images" in targets:  # NaN/inf/constant images among good ones: excluded, counted
        raw = bytearray(stack.read_bytes())
        for i in r.sample(range(20), r.randint(1, 19)):
            bad = r.choice([np.nan, np.inf, 0.0, 5.0])
            raw[1024 + i * 4096 : 1024 + (i + 1) * 4096] = np.full(1024, bad, "<f4").tobytes()
        stack.write_bytes(bytes(raw))
    if "structure" in targets:
        structure = tmp / "ref.pdb"
        structure.write_bytes(mutate_pdb(ws.structure.read_text(), r))
    if "config" in targets:
        config = tmp / "c.toml"
        config.write_bytes(mutate_toml(ws.config.read_text(), r))
    out = tmp / "run"
    args = ["fit", star, "--structure", structure, "--out", out, "--config", config,
            "--epochs", 1, "--batch-size", 10, "--quiet"]  # fmt: skip
    if "options" in targets:
        optional = {
            "--latent-dim": ["0", "2", "5"],
            "--poses": ["amortized", "bogus", "fixed"],
            "--epochs": ["0", "-1"],
            "--batch-size": ["0", "-5", "1", str(10**9)],
            "--n-modes": ["-1", "2", str(10**6)],
            "--resolution": ["0", "-1", "nan", "inf", "1.0", "8", "1e9"],
            "--seed": ["-1", str(2**64), "5"],
        }
        args += _random_options(r, optional, 1 / 3, ("--all-atom", "--resume", "--force"), 1 / 6)
    if r.coin(1 / 10):  # an existing, finished run without --force
        shutil.copytree(ws.run, out)

    def check(outcome: CliOutcome) -> None:
        from atomicspi_bayes.io import read_particles

        try:
            n_rows = len(read_particles(star))
        except Exception:  # the hint is optional
            n_rows = None
        _check_fit(out, star, n_rows)

    return args, check


_RUN_OPTIONS = {
    "landscape": ["--samples", 10, "--grid", 8],
    "kinetics": ["--max-samples", 10],
    "report": [],
    "diagnose": ["--no-ppc", "--no-fsc"],
    "calibrate": ["--n", 8, "--draws", 3],
}
_RUN_FILES = ["latents.npz", "config.toml", "elbo.npy", "posterior.nc", "particles.star",
              "ensemble.pdb", "truth.npz", "landscape/landscape.npz", "kinetics/kinetics.json",
              "checkpoints"]  # fmt: skip


def _mutate_npz(path: Path, r: Fair, marker: Path) -> None:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if not arrays or r.coin(1 / 6):
        path.write_bytes(mutate_bytes(path.read_bytes(), r))
        return
    if r.coin(1 / 8):
        hostile_npz(path, marker, list(arrays))
        return
    key = r.choice(sorted(arrays))
    a = arrays[key]
    what = r.choice(["nan", "inf", "shape", "empty", "dtype", "drop", "scalar"])
    if what in ("nan", "inf") and a.dtype.kind == "f" and a.size:
        a = a.copy()
        flat = a.reshape(-1)
        idx = [r.randint(0, flat.size - 1) for _ in range(r.randint(1, 4))]
        flat[idx] = np.nan if what == "nan" else np.inf
        if r.coin():
            a[...] = np.nan
    elif what == "shape":
        a = a.reshape(-1)[: max(a.size // 2, 0)]
    elif what == "empty":
        a = a.reshape(-1)[:0]
    elif what == "dtype":
        a = np.asarray(a).astype(r.choice(["<U3", "int8", "complex64", "bool"]))
    elif what == "drop":
        arrays.pop(key)
        a = None
    elif what == "scalar":
        a = np.asarray(r.choice([np.nan, 0.0, -1.0, 1e300]))
    if a is not None:
        arrays[key] = a
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def _mutate_run_file(path: Path, op: str, r: Fair, tmp: Path, marker: Path) -> None:
    """Delete or damage one file (or the newest checkpoint) of a run folder."""
    if op == "delete":
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif path.is_dir():
        for ckpt in sorted(path.iterdir())[-1:]:
            ckpt.write_bytes(mutate_bytes(ckpt.read_bytes(), r))
    elif op == "bytes":
        path.write_bytes(mutate_bytes(path.read_bytes(), r))
    elif path.suffix == ".npz":
        _mutate_npz(path, r, marker)
    elif path.suffix == ".npy":
        a = np.load(path, allow_pickle=False).copy()
        a[r.randint(0, max(a.size - 1, 0)) if a.size else ...] = np.nan
        np.save(path, a)
    elif path.suffix == ".toml":
        text = path.read_text()
        if r.coin():
            bad = r.choice(["../../etc/passwd", "/nonexistent/p.star", "",
                                        str(tmp / "ünï.star")])  # fmt: skip
            key = r.choice(["particles", "structure"])
            text = "\n".join(f'{key} = "{bad}"' if ln.startswith(f"{key} =") else ln
                             for ln in text.splitlines())  # fmt: skip
            path.write_text(text)
        else:
            path.write_bytes(mutate_toml(text, r))
    elif path.suffix == ".star":
        path.write_bytes(mutate_star(path.read_text(), r))
    elif path.suffix == ".pdb":
        path.write_bytes(mutate_pdb(path.read_text(), r))
    else:
        path.write_bytes(mutate_bytes(path.read_bytes(), r))


def case_run(r: Fair, ws: Workspace, tmp: Path) -> tuple[list, callable]:
    command = r.choice(["landscape", "kinetics", "report", "diagnose", "diagnose",
                                    "report", "kinetics", "calibrate"])  # fmt: skip
    run = tmp / "run"
    shutil.copytree(ws.run, run, symlinks=True)
    keep_previous = r.coin(1 / 8)  # re-run over an earlier result
    if not keep_previous:
        for name in {"landscape": ["landscape"], "kinetics": ["kinetics"],
                     "report": ["report.html"]}.get(command, []):  # fmt: skip
            target = run / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    marker = tmp / "PWNED"
    for _ in range(r.randint(1, 2)):
        name = r.choice(_RUN_FILES)
        path = run / name
        if not path.exists():
            continue
        op = r.choice(["delete", "bytes", "content", "content", "content"])
        try:
            _mutate_run_file(path, op, r, tmp, marker)
        except (ValueError, OSError, EOFError, UnicodeDecodeError, zipfile.BadZipFile):
            # damaged by an earlier mutation of this case: damage it further as bytes
            if path.is_file():
                path.write_bytes(mutate_bytes(path.read_bytes(), r))
    target = run
    shape = r.randint(0, 11)
    if shape == 0:
        target = tmp / "missing_run"
    elif shape == 1:
        target = run / "latents.npz"
    elif shape == 2:
        target = tmp / "empty_run"
        target.mkdir()
    args = [command, target, *_RUN_OPTIONS[command]]
    if command == "landscape" and r.coin(1 / 4):
        args += r.choice([["--grid", "0"], ["--kT", "-1", "--energy-unit", "kJ"],
                                      ["--states", "bogus"], ["--states", "kmeans",
                                      "--n-states", "0"], ["--draws"], ["--project", "pca"],
                                      ["--samples", "0"]])  # fmt: skip
    if command == "kinetics" and r.coin(1 / 4):
        args += r.choice([["--diffusion", "0"], ["--lag", "-1"], ["--states", "1"],
                                      ["--states", "99"], ["--diffusion", "nan"],
                                      ["--max-samples", "0"]])  # fmt: skip
    return args, lambda outcome: _check_run_command(command, run)


def case_trajectory(r: Fair, ws: Workspace, tmp: Path) -> tuple[list, callable]:
    """`simulate PSF --trajectory DCD` with a damaged DCD (AdK, 98 frames) or, in a quarter
    of the cases, a damaged PSF topology. mdtraj reads DCD in C, so run these as
    subprocesses: a crash there must not take the test process down."""
    from MDAnalysisTests.datafiles import DCD, PSF

    traj, top = Path(DCD), Path(PSF)
    if r.coin(1 / 4):
        top = tmp / "t.psf"
        top.write_bytes(mutate_bytes(Path(PSF).read_bytes(), r))
    else:
        raw = Path(DCD).read_bytes()
        if r.coin(0.7):  # the header and the first frame are where lies matter
            data = mutate_bytes(raw[:4096], r) + raw[4096:]
        else:
            data = mutate_bytes(raw, r)
        traj = tmp / "t.dcd"
        traj.write_bytes(data)
    out = tmp / "out"
    args = ["simulate", top, "--trajectory", traj, "--out", out, "--n", 2, "--box", 64,
            "--pixel-size", 2]  # fmt: skip
    return args, lambda outcome: _check_simulate(out, 2, 64, "cryoem")


CASES = {"inspect": case_inspect, "simulate": case_simulate, "fit": case_fit, "run": case_run,
         "trajectory": case_trajectory}  # fmt: skip
SUBPROCESS_FAMILIES = ("inspect", "simulate", "trajectory")


# ---------------------------------------------------------------- running one case


def _alarm(signum, frame):
    raise CaseTimeout(f"case ran longer than {CASE_TIMEOUT_S} s")


def run_case(
    family: str,
    r: Fair,
    ws: Workspace,
    tmp: Path,
    *,
    strict: bool = True,
    subprocess_env: dict | None = None,
) -> str:
    """Build, run and judge one case; returns its outcome class.

    With ``strict`` a contract violation raises ``AssertionError`` (for pytest/hypothesis);
    otherwise it is returned as its class (``traceback``, ``bad_stderr``, ``wrong_result``,
    ``hostile_pickle_ran``, ``exit_<code>``) for the benchmark to count. With
    ``subprocess_env`` the command runs as a fresh ``atomicspi`` process (what a shell does:
    C-level output and interpreter start-up included) instead of in-process.
    """
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    args, check = CASES[family](r, ws, tmp)
    started = time.perf_counter()
    if subprocess_env is not None:
        family = f"{family} (subprocess)"
        outcome = run_cli_subprocess(args, env=subprocess_env, timeout=CASE_TIMEOUT_S)
    else:
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(CASE_TIMEOUT_S)
        try:
            outcome = run_cli(args)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    kind, detail = outcome.kind, ""
    if kind == "ok":
        try:
            check(outcome)
        except Exception as exc:  # any failed check is a wrong result
            kind, detail = "wrong_result", f"{type(exc).__name__}: {exc}"
    if (tmp / "PWNED").exists():
        kind, detail = "hostile_pickle_ran", "a pickle ran os.system"
    ws.record(family, kind, time.perf_counter() - started)
    if not accepted(kind) and strict:
        raise AssertionError(f"{detail}\n{outcome.describe()}")
    return kind
