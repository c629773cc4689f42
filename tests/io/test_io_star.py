"""RELION STAR: every shared STAR file, conventions, bad files, writer round trips."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import starfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from io_shared import CRYODRGN, SHARED
from scipy.spatial.transform import Rotation

from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.io import ParticleMetadata, read_particles, read_star, write_star


def relion_a(rot, tilt, psi):
    """SCIENCE.md §3 (verified): A = scipy ZYZ(rot, tilt, psi)ᵀ, angles in degrees."""
    r = Rotation.from_euler("ZYZ", np.c_[rot, tilt, psi], degrees=True)
    return r.as_matrix().swapaxes(1, 2)


def _table(path: Path, block: str):
    return starfile.read(path, always_dict=True)[block]


@pytest.mark.parametrize("name", ["relion31.star", "relion31.v2.star"])
def test_relion31_optics_merged_any_block_order(name):
    m = read_star(CRYODRGN / name)
    t = _table(CRYODRGN / name, "particles")
    assert len(m) == 5
    np.testing.assert_array_equal(m.box_size, 256)
    np.testing.assert_allclose(m.pixel_size, 2.806)
    np.testing.assert_allclose(m.voltage_kv, 300.0)
    np.testing.assert_allclose(m.cs_mm, 0.01)
    np.testing.assert_allclose(m.amplitude_contrast, 0.1)
    np.testing.assert_allclose(m.defocus_u[0], 13108.082418, rtol=1e-7)
    np.testing.assert_allclose(m.defocus_v[0], 12845.582418, rtol=1e-7)
    np.testing.assert_allclose(m.defocus_angle, np.deg2rad(t["rlnDefocusAngle"]), rtol=1e-6)
    np.testing.assert_allclose(m.phase_shift, 0.0)
    a = relion_a(t["rlnAngleRot"], t["rlnAngleTilt"], t["rlnAnglePsi"])
    np.testing.assert_allclose(m.rotations, a, atol=2e-6)
    np.testing.assert_allclose(m.shifts[0], [0.019324, -0.64686], rtol=1e-6)  # already Å
    assert m.has_ctf and m.has_poses
    np.testing.assert_array_equal(m.image_indices, np.arange(5))  # "000001@" -> slice 0
    assert set(m.image_paths) == {str(CRYODRGN / "relion31.mrcs")}
    np.testing.assert_array_equal(m.optics_group, 1)


def test_relion31_both_orders_identical():
    a, b = read_star(CRYODRGN / "relion31.star"), read_star(CRYODRGN / "relion31.v2.star")
    for f in ("pixel_size", "box_size", "defocus_u", "rotations", "shifts", "image_indices"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_relion5_optics_group_and_extras():
    m = read_star(CRYODRGN / "relion5.star")
    t = _table(CRYODRGN / "relion5.star", "particles")
    assert len(m) == 17
    np.testing.assert_array_equal(m.box_size, 448)
    np.testing.assert_allclose(m.pixel_size, 0.89)
    np.testing.assert_allclose(m.voltage_kv, 100.0)
    np.testing.assert_allclose(m.cs_mm, 1.6)
    np.testing.assert_allclose(m.shifts, t[["rlnOriginXAngst", "rlnOriginYAngst"]], rtol=1e-6)
    a = relion_a(t["rlnAngleRot"], t["rlnAngleTilt"], t["rlnAnglePsi"])
    np.testing.assert_allclose(m.rotations, a, atol=2e-6)
    names = {Path(p).name for p in m.image_paths}
    assert names == {"toy_images_a.mrcs", "toy_images_b.mrcs"}  # stacks not shipped
    expected = [int(x.split("@")[0]) - 1 for x in t["rlnImageName"]]
    np.testing.assert_array_equal(m.image_indices, expected)
    optics = m.table.attrs["optics"]  # beam tilt, Zernike lists kept for write-back
    assert optics["rlnBeamTiltX"].iloc[0] == pytest.approx(0.043489)


def test_relion30_star_matches_cryodrgn_parse():
    """FinalRefinement (RELION 3.0.6): pixel = DetectorPixelSize·1e4/Magnification; origins
    in px; compared with cryoDRGN's reference parse (pose.star.pkl, ctf1.pkl, D = 300)."""
    m = read_star(CRYODRGN / "FinalRefinement-OriginalParticles-PfCRT.star")
    assert len(m) == 5
    np.testing.assert_allclose(m.pixel_size, 1.035, rtol=1e-6)
    np.testing.assert_array_equal(m.box_size, 0)  # stacks absent: size unknown
    with open(CRYODRGN / "ctf1.pkl", "rb") as fh:
        ctf = pickle.load(fh)
    np.testing.assert_allclose(ctf[0], [300, 1.035, 15686, 17521.4, 87.62907, 300, 0.001, 0.1, 0])
    np.testing.assert_allclose(m.defocus_u, ctf[:, 2], rtol=1e-7)
    np.testing.assert_allclose(m.defocus_v, ctf[:, 3], rtol=1e-7)
    np.testing.assert_allclose(np.rad2deg(m.defocus_angle), ctf[:, 4], rtol=1e-6)
    np.testing.assert_allclose(m.voltage_kv, ctf[:, 5])
    np.testing.assert_allclose(m.cs_mm, ctf[:, 6])
    np.testing.assert_allclose(m.amplitude_contrast, ctf[:, 7])  # absent: 0.1 as cryoDRGN
    np.testing.assert_allclose(m.phase_shift, np.deg2rad(ctf[:, 8]))
    with open(CRYODRGN / "pose.star.pkl", "rb") as fh:
        rots, trans = pickle.load(fh)
    # SCIENCE.md sanity row: rots[0] = A(16.09353, 86.352776, 98.22569)
    np.testing.assert_allclose(rots[0], relion_a([16.09353], [86.352776], [98.22569])[0], 1e-12)
    np.testing.assert_allclose(m.rotations, rots, atol=2e-6)
    np.testing.assert_allclose(trans[0] * 300, [-0.14063, -0.04688], rtol=1e-12)
    np.testing.assert_allclose(m.shifts, trans * 300 * 1.035, rtol=1e-5)  # px -> Å


