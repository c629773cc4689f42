"""write_report on synthetic run directories: sections, embedded PNGs, missing parts, errors."""

from __future__ import annotations

import base64
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from report_fake_run import write_fake_run
from scipy import stats

from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.report import scan_run, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REAL_OUTPUTS = Path(__file__).parent / "data" / "real_outputs"
SECTIONS = {
    "dataset": "Dataset",
    "elbo": "Optimisation (ELBO)",
    "latent": "Latent vs truth",
    "ensemble": "Ensemble snapshots",
    "landscape": "Free-energy landscape",
    "kinetics": "Kinetics",
    "calibration": "Calibration (SBC)",
    "diagnostics": "Diagnostics",
    "files": "Run files",
}
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _pngs(text: str) -> list[bytes]:
    return [base64.b64decode(m, validate=True) for m in IMG.findall(text)]


def _section(text: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', text, re.S)
    assert match, f"section {anchor} missing"
    return match.group(1)


def test_full_report_has_every_section_with_content(full_report):
    path, text = full_report
    assert path.name == "report.html"
    for anchor, title in SECTIONS.items():
        body = _section(text, anchor)
        assert title in body
        assert "not run" not in body, anchor
    for anchor in ("elbo", "latent", "ensemble", "landscape", "calibration", "diagnostics"):
        assert _pngs(_section(text, anchor)), f"no figure in {anchor}"


def test_embedded_pngs_are_valid_images(full_report):
    _, text = full_report
    pngs = _pngs(text)
    # elbo, latent, ensemble, landscape, kinetics.png, sbc: rank histograms + coverage,
    # sbc_shrunk: its own rank PNG + coverage, diagnostics/outlier_scores.png
    assert len(pngs) == 10
    for png in pngs:
        assert png[:8] == PNG_MAGIC
        width, height = np.frombuffer(png[16:24], dtype=">u4")
        assert 200 <= width <= 2000 and 150 <= height <= 2000


def test_report_is_self_contained(full_report):
    _, text = full_report
    assert "<script" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "@import" not in text and "url(" not in text
    # every href is an in-page anchor
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', text))


def test_report_numbers_come_from_the_run(full_run, full_report):
    _, text = full_report
    lat = np.load(full_run / "latents.npz")
    truth = np.load(full_run / "truth.npz")["path_position"][lat["particle_index"]]
    rho = stats.spearmanr(truth, lat["z_mean"][:, 0]).statistic
    assert rho < -0.8  # the fake latent runs against the path
    assert f"{rho:+.3f}" in _section(text, "latent")
    assert "360" in _section(text, "dataset")  # particles in particles.star
    assert "64 px" in _section(text, "dataset") and "1.5 Å" in _section(text, "dataset")
    kin = _section(text, "kinetics")
    assert "41.2 [33, 52.9]" in kin  # MFPT median [5 %, 95 %]
    assert "0.58 [0.52, 0.64]" in _section(text, "landscape")  # state population
    assert "5 of 5 models" in _section(text, "ensemble")
    # REMARK lines naming z caption the ensemble panels
    assert scan_run(full_run).ensemble.labels == [
        "z = +1.00",
        "z = +0.50",
        "z = +0.00",
        "z = -0.50",
        "z = -1.00",
    ]


def test_calibration_results_each_get_a_verdict_and_figures(full_report):
    _, text = full_report
    cal = _section(text, "calibration")
    good = cal[cal.index("<h3>sbc ") : cal.index("<h3>sbc_shrunk")]
    bad = cal[cal.index("<h3>sbc_shrunk") :]
    assert 'class="pass">passed' in good and 'class="fail">failed' in bad
    assert "<td>z1</td><td>0.41</td>" in good  # per-coordinate KS p-value table
    assert "<td>z1</td><td>1.000e-09</td>" in bad
    assert len(_pngs(good)) == 2  # rank histogram drawn here + coverage
    assert "sbc_shrunk_ranks.png" not in good
    assert "Rank of the true value" in good and "Rank of the true value" not in bad
    assert len(_pngs(bad)) == 2  # its own sbc_shrunk_ranks.png (not redrawn) + coverage
    assert "sbc_shrunk_ranks.png" in bad


def test_landscape_and_kinetics_tables(full_report):
    _, text = full_report
    land = _section(text, "landscape")
    assert "<th>id</th>" in land and "0.42 [0.36, 0.48]" in land  # states as a table
    kin = _section(text, "kinetics")
    assert "<h4>mfpt</h4>" in kin and "<th>from</th><th>to</th>" in kin
    assert "<td>17.4 [14, 22.1]</td>" in kin  # slowest relaxation time
    assert len(_pngs(kin)) == 1  # kinetics.png next to kinetics.json


def test_outputs_written_into_run_folder_itself_are_found(tmp_path):
    run = write_fake_run(tmp_path / "run", ("elbo", "latents", "landscape", "kinetics"))
    for sub in ("landscape", "kinetics"):
        for f in (run / sub).iterdir():
            f.rename(run / f.name)
        (run / sub).rmdir()
    art = scan_run(run)
    assert art.landscape is not None and art.landscape.source == str(run / "landscape.npz")
    assert art.kinetics_source == run / "kinetics.json"
    assert art.figures["kinetics"] == [run / "kinetics.png"]


def test_real_landscape_and_kinetics_outputs(tmp_path):
    """Files written by the real landscape / kinetics commands (data/make_real_outputs.py)."""
    run = write_fake_run(tmp_path / "run", ("elbo",))
    for f in REAL_OUTPUTS.iterdir():
        shutil.copy(f, run / f.name)
    art = scan_run(run)
    npz = np.load(REAL_OUTPUTS / "landscape.npz")
    assert art.landscape.dim == 1
    np.testing.assert_array_equal(art.landscape.f_quantiles, npz["free_energy_quantiles"])
    np.testing.assert_array_equal(art.landscape.state_labels, npz["state_labels"])
    assert art.landscape.has_band
    text = write_report(run).read_text()
    land, kin = _section(text, "landscape"), _section(text, "kinetics")
    assert len(_pngs(land)) == 1 and "<th>population</th>" in land
    kin_json = json.loads((REAL_OUTPUTS / "kinetics.json").read_text())
    mfpt = kin_json["mfpt"][0]
    cell = f"{mfpt['p50']:.4g} [{mfpt['p05']:.4g}, {mfpt['p95']:.4g}]"
    assert f"<td>{cell}</td>" in kin
    # the landscape CSV (empty fields = NaN) agrees with the npz
    (run / "landscape.npz").unlink()
    from_csv = scan_run(run).landscape
    np.testing.assert_allclose(from_csv.f_quantiles, npz["free_energy_quantiles"], rtol=1e-5)


def test_landscape_csv_alone_is_read(tmp_path):
    run = write_fake_run(tmp_path / "run", ("elbo", "landscape"))
    from_npz = scan_run(run).landscape
    (run / "landscape" / "landscape.npz").unlink()
    from_csv = scan_run(run).landscape
    assert from_csv.source.endswith("landscape.csv")
    np.testing.assert_allclose(from_csv.centers[0], from_npz.centers[0], rtol=1e-5)
    np.testing.assert_allclose(
        from_csv.f_quantiles, from_npz.f_quantiles, rtol=1e-5, atol=1e-6
    )  # NaN (empty fields) in the same places
    np.testing.assert_array_equal(from_csv.state_labels, from_npz.state_labels)
    (run / "landscape" / "landscape.csv").write_text("grid,width\n0,1\n")
    with pytest.raises(InputFormatError, match="needs a grid column and an F"):
        scan_run(run)


def test_two_dimensional_landscape(tmp_path):
    run = write_fake_run(tmp_path / "run", ("elbo",))
    e0, e1 = np.linspace(-2, 2, 21), np.linspace(-1, 1, 11)
    c0, c1 = 0.5 * (e0[1:] + e0[:-1]), 0.5 * (e1[1:] + e1[:-1])
    f = (c0[:, None] ** 2 - 1) ** 2 * 3 + 2 * c1[None, :] ** 2
    q = np.stack([f - 0.3, f, f + 0.3])
    q[:, 0, 0] = np.nan
    np.savez(
        run / "landscape.npz",
        free_energy_quantiles=q,
        bin_edges_0=e0,
        bin_edges_1=e1,
        kT=np.asarray(1.0),
        axis_labels=np.asarray(["z1", "z2"]),
    )
    art = scan_run(run)
    assert art.landscape.dim == 2 and art.landscape.f_quantiles.shape == (3, 20, 10)
    np.testing.assert_allclose(art.landscape.centers[1], c1)
    text = write_report(run).read_text()
    assert len(_pngs(_section(text, "landscape"))) == 1


def test_only_elbo_marks_everything_else_not_run(tmp_path):
    run = write_fake_run(tmp_path / "run", ("elbo",))
    text = write_report(run).read_text()
    assert _pngs(_section(text, "elbo"))
    for anchor in ("latent", "ensemble", "landscape", "kinetics", "calibration", "diagnostics"):
        body = _section(text, anchor)
        assert "not run" in body and "Not run" in body, anchor
        assert not _pngs(body)
    assert "atomicspi landscape RUN" in _section(text, "landscape")
    assert "atomicspi kinetics RUN" in _section(text, "kinetics")


def test_diagnostics_without_diagnose_output(tmp_path):
    run = write_fake_run(tmp_path / "run", ("latents",))
    lat = np.load(run / "latents.npz")
    text = write_report(run).read_text()
    diag = _section(text, "diagnostics")
    assert "not run" in diag and "atomicspi diagnose RUN" in diag
    ratio = np.std(lat["z_mean"][:, 0]) / np.median(lat["z_sd"][:, 0])
    assert f"<td>{ratio:.4g}</td>" in diag  # posterior width table from latents.npz
    # a long per-particle table is summarised, a short one shown
    (run / "diagnostics").mkdir()
    rows = "\n".join(f"{i},{i * 0.1:.1f}" for i in range(200))
    (run / "diagnostics" / "ppc.csv").write_text("particle,score\n" + rows + "\n")
    (run / "diagnostics" / "ppc_groups.csv").write_text("group,chi2\n1,1.01\n2,0.97\n")
    diag = _section(write_report(run).read_text(), "diagnostics")
    assert "not run" not in diag
    assert "200 rows × 2 columns" in diag and "<td>199</td>" not in diag
    assert "<td>0.97</td>" in diag


def test_latents_without_truth_skip_the_truth_plot(tmp_path):
    run = write_fake_run(tmp_path / "run", ("latents", "ensemble"))
    text = write_report(run).read_text()
    assert "no ground truth" in _section(text, "latent")
    assert _pngs(_section(text, "ensemble"))


def test_run_without_fit_output_is_input_format_error(tmp_path):
    run = write_fake_run(tmp_path / "run", ("star", "config", "landscape"))
    with pytest.raises(InputFormatError, match="no fit output"):
        write_report(run)
    assert not (run / "report.html").exists()
    with pytest.raises(InputFormatError, match="not a directory"):
        write_report(tmp_path / "missing")


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("latents.npz", b"PK\x03\x04 truncated", "latents.npz"),
        ("elbo.npy", b"\x93NUMPY junk", "elbo.npy"),
        ("kinetics/kinetics.json", b"{not json", "kinetics.json"),
        ("landscape/landscape.npz", b"PK\x03\x04", "landscape.npz"),
        ("ensemble.pdb", b"HEADER nothing here\n", "no ATOM records"),
    ],
)
def test_broken_part_fails_and_keeps_old_report(tmp_path, name, content, match):
    run = write_fake_run(tmp_path / "run", ("elbo", "latents", "truth", "landscape", "kinetics"))
    (run / "report.html").write_text("old report")
    (run / name).parent.mkdir(exist_ok=True)
    (run / name).write_bytes(content)
    with pytest.raises(InputFormatError, match=re.escape(match)):
        write_report(run)
    assert (run / "report.html").read_text() == "old report"
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no temp file


