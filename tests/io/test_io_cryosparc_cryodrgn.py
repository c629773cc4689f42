"""cryoSPARC .cs, cryoDRGN pickles, and pose conversions between the three conventions."""

from __future__ import annotations

import os
import pickle
import pickletools

import jax.numpy as jnp
import numpy as np
import pytest
from io_shared import CRYODRGN
from scipy.spatial.transform import Rotation

from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.io import _rotations as io_rot
from atomicspi_bayes.io import (
    cryodrgn_ctf,
    cryodrgn_poses,
    load_cryodrgn_pickle,
    read_cryosparc,
    read_particles,
    read_star,
    write_star,
)
from atomicspi_bayes.physics import geometry

CS = CRYODRGN / "cryosparc_P12_J24_001_particles.cs"

# SOURCES.md: (type, shape, dtype) of every pickle in the shared set.
PICKLES = {
    "ctf1.pkl": ("array", (5, 9), np.float32),
    "ctf2.pkl": ("array", (2019, 9), np.float32),
    "test_ctf.pkl": ("array", (1000, 9), np.float32),
    "hand_rot.pkl": ("array", (100, 3, 3), np.float32),
    "toy_angles.pkl": ("array", (1000, 3, 3), np.float32),
    "toy_trans.pkl": ("array", (1000, 2), np.float64),
    "hand_rot_trans.pkl": ("tuple", ((100, 3, 3), (100, 2)), (np.float32, np.float32)),
    "toy_rot_trans.pkl": ("tuple", ((1000, 3, 3), (1000, 2)), (np.float32, np.float64)),
    "pose.star.pkl": ("tuple", ((5, 3, 3), (5, 2)), (np.float64, np.float64)),
    "pose.cs.pkl": ("tuple", ((2019, 3, 3), (2019, 2)), (np.float32, np.float32)),
}


# ---- cryoSPARC ---------------------------------------------------------------------------


def test_cs_fixture_values():
    m = read_particles(CS)
    raw = np.load(CS)
    assert len(m) == 2019 == len(raw)
    np.testing.assert_array_equal(m.box_size, 180)
    np.testing.assert_allclose(m.pixel_size, 2.95)
    np.testing.assert_allclose(m.voltage_kv, 200.0)
    np.testing.assert_allclose(m.cs_mm, 2.0)
    np.testing.assert_allclose(m.amplitude_contrast, 0.07)
    np.testing.assert_array_equal(m.defocus_u, raw["ctf/df1_A"])
    np.testing.assert_array_equal(m.defocus_v, raw["ctf/df2_A"])
    np.testing.assert_array_equal(m.defocus_angle, raw["ctf/df_angle_rad"])
    np.testing.assert_array_equal(m.image_indices, raw["blob/idx"])
    assert m.image_paths[0] == str(CRYODRGN / raw["blob/path"][0].decode())
    assert m.has_ctf and m.has_poses
    np.testing.assert_array_equal(m.table["uid"], raw["uid"])


def test_cs_matches_cryodrgn_reference_parse():
    """pose.cs.pkl: rots = expm(pose)ᵀ = A; trans = shift / D (D = 180). ctf2.pkl: CTF."""
    m = read_cryosparc(CS)
    rots, trans = load_cryodrgn_pickle(CRYODRGN / "pose.cs.pkl", allow_pickle=True)
    assert np.abs(m.rotations - rots).max() < 1e-5  # SCIENCE.md: err 2e-7
    np.testing.assert_allclose(m.shifts, trans * 180 * 2.95, rtol=1e-5, atol=1e-5)
    raw = np.load(CS)
    np.testing.assert_allclose(trans * 180, raw["alignments3D/shift"], rtol=1e-6, atol=1e-5)
    ctf = cryodrgn_ctf(load_cryodrgn_pickle(CRYODRGN / "ctf2.pkl", allow_pickle=True))
    for field in (
        "pixel_size",
        "defocus_u",
        "defocus_v",
        "voltage_kv",
        "cs_mm",
        "amplitude_contrast",
        "phase_shift",
    ):
        np.testing.assert_allclose(getattr(m, field), ctf[field], rtol=1e-6, err_msg=field)
    np.testing.assert_allclose(m.defocus_angle, ctf["defocus_angle"], atol=1e-6)
    np.testing.assert_array_equal(m.box_size, ctf["box_size"])


def _write_cs(path, arr):
    with open(path, "wb") as fh:
        np.save(fh, arr)
    os.replace(str(path) + ".npy", path) if os.path.exists(str(path) + ".npy") else None


