"""Streaming SVI engine: numpyro ``SVI`` + optax, checkpoints, exact resume, signals, NaN guard.

The engine runs any NumPyro ``model(batch)`` / ``guide(batch)`` pair on a stream of
minibatches ``batch_fn(step) -> pytree of arrays``. It knows nothing about what the arrays
mean. ``batch_fn`` must be deterministic in ``step`` (e.g. built from
``ParticleDataset.batch_indices(seed, batch_size, step)``): the data position of a run is
then just its step count, and a resumed run sees exactly the batches an uninterrupted one
would have seen.

Guarantees (all tested in ``tests/inference``):

- one XLA compilation of the update step for the whole run (static shapes);
- the next minibatch is read on a background thread while the current step runs;
- checkpoints (parameters, optimizer state, RNG key, step, loss history, fingerprint) are
  written atomically every ``checkpoint_every`` steps and at the end;
- ``resume=True`` continues bit-identically on CPU: the final parameters equal those of an
  uninterrupted run with the same key, also after a SIGKILL at any moment;
- SIGINT/SIGTERM finish the current step, write a checkpoint, then raise
  :class:`Interrupted` (the CLI exits ``128 + signal``: 130 / 143);
- a NaN/inf loss or parameter raises :class:`ConvergenceError` naming the step and, when the
  batch is a dict with an ``"indices"`` leaf, the items of that batch.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro.infer import SVI, Trace_ELBO

from atomicspi_bayes.errors import ConfigError, ConvergenceError
from atomicspi_bayes.inference.checkpoint import (
    config_fingerprint,
    list_checkpoints,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from atomicspi_bayes.inference.parallel import Placement
from atomicspi_bayes.inference.prefetch import Prefetcher

__all__ = [
    "Interrupted",
    "SVIConfig",
    "SVIResult",
    "make_optimizer",
    "make_schedule",
    "run_svi",
]

logger = logging.getLogger(__name__)

_SCHEDULES = ("constant", "cosine")
# Settings that change the numbers of a run; the others (progress, checkpoint cadence,
# prefetch depth, device count) may differ between a run and its resumption.
_NUMERIC_FIELDS = (
    "num_steps",
    "learning_rate",
    "schedule",
    "warmup_steps",
    "final_lr_fraction",
    "clip_norm",
    "num_particles",
)


class Interrupted(Exception):
    """The run stopped on SIGINT/SIGTERM after writing a checkpoint.

    Attributes:
        signal_number: the signal received (2 for SIGINT, 15 for SIGTERM).
        exit_code: ``128 + signal_number`` (130 / 143), what the CLI should exit with.
        step: steps done (and saved) when it stopped.
        checkpoint: path of the checkpoint written, or None without a checkpoint folder.
    """

    def __init__(self, signal_number: int, step: int = 0, checkpoint: Path | None = None):
        self.signal_number = int(signal_number)
        self.exit_code = 128 + self.signal_number
        self.step = step
        self.checkpoint = checkpoint
        where = f"; checkpoint {checkpoint}" if checkpoint else ""
        super().__init__(
            f"interrupted by signal {self.signal_number} after step {step}{where}; "
            "continue with --resume"
        )


@dataclass(frozen=True)
class SVIConfig:
    """Settings of one SVI run.

    Attributes:
        num_steps: total number of optimisation steps (including those before a resume).
        learning_rate: peak Adam learning rate.
        schedule: "constant" or "cosine" (decay to ``final_lr_fraction * learning_rate``
            at ``num_steps``), both after ``warmup_steps`` of linear warm-up from 0.
        warmup_steps: linear warm-up length (0: none).
        final_lr_fraction: end of the cosine decay, as a fraction of ``learning_rate``.
        clip_norm: gradients are clipped to this global norm (None: no clipping).
        num_particles: Monte-Carlo samples per ELBO estimate.
        checkpoint_every: write a checkpoint every this many steps (0: only at the end).
        keep_checkpoints: number of newest checkpoints kept on disk.
        devices: number of devices of the data-parallel mesh (all global devices in a
            multi-process job); the batch's leading axis must be divisible by it.
        prefetch: minibatches read ahead on a background thread (0: synchronous).
        progress: show a rich progress bar (loss, items/s) on stderr.
        log_every: log loss and throughput every this many steps (0: never).
    """

    num_steps: int
    learning_rate: float = 1e-3
    schedule: str = "constant"
    warmup_steps: int = 0
    final_lr_fraction: float = 0.01
    clip_norm: float | None = 10.0
    num_particles: int = 1
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    devices: int = 1
    prefetch: int = 2
    progress: bool = False
    log_every: int = 0

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ConfigError(f"num_steps={self.num_steps}: need at least one step")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate={self.learning_rate}: must be > 0")
        if self.schedule not in _SCHEDULES:
            raise ConfigError(f"schedule={self.schedule!r}: choose one of {_SCHEDULES}")
        if not 0 <= self.warmup_steps < self.num_steps:
            raise ConfigError(
                f"warmup_steps={self.warmup_steps}: need 0 <= warmup < num_steps={self.num_steps}"
            )
        if not 0 <= self.final_lr_fraction <= 1:
            raise ConfigError(f"final_lr_fraction={self.final_lr_fraction}: must be in [0, 1]")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ConfigError(f"clip_norm={self.clip_norm}: must be > 0 or None")
        if self.num_particles < 1:
            raise ConfigError(f"num_particles={self.num_particles}: must be >= 1")
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every={self.checkpoint_every}: must be >= 0")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints={self.keep_checkpoints}: must be >= 1")
        if self.devices < 1:
            raise ConfigError(f"devices={self.devices}: must be >= 1")
        if self.prefetch < 0:
            raise ConfigError(f"prefetch={self.prefetch}: must be >= 0")
        if self.log_every < 0:
            raise ConfigError(f"log_every={self.log_every}: must be >= 0")


@dataclass(frozen=True)
class SVIResult:
    """Outcome of :func:`run_svi`.

    Attributes:
        params: constrained parameters ``{site name: array or pytree}`` (an equinox module
            registered with ``eqx_module(name, ...)`` appears under ``name + "$params"``).
        losses: (num_steps,) float32 loss (negative ELBO) of every step, also those done
            before a resume.
        steps: steps done in total (== config.num_steps).
        wall_time_s: wall time of this call, seconds.
        steps_per_s: steps per second of this call after the first (compiling) step.
        items_per_s: ``steps_per_s`` times the global batch size.
        compilations: number of XLA compilations of the update step in this call (1).
        resumed_from: step of the checkpoint this call continued from, or None.
        checkpoint: path of the last checkpoint written, or None.
        state: the final numpyro ``SVIState`` (for ``SVI.get_params`` / further training).
    """

    params: dict
    losses: np.ndarray
    steps: int
    wall_time_s: float
    steps_per_s: float
    items_per_s: float
    compilations: int
    resumed_from: int | None
    checkpoint: Path | None
    state: Any


def make_schedule(config: SVIConfig) -> optax.Schedule:
    """Learning-rate schedule of ``config``: linear warm-up, then constant or cosine."""
    peak = config.learning_rate
    decay_steps = config.num_steps - config.warmup_steps
    if config.schedule == "constant":
        main = optax.constant_schedule(peak)
    else:
        main = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.final_lr_fraction)
    if config.warmup_steps == 0:
        return main
    warm = optax.linear_schedule(0.0, peak, config.warmup_steps)
    return optax.join_schedules([warm, main], [config.warmup_steps])


def make_optimizer(config: SVIConfig) -> optax.GradientTransformation:
    """``optax.chain(clip_by_global_norm(clip_norm), adam(schedule))`` for ``config``."""
    adam = optax.adam(make_schedule(config))
    if config.clip_norm is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), adam)


# ---- signals ----------------------------------------------------------------------


class _StopRequest:
    """SIGINT/SIGTERM handler: remember the signal; a second one aborts at once."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signal_number is not None:
            # second signal: give up waiting (checkpoints are atomic, nothing is corrupted)
            self.restore()
            raise KeyboardInterrupt
        self.signal_number = signum
        logger.warning("signal %d received: finishing the current step, then saving", signum)

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, *exc_info: Any) -> None:
        self.restore()


