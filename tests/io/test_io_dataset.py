"""ParticleDataset: lazy images, deterministic resumable minibatches, validation, bad images."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from io_shared import CRYODRGN

from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.io import (
    ParticleDataset,
    ParticleMetadata,
    read_particles,
    write_stack,
    write_star,
)


@pytest.fixture(scope="module")
def toy() -> ParticleDataset:
    return ParticleDataset(read_particles(CRYODRGN / "toy_projections.star"))


@pytest.fixture(scope="module")
def toy_ref() -> np.ndarray:
    with mrcfile.open(CRYODRGN / "toy_projections.mrcs", permissive=True) as m:
        return np.array(m.data)


def test_toy_dataset_images_match_mrcfile(toy, toy_ref):
    assert len(toy) == 1000 and toy.box_size == 30 and toy.pixel_size == 1.0
    idx = np.array([999, 3, 500, 3, 0])
    np.testing.assert_array_equal(toy.images(idx), toy_ref[idx])
    assert toy.images(idx).dtype == np.float32
    with pytest.raises(InputFormatError, match="positions"):
        toy.images([1000])


def test_relion31_v2_dataset_reads_its_stack():
    ds = ParticleDataset(read_particles(CRYODRGN / "relion31.v2.star"))
    with mrcfile.open(CRYODRGN / "relion31.mrcs", permissive=True) as m:
        np.testing.assert_array_equal(ds.images(np.arange(5)), m.data)
    assert ds.box_size == 256 and ds.pixel_size == pytest.approx(2.806)  # STAR wins over header


def test_epoch_order_is_a_permutation_and_seeded(toy):
    o = toy.epoch_order(seed=7, epoch=0)
    np.testing.assert_array_equal(np.sort(o), np.arange(1000))
    np.testing.assert_array_equal(o, toy.epoch_order(7, 0))
    assert not np.array_equal(o, toy.epoch_order(7, 1))
    assert not np.array_equal(o, toy.epoch_order(8, 0))
    np.random.seed(0)  # noqa: NPY002 - show the global RNG plays no part
    a = toy.epoch_order(7, 3)
    np.random.seed(1)  # noqa: NPY002
    np.testing.assert_array_equal(a, toy.epoch_order(7, 3))


def test_batches_drop_last_and_cover_each_epoch(toy):
    b = 64
    spe = toy.steps_per_epoch(b)
    assert spe == 1000 // 64 == 15
    epoch0 = np.concatenate([toy.batch_indices(3, b, s) for s in range(spe)])
    assert epoch0.size == spe * b and np.unique(epoch0).size == epoch0.size  # no repeats
    first_of_epoch1 = toy.batch_indices(3, b, spe)
    np.testing.assert_array_equal(first_of_epoch1, toy.epoch_order(3, 1)[:b])
    assert all(toy.batch_indices(3, b, s).shape == (b,) for s in range(0, 100, 7))


def test_resume_reproduces_the_uninterrupted_stream(toy):
    full = [(s, i.copy(), x.copy()) for s, i, x in toy.iter_batches(11, 50, stop_step=45)]
    resumed = list(toy.iter_batches(11, 50, start_step=23, stop_step=45))
    assert [s for s, _, _ in resumed] == list(range(23, 45))
    for (s1, i1, x1), (s2, i2, x2) in zip(full[23:], resumed, strict=True):
        assert s1 == s2
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(i2, toy.batch_indices(11, 50, s2))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**63 - 1), batch=st.integers(1, 1000), step=st.integers(0, 10**6))
def test_batch_indices_pure_function(toy, seed, batch, step):
    a = toy.batch_indices(seed, batch, step)
    assert a.shape == (batch,) and a.min() >= 0 and a.max() < 1000
    assert np.unique(a).size == batch
    np.testing.assert_array_equal(a, toy.batch_indices(seed, batch, step))


def test_batch_size_and_step_validation(toy):
    for bad in (0, 1001):
        with pytest.raises(InputFormatError, match="batch size"):
            toy.batch_indices(0, bad, 0)
    with pytest.raises(InputFormatError, match="step"):
        toy.batch_indices(0, 10, -1)


def test_subset_positions_and_metadata(toy_ref):
    meta = read_particles(CRYODRGN / "toy_projections.star")
    rows = np.array([10, 500, 3, 999])
    ds = ParticleDataset(meta, subset=rows)
    assert len(ds) == 4
    np.testing.assert_array_equal(ds.particle_index, rows)
    np.testing.assert_array_equal(ds.images([0, 1, 2, 3]), toy_ref[rows])
    np.testing.assert_array_equal(ds.metadata.image_indices, rows)
    assert len(ds.metadata.table) == 4
    for bad in ([1000], [-1], [3, 3]):
        with pytest.raises(InputFormatError, match="subset"):
            ParticleDataset(meta, subset=np.array(bad))


def _dataset_dir(tmp_path, n_stacks=5, per_stack=4, box=8, bad=None):
    """Stacks s0..s{k-1}.mrcs; image value = global particle number; a STAR over all."""
    rng = np.random.default_rng(0)
    names, idx, images = [], [], []
    for k in range(n_stacks):
        arr = rng.normal(size=(per_stack, box, box)).astype(np.float32)
        arr += np.arange(k * per_stack, (k + 1) * per_stack)[:, None, None] * 100
        if bad:
            for (kk, i), value in bad.items():
                if kk == k:
                    arr[i] = value
        write_stack(tmp_path / f"s{k}.mrcs", arr, 1.5)
        images.append(arr)
        names += [str(tmp_path / f"s{k}.mrcs")] * per_stack
        idx += list(range(per_stack))
    n = len(names)
    f32 = np.float32
    meta = ParticleMetadata(
        source=str(tmp_path / "p.star"),
        image_paths=np.array(names),
        image_indices=np.array(idx, np.int64),
        pixel_size=np.full(n, 1.5, f32),
        box_size=np.full(n, box, np.int64),
        voltage_kv=np.full(n, 300, f32),
        cs_mm=np.full(n, 2.7, f32),
        amplitude_contrast=np.full(n, 0.1, f32),
        defocus_u=np.full(n, 1e4, f32),
        defocus_v=np.full(n, 1e4, f32),
        defocus_angle=np.zeros(n, f32),
        phase_shift=np.zeros(n, f32),
        ctf_bfactor=np.zeros(n, f32),
        ctf_scale=np.ones(n, f32),
        optics_group=np.ones(n, np.int64),
    )
    write_star(tmp_path / "p.star", meta)
    return tmp_path / "p.star", np.concatenate(images)


def test_many_stacks_with_bounded_open_handles(tmp_path):
    star, ref = _dataset_dir(tmp_path, n_stacks=9)
    ds = ParticleDataset(read_particles(star), max_open_stacks=2)
    rng = np.random.default_rng(1)
    for _ in range(20):
        idx = rng.choice(len(ds), size=7, replace=False)
        np.testing.assert_array_equal(ds.images(idx), ref[idx])
        assert len(ds._open) <= 2
    ds.close()
    assert len(ds._open) == 0
    np.testing.assert_array_equal(ds.images([5]), ref[[5]])  # re-opens lazily


def test_bad_images_detected_and_excluded(tmp_path):
    bad = {(0, 1): np.nan, (2, 3): np.inf, (3, 0): 0.25}  # NaN, inf, constant
    star, ref = _dataset_dir(tmp_path, bad=bad)
    ds = ParticleDataset(read_particles(star))
    found = ds.find_bad_images(chunk_size=3)
    np.testing.assert_array_equal(found.indices, [1, 11, 12])
    assert (found.n_nonfinite, found.n_constant, found.count) == (2, 1, 3)
    clean = ds.without(found.indices)
    assert len(clean) == 17 and clean.find_bad_images().count == 0
    np.testing.assert_array_equal(clean.particle_index, np.setdiff1d(np.arange(20), [1, 11, 12]))
    np.testing.assert_array_equal(clean.images([1]), ref[[2]])


def test_index_out_of_range_names_the_stack(tmp_path):
    star, _ = _dataset_dir(tmp_path, n_stacks=2, per_stack=4)
    text = star.read_text().replace("000004@s1.mrcs", "000009@s1.mrcs")
    star.write_text(text)
    with pytest.raises(InputFormatError, match=r"s1\.mrcs: stack holds 4 images .* image 9"):
        ParticleDataset(read_particles(star))


def test_missing_stack_box_mismatch_and_truncated(tmp_path):
    star, _ = _dataset_dir(tmp_path, n_stacks=2)
    (tmp_path / "s1.mrcs").unlink()
    with pytest.raises(InputFormatError, match=r"s1\.mrcs: image file not found"):
        ParticleDataset(read_particles(star))
    write_stack(tmp_path / "s1.mrcs", np.zeros((4, 10, 10), np.float32), 1.5)
    with pytest.raises(InputFormatError, match="images are 10 px but"):
        ParticleDataset(read_particles(star))
    raw = (tmp_path / "s0.mrcs").read_bytes()
    (tmp_path / "s0.mrcs").write_bytes(raw[:-100])
    with pytest.raises(InputFormatError, match=r"s0\.mrcs: truncated"):
        ParticleDataset(read_particles(star))


def test_shared_star_without_stacks_is_refused_clearly():
    meta = read_particles(CRYODRGN / "relion5.star")
    with pytest.raises(InputFormatError, match=r"toy_images_a\.mrcs: image file not found"):
        ParticleDataset(meta)
