"""A tiny amortized model for testing the inference engine, also runnable as a script.

Generative story: z_i ~ N(0, I_D), y_i ~ N(z_i W, sigma^2 I_P) ("linear simulator"), W and
sigma global params. Guide: an equinox MLP encoder y_i -> (mean, sd) of q(z_i | y_i),
registered with ``eqx_module``; locals in a subsampled plate in model and guide.

As a script (used by the subprocess tests)::

    python svi_toy.py --out DIR --steps N [--resume] [--devices K] [--sleep S]
                  [--coordinator H:P --num-processes P --process-id I] [--params OUT.npz]

prints one JSON line (steps, losses, ...) and writes the final params to ``--params``; on
SIGINT/SIGTERM it exits with ``Interrupted.exit_code`` (130/143).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

N_ITEMS = 256
LATENT_DIM = 2
OBS_DIM = 8
NOISE_SD = 0.1


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (W (D, P), z (N, D), y (N, P)) float32 from a fixed seed."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(LATENT_DIM, OBS_DIM)).astype(np.float32)
    z = rng.normal(size=(N_ITEMS, LATENT_DIM)).astype(np.float32)
    y = (z @ w + NOISE_SD * rng.normal(size=(N_ITEMS, OBS_DIM))).astype(np.float32)
    return w, z, y


def make_problem(
    batch_size: int = 32, seed: int = 0, nan_at_step: int | None = None
) -> tuple[Callable, Callable, Callable[[int], dict]]:
    """Return (model, guide, batch_fn) of the toy problem."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.contrib.module import eqx_module

    _, _, y_all = make_data(seed)
    encoder = eqx.nn.MLP(OBS_DIM, 2 * LATENT_DIM, 32, 2, key=jax.random.PRNGKey(seed + 1))

    def model(batch: dict) -> None:
        w = numpyro.param("W", 0.1 * jnp.ones((LATENT_DIM, OBS_DIM)))
        sigma = numpyro.param("sigma", jnp.array(1.0), constraint=dist.constraints.positive)
        y = batch["y"]
        with numpyro.plate("items", N_ITEMS, subsample_size=y.shape[0]):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([LATENT_DIM]).to_event(1))
            numpyro.sample("y", dist.Normal(z @ w, sigma).to_event(1), obs=y)

    def guide(batch: dict) -> None:
        net = eqx_module("encoder", encoder)
        y = batch["y"]
        out = jax.vmap(net)(y)
        loc, scale = out[:, :LATENT_DIM], jax.nn.softplus(out[:, LATENT_DIM:]) + 1e-3
        with numpyro.plate("items", N_ITEMS, subsample_size=y.shape[0]):
            numpyro.sample("z", dist.Normal(loc, scale).to_event(1))

    steps_per_epoch = N_ITEMS // batch_size

    def batch_fn(step: int) -> dict:
        epoch, within = divmod(step, steps_per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(N_ITEMS)
        idx = order[within * batch_size : (within + 1) * batch_size].astype(np.int32)
        y = y_all[idx]
        if nan_at_step is not None and step == nan_at_step:
            y = y.copy()
            y[3, 0] = np.nan
        return {"y": y, "indices": idx}

    return model, guide, batch_fn


def flat_params(params: dict) -> dict[str, np.ndarray]:
    """Flatten a params dict (with equinox modules) to {keypath: ndarray}."""
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--coordinator", default=None)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--params", default=None)
    parser.add_argument("--compare-devices", action="store_true")
    args = parser.parse_args(argv)

    from atomicspi_bayes.inference import (
        Interrupted,
        SVIConfig,
        initialize_distributed,
        process_slice,
        run_svi,
    )

    if args.coordinator:
        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    import jax

    model, guide, batch_fn = make_problem(args.batch_size)
    rows = process_slice(args.batch_size)

    def local_batch_fn(step: int) -> Any:
        if args.sleep:
            time.sleep(args.sleep)
        batch = batch_fn(step)
        return {k: v[rows] for k, v in batch.items()}

    config = SVIConfig(
        num_steps=args.steps,
        learning_rate=1e-2,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=3,
        devices=args.devices,
        prefetch=args.prefetch,
    )
    if args.compare_devices:
        out = {}
        for devices in (1, jax.device_count()):
            cfg = SVIConfig(num_steps=args.steps, learning_rate=1e-2, devices=devices)
            res = run_svi(0, model, guide, local_batch_fn, cfg)
            out[str(devices)] = {
                "losses": res.losses.tolist(),
                "params": {k: v.tolist() for k, v in flat_params(res.params).items()},
                "compilations": res.compilations,
            }
        print(json.dumps(out), flush=True)
        return 0
    try:
        result = run_svi(
            0, model, guide, local_batch_fn, config, checkpoint_dir=args.out, resume=args.resume
        )
    except Interrupted as exc:
        print(json.dumps({"interrupted": exc.signal_number, "step": exc.step}), flush=True)
        return exc.exit_code
    if args.params and jax.process_index() == 0:
        np.savez(args.params, **flat_params(result.params))
    print(
        json.dumps(
            {
                "steps": result.steps,
                "losses": result.losses.tolist(),
                "resumed_from": result.resumed_from,
                "compilations": result.compilations,
                "process": jax.process_index(),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