# ---- progress -----------------------------------------------------------------------


@contextlib.contextmanager
def _progress(enabled: bool, total: int, done: int) -> Iterator[Callable[..., None]]:
    """Yield ``update(done, loss, items_per_s)``; a rich bar on stderr when enabled."""
    if not enabled:
        yield lambda *a, **k: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("SVI"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("-ELBO {task.fields[loss]:.5g}"),
        TextColumn("{task.fields[rate]:.0f} items/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    task = progress.add_task("svi", total=total, completed=done, loss=float("nan"), rate=0.0)
    last = [0.0]

    def update(n_done: int, loss: float, rate: float, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - last[0] > 0.1:
            last[0] = now
            progress.update(task, completed=n_done, loss=loss, rate=rate)

    with progress:
        yield update


# ---- engine -----------------------------------------------------------------------


def _as_raw_key(key: Any) -> jax.Array:
    if isinstance(key, int | np.integer):
        return jax.random.PRNGKey(int(key))
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def _holds_tracer(obj: Any, depth: int = 4) -> bool:
    if isinstance(obj, jax.core.Tracer):
        return True
    if depth == 0:
        return False
    if isinstance(obj, list | tuple):
        return any(_holds_tracer(v, depth - 1) for v in obj)
    if isinstance(obj, dict):
        return any(_holds_tracer(v, depth - 1) for v in obj.values())
    if hasattr(obj, "__dict__"):
        return any(_holds_tracer(v, depth - 1) for v in vars(obj).values())
    return False


def _init_state(svi: SVI, key: jax.Array, batch: Any, init_params: dict | None) -> Any:
    """``svi.init`` compiled as one XLA program (eager init dispatches every op separately
    and takes seconds); falls back to eager init when a constraint depends on traced data,
    which would leak a tracer into ``svi.constrain_fn``."""
    state = jax.jit(lambda k, b, p: svi.init(k, b, init_params=p))(key, batch, init_params)
    transforms = svi.constrain_fn.args[0] if svi.constrain_fn is not None else {}
    if any(_holds_tracer(t) for t in transforms.values()):
        logger.debug("a param constraint depends on traced values: eager SVI.init")
        state = svi.init(key, batch, init_params=init_params)
    return state


def _all_finite(tree: Any) -> jax.Array:
    flags = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.all(jnp.stack(flags)) if flags else jnp.array(True)


def _make_step(svi: SVI, placement: Placement) -> Callable:
    """Jitted ``step(state, batch, stop_flags) -> (state, stats)``.

    ``stats`` = [loss, all finite (1/0), stop requested anywhere (1/0)] as one array, so the
    host reads one small replicated array per step.
    """

    def step(state: Any, batch: Any, stop_flags: Any) -> tuple[Any, jax.Array]:
        new_state, loss = svi.update(state, batch)
        ok = jnp.isfinite(loss) & _all_finite(svi.optim.get_params(new_state.optim_state))
        stop = jnp.max(stop_flags) if stop_flags is not None else jnp.array(0)
        dtype = jnp.result_type(loss)
        stats = jnp.stack([loss, ok.astype(dtype), stop.astype(dtype)])
        return new_state, stats

    if placement.mesh is None:
        return jax.jit(step)
    rep, shard = placement.replicated, placement.sharded

    def batch_shardings(batch: Any) -> Any:
        return jax.tree_util.tree_map(lambda x: shard if np.ndim(x) >= 1 else rep, batch)

    cache: dict = {}

    def jitted(state: Any, batch: Any, stop_flags: Any) -> tuple[Any, jax.Array]:
        struct = jax.tree_util.tree_structure(batch)
        if struct not in cache:
            cache[struct] = jax.jit(
                step,
                in_shardings=(rep, batch_shardings(batch), shard),
                out_shardings=(rep, rep),
            )
        return cache[struct](state, batch, stop_flags)

    jitted._cache_size = lambda: sum(f._cache_size() for f in cache.values())  # type: ignore[attr-defined]
    return jitted


def _engine_fingerprint(user: str, config: SVIConfig, key: jax.Array, loss: Any) -> str:
    numeric = {name: getattr(config, name) for name in _NUMERIC_FIELDS}
    return config_fingerprint(
        {
            "user": user,
            "engine": numeric,
            "key": np.asarray(key).tolist(),
            "loss": type(loss).__name__,
        }
    )


def run_svi(
    key: jax.Array | int,
    model: Callable[[Any], None],
    guide: Callable[[Any], None],
    batch_fn: Callable[[int], Any],
    config: SVIConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    fingerprint: str = "",
    loss: Any = None,
    optimizer: optax.GradientTransformation | None = None,
    init_params: dict | None = None,
) -> SVIResult:
    """Fit ``guide`` to ``model`` by SVI on the minibatch stream ``batch_fn``.

    Args:
        key: PRNG key (or int seed) for parameter initialisation and all ELBO draws.
        model, guide: NumPyro callables taking one argument, the batch pytree. Locals go
            in ``numpyro.plate(name, N, subsample_size=B)`` in both, B the batch's leading
            axis; everything else they need (N, static config, networks) is closed over.
        batch_fn: ``batch_fn(step) -> pytree of arrays`` for ``step`` in ``[0, num_steps)``,
            deterministic in ``step``, same shapes and dtypes at every step. Leaves with
            ndim >= 1 have the batch axis first (split over devices); 0-d leaves are
            replicated. A batch with ``indices`` (B,) int (dict key or attribute, e.g. a
            NamedTuple field), the dataset rows of the batch, has them named in NaN
            errors. In a multi-process job it returns this process's rows only (see
            :func:`process_slice`).
        config: :class:`SVIConfig`.
        checkpoint_dir: folder for checkpoints (None: no checkpoints, no resume).
        resume: continue from the newest checkpoint in ``checkpoint_dir`` (fresh start when
            there is none).
        overwrite: without ``resume``, delete existing checkpoints instead of refusing.
        fingerprint: the caller's config fingerprint (model, data, seed...); resuming a run
            whose fingerprint differs raises ConfigError.
        loss: numpyro ELBO (default ``Trace_ELBO(num_particles=config.num_particles)``).
        optimizer: optax transformation (default :func:`make_optimizer` of ``config``).
        init_params: optional initial values for param sites (as in ``SVI.init``).

    Returns:
        :class:`SVIResult`.

    Raises:
        ConfigError: inconsistent settings, existing checkpoints without resume/overwrite,
            a checkpoint written with another fingerprint, unwritable checkpoint folder.
        ConvergenceError: NaN/inf loss or parameters (names the step and batch indices).
        Interrupted: SIGINT/SIGTERM received; a checkpoint was written first. (Signals are
            handled only when ``run_svi`` is called from the main thread; the previous
            handlers are restored on return.)
    """
    t_start = time.perf_counter()
    key = _as_raw_key(key)
    loss = loss if loss is not None else Trace_ELBO(num_particles=config.num_particles)
    optimizer = optimizer if optimizer is not None else make_optimizer(config)
    placement = Placement(config.devices)
    is_writer = jax.process_index() == 0
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    fp = _engine_fingerprint(fingerprint, config, key, loss)

    existing = list_checkpoints(ckpt_dir) if ckpt_dir is not None else []
    if ckpt_dir is not None and is_writer:
        remove_stale_temporaries(ckpt_dir)
    if existing and not resume:
        if not overwrite:
            raise ConfigError(
                f"{ckpt_dir} already holds {len(existing)} checkpoint(s) of an earlier run; "
                "pass --resume to continue it, or use a new --out or --force to start over"
            )
        if is_writer:
            for _, path in existing:
                path.unlink(missing_ok=True)
        existing = []
    if resume and ckpt_dir is None:
        raise ConfigError("resume=True needs a checkpoint_dir")

    # Initialise (also gives the template for loading: structure, shapes, dtypes).
    svi = SVI(model, guide, optimizer, loss)
    state = _init_state(svi, key, batch_fn(0), init_params)
    if placement.multi_process:
        from jax.experimental import multihost_utils

        state = multihost_utils.broadcast_one_to_all(state)
    losses: list[float] = []
    start = 0
    resumed_from = None
    if resume and existing:
        ckpt = load_checkpoint(existing[-1][1], state, fingerprint=fp)
        state, start, resumed_from = ckpt.state, ckpt.step, ckpt.step
        losses = [float(x) for x in ckpt.losses[:start]]
        if len(losses) != start:
            raise ConfigError(f"checkpoint {ckpt.path} has {len(losses)} losses for {start} steps")
        if start > config.num_steps:
            raise ConfigError(
                f"checkpoint {ckpt.path} is at step {start}, beyond num_steps={config.num_steps}"
            )
        logger.info("resuming from %s at step %d", ckpt.path, start)
    state = placement.state_to_device(state)

    step_fn = _make_step(svi, placement)
    last_ckpt: Path | None = existing[-1][1] if resumed_from is not None else None
    saved_at = start if resumed_from is not None else -1

    def save(st: Any, n_done: int) -> None:
        nonlocal last_ckpt, saved_at
        saved_at = n_done
        if ckpt_dir is None:
            return
        if is_writer:
            last_ckpt = save_checkpoint(
                ckpt_dir,
                st,
                step=n_done,
                losses=np.asarray(losses, dtype=np.float32),
                fingerprint=fp,
                extra={"data_position": n_done, "num_steps": config.num_steps},
                keep=config.keep_checkpoints,
            )
        else:
            last_ckpt = ckpt_dir / f"ckpt_{n_done:09d}.npz"

    items_per_step = 0
    rate = 0.0
    t_first_done: float | None = None
    steps_timed = 0
    stopper = _StopRequest()
    prefetcher = Prefetcher(
        batch_fn, placement.batch_to_device, start, config.num_steps, depth=config.prefetch
    )
    # Pipeline of depth one: step t+1 is dispatched before the host reads step t's stats,
    # so reading the loss never stalls the device. ``inflight`` holds the dispatched step.
    inflight: tuple[int, Any, jax.Array, np.ndarray | None] | None = None
    next_step = start
    stopping = False
    with stopper, prefetcher, _progress(config.progress, config.num_steps, start) as bar:
        while True:
            dispatched = None
            if next_step < config.num_steps and not stopping:
                t, indices, batch = prefetcher.get()
                if not items_per_step:
                    items_per_step = placement.batch_size(batch)
                flags = (
                    placement.stop_flags(stopper.signal_number is not None)
                    if placement.multi_process
                    else None
                )
                current = inflight[1] if inflight is not None else state
                new_state, stats = step_fn(current, batch, flags)
                dispatched = (t, new_state, stats, indices)
                next_step += 1
            if inflight is not None:
                t, st, stats, indices = inflight
                loss_t, ok, stop_any = (float(v) for v in placement.to_host(stats))
                if not ok:
                    where = ""
                    if indices is not None:
                        shown = np.asarray(indices).reshape(-1).tolist()
                        more = "" if len(shown) <= 64 else f" ... ({len(shown)} in all)"
                        where = f"; batch items (indices) {shown[:64]}{more}"
                    what = "loss" if not np.isfinite(loss_t) else "parameters"
                    raise ConvergenceError(
                        f"SVI diverged: non-finite {what} (loss={loss_t}) at step {t}"
                        f"{where}; last good checkpoint step {max(saved_at, 0)}; lower the "
                        "learning rate or check those inputs"
                    )
                losses.append(loss_t)
                n_done = t + 1
                state = st
                if t_first_done is None:
                    t_first_done = time.perf_counter()
                else:
                    steps_timed += 1
                elapsed = time.perf_counter() - t_first_done
                rate = steps_timed * items_per_step / elapsed if elapsed > 0 else 0.0
                bar(n_done, loss_t, rate)
                if config.log_every and n_done % config.log_every == 0:
                    logger.info("step %d loss %.6g %.1f items/s", n_done, loss_t, rate)
                if placement.multi_process:
                    requested = bool(stop_any)
                else:
                    requested = stopper.signal_number is not None
                if requested:
                    stopping = True
                if (
                    stopping
                    or (config.checkpoint_every and n_done % config.checkpoint_every == 0)
                    or n_done == config.num_steps
                ):
                    save(st, n_done)
                if stopping:
                    signum = stopper.signal_number or int(signal.SIGTERM)
                    raise Interrupted(signum, n_done, last_ckpt)
            inflight = dispatched
            if inflight is None:
                break
        bar(len(losses), losses[-1] if losses else float("nan"), rate, force=True)

    if saved_at != config.num_steps:
        save(state, config.num_steps)
    compilations = int(step_fn._cache_size())
    if compilations > 1:
        logger.warning("the SVI step compiled %d times: batch shapes/dtypes vary", compilations)
    elapsed = time.perf_counter() - t_first_done if t_first_done is not None else 0.0
    steps_per_s = steps_timed / elapsed if elapsed > 0 else 0.0
    params = svi.get_params(state)
    params = jax.tree_util.tree_map(placement.to_host, params)
    return SVIResult(
        params=params,
        losses=np.asarray(losses, dtype=np.float32),
        steps=len(losses),
        wall_time_s=time.perf_counter() - t_start,
        steps_per_s=steps_per_s,
        items_per_s=steps_per_s * items_per_step,
        compilations=compilations,
        resumed_from=resumed_from,
        checkpoint=last_ckpt,
        state=state,
    )
