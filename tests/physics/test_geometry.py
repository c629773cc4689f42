"""Rotations: RELION Euler convention, representations, uniform sampling."""

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.spatial.transform import Rotation

from atomicspi_bayes.physics import geometry as g

KEY = jax.random.key(0)


def _random_eulers(n, seed=1):
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            rng.uniform(-np.pi, np.pi, n),
            np.arccos(rng.uniform(-1, 1, n)),
            rng.uniform(-np.pi, np.pi, n),
        ],
        axis=-1,
    ).astype(np.float32)


def test_euler_matches_scipy_transpose():
    angles = _random_eulers(200).astype(np.float64)
    ours = np.asarray(g.euler_to_matrix(jnp.asarray(angles, dtype=jnp.float32)))
    ref = Rotation.from_euler("ZYZ", angles).as_matrix().transpose(0, 2, 1)
    np.testing.assert_allclose(ours, ref, atol=2e-6)


def test_euler_sanity_numbers():
    np.testing.assert_allclose(g.euler_to_matrix(jnp.zeros(3)), np.eye(3), atol=1e-7)
    a = g.euler_to_matrix(jnp.array([np.pi / 2, 0.0, 0.0]))
    np.testing.assert_allclose(a @ jnp.array([1.0, 0.0, 0.0]), [0.0, -1.0, 0.0], atol=1e-7)
    # viewing direction in the model frame = row 3 of A; tilt 90, rot 0 -> looking along +x
    a = g.euler_to_matrix(jnp.array([0.0, np.pi / 2, 0.0]))
    np.testing.assert_allclose(a[2], [1.0, 0.0, 0.0], atol=1e-7)


def test_cryodrgn_fixture_rotation():
    """SCIENCE.md: pose.star.pkl rots[0] = A(16.09353, 86.352776, 98.22569) (degrees)."""
    import pickle

    with open(Path(os.environ["ATOMICSPI_SHARED_DATA"]) / "cryodrgn" / "pose.star.pkl", "rb") as fh:
        rots, _ = pickle.load(fh)
    a = g.euler_to_matrix(jnp.deg2rad(jnp.array([16.09353, 86.352776, 98.22569])))
    np.testing.assert_allclose(a, rots[0], atol=1e-5)


def test_euler_round_trip_and_gimbal():
    angles = _random_eulers(500)
    mats = g.euler_to_matrix(angles)
    back = g.matrix_to_euler(mats)
    np.testing.assert_allclose(g.euler_to_matrix(back), mats, atol=2e-5)
    # away from gimbal lock the angles themselves come back
    np.testing.assert_allclose(np.cos(back - angles), 1.0, atol=1e-5)
    for tilt in (0.0, np.pi):
        m = g.euler_to_matrix(jnp.array([0.7, tilt, -0.3]))
        e = g.matrix_to_euler(m)
        assert float(e[2]) == 0.0
        np.testing.assert_allclose(g.euler_to_matrix(e), m, atol=1e-6)


def test_quaternion_and_axis_angle_round_trips():
    mats = g.random_rotations(KEY, 300)
    q = g.matrix_to_quaternion(mats)
    assert np.all(np.asarray(q[:, 0]) >= 0)
    np.testing.assert_allclose(g.quaternion_to_matrix(q), mats, atol=2e-6)
    ref = Rotation.from_quat(np.asarray(q)[:, [1, 2, 3, 0]]).as_matrix()
    np.testing.assert_allclose(np.asarray(mats), ref, atol=2e-6)
    v = g.matrix_to_axis_angle(mats)
    np.testing.assert_allclose(g.axis_angle_to_matrix(v), mats, atol=5e-6)
    np.testing.assert_allclose(
        np.asarray(v, dtype=np.float64),
        Rotation.from_matrix(np.asarray(mats, np.float64)).as_rotvec(),
        atol=2e-5,
    )
    # angle-π rotations and the identity
    special = jnp.stack([jnp.eye(3), jnp.diag(jnp.array([1.0, -1.0, -1.0])),
                         jnp.diag(jnp.array([-1.0, -1.0, 1.0]))])  # fmt: skip
    np.testing.assert_allclose(
        g.axis_angle_to_matrix(g.matrix_to_axis_angle(special)), special, atol=1e-6
    )
    # gradient of Rodrigues at the identity is finite
    grad = jax.grad(lambda w: g.axis_angle_to_matrix(w)[0, 1])(jnp.zeros(3))
    np.testing.assert_allclose(grad, [0.0, 0.0, -1.0], atol=1e-7)