def _small_cs(n=6, prefix=b">"):
    raw = np.load(CS)[:n].copy()
    raw["blob/path"] = prefix + b"J19/extract/p.mrc"
    return raw


def test_cs_passthrough_merge_by_uid(tmp_path):
    raw = np.load(CS)[:50]
    main_fields = [f for f in raw.dtype.names if not f.startswith("ctf/")]
    pt_fields = ["uid"] + [f for f in raw.dtype.names if f.startswith("ctf/")]
    main = raw[main_fields].copy()
    order = np.random.default_rng(0).permutation(50)
    pt = raw[pt_fields][order].copy()  # passthrough rows in another order
    _write_cs(tmp_path / "p.cs", main)
    _write_cs(tmp_path / "p_passthrough.cs", pt)
    without = read_cryosparc(tmp_path / "p.cs")
    assert not without.has_ctf
    merged = read_particles(tmp_path / "p.cs", passthrough=tmp_path / "p_passthrough.cs")
    full = read_cryosparc(CS)
    assert merged.has_ctf
    np.testing.assert_array_equal(merged.defocus_u, full.defocus_u[:50])
    np.testing.assert_array_equal(merged.voltage_kv, full.voltage_kv[:50])
    np.testing.assert_allclose(merged.rotations, full.rotations[:50])
    _write_cs(tmp_path / "short.cs", pt[:10])
    with pytest.raises(InputFormatError, match="uids of"):
        read_cryosparc(tmp_path / "p.cs", passthrough=tmp_path / "short.cs")


def test_cs_leading_gt_and_path_safety(tmp_path):
    _write_cs(tmp_path / "a.cs", _small_cs())
    m = read_cryosparc(tmp_path / "a.cs")
    assert m.image_paths[0] == str(tmp_path / "J19" / "extract" / "p.mrc")
    _write_cs(tmp_path / "b.cs", _small_cs(prefix=b"../../"))
    with pytest.raises(InputFormatError, match="outside the dataset folder"):
        read_cryosparc(tmp_path / "b.cs")
    assert read_cryosparc(tmp_path / "b.cs", allow_outside_paths=True)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda p: p.write_bytes(pickle.dumps({"a": 1})), "not a cryoSPARC"),
        (lambda p: p.write_bytes(b""), "not a cryoSPARC"),
        (lambda p: p.write_bytes(np.load(CS)[:5].tobytes()), "not a cryoSPARC"),
        (lambda p: np.save(open(p, "wb"), np.array([{"x": 1}], dtype=object)), "objects"),
        (lambda p: np.save(open(p, "wb"), np.zeros(4)), "no named fields"),
        (lambda p: p.write_bytes(CS.read_bytes()[:100000]), "truncated"),
        (lambda p: np.save(open(p, "wb"), np.load(CS)[:0]), "0 rows"),
    ],
)
def test_bad_cs_files(tmp_path, mutate, match):
    p = tmp_path / "x.cs"
    mutate(p)
    with pytest.raises(InputFormatError, match=match):
        read_cryosparc(p)


def test_cs_lying_header_shape_refused_before_allocation(tmp_path):
    from numpy.lib import format as npformat

    rows = np.load(CS)[:3]
    p = tmp_path / "lie.cs"
    with open(p, "wb") as fh:  # header claims 10^10 particles; the file holds 3
        header = {
            "descr": npformat.dtype_to_descr(rows.dtype),
            "fortran_order": False,
            "shape": (10**10,),
        }
        npformat.write_array_header_2_0(fh, header)
        fh.write(rows.tobytes())
    with pytest.raises(InputFormatError, match="truncated: header says 10000000000 rows"):
        read_cryosparc(p)


def test_cs_nan_field_refused(tmp_path):
    raw = _small_cs()
    raw["ctf/df1_A"][2] = np.nan
    _write_cs(tmp_path / "n.cs", raw)
    with pytest.raises(InputFormatError, match="NaN"):
        read_cryosparc(tmp_path / "n.cs")


# ---- cryoDRGN pickles --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PICKLES))
def test_every_shared_pickle_loads_with_opt_in(name):
    kind, shape, dtype = PICKLES[name]
    obj = load_cryodrgn_pickle(CRYODRGN / name, allow_pickle=True)
    with open(CRYODRGN / name, "rb") as fh:
        ref = pickle.load(fh)
    if kind == "array":
        assert obj.shape == shape and obj.dtype == dtype
        np.testing.assert_array_equal(obj, ref)
    else:
        assert isinstance(obj, tuple) and len(obj) == 2
        for got, s, d, r in zip(obj, shape, dtype, ref, strict=True):
            assert got.shape == s and got.dtype == d
            np.testing.assert_array_equal(got, r)


