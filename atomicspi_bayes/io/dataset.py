"""ParticleDataset: lazy, streamed particle images with deterministic minibatches.

Images stay on disk; ``images(indices)`` reads only the requested ones. Minibatch order is a
pure function of ``(seed, epoch)`` (a NumPy Generator seeded with both; no global RNG), so
``batch_indices(seed, batch_size, step)`` lets a resumed run continue at any step, and
``drop_last`` semantics keep every batch the same static shape.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.io.metadata import ParticleMetadata
from atomicspi_bayes.io.mrc import ImageStack, read_mrc_header
from atomicspi_bayes.io.particles import subset_metadata

__all__ = ["BadImages", "ParticleDataset"]

log = logging.getLogger(__name__)


class BadImages(NamedTuple):
    """Images that cannot enter a likelihood (positions in the dataset, 0-based).

    Attributes:
        indices: ``(K,)`` int64, sorted positions of all bad images.
        n_nonfinite: how many contain NaN or inf.
        n_constant: how many are constant (zero variance; e.g. blank boxes).
    """

    indices: np.ndarray
    n_nonfinite: int
    n_constant: int

    @property
    def count(self) -> int:
        return int(self.indices.shape[0])


class ParticleDataset:
    """Particles of a :class:`ParticleMetadata` with lazy image access and minibatches.

    Positions ``0..len-1`` index the selected particles (``subset``, in that order);
    ``particle_index[i]`` is the row of position ``i`` in the original metadata and
    ``metadata`` holds the per-particle CTF/pose arrays in dataset order.

    Construction reads only MRC headers: it checks every stack exists, is an image stack
    of the metadata's box size, and holds every referenced slice (``InputFormatError``
    naming the file otherwise). At most ``max_open_stacks`` stacks stay open at once
    (least recently used are closed), so datasets of thousands of stacks do not exhaust
    file descriptors.

    Args:
        metadata: particles, e.g. from ``read_particles``.
        subset: optional ``(M,)`` rows of ``metadata`` to use (any order, unique).
        max_open_stacks: bound on simultaneously open stacks.
    """

    def __init__(
        self,
        metadata: ParticleMetadata,
        subset: np.ndarray | None = None,
        *,
        max_open_stacks: int = 64,
    ):
        n_all = len(metadata)
        if subset is None:
            rows = np.arange(n_all, dtype=np.int64)
        else:
            rows = np.asarray(subset, dtype=np.int64).reshape(-1)
            if rows.size and (rows.min() < 0 or rows.max() >= n_all):
                raise InputFormatError(
                    f"{metadata.source}: subset rows must be in [0, {n_all}), got "
                    f"{rows.min()}..{rows.max()}"
                )
            if np.unique(rows).size != rows.size:
                raise InputFormatError(f"{metadata.source}: subset rows are not unique")
        if rows.size == 0:
            raise InputFormatError(f"{metadata.source}: no particles selected")
        self.particle_index = rows
        self._root = metadata
        self.metadata = metadata if subset is None else subset_metadata(metadata, rows)
        self._max_open = max(1, int(max_open_stacks))
        self._open: collections.OrderedDict[str, ImageStack] = collections.OrderedDict()
        meta = self.metadata

        paths, stack_of = np.unique(meta.image_paths, return_inverse=True)
        self._stack_paths = paths
        self._stack_of = stack_of.reshape(-1).astype(np.int64)
        self._headers = []
        # Per-stack checks, vectorised over particles (no O(particles x stacks) loops).
        top = np.full(len(paths), -1, dtype=np.int64)
        np.maximum.at(top, self._stack_of, meta.image_indices)
        has_box = meta.box_size > 0
        for k, path in enumerate(paths):
            h = read_mrc_header(path)
            self._headers.append(h)
            if top[k] >= h.nz:
                raise InputFormatError(
                    f"{path}: stack holds {h.nz} images but {meta.source} references image "
                    f"{top[k] + 1}; the metadata and the stack do not match"
                )
            if h.nx != h.ny:
                raise InputFormatError(f"{path}: images are {h.nx}x{h.ny}, not square")
        hbox = np.array([h.nx for h in self._headers], dtype=np.int64)
        wrong = has_box & (meta.box_size != hbox[self._stack_of])
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            raise InputFormatError(
                f"{paths[self._stack_of[i]]}: images are {hbox[self._stack_of[i]]} px but "
                f"{meta.source} says {int(meta.box_size[i])} px"
            )
        boxes = {h.nx for h in self._headers}
        if len(boxes) != 1:
            raise InputFormatError(
                f"{meta.source}: stacks have different box sizes {sorted(boxes)}; use one size"
            )
        self.box_size = int(boxes.pop())
        px = meta.pixel_size.astype(np.float64)
        if not np.all(np.isfinite(px)):
            raise InputFormatError(
                f"{meta.source}: pixel size unknown for some particles; give it in the "
                "metadata or pass fallback_pixel_size"
            )
        if np.ptp(px) > 1e-4 * px.max():
            raise InputFormatError(
                f"{meta.source}: pixel sizes differ ({px.min():.4f}-{px.max():.4f} Å); "
                "use particles of one pixel size"
            )
        self.pixel_size = float(px[0])

    # ---- sizes -----------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.particle_index.shape[0])

    def __repr__(self) -> str:
        return (
            f"ParticleDataset(n={len(self)}, box_size={self.box_size}, "
            f"pixel_size={self.pixel_size:.4f}, stacks={len(self._stack_paths)})"
        )

    def steps_per_epoch(self, batch_size: int) -> int:
        """Full batches per epoch (``drop_last``: the remainder is skipped that epoch)."""
        b = self._check_batch(batch_size)
        return len(self) // b

    def _check_batch(self, batch_size: int) -> int:
        b = int(batch_size)
        if b < 1 or b > len(self):
            raise InputFormatError(f"batch size {b} must be in [1, {len(self)}] (dataset size)")
        return b

    # ---- images ----------------------------------------------------------------------

    def _stack(self, k: int) -> ImageStack:
        path = self._stack_paths[k]
        stack = self._open.get(path)
        if stack is None:
            stack = ImageStack(path, self._headers[k])
            self._open[path] = stack
            if len(self._open) > self._max_open:
                _, old = self._open.popitem(last=False)
                old.close()
        else:
            self._open.move_to_end(path)
        return stack

    def images(self, indices) -> np.ndarray:
        """``(B, L, L)`` float32 images at dataset positions ``indices`` (in that order).

        Reads only these images from disk, grouped per stack, with ``os.preadv`` into a
        fresh buffer (:meth:`ImageStack.read`): no page of a stack stays mapped, so resident
        memory does not grow with the stack size however many images an epoch touches.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise InputFormatError(
                f"image positions must be in [0, {len(self)}), got {idx.min()}..{idx.max()}"
            )
        out = np.empty((idx.size, self.box_size, self.box_size), dtype=np.float32)
        stacks = self._stack_of[idx]
        slices = self.metadata.image_indices[idx]
        for k in np.unique(stacks):
            where = np.flatnonzero(stacks == k)
            out[where] = self._stack(int(k)).read(slices[where])
        return out

    def close(self) -> None:
        """Close every open stack (they re-open lazily on the next access)."""
        while self._open:
            _, stack = self._open.popitem()
            stack.close()

    # ---- minibatches -----------------------------------------------------------------

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        """``(N,)`` permutation of positions for ``epoch``: a pure function of (seed, epoch)."""
        rng = np.random.default_rng([int(seed), int(epoch)])
        return rng.permutation(len(self)).astype(np.int64)

    def batch_indices(self, seed: int, batch_size: int, step: int) -> np.ndarray:
        """``(B,)`` positions of global minibatch ``step`` (epoch = step // steps_per_epoch).

        Deterministic in ``(seed, batch_size, step)``: a run resumed at ``step`` sees the
        same batches as one that never stopped. Every batch has exactly ``batch_size``.
        """
        b = self._check_batch(batch_size)
        if int(step) < 0:
            raise InputFormatError(f"step must be >= 0, got {step}")
        spe = len(self) // b
        epoch, pos = divmod(int(step), spe)
        return self.epoch_order(seed, epoch)[pos * b : (pos + 1) * b]

    def iter_batches(
        self, seed: int, batch_size: int, start_step: int = 0, stop_step: int | None = None
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield ``(step, indices (B,), images (B, L, L) float32)`` from ``start_step``.

        Streams from disk one batch at a time; runs until ``stop_step`` (exclusive), or
        forever when it is ``None`` (the caller stops).
        """
        step = int(start_step)
        spe = self.steps_per_epoch(batch_size)
        order, order_epoch = None, -1
        while stop_step is None or step < stop_step:
            epoch, pos = divmod(step, spe)
            if epoch != order_epoch:
                order, order_epoch = self.epoch_order(seed, epoch), epoch
            idx = order[pos * batch_size : (pos + 1) * batch_size]
            yield step, idx, self.images(idx)
            step += 1

    # ---- quality ---------------------------------------------------------------------

    def find_bad_images(self, chunk_size: int = 1024) -> BadImages:
        """Scan all images (streaming, ``chunk_size`` at a time) for NaN/inf and constants.

        Each chunk is read into a fresh buffer (:meth:`images`) and dropped: the scan's
        memory is one chunk, not the stack.

        Returns:
            :class:`BadImages` with sorted positions; exclude them with :meth:`without`.
        """
        nonfinite, constant = [], []
        step = max(1, int(chunk_size))
        for s in range(0, len(self), step):
            idx = np.arange(s, min(s + step, len(self)))
            imgs = self.images(idx).reshape(idx.size, -1)
            finite = np.all(np.isfinite(imgs), axis=1)
            flat = np.zeros(idx.size, dtype=bool)
            if finite.any():
                f = imgs[finite]
                flat[finite] = np.max(f, axis=1) == np.min(f, axis=1)
            nonfinite.append(idx[~finite])
            constant.append(idx[flat])
        bad_nf = np.concatenate(nonfinite) if nonfinite else np.zeros(0, np.int64)
        bad_c = np.concatenate(constant) if constant else np.zeros(0, np.int64)
        out = BadImages(np.union1d(bad_nf, bad_c).astype(np.int64), bad_nf.size, bad_c.size)
        if out.count:
            log.warning(
                "%s: %d bad images (%d NaN/inf, %d constant), e.g. positions %s",
                self.metadata.source,
                out.count,
                out.n_nonfinite,
                out.n_constant,
                out.indices[:5].tolist(),
            )
        return out

    def without(self, positions) -> ParticleDataset:
        """A dataset without the given positions (e.g. ``find_bad_images().indices``)."""
        drop = np.asarray(positions, dtype=np.int64).reshape(-1)
        keep = np.setdiff1d(np.arange(len(self)), drop)
        if keep.size == 0:
            raise InputFormatError(f"{self.metadata.source}: no particles left after exclusion")
        return ParticleDataset(
            self._root, subset=self.particle_index[keep], max_open_stacks=self._max_open
        )