def test_random_rotations_are_uniform():
    """Haar measure: rotation angle ω has density (1 - cos ω)/π, i.e. tr(R) = 1 + 2cos ω;
    the image of any fixed axis is uniform on S² (z-component uniform on [-1, 1])."""
    mats = np.asarray(g.random_rotations(jax.random.key(7), 20000), dtype=np.float64)
    np.testing.assert_allclose(
        mats @ mats.transpose(0, 2, 1), np.broadcast_to(np.eye(3), mats.shape), atol=1e-5
    )
    np.testing.assert_allclose(np.linalg.det(mats), 1.0, atol=1e-5)
    omega = np.arccos(np.clip((np.trace(mats, axis1=1, axis2=2) - 1) / 2, -1, 1))
    cdf = lambda w: (w - np.sin(w)) / np.pi  # noqa: E731
    assert stats.kstest(omega, cdf).pvalue > 1e-3
    assert stats.kstest(mats[:, 2, 2], stats.uniform(-1, 2).cdf).pvalue > 1e-3
    assert stats.kstest(mats[:, 0, 1], stats.uniform(-1, 2).cdf).pvalue > 1e-3
    # a non-uniform sampler must fail the same test (the test can fail)
    biased = omega[omega < 2.5]
    assert stats.kstest(biased, cdf).pvalue < 1e-6


def test_geodesic_angle():
    axis = jnp.array([0.3, -0.5, 0.8])
    axis = axis / jnp.linalg.norm(axis)
    r1 = g.random_rotations(KEY, 1)[0]
    for ang in (0.0, 1e-3, 0.5, 2.0, np.pi - 1e-3):
        r2 = r1 @ g.axis_angle_to_matrix(axis * ang)
        np.testing.assert_allclose(g.geodesic_angle(r1, r2), ang, atol=2e-4)


def test_align_rotation_sets_undoes_a_global_frame_change_and_keeps_per_pose_errors():
    true = g.random_rotations(KEY, 64)
    frame = g.axis_angle_to_matrix(jnp.array([0.4, -1.1, 0.7]))
    np.testing.assert_allclose(g.align_rotation_sets(frame @ true, true), true, atol=1e-5)
    # a 5° error about a random axis on every pose survives the alignment (G absorbs only
    # their mean, ~5°/sqrt(64))
    axes = jax.random.normal(jax.random.key(5), (64, 3))
    tilt = g.axis_angle_to_matrix(np.radians(5.0) * axes / jnp.linalg.norm(axes, axis=-1)[:, None])
    aligned = g.align_rotation_sets(frame @ true @ tilt, true)
    errors = np.degrees(g.geodesic_angle(aligned, true))
    assert abs(np.median(errors) - 5.0) < 0.5 and errors.min() > 3.5 and errors.max() < 6.5


def test_sixd():
    mats = g.random_rotations(KEY, 50)
    np.testing.assert_allclose(g.sixd_to_matrix(g.matrix_to_sixd(mats)), mats, atol=2e-6)
    x = jax.random.normal(jax.random.key(3), (50, 6))
    r = g.sixd_to_matrix(x)
    np.testing.assert_allclose(
        r @ jnp.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=2e-6
    )
    np.testing.assert_allclose(jnp.linalg.det(r), 1.0, atol=2e-6)


@pytest.mark.parametrize("fn", [g.euler_to_matrix, g.axis_angle_to_matrix])
def test_batched_shapes(fn):
    x = jnp.zeros((4, 5, 3)) + 0.1
    assert fn(x).shape == (4, 5, 3, 3)