def test_pickle_refused_without_opt_in():
    with pytest.raises(InputFormatError, match="allow_pickle=True"):
        load_cryodrgn_pickle(CRYODRGN / "ctf1.pkl", allow_pickle=False)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def test_pickle_calling_os_system_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "pose.pkl"
    evil.write_bytes(pickle.dumps((np.zeros((2, 3, 3)), _Evil(marker))))
    assert any(
        op.name in ("STACK_GLOBAL", "GLOBAL") for op, _, _ in pickletools.genops(evil.read_bytes())
    )
    with pytest.raises(InputFormatError, match=r"refused unsafe.*(posix|os)\.system"):
        load_cryodrgn_pickle(evil, allow_pickle=True)
    assert not marker.exists()
    evil.write_bytes(pickle.dumps(_EvalEvil()))
    with pytest.raises(InputFormatError, match=r"builtins\.eval"):
        load_cryodrgn_pickle(evil, allow_pickle=True)


def test_pickle_with_non_array_content_refused(tmp_path):
    p = tmp_path / "x.pkl"
    p.write_bytes(pickle.dumps(np.array([1, "a"], dtype=object)))
    with pytest.raises(InputFormatError, match="object array"):
        load_cryodrgn_pickle(p, allow_pickle=True)
    p.write_bytes(pickle.dumps(np.zeros(3))[:-5])
    with pytest.raises(InputFormatError, match="truncated"):
        load_cryodrgn_pickle(p, allow_pickle=True)
    p.write_bytes(pickle.dumps({1, 2}))  # a set is not a plain container we admit
    with pytest.raises(InputFormatError):
        load_cryodrgn_pickle(p, allow_pickle=True)


def test_pickle_pairs_agree():
    rot = load_cryodrgn_pickle(CRYODRGN / "hand_rot.pkl", allow_pickle=True)
    rot2, _ = load_cryodrgn_pickle(CRYODRGN / "hand_rot_trans.pkl", allow_pickle=True)
    # (hand_rot.pkl and hand_rot_trans.pkl hold different pose sets; only toy_* pair up)
    angles = load_cryodrgn_pickle(CRYODRGN / "toy_angles.pkl", allow_pickle=True)
    rots, trans = load_cryodrgn_pickle(CRYODRGN / "toy_rot_trans.pkl", allow_pickle=True)
    np.testing.assert_array_equal(angles, rots)
    np.testing.assert_array_equal(
        trans, load_cryodrgn_pickle(CRYODRGN / "toy_trans.pkl", allow_pickle=True)
    )
    for r in (rot, rot2, rots):  # proper rotations
        np.testing.assert_allclose(
            r @ r.swapaxes(1, 2), np.broadcast_to(np.eye(3), r.shape), atol=1e-5
        )
        np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-5)


def test_cryodrgn_pose_conversion_to_angstrom():
    obj = load_cryodrgn_pickle(CRYODRGN / "pose.star.pkl", allow_pickle=True)
    rots, shifts = cryodrgn_poses(obj, box_size=300, pixel_size=1.035)
    m = read_star(CRYODRGN / "FinalRefinement-OriginalParticles-PfCRT.star")
    np.testing.assert_allclose(rots, m.rotations, atol=2e-6)
    np.testing.assert_allclose(shifts, m.shifts, rtol=1e-5)
    with pytest.raises(InputFormatError):
        cryodrgn_poses(np.zeros((3, 2, 2)), 10, 1.0)


# ---- pose conventions --------------------------------------------------------------------


