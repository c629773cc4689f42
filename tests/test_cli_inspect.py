"""`atomicspi inspect PATH [--json]`: JSON contract (issue 3) and one-line errors (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from MDAnalysisTests.datafiles import PDB_small

SHARED = Path(
    os.environ.get("ATOMICSPI_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
CRYODRGN = SHARED / "cryodrgn"


EXPECTED = {
    CRYODRGN / "relion31.star": {
        "kind": "particles", "n_particles": 5, "box_size": 256, "pixel_size": 2.806,
        "has_poses": True, "has_ctf": True, "n_optics_groups": 1,
    },
    CRYODRGN / "relion5.star": {
        "kind": "particles", "n_particles": 17, "box_size": 448, "pixel_size": 0.89,
        "has_poses": True, "has_ctf": True, "n_optics_groups": 1,
    },
    CRYODRGN / "toy_projections.star": {
        "kind": "particles", "n_particles": 1000, "box_size": 30, "pixel_size": 1.0,
        "has_poses": False, "has_ctf": True, "n_optics_groups": 1,
    },
    CRYODRGN / "cryosparc_P12_J24_001_particles.cs": {
        "kind": "particles", "n_particles": 2019, "box_size": 180, "pixel_size": 2.95,
        "has_poses": True, "has_ctf": True, "n_optics_groups": 1,
    },
    CRYODRGN / "hand.mrcs": {"kind": "images", "n_images": 100, "box_size": 64, "pixel_size": 1.0},
    CRYODRGN / "relion31.mrcs": {
        "kind": "images", "n_images": 5, "box_size": 256, "pixel_size": 1.0,
    },
    SHARED / "gemmi" / "1orc.pdb": {
        "kind": "structure", "n_atoms": 553, "n_residues": 121, "n_chains": 2,
    },
    Path(PDB_small): {"kind": "structure", "n_atoms": 3341, "n_residues": 214, "n_chains": 1},
}  # fmt: skip


@pytest.mark.parametrize("path", list(EXPECTED), ids=lambda p: p.name)
def test_inspect_json_contract(run_cli, path):
    code, out, err = run_cli(["inspect", path, "--json"])
    assert code == 0, err
    assert out.count("\n") == 1  # exactly one JSON object on one line
    info = json.loads(out)
    assert info == EXPECTED[path]
    for key, value in info.items():  # numbers are JSON numbers, not strings
        if key not in ("kind", "has_poses", "has_ctf"):
            assert isinstance(value, int | float) and not isinstance(value, bool)


def test_inspect_unknown_box_is_null(run_cli, monkeypatch, capsys):
    star = CRYODRGN / "FinalRefinement-OriginalParticles-PfCRT.star"
    code, out, _ = run_cli(["inspect", star, "--json"])
    assert code == 0
    info = json.loads(out)
    assert info["box_size"] is None and info["pixel_size"] == 1.035 and info["n_particles"] == 5


def test_inspect_human_summary(run_cli, monkeypatch, capsys):
    code, out, _ = run_cli(["inspect", CRYODRGN / "relion31.star"])
    assert code == 0
    assert "n particles" in out and "2.806" in out and "256" in out


def _bad_inputs(tmp: Path) -> dict[str, Path]:
    trunc = tmp / "trunc.mrcs"
    trunc.write_bytes((CRYODRGN / "hand.5.mrcs").read_bytes()[:5000])
    nocols = tmp / "nocols.star"
    nocols.write_text("data_particles\nloop_\n_rlnImageName\n_rlnDefocusU\n1@a.mrcs 1000\n")
    escape = tmp / "escape.star"
    escape.write_text("data_\nloop_\n_rlnImageName\n1@../../etc/x.mrcs\n")
    unknown = tmp / "model.xyz"
    unknown.write_text("3\n")
    badpdb = tmp / "bad.pdb"
    badpdb.write_text("not a structure\n")
    return {
        "missing file": tmp / "missing.star",
        "png": SHARED / "mrcfile" / "emd_3197.png.gz",
        "volume": SHARED / "mrcfile" / "EMD-3197.map",
        "truncated mrc": trunc,
        "star without columns": nocols,
        "path escape": escape,
        "unknown extension": unknown,
        "unreadable structure": badpdb,
        "non-particle star": SHARED / "starfile" / "postprocess.star",
        "folder": tmp,
    }


def test_bad_inputs_exit_2_with_one_line(run_cli, tmp_path):
    for what, path in _bad_inputs(tmp_path).items():
        code, out, err = run_cli(["inspect", path, "--json"])
        assert code == 2, (what, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (what, err)
        assert lines[0].startswith("error: ") and "Traceback" not in err, what
        assert path.name in lines[0], (what, lines[0])
        assert out == "", what


def test_console_script_end_to_end(tmp_path):
    """The installed entry point, in a fresh process: JSON on stdout; exit 2 on bad input."""
    exe = Path(sys.executable).with_name("atomicspi")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "atomicspi_bayes.cli"]
    ok = subprocess.run(
        [*cmd, "inspect", "--json", str(CRYODRGN / "hand.5.mrcs")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {
        "kind": "images", "n_images": 5, "box_size": 64, "pixel_size": 1.0,
    }  # fmt: skip
    bad = subprocess.run(
        [*cmd, "inspect", str(SHARED / "mrcfile" / "emd_3197.png.gz")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    assert bad.stdout == ""