def test_toy_projections_old_style_star():
    m = read_star(CRYODRGN / "toy_projections.star")
    assert len(m) == 1000 and not m.has_poses and m.has_ctf
    np.testing.assert_array_equal(m.box_size, 30)  # from the stack header
    np.testing.assert_allclose(m.pixel_size, 1.0)  # header CELLA/MX, as cryoDRGN's Apix=1
    with open(CRYODRGN / "test_ctf.pkl", "rb") as fh:
        ctf = pickle.load(fh)
    np.testing.assert_allclose(m.defocus_u, ctf[:, 2])
    np.testing.assert_allclose(m.voltage_kv, ctf[:, 5])
    np.testing.assert_allclose(m.cs_mm, ctf[:, 6])
    np.testing.assert_allclose(m.amplitude_contrast, ctf[:, 7])
    np.testing.assert_allclose(m.phase_shift, np.deg2rad(ctf[:, 8]))  # 90° -> π/2
    np.testing.assert_array_equal(m.image_indices, np.arange(1000))
    override = read_star(CRYODRGN / "toy_projections.star", fallback_pixel_size=2.5)
    np.testing.assert_allclose(override.pixel_size, 2.5)


def test_one_loop_subtomogram_star_reads():
    m = read_star(SHARED / "starfile" / "one_loop.star")
    assert len(m) == 16 and m.has_poses and not m.has_ctf
    np.testing.assert_allclose(m.pixel_size, 5.0)  # 5 µm · 1e4 / 10000


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("basic_double_quote.star", "no particle table"),
        ("empty_loop.star", "no particle table"),
        ("loop_double_quote.star", "no particle table"),
        ("postprocess.star", "no particle table"),
        ("rln3.1_data_style.star", "2 blocks list particles"),
        ("single_line_end_of_multiblock.star", "2 blocks list particles"),
        ("two_basic_blocks.star", "no particle table"),
        ("relion_tutorial/run_it025_optimiser_2D.star", "no particle table"),
        ("relion_tutorial/run_it025_sampling_2D.star", "no particle table"),
    ],
)
def test_non_particle_star_files_rejected_in_one_line(name, match):
    path = SHARED / "starfile" / name
    with pytest.raises(InputFormatError, match=match) as err:
        read_particles(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


OPTICS = """
data_optics

loop_
_rlnOpticsGroup
_rlnVoltage
_rlnSphericalAberration
_rlnAmplitudeContrast
_rlnImagePixelSize
_rlnImageSize
1 300 2.7 0.1 1.5 64
"""


def _particles(rows: str, cols=("rlnImageName", "rlnDefocusU", "rlnOpticsGroup")) -> str:
    head = "\ndata_particles\n\nloop_\n" + "".join(f"_{c}\n" for c in cols)
    return head + rows


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (OPTICS + _particles("1@s.mrcs 1000 2\n"), "optics group 2 is not in data_optics"),
        (OPTICS + _particles("1@s.mrcs nan 1\n"), "NaN"),
        (OPTICS + _particles("1@s.mrcs abc 1\n"), "non-numeric"),
        (OPTICS + _particles("0@s.mrcs 1000 1\n"), "1-based"),
        (OPTICS + _particles("x@s.mrcs 1000 1\n"), "index@stack"),
        (OPTICS + _particles("1@../s.mrcs 1000 1\n"), "outside the dataset folder"),
        (OPTICS + _particles("1@/etc/passwd 1000 1\n"), "outside the dataset folder"),
        (OPTICS + _particles("1@sub/../../s.mrcs 1000 1\n"), "outside the dataset folder"),
        (OPTICS.replace("1.5 64", "-1.5 64") + _particles("1@s.mrcs 1 1\n"), "positive"),
        (_particles("1@s.mrcs 1000 1\n"), "rlnVoltage"),  # defocus without optics
        (OPTICS + _particles("", cols=("rlnImageName",)), "no rows"),
        (OPTICS, "no particle table"),
        ("", "no data blocks"),
    ],
)
def test_bad_star_files(tmp_path, text, match):
    p = tmp_path / "p.star"
    p.write_text(text)
    with pytest.raises(InputFormatError, match=match) as err:
        read_particles(p)
    assert "\n" not in str(err.value)


