"""Residue-frame transport of the rendered points (model.rendered_points, structure.deform)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from guides.tiny import tiny_static
from scipy.spatial.transform import Rotation

from atomicspi_bayes.model import nodes_from_amplitudes, rendered_points
from atomicspi_bayes.structure.deform import (
    residue_frame_triples,
    residue_frames,
    transport_points,
)


def _points_around(x0: np.ndarray, per_node: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    node = np.repeat(np.arange(x0.shape[0]), per_node)
    return x0[node] + rng.normal(scale=2.0, size=(node.size, 3)), node


def _static_with_frames(per_node: int = 4):
    static = tiny_static()
    x0 = np.asarray(static.x0_nodes, np.float64)
    points, node = _points_around(x0, per_node, seed=3)
    triples, mask = residue_frame_triples(static.bonded)
    return dataclasses.replace(
        static, render_x0=points.astype(np.float32), render_node=node.astype(np.int32),
        frame_triples=triples, frame_mask=mask,
    )  # fmt: skip


def test_triples_follow_chain_breaks():
    # chains 0-3, 4-6 and the 2-residue chain 7-8 (too short for a frame)
    bonded = np.array([1, 1, 1, 0, 1, 1, 0, 1], bool)
    triples, mask = residue_frame_triples(bonded)
    assert triples[:7].tolist() == [
        [0, 1, 2], [0, 1, 2], [1, 2, 3], [1, 2, 3], [4, 5, 6], [4, 5, 6], [4, 5, 6],
    ]  # fmt: skip
    assert mask.tolist() == [True] * 7 + [False, False]
    for a, b, c in triples:  # never degenerate, even where masked
        assert len({a, b, c}) == 3


def test_frames_are_rotations():
    x0 = np.asarray(tiny_static().x0_nodes, np.float64)
    triples, _ = residue_frame_triples(np.ones(x0.shape[0] - 1, bool))
    f = np.asarray(residue_frames(jnp.asarray(x0), triples), np.float64)
    np.testing.assert_allclose(f @ np.swapaxes(f, -1, -2), np.broadcast_to(np.eye(3), f.shape),
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(np.linalg.det(f), 1.0, atol=1e-5)


def test_identity_deformation_leaves_points_unchanged():
    static = _static_with_frames()
    out = rendered_points(jnp.asarray(static.x0_nodes), static)
    np.testing.assert_allclose(np.asarray(out), static.render_x0, atol=1e-5)
    zero = nodes_from_amplitudes(jnp.zeros(static.n_modes), static)
    np.testing.assert_allclose(np.asarray(rendered_points(zero, static)), static.render_x0,
                               atol=1e-5)  # fmt: skip


def test_rigid_motion_of_nodes_moves_every_point_rigidly():
    static = _static_with_frames()
    q = Rotation.from_rotvec([0.4, -1.1, 0.7]).as_matrix()
    t = np.array([3.0, -2.0, 1.5])
    moved = np.asarray(static.x0_nodes, np.float64) @ q.T + t
    out = np.asarray(rendered_points(jnp.asarray(moved, jnp.float32), static), np.float64)
    np.testing.assert_allclose(out, static.render_x0 @ q.T + t, atol=2e-4)
    # translation-only transport gets the rotated offsets wrong (the old model's error)
    plain = dataclasses.replace(static, frame_triples=None, frame_mask=None)
    wrong = np.asarray(rendered_points(jnp.asarray(moved, jnp.float32), plain), np.float64)
    assert np.abs(wrong - (static.render_x0 @ q.T + t)).max() > 1.0


def test_rotating_one_segment_rotates_its_points_only():
    # a hinge: nodes 12.. turn by 40° about an axis through node 12; points of residues whose
    # whole triple lies in one segment follow that segment's rigid motion exactly
    static = _static_with_frames()
    x0 = np.asarray(static.x0_nodes, np.float64)
    q = Rotation.from_rotvec(np.deg2rad(40.0) * np.array([0.0, 0.6, 0.8])).as_matrix()
    moved = x0.copy()
    moved[12:] = (x0[12:] - x0[12]) @ q.T + x0[12]
    out = np.asarray(rendered_points(jnp.asarray(moved, jnp.float32), static), np.float64)
    node = static.render_node
    p0 = np.asarray(static.render_x0, np.float64)
    left, right = node <= 10, node >= 14
    np.testing.assert_allclose(out[left], p0[left], atol=2e-4)
    np.testing.assert_allclose(out[right], (p0[right] - x0[12]) @ q.T + x0[12], atol=2e-4)


def test_masked_residues_only_translate_and_gradients_are_finite():
    bonded = np.array([1, 1, 1, 0, 1], bool)  # chain 0-3 and the 2-residue chain 4-5
    x0 = np.cumsum(np.random.default_rng(0).normal(scale=2.0, size=(6, 3)), axis=0)
    points, node = _points_around(x0, 2, seed=1)
    triples, mask = residue_frame_triples(bonded)
    shift = np.zeros_like(x0)
    shift[4:] = [0.5, -0.3, 0.2]
    out = np.asarray(transport_points(jnp.asarray(x0 + shift), x0, points, node, triples, mask))
    np.testing.assert_allclose(out[node >= 4], points[node >= 4] + shift[node[node >= 4]],
                               atol=1e-5)  # fmt: skip

    def total(nodes):
        return jnp.sum(transport_points(nodes, x0, points, node, triples, mask) ** 2)

    grad = jax.grad(total)(jnp.asarray(x0 + 0.1, jnp.float32))
    assert np.all(np.isfinite(np.asarray(grad)))
