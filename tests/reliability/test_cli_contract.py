"""Targeted reliability checks of the command line (issue 12): one clear line for bad input,
no clobbering without --force, full disk / read-only output folders, bad particles, hostile
image paths and pickles, bounded memory for lying headers.

Each check drives `atomicspi` itself (in-process through `main`, or as a subprocess where a
fresh interpreter matters: memory, mount namespaces).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from reliability_fuzz import hostile_npz
from reliability_harness import accepted, run_cli, shared_data, subprocess_env

HERE = Path(__file__).parent
PDB = shared_data() / "gemmi" / "1orc.pdb"
CRYODRGN = shared_data() / "cryodrgn"


def _refused(outcome, *needles: str) -> str:
    assert outcome.kind == "refused", outcome.describe()
    line = outcome.err.strip()
    for needle in needles:
        assert needle in line, line
    return line


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------- one line for bad options


@pytest.mark.parametrize("seed", ["-1", str(2**63), str(2**70)])
@pytest.mark.parametrize("command", ["simulate", "fit", "landscape", "diagnose", "calibrate"])
def test_out_of_range_seed_is_one_line(command, seed, tmp_path):
    args = {
        "simulate": ["simulate", PDB, "--out", tmp_path / "o"],
        "fit": ["fit", tmp_path / "p.star", "--structure", PDB, "--out", tmp_path / "r"],
        "landscape": ["landscape", tmp_path],
        "diagnose": ["diagnose", tmp_path],
        "calibrate": ["calibrate", tmp_path],
    }[command]
    _refused(run_cli([*args, "--seed", seed]), "--seed", seed)


def test_simulate_out_is_a_file_or_below_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    _refused(run_cli(["simulate", PDB, "--out", tmp_path / "f", "--n", 1, "--box", 16,
                      "--pixel-size", 5]), str(tmp_path / "f"))  # fmt: skip
    _refused(run_cli(["simulate", PDB, "--out", tmp_path / "f" / "sub", "--n", 1, "--box", 16,
                      "--pixel-size", 5]), str(tmp_path / "f"))  # fmt: skip
    assert (tmp_path / "f").read_text() == "x"


def test_xray_detector_of_zero_pixels_is_one_line(tmp_path):
    _refused(run_cli(["simulate", PDB, "--out", tmp_path / "x", "--modality", "xray",
                      "--box", 0, "--n", 1]), "n_pixels=0")  # fmt: skip


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [("--distance", "-5", "distance_mm"), ("--energy", "0", "photon_energy_kev"),
     ("--detector-pixel", "nan", "pixel_size_um"), ("--fluence", "0", "fluence"),
     ("--background", "-1", "background")],
)  # fmt: skip
def test_unphysical_xray_setting_is_one_line(tmp_path, option, value, needle):
    _refused(run_cli(["simulate", PDB, "--out", tmp_path / "x", "--modality", "xray",
                      "--box", 16, "--n", 1, option, value]), needle)  # fmt: skip
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_xray_setting_for_a_cryoem_simulation_is_one_line(tmp_path):
    args = ["simulate", PDB, "--out", tmp_path / "c", "--n", 1, "--box", 16, "--pixel-size", 5]
    _refused(run_cli([*args, "--fluence", "1e14"]), "--fluence", "xray only")


def test_trajectory_without_readable_frames_is_one_line(tmp_path):
    """67 bytes inserted after the DCD header misalign every frame: mdtraj reads 0 frames."""
    from MDAnalysisTests.datafiles import DCD, PSF

    raw = Path(DCD).read_bytes()
    bad = tmp_path / "shifted.dcd"
    bad.write_bytes(raw[:4096] + bytes(67) + raw[4096:])
    outcome = run_cli(["simulate", PSF, "--trajectory", bad, "--out", tmp_path / "o", "--n", 2,
                       "--box", 64, "--pixel-size", 2])  # fmt: skip
    _refused(outcome, str(bad), "no frames")


def test_trajectory_with_absurd_coordinates_is_one_line(tmp_path):
    """A coordinate of 3e37 nm (finite in float32, 3e38 Å) used to overflow to inf when the
    frames were aligned (OverflowError in the box check)."""
    import mdtraj as md
    from MDAnalysisTests.datafiles import DCD, PSF

    traj = md.load(DCD, top=PSF)[:3]
    traj.xyz[1, 5, 0] = 3e37
    bad = tmp_path / "huge.dcd"
    traj.save_dcd(str(bad))
    outcome = run_cli(["simulate", PSF, "--trajectory", bad, "--out", tmp_path / "o", "--n", 2,
                       "--box", 64, "--pixel-size", 2])  # fmt: skip
    _refused(outcome, "Å from")


def _star_with(tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    text = (CRYODRGN / "relion31.v2.star").read_text()
    assert old in text
    star = tmp_path / "p.star"
    star.write_text(text.replace(old, new, count))
    (tmp_path / "relion31.mrcs").symlink_to(CRYODRGN / "relion31.mrcs")
    return star


def test_star_image_index_beyond_int64_is_one_line(tmp_path):
    star = _star_with(tmp_path, "000001@relion31.mrcs", "99999999999999999999999@relion31.mrcs")
    _refused(run_cli(["inspect", star, "--json"]), "not 'index@stack'")


def test_star_with_a_repeated_column_is_one_line(tmp_path):
    star = _star_with(tmp_path, "_rlnOpticsGroup #2", "_rlnImageName #2")
    _refused(run_cli(["inspect", star, "--json"]), "rlnImageName", "twice")


def test_multi_line_library_messages_print_as_one_line(tmp_path):
    """A parser message with newlines (pandas) still ends as exactly one stderr line."""
    from atomicspi_bayes.errors import InputFormatError

    def raise_multiline(*args, **kwargs):
        raise InputFormatError("first part\nsecond part\n")

    from atomicspi_bayes.io import summary

    real = summary.summarize
    summary.summarize = raise_multiline
    try:
        line = _refused(run_cli(["inspect", PDB]), "first part second part")
    finally:
        summary.summarize = real
    assert "\n" not in line


def test_fit_config_that_is_not_utf8_is_one_line(tmp_path):
    config = tmp_path / "recipe.toml"
    config.write_bytes(b"[fit]\nepochs = \xff\xfe\n")
    outcome = run_cli(["fit", tmp_path / "p.star", "--structure", PDB, "--out", tmp_path / "r",
                       "--config", config])  # fmt: skip
    _refused(outcome, str(config), "UTF-8")


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY\x01\x00v\x00{'descr'", b"PK\x03\x04"])
def test_diagnose_with_an_empty_or_truncated_elbo_file_is_one_line(content, tmp_path):
    """np.load's EOFError would otherwise reach click, which prints 'Aborted.' (exit 1)."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "latents.npz", z_mean=rng.normal(size=(30, 1)),
             z_sd=np.full((30, 1), 0.2), z_draws=rng.normal(size=(5, 30, 1)),
             particle_index=np.arange(30))  # fmt: skip
    (tmp_path / "elbo.npy").write_bytes(content)
    _refused(run_cli(["diagnose", tmp_path, "--no-ppc", "--no-fsc"]), "elbo.npy")


