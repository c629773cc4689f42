"""Streamed image reads (``ImageStack.read``, ``ParticleDataset.images``): no mapped pages.

Issue 11: an epoch over a memory-mapped stack left every touched page resident (RSS grew
with the stack). Images are now read with ``os.preadv`` into fresh buffers; these tests pin
the values (against mrcfile, other modes and byte orders) and that nothing stays mapped.
"""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
from io_shared import CRYODRGN

from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.io import ParticleDataset, open_stack, read_particles, write_stack


def _mapped(path) -> bool:
    """Whether ``path`` is mapped into this process (Linux /proc/self/maps)."""
    with open("/proc/self/maps") as fh:
        return any(line.rstrip().endswith(str(path)) for line in fh)


def test_read_matches_mrcfile_any_order_and_repeats():
    with mrcfile.open(CRYODRGN / "toy_projections.mrcs", permissive=True) as m:
        ref = np.array(m.data)
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.integers(0, 1000, 300), [0, 999, 5, 6, 7, 8, 5]])
    with open_stack(CRYODRGN / "toy_projections.mrcs") as stack:
        got = stack.read(idx)
        assert got.dtype == np.float32 and got.shape == (idx.size, 30, 30)
        np.testing.assert_array_equal(got, ref[idx])
        np.testing.assert_array_equal(stack.read(idx), stack[idx])  # same as the memmap
        assert stack.read([]).shape == (0, 30, 30)
        with pytest.raises(InputFormatError, match=r"toy_projections\.mrcs: image indices"):
            stack.read([1000])


@pytest.mark.parametrize(
    ("dtype", "order"), [("<i2", "<"), (">f4", ">"), ("<f2", "<"), ("<u2", "<"), ("i1", "<")]
)
def test_read_converts_modes_and_byte_orders(tmp_path, dtype, order):
    rng = np.random.default_rng(1)
    data = (rng.uniform(0, 100, size=(7, 6, 6))).astype(dtype)
    path = tmp_path / "s.mrcs"
    with mrcfile.new(path) as m:  # mrcfile keeps the array's byte order
        m.set_data(data)
        m.set_image_stack()
    with open_stack(path) as stack:
        assert stack.header.byte_order == order
        idx = np.array([6, 0, 3, 3, 4, 5])
        np.testing.assert_array_equal(stack.read(idx), data[idx].astype(np.float32))


def test_dataset_epoch_and_scan_leave_nothing_mapped(tmp_path):
    arr = np.random.default_rng(2).normal(size=(300, 16, 16)).astype(np.float32)
    arr[17] = 0.0
    write_stack(tmp_path / "s.mrcs", arr, 1.0)
    star = tmp_path / "p.star"
    star.write_text(
        "data_\nloop_\n_rlnImageName\n_rlnPixelSize\n"
        + "".join(f"{i + 1:06d}@{tmp_path / 's.mrcs'} 1.0\n" for i in range(300))
    )
    ds = ParticleDataset(read_particles(star))
    bad = ds.find_bad_images(chunk_size=64)
    assert bad.indices.tolist() == [17] and bad.n_constant == 1
    for _, idx, images in ds.iter_batches(seed=3, batch_size=50, stop_step=6):
        np.testing.assert_array_equal(images, arr[idx])
    assert not _mapped(tmp_path / "s.mrcs")  # read with preadv, never mapped
    ds.close()


def test_truncated_after_opening_is_one_clear_error(tmp_path):
    arr = np.ones((10, 8, 8), np.float32)
    path = tmp_path / "s.mrcs"
    write_stack(path, arr, 1.0)
    stack = open_stack(path)
    np.testing.assert_array_equal(stack.read([9]), arr[[9]])
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 3 * 8 * 8 * 4])  # the last 3 images are gone
    try:
        with pytest.raises(InputFormatError, match=r"s\.mrcs: ended at byte .* truncated"):
            stack.read([8])
    finally:
        stack.close()