def test_outside_paths_allowed_explicitly_and_unicode(tmp_path):
    sub = tmp_path / "data"
    sub.mkdir()
    p = sub / "p.star"
    p.write_text(OPTICS + _particles("1@../s.mrcs 1000 1\n2@ünïcødé.mrcs 1000 1\n"))
    m = read_particles(p, allow_outside_paths=True)
    assert m.image_paths[0] == str(tmp_path / "s.mrcs")
    assert m.image_paths[1] == str(sub / "ünïcødé.mrcs")
    with pytest.raises(InputFormatError, match=r"'\.\./s\.mrcs' points outside"):
        read_particles(p)  # refused by default


def test_data_dir_changes_the_base(tmp_path):
    sub = tmp_path / "meta"
    sub.mkdir()
    p = sub / "p.star"
    p.write_text(OPTICS + _particles("1@stacks/s.mrcs 1000 1\n"))
    m = read_particles(p, data_dir=tmp_path)
    assert m.image_paths[0] == str(tmp_path / "stacks" / "s.mrcs")
    with pytest.raises(InputFormatError, match="data folder not found"):
        read_particles(p, data_dir=tmp_path / "missing")


def test_unknown_extension_and_missing(tmp_path):
    with pytest.raises(InputFormatError, match="not found"):
        read_particles(tmp_path / "x.star")
    (tmp_path / "x.dat").write_text("x")
    with pytest.raises(InputFormatError, match="unknown particle file extension"):
        read_particles(tmp_path / "x.dat")


def test_cryodrgn_txt_stack_list(tmp_path):
    m = read_particles(CRYODRGN / "toy_projections.txt")
    assert len(m) == 1000 and not m.has_ctf and not m.has_poses
    np.testing.assert_array_equal(m.box_size, 30)
    np.testing.assert_allclose(m.pixel_size, 1.0)
    np.testing.assert_array_equal(m.image_indices, np.arange(1000))
    star = read_particles(CRYODRGN / "toy_projections.star")
    np.testing.assert_array_equal(m.image_paths, star.image_paths)
    bad = tmp_path / "l.txt"
    bad.write_text("../x.mrcs\n")
    with pytest.raises(InputFormatError, match="outside the dataset folder"):
        read_particles(bad)
    bad.write_text("# only a comment\n")
    with pytest.raises(InputFormatError, match="no image stacks"):
        read_particles(bad)


# ---- writer ------------------------------------------------------------------------------


def _assert_same(a: ParticleMetadata, b: ParticleMetadata, rot_atol=1e-5):
    np.testing.assert_array_equal(a.image_paths, b.image_paths)
    np.testing.assert_array_equal(a.image_indices, b.image_indices)
    for f in ("pixel_size", "voltage_kv", "cs_mm", "amplitude_contrast", "defocus_u",
              "defocus_v", "ctf_bfactor", "ctf_scale"):  # fmt: skip
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-6, err_msg=f)
    for f in ("defocus_angle", "phase_shift"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a.box_size, b.box_size)
    assert a.has_ctf == b.has_ctf and a.has_poses == b.has_poses
    if a.rotations is not None:
        np.testing.assert_allclose(a.rotations, b.rotations, atol=rot_atol)
        np.testing.assert_allclose(a.shifts, b.shifts, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "name",
    ["relion31.star", "relion5.star", "FinalRefinement-OriginalParticles-PfCRT.star",
     "toy_projections.star"],
)  # fmt: skip
def test_shared_star_round_trip(tmp_path, name):
    src = read_star(CRYODRGN / name)
    out = tmp_path / "out.star"
    extra = {"rlnAtomicspiLatentMean": np.linspace(0, 1, len(src)),
             "rlnAtomicspiZ": np.ones((len(src), 2))}  # fmt: skip
    write_star(out, src, extra_columns=extra)
    text = out.read_text()
    assert text.count("# version 30001") == 2
    assert text.index("data_optics") < text.index("data_particles")
    blocks = starfile.read(out, always_dict=True)
    assert set(blocks) == {"optics", "particles"}
    written = blocks["particles"]["rlnAtomicspiLatentMean"]
    np.testing.assert_allclose(written, extra["rlnAtomicspiLatentMean"])
    assert "rlnAtomicspiZ2" in blocks["particles"]
    back = read_star(out, allow_outside_paths=True)
    if name.startswith("FinalRefinement"):  # box unknown stays unknown; pixel now explicit
        assert "rlnImageSize" not in blocks["optics"]
    _assert_same(src, back)
    if name == "relion5.star":
        assert blocks["optics"]["rlnBeamTiltY"].iloc[0] == pytest.approx(0.014097)
        assert (
            blocks["particles"]["rlnClassNumber"].tolist()
            == _table(CRYODRGN / name, "particles")["rlnClassNumber"].tolist()
        )


