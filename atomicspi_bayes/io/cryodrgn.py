"""cryoDRGN ``pose.pkl`` / ``ctf.pkl`` import, only behind an explicit opt-in.

Pickle can execute arbitrary code, so :func:`load_cryodrgn_pickle` refuses unless the caller
passes ``allow_pickle=True``, and even then unpickles through a restricted
:class:`pickle.Unpickler` that admits only NumPy array reconstruction and plain containers
(tuple, list, dict); any other global (``os.system``, ``builtins.eval``...) is refused.

cryoDRGN conventions (SCIENCE.md §3): ``rots`` are RELION's A; ``trans`` are origins as a
fraction of the box size D (``origin_px / D``); ``ctf.pkl`` is ``(N, 9)`` = D, Apix, dfU,
dfV, dfAngle (deg), kV, Cs (mm), amplitude contrast, phase shift (deg).
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.io._errors import one_line

__all__ = ["cryodrgn_ctf", "cryodrgn_poses", "load_cryodrgn_pickle"]

# (module, name) pairs a NumPy-array pickle needs; nothing else may be resolved.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol-2 pickles encode raw bytes as latin-1 text
}
_MAX_BYTES = 1 << 31  # a pose/CTF pickle of 2 GB is not plausible


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")
        if module == "_codecs":
            import codecs

            return codecs.encode
        if module.startswith("numpy") and name in ("_reconstruct", "scalar"):
            from numpy._core import multiarray

            return getattr(multiarray, name)
        return getattr(np, name)


def _check_arrays(obj, path: Path, depth: int = 0):
    if depth > 4:
        raise InputFormatError(f"{path}: pickle nests containers too deeply")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise InputFormatError(f"{path}: pickle holds an object array; refusing it")
        return obj
    if isinstance(obj, tuple | list):
        return type(obj)(_check_arrays(x, path, depth + 1) for x in obj)
    if isinstance(obj, dict):
        return {str(k): _check_arrays(v, path, depth + 1) for k, v in obj.items()}
    if isinstance(obj, int | float | str | bytes | np.generic) or obj is None:
        return obj
    raise InputFormatError(f"{path}: pickle holds a {type(obj).__name__}; expected arrays")


def load_cryodrgn_pickle(path: str | os.PathLike, *, allow_pickle: bool):
    """Load a cryoDRGN pickle (an array, or a tuple/list/dict of arrays) safely.

    Args:
        path: ``pose.pkl`` / ``ctf.pkl``.
        allow_pickle: must be ``True`` (explicit opt-in); otherwise the file is refused.

    Raises:
        InputFormatError: no opt-in, missing file, a disallowed global (code execution
            attempt) or anything that is not numeric arrays in plain containers.
    """
    p = Path(path)
    if not allow_pickle:
        raise InputFormatError(
            f"{p}: pickle files can run code; pass allow_pickle=True (--allow-pickle) only "
            "for files you trust"
        )
    if not p.is_file():
        raise InputFormatError(f"{p}: pickle file not found")
    if p.stat().st_size > _MAX_BYTES:
        raise InputFormatError(f"{p}: {p.stat().st_size} bytes is too large for a pose/CTF pickle")
    data = p.read_bytes()
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        raise InputFormatError(f"{p}: refused unsafe or invalid pickle ({one_line(exc)})") from exc
    except Exception as exc:
        # untrusted bytes drive numpy internals: SystemError, ValueError, TypeError... from C
        raise InputFormatError(
            f"{p}: corrupt pickle ({type(exc).__name__}: {one_line(exc)})"
        ) from exc
    return _check_arrays(obj, p)


def cryodrgn_poses(obj, box_size: int, pixel_size: float) -> tuple[np.ndarray, np.ndarray | None]:
    """cryoDRGN poses -> ``(rotations (N,3,3) A, shifts (N,2) Å or None)``.

    ``obj`` is ``rots`` or ``(rots, trans)``; ``trans`` (fraction of the box) times
    ``box_size * pixel_size`` gives the RELION origin in Å.
    """
    rots, trans = (obj[0], obj[1]) if isinstance(obj, tuple | list) else (obj, None)
    rots = np.asarray(rots, dtype=np.float32)
    if rots.ndim != 3 or rots.shape[1:] != (3, 3):
        raise InputFormatError(f"cryoDRGN rotations have shape {rots.shape}; expected (N, 3, 3)")
    if trans is None:
        return rots, None
    trans = np.asarray(trans, dtype=np.float64)
    if trans.shape != (rots.shape[0], 2):
        raise InputFormatError(f"cryoDRGN translations have shape {trans.shape}; expected (N, 2)")
    return rots, (trans * box_size * pixel_size).astype(np.float32)


def cryodrgn_ctf(arr) -> dict[str, np.ndarray]:
    """cryoDRGN ``(N, 9)`` CTF array -> dict of internal fields (Å, radians, kV, mm)."""
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 9:
        raise InputFormatError(f"cryoDRGN CTF array has shape {a.shape}; expected (N, 9)")
    f32 = np.float32
    return {
        "box_size": a[:, 0].astype(np.int64),
        "pixel_size": a[:, 1].astype(f32),
        "defocus_u": a[:, 2].astype(f32),
        "defocus_v": a[:, 3].astype(f32),
        "defocus_angle": np.deg2rad(a[:, 4]).astype(f32),
        "voltage_kv": a[:, 5].astype(f32),
        "cs_mm": a[:, 6].astype(f32),
        "amplitude_contrast": a[:, 7].astype(f32),
        "phase_shift": np.deg2rad(a[:, 8]).astype(f32),
    }
