"""The run folder of a fit: its checks and its output files, written in bounded memory.

Glue (no numerics of its own). ``atomicspi fit`` reports S posterior draws for each of N
particles; held in memory at once they are O(N x S) (``z_draws`` (S, N, D) float32, the
ArviZ ``log_q`` (S, N) float64, with amortized poses ``rotation`` (S, N, 3, 3) and
``shift`` (S, N, 2), and the temporaries of building them: ~5 kB per particle with
S = 100). Here they are produced and written a block of draws at a time:

- :func:`streamed_posterior` gives the reported posterior's per-particle summaries (O(N·D))
  and a :class:`ReportedPosterior` whose :meth:`~ReportedPosterior.draws` computes draws
  ``[start, stop)`` on demand. For the amortized posterior the draws are *the same numbers*
  ``posterior.reported_posterior`` would give: rows of ``jax.random.normal(key, (S, N,
  D))`` are computed without the rest of the array (:func:`normal_rows`, the counter-based
  threefry of ``jax_threefry_partitionable``). The refined posterior comes from
  ``posterior.reported_posterior`` as before (its draws are sliced).
- :func:`write_latents` streams ``latents.npz`` (a ``np.savez`` zip: same entries, same
  arrays) and :func:`write_posterior_nc` ``posterior.nc`` (the layout of
  ``diagnostics.export.posterior_inference_data``: the small variables through xarray, the
  draws and ``log_q`` appended with h5netcdf a block at a time), each atomically.

Also here: the run-folder helpers shared by ``pipeline.fit`` and ``pipeline.fit_xray``
(``prepare_run_dir``, ``clear_run_dir``, ``ensemble_latents``).

Public API (of this module; the package re-exports none of it)::

    normal_rows(key, shape, start, stop) -> (stop - start, *shape[1:]) float32
    streamed_posterior(key, problem, params, enc, *, kind, n_draws) -> ReportedPosterior
    ReportedPosterior: z_mean, z_sd, z_mean_amortized, z_sd_amortized (N, D), ess (N,),
        posterior_method, n_draws, draws(start, stop) -> {"z", ["rotation", "shift"]}
    draws_per_block(posterior, budget_bytes=...) -> int
    write_latents(path, posterior, particle_index, extra=None)
    write_posterior_nc(path, posterior, particle_index, elbo)
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.atomic_files import atomic_open, atomic_path
from atomicspi_bayes.errors import ConfigError, InputFormatError

__all__ = [
    "ReportedPosterior",
    "draws_per_block",
    "normal_rows",
    "streamed_posterior",
    "write_latents",
    "write_posterior_nc",
]

#: bytes of draws (and their temporaries) produced at once by the writers
BLOCK_BYTES = 16 << 20
_CHUNK_BYTES = 1 << 20  # raw bytes per HDF5 chunk of the draws in posterior.nc

# ---------------------------------------------------------------- run folder


_OUTPUTS = (
    "latents.npz", "posterior.nc", "particles.star", "ensemble.pdb", "elbo.npy",
    "truth.npz", "nuts.npz", "config.toml",
)  # fmt: skip


def prepare_run_dir(out_dir: Path, cfg) -> None:
    """Refuse a finished run or stray checkpoints unless ``cfg.force`` / ``cfg.resume``."""
    finished = (out_dir / "latents.npz").exists()
    if finished and not (cfg.force or cfg.resume):
        raise ConfigError(
            f"{out_dir}: a finished run is already there; use --force to overwrite it or "
            "--resume to continue it"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise InputFormatError(f"{out_dir}: exists and is not a directory")
    if not (cfg.force or cfg.resume) and list((out_dir / "checkpoints").glob("ckpt_*.npz")):
        raise ConfigError(
            f"{out_dir / 'checkpoints'} holds checkpoints of an earlier run; pass --resume to "
            "continue it, or use a new --out or --force to start over"
        )


def clear_run_dir(out_dir: Path, cfg) -> None:
    """With --force (not --resume): remove the previous run's outputs, once the new inputs
    have been read and checked (a refused ``fit --force`` keeps the previous result)."""
    if cfg.force and not cfg.resume:
        for name in _OUTPUTS:
            (out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def ensemble_latents(z_mean: np.ndarray, n: int) -> np.ndarray:
    """``(n, D)`` latents along the data: 5-95 % quantiles along the first principal axis."""
    centre = z_mean.mean(axis=0)
    _, _, vt = np.linalg.svd(z_mean - centre, full_matrices=False)
    axis = vt[0] * np.sign(vt[0][np.argmax(np.abs(vt[0]))])
    t = np.quantile((z_mean - centre) @ axis, np.linspace(0.05, 0.95, n))
    return centre + t[:, None] * axis[None, :]


# ---------------------------------------------------------------- draws a block at a time


def _streamable_key(key) -> bool:
    """True when rows of ``jax.random.normal(key, ...)`` can be computed alone (legacy
    uint32[2] threefry key, partitionable threefry, float32 default)."""
    return (
        bool(jax.config.jax_threefry_partitionable)
        and not bool(jax.config.jax_enable_x64)
        and getattr(key, "dtype", None) == jnp.uint32
        and tuple(key.shape) == (2,)
        and jax.config.jax_default_prng_impl == "threefry2x32"
    )


@functools.partial(jax.jit, static_argnames=("shape",))
def _normal_from_counters(key, hi, lo, shape):
    from jax.extend.random import threefry2x32_p

    bits1, bits2 = threefry2x32_p.bind(key[0], key[1], hi.reshape(shape), lo.reshape(shape))
    bits = bits1 ^ bits2
    # jax.random.uniform(lo=nextafter(-1, 0), hi=1) then sqrt(2) erfinv, as jax.random.normal
    float_bits = jax.lax.shift_right_logical(bits, jnp.array(32 - 23, jnp.uint32))
    float_bits = jax.lax.bitwise_or(
        float_bits, jnp.asarray(np.array(1.0, np.float32).view(np.uint32), jnp.uint32)
    )
    floats = jax.lax.bitcast_convert_type(float_bits, jnp.float32) - jnp.array(1.0, jnp.float32)
    lo_v = np.nextafter(np.float32(-1.0), np.float32(0.0), dtype=np.float32)
    minval = jnp.asarray(lo_v, jnp.float32)
    maxval = jnp.asarray(np.float32(1.0), jnp.float32)
    u = jax.lax.max(minval, floats * (maxval - minval) + minval)
    return jax.lax.mul(np.array(np.sqrt(2), np.float32), jax.lax.erf_inv(u))


def normal_rows(key, shape: tuple[int, ...], start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` (axis 0) of ``jax.random.normal(key, shape)``, float32.

    Computes only those rows (memory ``(stop - start) * prod(shape[1:])``) when JAX's
    counter-based threefry (``jax_threefry_partitionable``, default since JAX 0.5) is on,
    the key is a legacy ``uint32[2]`` key and x64 is off; otherwise the whole array is
    drawn and sliced (same numbers, O(prod(shape)) memory).
    """
    shape = tuple(int(s) for s in shape)
    start, stop = int(start), int(stop)
    if not _streamable_key(key):
        return np.asarray(jax.random.normal(key, shape))[start:stop]
    inner = int(np.prod(shape[1:], dtype=np.int64))
    flat = np.arange(start * inner, stop * inner, dtype=np.uint64)
    hi = (flat >> np.uint64(32)).astype(np.uint32)
    lo = (flat & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return np.asarray(_normal_from_counters(key, hi, lo, (stop - start, *shape[1:])))


@dataclass
class ReportedPosterior:
    """The reported per-particle posterior of a fit, its draws computed a block at a time.

    Attributes:
        z_mean, z_sd: ``(N, D)`` float32 mean and sd of the reported posterior of z.
        z_mean_amortized, z_sd_amortized: ``(N, D)`` float32, the encoder's q.
        ess: ``(N,)`` float64 (NaN for the amortized posterior).
        posterior_method: ``"amortized"``, ``"grid"`` or ``"importance"``.
        n_draws: S.  poses: True when draws carry ``"rotation"`` and ``"shift"``.
    """

    z_mean: np.ndarray
    z_sd: np.ndarray
    z_mean_amortized: np.ndarray
    z_sd_amortized: np.ndarray
    ess: np.ndarray
    posterior_method: str
    n_draws: int
    poses: bool
    _draws_fn: Any = field(repr=False, default=None)

    @property
    def n_particles(self) -> int:
        return int(self.z_mean.shape[0])

    @property
    def latent_dim(self) -> int:
        return int(self.z_mean.shape[1])

    def draws(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Draws ``[start, stop)`` of every particle: ``{"z": (b, N, D) float32}`` (+
        ``"rotation"`` ``(b, N, 3, 3)`` and ``"shift"`` ``(b, N, 2)`` Å with poses)."""
        return self._draws_fn(int(start), int(stop))

    def bytes_per_draw(self) -> int:
        """Bytes of one draw of every particle, with the writers' temporaries (~4x)."""
        per = 4 * self.latent_dim + 8 + (4 * 9 + 4 * 2 if self.poses else 0)
        return 4 * per * self.n_particles


def streamed_posterior(
    key, problem, params: dict, enc: dict, *, kind: str = "refined", n_draws: int = 100
) -> ReportedPosterior:
    """The posterior ``posterior.reported_posterior`` reports, draws on demand.

    Same numbers as ``reported_posterior(key, problem, params, enc, kind=kind,
    n_draws=n_draws)``. ``kind="amortized"`` never holds more than the requested draws;
    ``"refined"`` runs ``reported_posterior`` (its draws are in memory) and slices them.
    """
    if kind not in ("refined", "amortized"):
        raise ConfigError(f"posterior must be 'refined' or 'amortized', got {kind!r}")
    poses = problem.model_cfg.poses == "amortized"
    if kind == "refined":
        from atomicspi_bayes.posterior import reported_posterior

        post = reported_posterior(key, problem, params, enc, kind=kind, n_draws=n_draws)

        def sliced(start: int, stop: int) -> dict[str, np.ndarray]:
            out = {"z": post["z_draws"][start:stop]}
            if poses:
                out["rotation"] = post["rotation_draws"][start:stop]
                out["shift"] = post["shift_draws"][start:stop]
            return out

        return ReportedPosterior(
            post["z_mean"], post["z_sd"], post["z_mean_amortized"], post["z_sd_amortized"],
            np.asarray(post["ess"]), str(post["posterior_method"]), n_draws, poses, sliced,
        )  # fmt: skip

    # kind == "amortized": posterior.reported_posterior's draws, rows at a time
    z_mean_q = np.asarray(enc["z_mean"], np.float32)
    z_sd_q = np.asarray(enc["z_sd"], np.float32)
    n = z_mean_q.shape[0]
    if poses:
        from atomicspi_bayes.model import TangentNormalSO3
        from atomicspi_bayes.physics.geometry import axis_angle_to_matrix

        k_rot, k_shift = jax.random.split(jax.random.fold_in(key, 1))
        q_rot = TangentNormalSO3(enc["rotation_mean"], enc["rotation_sd"])

    def drawn(start: int, stop: int) -> dict[str, np.ndarray]:
        eps = normal_rows(key, (n_draws, *z_mean_q.shape), start, stop)
        out = {"z": (z_mean_q[None] + z_sd_q[None] * eps).astype(np.float32)}
        if poses:  # TangentNormalSO3.sample, rows start:stop of its normal draws
            e_rot = jnp.asarray(normal_rows(k_rot, (n_draws, n, 3), start, stop))
            out["rotation"] = np.asarray(q_rot.loc @ axis_angle_to_matrix(e_rot * q_rot.scale))
            e_shift = normal_rows(k_shift, (n_draws, n, 2), start, stop)
            out["shift"] = enc["shift_mean"][None] + enc["shift_sd"][None] * e_shift
        return out

    return ReportedPosterior(
        z_mean_q, z_sd_q, z_mean_q, z_sd_q, np.full(n, np.nan), "amortized", n_draws, poses,
        drawn,
    )  # fmt: skip


def draws_per_block(posterior: ReportedPosterior, budget_bytes: int = BLOCK_BYTES) -> int:
    """Draws per block so that one block (with temporaries) stays near ``budget_bytes``."""
    return int(np.clip(budget_bytes // max(1, posterior.bytes_per_draw()), 1, posterior.n_draws))


def _blocks(posterior: ReportedPosterior, step: int):
    for start in range(0, posterior.n_draws, step):
        yield start, min(start + step, posterior.n_draws)


# ---------------------------------------------------------------- latents.npz


def write_latents(
    path: str | Path,
    posterior: ReportedPosterior,
    particle_index: np.ndarray,
    extra: dict[str, np.ndarray] | None = None,
    *,
    block: int | None = None,
) -> None:
    """Write ``latents.npz`` (see ``pipeline.fit``) atomically, ``z_draws`` a block at a time.

    Same zip of ``.npy`` entries as ``np.savez`` (stored, zip64), in the order ``z_mean,
    z_sd, z_draws, particle_index, z_mean_amortized, z_sd_amortized, posterior_method,
    ess`` then ``extra``.
    """
    step = block or draws_per_block(posterior)
    s, n, d = posterior.n_draws, posterior.n_particles, posterior.latent_dim
    small = {
        "particle_index": np.asarray(particle_index),
        "z_mean_amortized": posterior.z_mean_amortized,
        "z_sd_amortized": posterior.z_sd_amortized,
        "posterior_method": np.asarray(posterior.posterior_method),
        "ess": posterior.ess,
        **(extra or {}),
    }
    with (
        atomic_open(path, "wb") as fh,
        zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf,
    ):

        def put(name: str, arr: np.ndarray) -> None:
            with zf.open(name + ".npy", "w", force_zip64=True) as fid:
                np.lib.format.write_array(fid, np.asanyarray(arr), allow_pickle=True)

        put("z_mean", posterior.z_mean)
        put("z_sd", posterior.z_sd)
        with zf.open("z_draws.npy", "w", force_zip64=True) as fid:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                      "fortran_order": False, "shape": (s, n, d)}  # fmt: skip
            np.lib.format.write_array_header_1_0(fid, header)
            for start, stop in _blocks(posterior, step):
                z = np.ascontiguousarray(posterior.draws(start, stop)["z"], dtype=np.float32)
                fid.write(z.tobytes())  # C order: draws are the leading axis
        for name, arr in small.items():
            put(name, arr)


# ---------------------------------------------------------------- posterior.nc


def _compressible(dtype: np.dtype) -> bool:
    """ArviZ's ``to_netcdf(compress=True)`` rule: zlib for these dtypes."""
    if dtype.kind == "V":
        return all(_compressible(item) for item, _ in dtype.fields.values())
    return dtype.kind in {"b", "i", "u", "f", "c", "S"}


def write_posterior_nc(
    path: str | Path,
    posterior: ReportedPosterior,
    particle_index: np.ndarray,
    elbo: np.ndarray,
    *,
    block: int | None = None,
) -> None:
    """Write ``posterior.nc`` atomically with the layout of
    ``diagnostics.export.posterior_inference_data`` (+ ``write_posterior``: h5netcdf, zlib),
    the draws (``posterior``: ``z``, ``rotation``, ``shift``; ``sample_stats``: ``log_q``)
    a block of draws at a time."""
    import h5netcdf

    from atomicspi_bayes.diagnostics.export import posterior_inference_data

    step = block or draws_per_block(posterior)
    s, n = posterior.n_draws, posterior.n_particles
    # the small groups: built by the export module itself from a single draw, whose
    # draw-dependent variables are dropped and rewritten below with S draws
    first = posterior.draws(0, 1)
    idata = posterior_inference_data(
        first["z"], posterior.z_mean, posterior.z_sd, np.asarray(particle_index), elbo,
        rotation_draws=first.get("rotation"), shift_draws=first.get("shift"),
        z_mean_amortized=posterior.z_mean_amortized, z_sd_amortized=posterior.z_sd_amortized,
        ess=posterior.ess, posterior_method=posterior.posterior_method,
    )  # fmt: skip
    big = {"posterior": [v for v in ("z", "rotation", "shift") if v in idata.posterior]}
    big["sample_stats"] = ["log_q"]
    specs: dict[tuple[str, str], tuple[tuple[str, ...], tuple[int, ...], np.dtype]] = {}
    with atomic_path(path) as tmp:
        for i, group in enumerate(("posterior", "sample_stats", "constant_data")):
            ds = getattr(idata, group)
            for name in big.get(group, []):
                var = ds[name]
                shape = (1, s, *var.shape[2:])
                specs[(group, name)] = (var.dims, shape, var.dtype)
            ds = ds.drop_vars(big.get(group, []))
            ds = ds.assign_coords(draw=np.arange(s)) if "draw" in ds.dims else ds
            encoding = {
                k: {"zlib": True} for k, v in ds.variables.items() if _compressible(v.dtype)
            }
            ds.to_netcdf(str(tmp), mode="w" if i == 0 else "a", group=group,
                         engine="h5netcdf", encoding=encoding)  # fmt: skip
        del idata, first
        with h5netcdf.File(str(tmp), "a") as f:
            variables = {}
            for (group, name), (dims, shape, dtype) in specs.items():
                g = f[group]
                for dim, size in zip(dims, shape, strict=True):
                    if dim not in g.dimensions:
                        g.dimensions[dim] = size
                inner = int(np.prod(shape[3:], dtype=np.int64))
                per_particle = max(1, step * inner * dtype.itemsize)
                n_chunk = int(np.clip(_CHUNK_BYTES // per_particle, 1, n))
                variables[(group, name)] = g.create_variable(
                    name, dimensions=dims, dtype=dtype, fillvalue=np.nan,
                    compression="gzip", compression_opts=4,
                    chunks=(1, min(step, s), n_chunk, *shape[3:]),
                )  # fmt: skip
            q_mean, q_sd = posterior.z_mean_amortized, posterior.z_sd_amortized
            safe_sd = np.where(q_sd > 0, q_sd, np.nan)
            for start, stop in _blocks(posterior, step):
                block_draws = posterior.draws(start, stop)
                for name in big["posterior"]:
                    variables[("posterior", name)][0, start:stop] = block_draws[name]
                z = block_draws["z"]
                log_q = np.sum(
                    -0.5 * ((z - q_mean) / safe_sd) ** 2
                    - np.log(safe_sd)
                    - 0.5 * np.log(2 * np.pi),
                    axis=-1,
                )  # fmt: skip  (the expression of diagnostics.export)
                variables[("sample_stats", "log_q")][0, start:stop] = log_q


# ---------------------------------------------------------------- particles.star

_PARTICLES_LOOP = "\n# version 30001\n\ndata_particles\n"


def _optics_consistent(meta, chunk: int) -> bool:
    """True when every optics group has one set of optics values (``io.write_star`` then
    keeps the group ids, and a chunk of particles is written as in the whole file)."""
    groups = np.asarray(meta.optics_group)
    uniq, first = np.unique(groups, return_index=True)
    cols = (meta.voltage_kv, meta.cs_mm, meta.amplitude_contrast, meta.pixel_size,
            meta.box_size)  # fmt: skip

    def keys(rows) -> np.ndarray:
        k = np.stack([np.asarray(c)[rows].astype(np.float64) for c in cols], axis=1)
        return np.where(np.isnan(k), -1.0, k)

    ref = keys(first)
    for start in range(0, groups.size, chunk):
        rows = np.arange(start, min(start + chunk, groups.size))
        if not np.array_equal(keys(rows), ref[np.searchsorted(uniq, groups[rows])]):
            return False
    return True


def write_star_chunked(
    path: str | Path,
    metadata,
    extra_columns: dict[str, np.ndarray] | None = None,
    *,
    chunk: int = 4096,
) -> None:
    """``io.write_star(path, metadata, extra_columns)``, the same bytes, ``chunk`` rows at a time.

    ``write_star`` formats every value of the N particles as text at once (~3 kB per
    particle); here the optics table comes from one particle of each optics group and the
    particle rows from ``write_star`` on ``chunk`` particles at a time, written to
    temporaries next to ``path`` (image names stay relative to its folder). Optics groups
    whose values differ within a group are renumbered by ``write_star`` over the whole
    file: then it is called once, as is.
    """
    from atomicspi_bayes.io import write_star
    from atomicspi_bayes.io.particles import subset_metadata

    path = Path(path)
    n = len(metadata)
    extra = {k: np.asarray(v) for k, v in (extra_columns or {}).items()}
    if n <= chunk or not _optics_consistent(metadata, chunk):
        write_star(path, metadata, extra)
        return

    def part(rows: np.ndarray) -> str:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            write_star(tmp, subset_metadata(metadata, rows), {k: v[rows] for k, v in extra.items()})
            return tmp.read_text(encoding="utf-8")
        finally:
            tmp.unlink(missing_ok=True)

    first_rows = np.sort(np.unique(np.asarray(metadata.optics_group), return_index=True)[1])
    optics_text = part(first_rows)
    head = optics_text[: optics_text.index(_PARTICLES_LOOP)]
    particle_header = None
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(head)
        for start in range(0, n, chunk):
            text = part(np.arange(start, min(start + chunk, n)))
            lines = text[text.index(_PARTICLES_LOOP) :].split("\n")
            # "", "# version 30001", "", "data_particles", "", "loop_ ", "_label #i "..., rows
            n_head = next(i for i, ln in enumerate(lines) if i >= 6 and not ln.startswith("_"))
            header, rows = "\n".join(lines[:n_head]), lines[n_head:]
            if particle_header is None:
                particle_header = header
                fh.write(header + "\n")
            if header != particle_header or rows[-2:] != [" ", ""]:
                raise InputFormatError(
                    f"{path}: write_star's layout differs between chunks; report this as a bug"
                )
            fh.write("\n".join(rows[:-2]) + "\n")
        fh.write(" \n")
