"""Brute-force overdamped Langevin dynamics in JAX (the reference for rate-matrix kinetics).

Euler-Maruyama for dx = -(D/kT) grad U(x) dt + sqrt(2 D dt) xi, vmapped over independent
trajectories, ``lax.scan``/``lax.while_loop`` in time, explicit PRNG key. Units: x in latent
units, U and kT in the same energy unit, D in latent units**2 per unit time, dt in time units.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from atomicspi_bayes.errors import ConfigError

__all__ = ["autocorrelation", "first_passage_times", "simulate_overdamped"]

Potential = Callable[[jax.Array], jax.Array]


def _check(diffusion: float, kT: float, dt: float) -> None:
    if not diffusion > 0:
        raise ConfigError(f"diffusion={diffusion}: must be > 0 (latent units^2 per time)")
    if not kT > 0:
        raise ConfigError(f"kT={kT}: must be > 0")
    if not dt > 0:
        raise ConfigError(f"dt={dt}: the time step must be > 0")


def _step_fn(potential_fn: Potential, diffusion: float, kT: float, dt: float):
    grad_u = jax.vmap(jax.grad(potential_fn))
    drift = diffusion / kT * dt
    noise = float(np.sqrt(2.0 * diffusion * dt))

    def step(x: jax.Array, key: jax.Array) -> jax.Array:
        return x - drift * grad_u(x) + noise * jax.random.normal(key, x.shape, x.dtype)

    return step


def simulate_overdamped(
    key: jax.Array,
    potential_fn: Potential,
    x0: jax.Array,
    *,
    diffusion: float = 1.0,
    kT: float = 1.0,
    dt: float,
    n_records: int,
    record_every: int = 1,
) -> jax.Array:
    """Trajectories (n_records, n_traj, D): positions after every ``record_every`` steps.

    Args:
        key: PRNG key.
        potential_fn: U(x) for one position (D,) -> scalar, energy units of kT.
        x0: (n_traj, D) start positions.
        diffusion, kT, dt: D, thermal energy, time step.
        n_records, record_every: number of stored frames and steps between them.
    """
    _check(diffusion, kT, dt)
    step = _step_fn(potential_fn, diffusion, kT, dt)

    @jax.jit
    def run(key, x0):
        def record(x, k):
            keys = jax.random.split(k, record_every)
            x, _ = jax.lax.scan(lambda xx, kk: (step(xx, kk), None), x, keys)
            return x, x

        _, out = jax.lax.scan(record, x0, jax.random.split(key, n_records))
        return out

    return run(key, jnp.asarray(x0))


def first_passage_times(
    key: jax.Array,
    potential_fn: Potential,
    x0: jax.Array,
    target_fn: Callable[[jax.Array], jax.Array],
    *,
    diffusion: float = 1.0,
    kT: float = 1.0,
    dt: float,
    max_steps: int,
    block: int = 100,
) -> jax.Array:
    """First time each trajectory satisfies ``target_fn`` (n_traj,), NaN if not by max_steps.

    ``target_fn`` maps positions (n_traj, D) -> bool (n_traj,); it is checked after every
    step. The simulation stops once all trajectories have arrived (checked every ``block``
    steps).
    """
    _check(diffusion, kT, dt)
    step = _step_fn(potential_fn, diffusion, kT, dt)
    n_blocks = -(-int(max_steps) // block)

    @jax.jit
    def run(key, x0):
        t0 = jnp.full(x0.shape[0], jnp.nan, dtype=jnp.float32)

        def inner(i, carry):
            x, t_hit, key, n = carry
            key, sub = jax.random.split(key)
            x = step(x, sub)
            n = n + 1
            hit = target_fn(x) & jnp.isnan(t_hit)
            t_hit = jnp.where(hit, n.astype(jnp.float32) * dt, t_hit)
            return x, t_hit, key, n

        def cond(carry):
            _, t_hit, _, n = carry
            return jnp.any(jnp.isnan(t_hit)) & (n < n_blocks * block)

        def body(carry):
            return jax.lax.fori_loop(0, block, inner, carry)

        carry = (x0, t0, key, jnp.asarray(0, dtype=jnp.int32))
        return jax.lax.while_loop(cond, body, carry)[1]

    return run(key, jnp.asarray(x0))


def autocorrelation(series: np.ndarray, max_lag: int) -> np.ndarray:
    """Normalised autocorrelation C(k)/C(0), k = 0..max_lag, of stationary series (T, n_traj).

    Averages over all time origins and trajectories (FFT per trajectory); the mean is the
    global mean of the series.
    """
    x = np.asarray(series, dtype=np.float64)
    x = x - x.mean()
    t = x.shape[0]
    if not 0 < max_lag < t:
        raise ConfigError(f"max_lag={max_lag}: need 0 < max_lag < {t} frames")
    n_fft = 1 << int(np.ceil(np.log2(2 * t)))
    f = np.fft.rfft(x, n=n_fft, axis=0)
    acf = np.fft.irfft(f * np.conj(f), n=n_fft, axis=0)[: max_lag + 1].sum(axis=1)
    acf /= x.shape[1] * (t - np.arange(max_lag + 1))
    return acf / acf[0]