# ---------------------------------------------------------------- path safety


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "/etc/passwd", "sub/../../x.mrcs", "../relion31.mrcs"]
)
def test_star_image_paths_outside_the_folder_are_refused(name, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    star = _star_with(data, "000001@relion31.mrcs", f"000001@{name}", -1)
    line = _refused(run_cli(["inspect", star, "--json"]), "outside the dataset folder", name)
    assert "--allow-outside-paths" in line
    fit = run_cli(["fit", star, "--structure", PDB, "--out", tmp_path / "run", "--epochs", 1])
    _refused(fit, "outside the dataset folder")
    # refused before anything was written (fit makes the empty folder first)
    assert not [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    allowed = run_cli(["inspect", star, "--json", "--allow-outside-paths"])
    assert allowed.kind in ("ok", "refused"), allowed.describe()  # explicit opt-in: read


def test_cryosparc_paths_outside_the_folder_are_refused(tmp_path):
    cs = np.load(CRYODRGN / "cryosparc_P12_J24_001_particles.cs", allow_pickle=False)
    cs = cs.copy()
    cs["blob/path"] = b"../../../etc/passwd"
    path = tmp_path / "p.cs"
    with open(path, "wb") as fh:
        np.save(fh, cs)
    _refused(run_cli(["inspect", path, "--json"]), "outside the dataset folder")


# ---------------------------------------------------------------- hostile pickles


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_no_command_runs_a_hostile_pickle(tmp_path):
    """A pickle that calls os.system, offered to every command in every file slot and
    renamed to every extension a command reads, is refused and never executed. No CLI path
    loads cryoDRGN .pkl files (the restricted unpickler is library-only: io tests)."""
    marker = tmp_path / "PWNED"
    blob = pickle.dumps(_Hostile(marker))
    run = tmp_path / "run"
    run.mkdir()
    for suffix in (".pkl", ".star", ".cs", ".mrcs", ".pdb", ".toml", ".npy", ".txt", ".npz"):
        (tmp_path / f"evil{suffix}").write_bytes(blob)
    hostile_npz(run / "latents.npz", marker, ["z_mean", "z_sd", "z_draws", "particle_index"])
    np.save(run / "elbo.npy", np.array([_Hostile(marker)], dtype=object), allow_pickle=True)
    (run / "landscape").mkdir()
    hostile_npz(run / "landscape" / "landscape.npz", marker, ["free_energy_samples"])
    e = {s: tmp_path / f"evil{s}" for s in (".pkl", ".star", ".cs", ".mrcs", ".pdb", ".toml",
                                             ".npy", ".txt")}  # fmt: skip
    commands = [
        ["inspect", e[".pkl"]], ["inspect", e[".star"]], ["inspect", e[".cs"]],
        ["inspect", e[".mrcs"]], ["inspect", e[".pdb"]], ["inspect", e[".txt"]],
        ["simulate", e[".pdb"], "--out", tmp_path / "s"],
        ["simulate", PDB, "--out", tmp_path / "s2", "--trajectory", e[".pkl"]],
        ["simulate", PDB, "--out", tmp_path / "s3", "--weights", e[".npy"], "--n", 1],
        ["fit", e[".star"], "--structure", PDB, "--out", tmp_path / "f"],
        ["fit", e[".cs"], "--structure", PDB, "--out", tmp_path / "f"],
        ["fit", e[".txt"], "--structure", PDB, "--out", tmp_path / "f"],
        ["fit", CRYODRGN / "relion31.v2.star", "--structure", e[".pdb"], "--out", tmp_path / "f"],
        ["fit", CRYODRGN / "relion31.v2.star", "--structure", PDB, "--config", e[".toml"],
         "--out", tmp_path / "f"],
        ["landscape", run], ["kinetics", run], ["report", run],
        ["diagnose", run, "--no-ppc", "--no-fsc"], ["calibrate", run, "--n", 4],
    ]  # fmt: skip
    for args in commands:
        outcome = run_cli(args)
        assert outcome.kind == "refused" or accepted(outcome.kind), outcome.describe()
        assert not marker.exists(), f"os.system ran: {outcome.describe()}"


# ---------------------------------------------------------------- memory for lying headers


_PEAK = """
import atexit, sys
report = sys.argv.pop(1)
def _peak():
    with open("/proc/self/status") as fh:
        hwm = [ln.split()[1] for ln in fh if ln.startswith("VmHWM:")][0]
    with open(report, "w") as out:
        out.write(hwm)
atexit.register(_peak)
sys.argv[0] = "atomicspi"
from atomicspi_bayes.cli import main
main()
"""


def _peak_rss_kib(args: list, env: dict, tmp: Path) -> tuple[int, str, int]:
    """Run ``atomicspi ARGS`` as a child; its peak RSS (KiB, VmHWM of the new process image:
    getrusage's ru_maxrss would include the forked test process), stderr and exit code."""
    report = tmp / "vmhwm.txt"
    proc = subprocess.run([sys.executable, "-c", _PEAK, str(report), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    return int(report.read_text()), proc.stderr, proc.returncode


@pytest.mark.slow
def test_lying_headers_do_not_allocate(tmp_path, workspace, jax_cache_dir):
    """MRC headers and STAR/.cs files that claim 2**31-1 images of 2**31-1 pixels (on a
    1 kB file) are refused from the header; the process stays small (peak RSS measured)."""
    env = subprocess_env(jax_cache_dir)
    peaks = []
    for dims in ((2**31 - 1, 2**31 - 1, 2**31 - 1), (8192, 8192, 65536), (4096, 4096, 1)):
        head = bytearray((CRYODRGN / "hand.5.mrcs").read_bytes()[:1024])
        head[0:12] = struct.pack("<3i", *dims)  # claims up to 2**93 bytes on a 5 kB file
        huge = tmp_path / "huge.mrcs"
        huge.write_bytes(bytes(head) + bytes(4096))
        rss, err, code = _peak_rss_kib(["inspect", huge, "--json"], env, tmp_path)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error:"), err
        assert rss < 400 * 1024, f"inspect of {dims} peaked at {rss / 1024:.0f} MiB"
        peaks.append(rss)
    rss = max(peaks)
    # a fit whose STAR points at the lying stack: refused before any image is read
    data = tmp_path / "data"
    shutil.copytree(workspace.dataset, data)
    (data / "particles.mrcs").write_bytes(bytes(head) + bytes(4096))
    fit_args = ["fit", data / "particles.star", "--structure", workspace.structure, "--out",
                tmp_path / "run", "--config", workspace.config, "--epochs", 1]  # fmt: skip
    rss_fit, err, code = _peak_rss_kib(fit_args, env, tmp_path)
    assert code == 2 and err.strip().splitlines()[-1].startswith("error:"), err
    assert "Traceback" not in err
    assert rss_fit < 1500 * 1024, f"fit peaked at {rss_fit / 1024:.0f} MiB"
    print(json.dumps({"inspect_peak_rss_mib": rss // 1024, "fit_peak_rss_mib": rss_fit // 1024}))


# ---------------------------------------------------------------- no clobbering


@pytest.mark.slow
def test_rerun_without_force_refuses_and_keeps_the_old_result(tmp_path, workspace):
    run = tmp_path / "run"
    shutil.copytree(workspace.run, run)
    assert run_cli(["report", run]).kind == "ok"
    data = tmp_path / "data"
    shutil.copytree(workspace.dataset, data)
    before_run, before_data = _digest(run), _digest(data)
    attempts = [
        (["fit", data / "particles.star", "--structure", workspace.structure, "--out", run,
          "--config", workspace.config, "--epochs", 1], "--force"),
        (["simulate", workspace.structure, "--out", data, "--n", 2, "--box", 16], "--force"),
        (["landscape", run, "--samples", 10], "--force"),
        (["landscape", run / "latents.npz", "--samples", 10], "--force"),
        (["kinetics", run], "--force"),
        (["report", run], "--force"),
    ]  # fmt: skip
    for args, hint in attempts:
        _refused(run_cli(args), hint)
        assert _digest(run) == before_run, args
        assert _digest(data) == before_data, args
    # --force is what makes the difference (kinetics: cheap to redo)
    assert run_cli(["kinetics", run, "--force", "--max-samples", 10]).kind == "ok"
    json.loads((run / "kinetics" / "kinetics.json").read_text())


def test_refused_fit_with_force_keeps_the_previous_run(tmp_path):
    """--force removes the previous outputs only once the new inputs have been read."""
    run = tmp_path / "run"
    run.mkdir()
    np.savez(run / "latents.npz", z_mean=np.zeros((3, 1)))
    (run / "config.toml").write_text("[fit]\n")
    before = _digest(run)
    outcome = run_cli(["fit", tmp_path / "missing.star", "--structure", PDB, "--out", run,
                       "--force"])  # fmt: skip
    _refused(outcome, "missing.star")
    assert _digest(run) == before


def test_rerun_into_an_unfinished_run_is_refused_before_anything_is_written(tmp_path):
    """Checkpoints without latents.npz (a killed run): no --resume/--force -> refused, and the
    earlier run's config.toml and checkpoints are kept."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ckpt_000000004.npz").write_bytes(b"stand-in")
    (run / "config.toml").write_text("[fit]\nepochs = 3\n")
    before = _digest(run)
    outcome = run_cli(["fit", CRYODRGN / "relion31.v2.star", "--structure", PDB, "--out", run])
    _refused(outcome, "--resume", "--force")
    assert _digest(run) == before


@pytest.mark.slow
def test_refused_rerun_into_an_unfinished_real_run_keeps_its_config(tmp_path, workspace):
    run = tmp_path / "run"
    shutil.copytree(workspace.run, run)
    for name in ("latents.npz", "posterior.nc", "particles.star", "ensemble.pdb", "elbo.npy"):
        (run / name).unlink()  # checkpoints and config.toml of an unfinished run remain
    before = _digest(run)
    outcome = run_cli(["fit", workspace.dataset / "particles.star", "--structure",
                       workspace.structure, "--out", run, "--config", workspace.config,
                       "--epochs", 2, "--batch-size", 5, "--quiet"])  # fmt: skip
    _refused(outcome, "--resume")
    assert _digest(run) == before


# ---------------------------------------------------------------- disk full, read-only


def _namespace_prefix(tmp_path: Path) -> list[str] | None:
    """A command prefix giving a private mount namespace where tmpfs can be mounted."""
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    script = f"mount -t tmpfs -o size=64k tmpfs {probe_dir} && umount {probe_dir}"
    for prefix in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
        if shutil.which(prefix[0]) is None:
            return None
        probe = subprocess.run([*prefix, "sh", "-c", script], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return prefix
    return None


@pytest.mark.slow
def test_full_disk_and_read_only_output_give_one_line(tmp_path, workspace, jax_cache_dir):
    """Real tmpfs (full, then remounted read-only) in a private mount namespace; where
    namespaces are unavailable, the writers' OSError is injected instead."""
    prefix = _namespace_prefix(tmp_path)
    mode = "tmpfs" if prefix is not None else "patch"
    args = [sys.executable, str(HERE / "reliability_disk.py"), mode, tmp_path / "work",
            workspace.run, workspace.dataset, workspace.structure, workspace.config]  # fmt: skip
    proc = subprocess.run([*(prefix or []), *map(str, args)], capture_output=True, text=True,
                          env=subprocess_env(jax_cache_dir), timeout=1200)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(rows) == 12, proc.stdout[-3000:]
    print(json.dumps({"mode": mode, "cases": len(rows)}))
    for row in rows:
        print(json.dumps(row))
        full = row["condition"].startswith("disk full")
        if row["command"] == "fit --force" and full and row["kind"] == "ok":
            continue  # --force deleted the old run first, which freed enough space
        assert row["kind"] == "refused", row
        words = ("disk full", "No space left", "cannot write") if full else (
            "Read-only file system", "not writable", "cannot write")  # fmt: skip
        assert any(w in row["error"] for w in words), row
        assert not row["temporaries"], row
        if row["command"] != "fit --force" or not full:
            assert row["old_result_intact"], row


# ---------------------------------------------------------------- bad particles


@pytest.mark.slow
def test_nan_inf_constant_images_are_excluded_counted_and_reported(tmp_path, workspace):
    data = tmp_path / "data"
    shutil.copytree(workspace.dataset, data)
    raw = bytearray((data / "particles.mrcs").read_bytes())
    bad = {2: np.nan, 5: np.inf, 11: 0.0, 17: -3.5}  # NaN, inf, two constant images
    for i, value in bad.items():
        raw[1024 + i * 4096 : 1024 + (i + 1) * 4096] = np.full(1024, value, "<f4").tobytes()
    (data / "particles.mrcs").write_bytes(bytes(raw))
    run = tmp_path / "run"
    outcome = run_cli(["fit", data / "particles.star", "--structure", workspace.structure,
                       "--out", run, "--config", workspace.config, "--epochs", 1,
                       "--batch-size", 8, "--quiet"])  # fmt: skip
    assert outcome.kind == "ok", outcome.describe()
    assert "warning: 4 particles with NaN/inf or constant images were excluded" in outcome.err
    assert "fit: 16 particles" in outcome.out
    facts = tomllib.loads((run / "config.toml").read_text())["run"]
    assert (facts["n_particles"], facts["n_excluded"]) == (16, 4)
    with np.load(run / "latents.npz", allow_pickle=False) as lat:
        assert sorted(set(range(20)) - set(lat["particle_index"].tolist())) == sorted(bad)
        assert np.all(np.isfinite(lat["z_mean"])) and np.all(lat["z_sd"] > 0)
    assert np.all(np.isfinite(np.load(run / "elbo.npy")))
    # all images bad: refused with the counts, nothing fitted
    raw = bytearray(raw)
    raw[1024:] = np.full(20 * 1024, np.nan, "<f4").tobytes()
    (data / "particles.mrcs").write_bytes(bytes(raw))
    _refused(run_cli(["fit", data / "particles.star", "--structure", workspace.structure,
                      "--out", tmp_path / "run2", "--config", workspace.config, "--epochs", 1]),
             "all 20 images are NaN/inf")  # fmt: skip


@pytest.mark.slow
def test_a_diverging_fit_stops_with_one_line_naming_step_and_particles(tmp_path, workspace):
    """A fit never produces NaN parameters silently: an absurd learning rate diverges and
    the run stops with exit 2, the step and the batch's particle indices."""
    config = tmp_path / "diverge.toml"
    config.write_text(workspace.config.read_text() + "learning_rate = 1e30\ngrad_clip = 1e30\n")
    run = tmp_path / "run"
    outcome = run_cli(["fit", workspace.dataset / "particles.star", "--structure",
                       workspace.structure, "--out", run, "--config", config, "--epochs", 3,
                       "--batch-size", 10, "--quiet"])  # fmt: skip
    if outcome.kind == "ok":  # it did not diverge: then nothing may be NaN
        with np.load(run / "latents.npz", allow_pickle=False) as lat:
            assert np.all(np.isfinite(lat["z_mean"]))
        pytest.fail("learning_rate = 1e30 did not diverge; the check needs a divergent fit")
    line = _refused(outcome, "SVI diverged", "at step", "indices")
    assert not (run / "latents.npz").exists()
    assert "last good checkpoint" in line
