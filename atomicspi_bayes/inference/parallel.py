"""Data-parallel placement: a 1-D device mesh over the batch axis, parameters replicated.

One code path for one device, several local devices (``devices=N``) and several processes
(``jax.distributed``): the minibatch's leading axis is split over the mesh axis ``"batch"``,
the SVI state is replicated, and XLA inserts the all-reduce of the gradients. On CPU the
multi-device path is exercised with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
(set before jax is imported).

Multi-host (e.g. SLURM, one process per GPU node)::

    # in every process, before any other jax call
    initialize_distributed(f"{head_node}:12345", num_processes=P, process_id=I)
    rows = process_slice(batch_size)           # this process's rows of every global batch
    batch_fn = lambda step: load(dataset.batch_indices(seed, batch_size, step)[rows])
    run_svi(key, model, guide, batch_fn, SVIConfig(..., devices=jax.device_count()))

Every process must trace the same program: numpyro's ``Trace_ELBO`` sums its sites in the
iteration order of a Python ``set`` of site names, which follows the per-process string-hash
seed, so with different seeds the processes compile the step with the per-site ELBO terms in
a different order; the combined all-reduce then pairs unrelated terms (gloo pairs buffers by
position) and the reported loss is wrong (seen: 6 % and 100 %). Hence every process needs the
same fixed ``PYTHONHASHSEED``: :func:`initialize_distributed` refuses to start without one,
and ``atomicspi fit`` restarts itself with ``PYTHONHASHSEED=0`` when it is unset.

Under SLURM: ``srun --ntasks=P python -m ... --coordinator $(scontrol show hostnames
$SLURM_JOB_NODELIST | head -n1):12345 --num-processes $SLURM_NTASKS --process-id
$SLURM_PROCID``. Every process must see the same checkpoint folder (shared file system);
only process 0 writes it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from atomicspi_bayes.errors import ConfigError

__all__ = ["initialize_distributed", "process_slice"]

logger = logging.getLogger(__name__)

BATCH_AXIS = "batch"


def initialize_distributed(
    coordinator: str, num_processes: int, process_id: int, *, local_device_ids: Any = None
) -> None:
    """Join a multi-process JAX job (call once per process, before any other jax work).

    Args:
        coordinator: ``"host:port"`` of process 0's coordination service.
        num_processes: total number of processes P (>= 1).
        process_id: this process's rank in [0, P).
        local_device_ids: optional subset of local devices this process drives.

    The CPU backend's cross-process collectives are set to gloo, so that the all-reduces
    also work on CPU-only machines (tested with 2 processes on 127.0.0.1). Calling it again
    with the same ``num_processes`` and ``process_id`` is a no-op. At exit every process
    waits (up to an hour) for the others, e.g. while process 0 writes the outputs.
    """
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ConfigError(
            f"process_id={process_id}, num_processes={num_processes}: need 0 <= id < P"
        )
    if not os.environ.get("PYTHONHASHSEED", "").isdigit():
        raise ConfigError(
            "a multi-process job needs the same fixed PYTHONHASHSEED in every process (e.g. "
            "export PYTHONHASHSEED=0): the ELBO's terms follow Python's string-hash order"
        )
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"coordinator={coordinator!r}: expected 'host:port' (port 1-65535)")
    joined = _joined()
    if joined is not None:
        if joined != (num_processes, process_id):
            raise ConfigError(
                f"this process already joined a job as process {joined[1]} of {joined[0]}; "
                f"cannot join as {process_id} of {num_processes}"
            )
        return
    # Cross-process collectives of the CPU backend (harmless on GPU nodes: it only
    # configures the CPU client). Must be set before any backend is created.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        shutdown_timeout_seconds=3600,
    )
    from jax.experimental import multihost_utils

    seeds = multihost_utils.process_allgather(np.int64(os.environ["PYTHONHASHSEED"]))
    if np.unique(seeds).size > 1:
        raise ConfigError(
            f"PYTHONHASHSEED differs between the processes ({np.asarray(seeds).tolist()}); "
            "give every process the same value (e.g. export PYTHONHASHSEED=0)"
        )
    logger.info(
        "joined distributed job: process %d of %d, %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.device_count(),
    )


def _joined() -> tuple[int, int] | None:
    """``(num_processes, process_id)`` of the job this process joined, or None."""
    from jax._src import distributed

    state = distributed.global_state
    if state.client is None:
        return None
    return int(state.num_processes), int(state.process_id)


def process_slice(global_batch_size: int) -> slice:
    """Rows of a global minibatch that this process loads (the whole batch in one process).

    Rows are split over processes in mesh order (process 0 first), equal-sized; the global
    batch size must be divisible by the number of processes.
    """
    p, n = jax.process_index(), jax.process_count()
    if global_batch_size % n:
        raise ConfigError(
            f"batch size {global_batch_size} is not divisible by {n} processes; "
            "choose a multiple of the process count"
        )
    per = global_batch_size // n
    return slice(p * per, (p + 1) * per)


class Placement:
    """Where the SVI state and the minibatches live (internal to the engine).

    ``devices == 1`` in a single process: no mesh, plain ``jax.jit`` on the default device.
    Otherwise a mesh over ``devices`` devices (all global devices when several processes).
    """

    def __init__(self, devices: int):
        self.multi_process = jax.process_count() > 1
        n_available = jax.device_count()
        if self.multi_process and devices != n_available:
            raise ConfigError(
                f"devices={devices}: in a {jax.process_count()}-process job the mesh spans "
                f"all {n_available} global devices; pass devices={n_available}"
            )
        if devices > n_available:
            raise ConfigError(
                f"devices={devices}: only {n_available} device(s) visible "
                f"({jax.devices()[0].platform}); on CPU set "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N before starting"
            )
        self.devices = devices
        if devices == 1 and not self.multi_process:
            self.mesh = None
            self.replicated = None
            self.sharded = None
        else:
            self.mesh = Mesh(np.array(jax.devices()[:devices]), (BATCH_AXIS,))
            self.replicated = NamedSharding(self.mesh, PartitionSpec())
            self.sharded = NamedSharding(self.mesh, PartitionSpec(BATCH_AXIS))

    # -- host -> device -------------------------------------------------------------
    def _leaf_sharding(self, x: Any) -> NamedSharding:
        return self.sharded if np.ndim(x) >= 1 else self.replicated

    def batch_to_device(self, batch: Any) -> Any:
        """Place a host batch (this process's rows when several processes)."""
        if self.mesh is None:
            return jax.device_put(batch)
        if not self.multi_process:
            for leaf in jax.tree_util.tree_leaves(batch):
                if np.ndim(leaf) >= 1 and np.shape(leaf)[0] % self.devices:
                    raise ConfigError(
                        f"batch leading axis {np.shape(leaf)[0]} is not divisible by "
                        f"devices={self.devices}; choose a batch size multiple of the devices"
                    )
            return jax.tree_util.tree_map(
                lambda x: jax.device_put(x, self._leaf_sharding(x)), batch
            )
        return jax.tree_util.tree_map(
            lambda x: jax.make_array_from_process_local_data(self._leaf_sharding(x), np.asarray(x)),
            batch,
        )

    def state_to_device(self, state: Any) -> Any:
        """Replicate the SVI state over the mesh (identity without a mesh)."""
        if self.mesh is None:
            return state
        if not self.multi_process:
            return jax.device_put(state, self.replicated)
        return jax.tree_util.tree_map(
            lambda x: jax.make_array_from_process_local_data(self.replicated, np.asarray(x)),
            state,
        )

    def stop_flags(self, requested: bool) -> Any:
        """(devices,) int32 array, 1 on this process's devices if it was asked to stop."""
        n_local = len(self.mesh.local_devices)
        local = np.full((n_local,), int(requested), dtype=np.int32)
        return jax.make_array_from_process_local_data(self.sharded, local)

    # -- device -> host -------------------------------------------------------------
    @staticmethod
    def to_host(x: jax.Array) -> np.ndarray:
        """Host copy of a replicated (or single-device) array."""
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    def batch_size(self, device_batch: Any) -> int:
        """Global leading-axis length of the first >=1-d leaf (0 if none)."""
        for leaf in jax.tree_util.tree_leaves(device_batch):
            if np.ndim(leaf) >= 1:
                return int(np.shape(leaf)[0])
        return 0