def test_writer_atomic_and_validates(tmp_path):
    src = read_star(CRYODRGN / "relion31.star")
    out = tmp_path / "o.star"
    with pytest.raises(InputFormatError, match="extra column"):
        write_star(out, src, {"bad": np.zeros(3)})
    with pytest.raises(InputFormatError, match="not a STAR label"):
        write_star(out, src, {"has space": np.zeros(5)})
    assert list(tmp_path.iterdir()) == []


rot_vec = st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=4).filter(
    lambda q: np.linalg.norm(q) > 0.1
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 12),
    n_groups=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    with_poses=st.booleans(),
    with_ctf=st.booleans(),
    gimbal=st.booleans(),
)
def test_write_star_round_trip_property(tmp_path, n, n_groups, seed, with_poses, with_ctf, gimbal):
    rng = np.random.default_rng(seed)
    group = rng.integers(1, n_groups + 1, n)
    per_group = lambda v: np.asarray(v, np.float32)[group - 1]  # noqa: E731
    rot = Rotation.random(n, random_state=seed).as_matrix().astype(np.float32)
    if gimbal:  # tilt = 0 exactly: only rot + psi is defined
        eul = np.c_[rng.uniform(-180, 180, n), np.zeros(n), rng.uniform(-180, 180, n)]
        rot = relion_a(*eul.T).astype(np.float32)
    stack = tmp_path / "stacks" / "p.mrcs"
    f32 = np.float32
    meta = ParticleMetadata(
        source="mem",
        image_paths=np.array([str(stack)] * n),
        image_indices=rng.permutation(n * 3)[:n].astype(np.int64),
        pixel_size=per_group(rng.uniform(0.5, 5, n_groups)),
        box_size=np.asarray(rng.integers(16, 512, n_groups))[group - 1].astype(np.int64),
        voltage_kv=per_group(rng.choice([120.0, 200.0, 300.0], n_groups)),
        cs_mm=per_group(rng.uniform(0, 3, n_groups)),
        amplitude_contrast=per_group(rng.uniform(0, 0.3, n_groups)),
        defocus_u=rng.uniform(5e3, 3e4, n).astype(f32) if with_ctf else np.zeros(n, f32),
        defocus_v=rng.uniform(5e3, 3e4, n).astype(f32) if with_ctf else np.zeros(n, f32),
        defocus_angle=rng.uniform(-np.pi, np.pi, n).astype(f32) if with_ctf else np.zeros(n, f32),
        phase_shift=rng.uniform(0, np.pi, n).astype(f32) if with_ctf else np.zeros(n, f32),
        ctf_bfactor=rng.uniform(-50, 50, n).astype(f32) if with_ctf else np.zeros(n, f32),
        ctf_scale=rng.uniform(0.5, 1, n).astype(f32) if with_ctf else np.ones(n, f32),
        optics_group=group.astype(np.int64),
        rotations=rot if with_poses else None,
        shifts=rng.normal(0, 5, (n, 2)).astype(f32) if with_poses else None,
        has_ctf=with_ctf,
    )
    out = tmp_path / "rt.star"
    extra = rng.normal(size=(n, 3)).astype(np.float32)
    write_star(out, meta, {"rlnAtomicspiLatent": extra})
    back = read_star(out)
    _assert_same(meta, back, rot_atol=2e-5)
    got = np.stack([back.table[f"rlnAtomicspiLatent{d}"] for d in (1, 2, 3)], axis=1)
    np.testing.assert_array_equal(got.astype(np.float32), extra)
    write_star(out, back)  # a second pass keeps everything
    _assert_same(meta, read_star(out), rot_atol=3e-5)
