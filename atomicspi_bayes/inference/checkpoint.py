"""Atomic, code-free checkpoints of a pytree (SVI state) plus run bookkeeping.

A checkpoint is one ``.npz`` file (``ckpt_000001234.npz``, 9-digit step) holding

- ``leaf_00000`` ... : the flattened leaves of the state pytree (typed PRNG keys are stored as
  their raw ``uint32`` key data),
- ``losses``: (step,) float32 loss history,
- ``__meta__``: a JSON string with the step, the config fingerprint, the leaf key paths,
  shapes and dtypes, the format version and the caller's ``extra`` dict (e.g. the data
  position).

No pickle is involved in either direction (``np.load(..., allow_pickle=False)``), so a
checkpoint is data, never code. Loading needs a *template* pytree (the freshly initialised
state) and checks that the stored leaf paths, shapes and dtypes match it leaf by leaf.

Writes are atomic: the file is written to a temporary name in the same folder, flushed and
fsynced, renamed over its final name with :func:`os.replace` and the folder is fsynced. A
reader therefore sees either the previous set of checkpoints or the new complete one, never
a half-written file, whatever moment the process is killed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from atomicspi_bayes.atomic_files import fsync_dir
from atomicspi_bayes.errors import ConfigError, InputFormatError

__all__ = [
    "Checkpoint",
    "config_fingerprint",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_NAME_RE = re.compile(r"^ckpt_(\d{9})\.npz$")
_TMP_PREFIX = ".ckpt-tmp-"
_ADDRESS_RE = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        state: the pytree, with the template's structure, leaves as ``jax.Array``.
        step: number of optimisation steps done when it was written.
        losses: (step,) float32 loss of every step done so far.
        fingerprint: the config fingerprint it was written with.
        extra: the caller's JSON-serialisable bookkeeping (e.g. data position).
        path: the file it came from.
    """

    state: Any
    step: int
    losses: np.ndarray
    fingerprint: str
    extra: dict = field(default_factory=dict)
    path: Path | None = None


def config_fingerprint(config: Any) -> str:
    """Return a short stable hash (16 hex chars) of a JSON-serialisable config.

    Dataclasses are converted with their fields; keys are sorted, so dict order does not
    matter. Anything else that JSON cannot encode is rendered with ``repr`` (with memory
    addresses removed, so the fingerprint is stable across processes).
    """
    import dataclasses

    def default(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        if isinstance(obj, np.ndarray | jax.Array):
            arr = np.asarray(obj)
            return {"dtype": str(arr.dtype), "shape": list(arr.shape), "data": arr.tolist()}
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, Path):
            return str(obj)
        if isinstance(obj, set | frozenset):
            return sorted(obj, key=repr)
        return _ADDRESS_RE.sub("", repr(obj))

    text = json.dumps(config, default=default, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """Return ``[(step, path), ...]`` of the complete checkpoints in a folder, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _NAME_RE.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """Return the path of the newest checkpoint in a folder, or None when there is none."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def _is_key_array(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _leaf_to_host(x: Any) -> np.ndarray:
    """Copy one leaf to a host numpy array (replicated multi-device arrays: first shard)."""
    if _is_key_array(x):
        x = jax.random.key_data(x)
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if not x.is_fully_replicated:
            raise ValueError("cannot checkpoint a leaf that is sharded across processes")
        x = x.addressable_data(0)
    return np.asarray(x)


def save_checkpoint(
    directory: str | os.PathLike,
    state: Any,
    *,
    step: int,
    losses: np.ndarray,
    fingerprint: str,
    extra: dict | None = None,
    keep: int = 3,
) -> Path:
    """Write ``state`` and bookkeeping atomically as ``directory/ckpt_{step:09d}.npz``.

    Args:
        directory: checkpoint folder (created when missing).
        state: any pytree of arrays (e.g. numpyro's ``SVIState``); replicated multi-device
            arrays are fine.
        step: number of steps done (>= 0).
        losses: (step,) loss history.
        fingerprint: config fingerprint (see :func:`config_fingerprint`).
        extra: JSON-serialisable dict stored alongside (data position, epoch, ...).
        keep: number of newest checkpoints kept; older ones are deleted after the new one
            is safely on disk (keep >= 1).

    Returns:
        The path of the written checkpoint.

    Raises:
        ConfigError: the folder cannot be written (read-only, disk full), in one line.
    """
    if keep < 1:
        raise ConfigError(f"keep={keep}: at least one checkpoint must be kept; pass keep >= 1")
    directory = Path(directory)
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(state)
    arrays: dict[str, np.ndarray] = {}
    paths, shapes, dtypes, key_impls = [], [], [], []
    for i, (path, leaf) in enumerate(leaves_with_path):
        key_impls.append(str(jax.random.key_impl(leaf)) if _is_key_array(leaf) else None)
        arr = _leaf_to_host(leaf)
        arrays[f"leaf_{i:05d}"] = arr
        paths.append(jax.tree_util.keystr(path))
        shapes.append(list(arr.shape))
        dtypes.append(str(arr.dtype))
    losses = np.asarray(losses, dtype=np.float32).reshape(-1)
    meta = {
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "fingerprint": str(fingerprint),
        "paths": paths,
        "shapes": shapes,
        "dtypes": dtypes,
        "key_impls": key_impls,
        "treedef": _ADDRESS_RE.sub("", str(treedef)),
        "extra": extra or {},
    }
    arrays["losses"] = losses
    arrays["__meta__"] = np.array(json.dumps(meta))

    final = directory / f"ckpt_{int(step):09d}.npz"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".npz", dir=directory)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fsync_dir(directory)
    except OSError as exc:
        raise ConfigError(
            f"cannot write checkpoint {final}: {exc.strerror or exc}; "
            "check that the output folder is writable and the disk is not full"
        ) from exc

    for _, old in list_checkpoints(directory)[:-keep]:
        with contextlib.suppress(OSError):
            old.unlink()
    logger.debug("wrote checkpoint %s", final)
    return final