def test_truth_that_does_not_match_latents_is_an_error(tmp_path):
    run = write_fake_run(tmp_path / "run", ("latents", "truth"))
    np.savez(run / "truth.npz", path_position=np.linspace(0, 1, 10))
    with pytest.raises(InputFormatError, match=r"truth\.npz"):
        scan_run(run)


def test_missing_output_folder_is_config_error(tmp_path):
    run = write_fake_run(tmp_path / "run", ("elbo",))
    with pytest.raises(ConfigError, match="does not exist"):
        write_report(run, tmp_path / "nope" / "r.html")


def test_reads_ensemble_written_by_io(tmp_path):
    from MDAnalysisTests.datafiles import PSF, PDB_small

    from atomicspi_bayes.io import load_structure, write_multimodel_pdb

    model = load_structure(PDB_small, topology=PSF)
    shift = np.array([0.0, 0.0, 5.0], dtype=np.float32)
    coords = np.stack([model.coords, model.coords + shift, model.coords + 2 * shift])
    run = tmp_path / "run"
    run.mkdir()
    write_multimodel_pdb(run / "ensemble.pdb", model, coords)
    art = scan_run(run)
    assert art.ensemble.coords.shape == (3, model.n_atoms, 3)
    np.testing.assert_allclose(art.ensemble.coords, coords, atol=1e-3)
    np.testing.assert_array_equal(art.ensemble.elements, model.elements)
    text = write_report(run).read_text()
    assert _pngs(_section(text, "ensemble"))


def _run_cli(monkeypatch, *args: str) -> int:
    from atomicspi_bayes import cli

    monkeypatch.setattr(sys, "argv", ["atomicspi", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code


def test_cli_report_exit_codes(tmp_path, monkeypatch, capsys):
    run = write_fake_run(tmp_path / "run", ("elbo", "latents"))
    assert _run_cli(monkeypatch, "report", str(run)) == 0
    assert (run / "report.html").is_file()
    assert "report.html" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run_cli(monkeypatch, "report", str(empty)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no fit output" in lines[0] and str(empty) in lines[0]
    assert not (empty / "report.html").exists()
