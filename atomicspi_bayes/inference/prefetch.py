"""Background prefetching of minibatches: read step t+1 from disk while step t computes."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["Prefetcher"]

_POLL_S = 0.05


def batch_indices(batch: Any) -> np.ndarray | None:
    """Host copy of a batch's ``indices`` (mapping key or attribute, e.g. a NamedTuple
    field), or None when it has none."""
    if isinstance(batch, Mapping):
        value = batch.get("indices")
    else:
        value = getattr(batch, "indices", None)
    return None if value is None else np.array(value, copy=True)


class Prefetcher:
    """Yield ``(step, indices, device_batch)`` for ``step`` in ``[start, stop)``, in order.

    ``batch_fn(step)`` (host pytree) and ``to_device(batch)`` run on one background thread,
    at most ``depth`` batches ahead. ``indices`` is :func:`batch_indices` of the batch (used
    to name particles in errors). An exception raised by ``batch_fn`` is re-raised by
    :meth:`get` in the caller's thread. ``depth == 0`` loads synchronously in :meth:`get`.
    Use as a context manager so the thread is stopped on every exit path.
    """

    def __init__(
        self,
        batch_fn: Callable[[int], Any],
        to_device: Callable[[Any], Any],
        start: int,
        stop: int,
        depth: int = 2,
    ):
        self._batch_fn = batch_fn
        self._to_device = to_device
        self._next = start
        self._stop = stop
        self._depth = depth
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def _load(self, step: int) -> tuple[int, np.ndarray | None, Any]:
        batch = self._batch_fn(step)
        indices = batch_indices(batch)
        return step, indices, self._to_device(batch)

    def _worker(self) -> None:
        for step in range(self._next, self._stop):
            if self._halt.is_set():
                return
            try:
                item: tuple = ("ok", self._load(step))
            except BaseException as exc:  # handed to the consumer thread and re-raised there
                item = ("error", exc)
            while not self._halt.is_set():
                try:
                    self._queue.put(item, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
            if item[0] == "error":
                return

    def __enter__(self) -> Prefetcher:
        if self._depth > 0 and self._next < self._stop:
            self._thread = threading.Thread(
                target=self._worker, name="atomicspi-prefetch", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the background thread (pending batches are dropped)."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None

    def get(self) -> tuple[int, np.ndarray | None, Any]:
        """Return the next ``(step, indices, device_batch)``."""
        if self._next >= self._stop:
            raise IndexError("prefetcher exhausted")
        if self._thread is None:
            out = self._load(self._next)
        else:
            kind, out = self._queue.get()
            if kind == "error":
                raise out
        self._next += 1
        return out