def _read_npz(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputFormatError(f"checkpoint {path} is unreadable ({exc}); delete it") from exc
    if "__meta__" not in arrays or "losses" not in arrays:
        raise InputFormatError(f"checkpoint {path} lacks __meta__/losses; not an atomicspi file")
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
    except json.JSONDecodeError as exc:
        raise InputFormatError(f"checkpoint {path} has corrupt metadata ({exc})") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputFormatError(
            f"checkpoint {path} has format version {meta.get('format_version')}, "
            f"expected {FORMAT_VERSION}; start a new run with a new --out"
        )
    return meta, arrays


def load_checkpoint(
    path_or_directory: str | os.PathLike,
    template: Any,
    *,
    fingerprint: str | None,
) -> Checkpoint:
    """Load a checkpoint into the structure of ``template``.

    Args:
        path_or_directory: a ``ckpt_*.npz`` file, or a folder (its newest checkpoint).
        template: a pytree with the expected structure, shapes and dtypes (e.g. the state
            returned by ``SVI.init``); its leaves are not read.
        fingerprint: the current config fingerprint; None skips the check.

    Raises:
        InputFormatError: no checkpoint, unreadable file, or structure/shape/dtype mismatch.
        ConfigError: the checkpoint was written with a different config fingerprint.
    """
    path = Path(path_or_directory)
    if path.is_dir():
        newest = latest_checkpoint(path)
        if newest is None:
            raise InputFormatError(f"no checkpoint (ckpt_*.npz) in {path}")
        path = newest
    if not path.is_file():
        raise InputFormatError(f"checkpoint {path} does not exist")
    meta, arrays = _read_npz(path)
    if fingerprint is not None and meta["fingerprint"] != fingerprint:
        raise ConfigError(
            f"checkpoint {path} was written with config fingerprint {meta['fingerprint']}, "
            f"the current config has {fingerprint}; use a new --out, or --force to start over"
        )

    template_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    if meta.get("treedef") != _ADDRESS_RE.sub("", str(treedef)):
        raise InputFormatError(
            f"checkpoint {path} has another pytree structure than the current model/guide "
            "state (different networks or parameter sites); use a new --out or --force"
        )
    if len(template_leaves) != len(meta["paths"]):
        raise InputFormatError(
            f"checkpoint {path} holds {len(meta['paths'])} arrays, the model/guide state has "
            f"{len(template_leaves)}; it belongs to a different model"
        )
    leaves = []
    for i, (tpath, tleaf) in enumerate(template_leaves):
        name = jax.tree_util.keystr(tpath)
        arr = arrays.get(f"leaf_{i:05d}")
        if arr is None:
            raise InputFormatError(f"checkpoint {path} lacks array leaf_{i:05d} ({name})")
        if meta["paths"][i] != name:
            raise InputFormatError(
                f"checkpoint {path} leaf {i} is {meta['paths'][i]}, expected {name}; "
                "it belongs to a different model"
            )
        if _is_key_array(tleaf):
            expected = jax.random.key_data(tleaf)
            want_shape, want_dtype = tuple(expected.shape), np.dtype(expected.dtype)
        else:
            want_shape, want_dtype = tuple(np.shape(tleaf)), np.dtype(jax.numpy.result_type(tleaf))
        if tuple(arr.shape) != want_shape or arr.dtype != want_dtype:
            raise InputFormatError(
                f"checkpoint {path} leaf {name} is {arr.dtype}{list(arr.shape)}, expected "
                f"{want_dtype}{list(want_shape)}; it belongs to a different model"
            )
        if _is_key_array(tleaf):
            leaves.append(jax.random.wrap_key_data(arr, impl=jax.random.key_impl(tleaf)))
        else:
            leaves.append(jax.numpy.asarray(arr))
    state = jax.tree_util.tree_unflatten(treedef, leaves)
    losses = np.asarray(arrays["losses"], dtype=np.float32)
    return Checkpoint(
        state=state,
        step=int(meta["step"]),
        losses=losses,
        fingerprint=str(meta["fingerprint"]),
        extra=dict(meta.get("extra") or {}),
        path=path,
    )


def remove_stale_temporaries(directory: str | os.PathLike) -> int:
    """Delete temporary files left by a writer that was killed mid-write; return the count."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    n = 0
    for entry in directory.glob(_TMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            entry.unlink()
            n += 1
    return n
