"""`atomicspi landscape RUN` and `atomicspi kinetics RUN` on a synthetic run folder:
outputs, contents, and one-line errors with exit code 2."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from landscape_synthetic import sample_double_well


@pytest.fixture
def run_dir(tmp_path):
    rng = np.random.default_rng(0)
    _, m, sd = sample_double_well(rng, 1500)
    draws = m[None, :, None] + sd[None, :, None] * rng.standard_normal((4, 1500, 1))
    run = tmp_path / "run"
    run.mkdir()
    np.savez(
        run / "latents.npz",
        z_mean=m[:, None],
        z_sd=sd[:, None],
        z_draws=draws,
        particle_index=np.arange(1500),
    )
    return run


def test_landscape_then_kinetics(run_cli, run_dir):
    code, out, err = run_cli(["landscape", run_dir, "--grid", 16, "--samples", 100])
    assert code == 0, err
    assert "populations" in out
    ldir = run_dir / "landscape"
    for name in ("landscape.csv", "landscape.png", "states.json", "landscape.npz"):
        assert (ldir / name).is_file() and (ldir / name).stat().st_size > 0
    assert not list(ldir.glob(".*tmp"))  # no temporary files left behind
    with open(ldir / "landscape.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 16
    assert {"z1", "F_median", "F_05", "F_95", "p", "F_aggregate", "state"} <= set(rows[0])
    f_med = np.array([float(r["F_median"]) if r["F_median"] else np.nan for r in rows])
    assert np.nanmin(f_med) == pytest.approx(0.0, abs=1e-9)
    states = json.loads((ldir / "states.json").read_text())
    assert states["energy_unit"] == "kT" and len(states["states"]) == 2
    pops = [s["population"]["p50"] for s in states["states"]]
    assert sum(pops) == pytest.approx(1.0, abs=0.02)
    assert all(0.35 < p < 0.65 for p in pops)  # symmetric double well
    npz = np.load(ldir / "landscape.npz")
    assert npz["free_energy_samples"].shape == (200, 16)
    assert float(npz["kT"]) == 1.0

    code, out, err = run_cli(["kinetics", run_dir, "--diffusion", 2.0, "--max-samples", 40])
    assert code == 0, err
    kdir = run_dir / "kinetics"
    assert (kdir / "kinetics.png").stat().st_size > 0
    kin = json.loads((kdir / "kinetics.json").read_text())
    assert kin["diffusion"] == 2.0 and len(kin["states"]) == 2
    for key in ("mfpt", "rates", "timescales", "mfpt_msm", "timescales_msm"):
        first = kin[key][0]
        assert first["p05"] <= first["p50"] <= first["p95"], key
    assert kin["rates"][0]["p50"] == pytest.approx(1 / kin["mfpt"][0]["p50"], rel=0.05)


@pytest.mark.slow
def test_landscape_from_draws_2d_and_energy_units(run_cli, tmp_path):
    rng = np.random.default_rng(1)
    z = np.concatenate([rng.normal(-1, 0.3, (300, 2)), rng.normal(1, 0.3, (150, 2))])
    sd = np.full_like(z, 0.1)
    draws = z[None] + sd[None] * rng.standard_normal((3, 450, 2))
    np.savez(tmp_path / "latents.npz", z_mean=z, z_sd=sd, z_draws=draws)
    out = tmp_path / "ls"
    code, _, err = run_cli(
        ["landscape", tmp_path, "--out", out, "--grid", 8, "--samples", 80, "--draws",
         "--kT", 2.494, "--energy-unit", "kJ/mol", "--states", "kmeans", "--n-states", 2],
    )  # fmt: skip
    assert code == 0, err
    npz = np.load(out / "landscape.npz")
    assert npz["free_energy_samples"].shape[1:] == (8, 8)
    assert str(npz["energy_unit"]) == "kJ/mol"
    states = json.loads((out / "states.json").read_text())
    p = sorted(s["population"]["p50"] for s in states["states"])
    assert p[0] == pytest.approx(1 / 3, abs=0.08)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["landscape", "{tmp}/missing"], "does not exist"),
        (["landscape", "{tmp}"], "latents.npz: not found"),
        (["landscape", "{run}", "--kT", 2.0], "energy_unit"),
        (["kinetics", "{run}"], "atomicspi landscape"),
        (["kinetics", "{run}", "--diffusion", 0], "diffusion"),
        (["kinetics", "{run}", "--diffusion", -1], "diffusion"),
    ],
)
def test_bad_input_is_one_line_exit_2(run_cli, args, match, run_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [str(a).format(tmp=empty, run=run_dir) for a in args]
    code, _, err = run_cli(args)
    assert code == 2
    assert err.startswith("error:") and err.count("\n") == 1
    assert match in err


def test_latent_dim_above_two(run_cli, tmp_path):
    rng = np.random.default_rng(2)
    z = rng.normal(size=(200, 4)) * np.array([2.0, 1.0, 0.2, 0.1])
    np.savez(tmp_path / "latents.npz", z_mean=z, z_sd=np.full_like(z, 0.1))
    code, _, err = run_cli(["landscape", tmp_path])
    assert code == 2 and "--project pca" in err
    code, _, err = run_cli(
        ["landscape", tmp_path, "--project", "pca", "--grid", 5, "--samples", 60],
    )  # fmt: skip
    assert code == 0, err
    npz = np.load(tmp_path / "landscape" / "landscape.npz")
    assert [str(a) for a in npz["axis_labels"]] == ["PC1", "PC2"]