def test_io_rotations_agree_with_physics_geometry_and_scipy():
    rng = np.random.default_rng(1)
    euler = np.c_[
        rng.uniform(-np.pi, np.pi, 500), rng.uniform(0, np.pi, 500), rng.uniform(-np.pi, np.pi, 500)
    ]
    a_io = io_rot.euler_to_matrix(euler)
    a_phys = np.asarray(geometry.euler_to_matrix(jnp.asarray(euler, jnp.float32)))
    a_scipy = Rotation.from_euler("ZYZ", euler).as_matrix().swapaxes(1, 2)
    np.testing.assert_allclose(a_io, a_scipy, atol=1e-12)
    np.testing.assert_allclose(a_phys, a_io, atol=2e-6)
    back = io_rot.matrix_to_euler(a_io)
    np.testing.assert_allclose(io_rot.euler_to_matrix(back), a_io, atol=1e-12)
    np.testing.assert_allclose(
        np.asarray(geometry.matrix_to_euler(jnp.asarray(a_io, jnp.float32))), back, atol=1e-3
    )
    rv = Rotation.random(500, random_state=2).as_rotvec()
    np.testing.assert_allclose(
        io_rot.axis_angle_to_matrix(rv), Rotation.from_rotvec(rv).as_matrix(), atol=1e-12
    )
    np.testing.assert_allclose(
        np.asarray(geometry.axis_angle_to_matrix(jnp.asarray(rv, jnp.float32))),
        io_rot.axis_angle_to_matrix(rv),
        atol=2e-6,
    )
    # SCIENCE.md sanity rows: A(0,0,0) = I; A(90°,0,0)·x = -y.
    np.testing.assert_allclose(io_rot.euler_to_matrix([0, 0, 0]), np.eye(3))
    np.testing.assert_allclose(
        io_rot.euler_to_matrix([np.pi / 2, 0, 0]) @ [1, 0, 0], [0, -1, 0], atol=1e-15
    )


def test_same_random_poses_through_star_cs_and_pickle(tmp_path):
    """Random poses (scipy) written as RELION Euler (STAR), cryoSPARC rotvec (.cs) and
    cryoDRGN matrices: all three readers give the same A and the same shifts in Å."""
    n, box, px = 64, 128, 1.7
    rng = np.random.default_rng(3)
    r = Rotation.random(n, random_state=4)
    a = r.as_matrix().swapaxes(1, 2)  # A for the particle
    euler = r.as_euler("ZYZ", degrees=True)  # A = ZYZ(rot, tilt, psi)ᵀ
    origin_px = rng.normal(0, 3, (n, 2))

    star = tmp_path / "p.star"
    rows = "".join(
        f"{i + 1}@s.mrcs 1000 1 {e[0]:.17g} {e[1]:.17g} {e[2]:.17g} {o[0] * px:.17g} "
        f"{o[1] * px:.17g}\n"
        for i, (e, o) in enumerate(zip(euler, origin_px, strict=True))
    )
    cols = [
        "rlnImageName",
        "rlnDefocusU",
        "rlnOpticsGroup",
        "rlnAngleRot",
        "rlnAngleTilt",
        "rlnAnglePsi",
        "rlnOriginXAngst",
        "rlnOriginYAngst",
    ]
    star.write_text(
        "data_optics\nloop_\n_rlnOpticsGroup\n_rlnVoltage\n_rlnSphericalAberration\n"
        f"_rlnAmplitudeContrast\n_rlnImagePixelSize\n_rlnImageSize\n1 300 2.7 0.1 {px} {box}\n"
        "data_particles\nloop_\n" + "".join(f"_{c}\n" for c in cols) + rows
    )
    from_star = read_star(star)

    cs = np.load(CS)[:n].copy()
    cs["blob/path"] = b"s.mrcs"
    cs["blob/psize_A"] = cs["alignments3D/psize_A"] = px
    cs["blob/shape"] = box
    cs["alignments3D/pose"] = Rotation.from_matrix(a.swapaxes(1, 2)).as_rotvec()  # R_cs = Aᵀ
    cs["alignments3D/shift"] = origin_px
    _write_cs(tmp_path / "p.cs", cs)
    from_cs = read_cryosparc(tmp_path / "p.cs")

    pkl = tmp_path / "pose.pkl"
    pkl.write_bytes(pickle.dumps((a.astype(np.float32), (origin_px / box).astype(np.float32))))
    rots_d, shifts_d = cryodrgn_poses(load_cryodrgn_pickle(pkl, allow_pickle=True), box, px)

    readers = [
        (from_star.rotations, from_star.shifts),
        (from_cs.rotations, from_cs.shifts),
        (rots_d, shifts_d),
    ]
    for rots, shifts in readers:
        np.testing.assert_allclose(rots, a, atol=2e-6)
        np.testing.assert_allclose(shifts, origin_px * px, rtol=1e-5, atol=1e-5)
    # and the STAR writer preserves them
    write_star(tmp_path / "w.star", from_cs)
    again = read_star(tmp_path / "w.star")
    np.testing.assert_allclose(again.rotations, a, atol=1e-5)
    # geodesic angle; ‖R1 - R2‖_F = 2√2 sin(θ/2) is well conditioned at small θ (arccos of
    # the trace is not, in float32)
    frob = np.linalg.norm(again.rotations.astype(np.float64) - a, axis=(1, 2))
    angle = 2 * np.arcsin(np.clip(frob / (2 * np.sqrt(2)), 0, 1))
    assert np.degrees(angle).max() < 1e-3
