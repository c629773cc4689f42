"""Per-particle posterior refinement under the fitted model (globals held fixed).

The amortized encoder's q(z | y) is fast but not exact (an amortization gap: means off by
a fraction of a posterior sd, widths off by tens of per cent), so its intervals are not
calibrated. Given the learned globals θ (decoder, noise, scale, prior), each particle's
posterior ``p(z_i | y_i, θ) ∝ p(z) p_phys(X(z)) p(y_i | X(z), pose_i)`` is a small,
independent problem; this module solves it per particle, batched (``lax.map`` over grid
points or proposals, every particle of a chunk at once; no Python loop over particles):

- ``method="grid"`` (poses fixed, D <= 2): the exact posterior on a grid. A coarse grid
  over the prior's range (``[-6, 6]^D`` for N(0, I); the mixture's means ± 6 sds) locates
  the mass, then a fine per-particle grid centred on the coarse posterior mean with
  half-width ``6 sd + coarse spacing`` resolves it. Draws pick a fine cell with its
  posterior weight and a uniform point inside it (exact to the grid spacing).
- ``method="importance"`` (any D, fixed or amortized poses): self-normalised importance
  sampling with the amortized q, widened by ``inflate`` (Student-t with ``df`` degrees of
  freedom for z; ``TangentNormalSO3`` and Normal for the pose), as the proposal; K
  proposals per particle, resampled to the draws. The effective sample size
  ``ESS = 1 / Σ w̄_k²`` of every particle is reported: an ESS of a few means the
  proposal missed the posterior and the draws are not to be trusted.

The log joint of a particle is read off the model's own trace (every sample and factor
site's per-particle log-density), so the prior, the physics factor and the likelihood are
the model's, whatever they are.

Public API::

    refine_posterior(key, problem, params, positions=None, *, method="auto",
        n_draws=100, amortized=None, batch_size=None, spec=RefineSpec()) -> RefinedPosterior
    RefinedPosterior: z_draws (S, N, D), z_mean, z_sd (N, D), ess (N,), edge_mass (N,),
        method, positions (N,) [, rotation_draws (S, N, 3, 3), shift_draws (S, N, 2)]
    RefineSpec(coarse_points=(121, 41), fine_points=(64, 24), coarse_halfwidth=6.0,
        fine_halfwidth_sd=6.0, n_proposals=256, inflate=2.0, df=5.0, map_batch=8, min_ess=10.0)
    resolve_method(model_cfg, method="auto") -> "grid" | "importance"
    refined_sampler(problem, params, *, method="auto", spec=RefineSpec()) -> RefinedSampler
        RefinedSampler.sample(key, params, batch, n_draws) -> {"z": (n, B, D), ...}
    particle_log_joint(problem, params, batch, latents) -> (B,)
    reported_posterior(key, problem, params, enc, *, kind="refined", n_draws=100, spec=None)
        -> dict (what ``atomicspi fit`` writes: refined + amortized moments, ESS, method)

``problem`` is a fitted problem (``pipeline.FitProblem``): ``model(batch)``, ``guide``
(with ``encode(params, batch, refine_steps)``), ``model_cfg``, ``static``,
``batch(positions)``, ``n_particles``; ``params`` are the SVI parameters.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import Array
from numpyro import handlers

from atomicspi_bayes.errors import ConfigError, ConvergenceError
from atomicspi_bayes.model import ModelConfig, ParticleBatch, TangentNormalSO3

__all__ = [
    "METHODS",
    "RefineSpec",
    "RefinedPosterior",
    "RefinedSampler",
    "particle_log_joint",
    "refine_posterior",
    "refined_sampler",
    "reported_posterior",
    "resolve_method",
]

logger = logging.getLogger(__name__)

METHODS = ("auto", "grid", "importance")
_POSE_SITES = ("rotation", "shift")


@dataclass(frozen=True)
class RefineSpec:
    """Numerical settings of the refinement.

    Attributes:
        coarse_points: grid points per latent dimension of the coarse grid, for D = 1 and
            D = 2 (G_c and G_c² points).
        fine_points: points per dimension of the per-particle fine grid (D = 1, D = 2).
        coarse_halfwidth: latent units; the coarse grid spans ± this many prior sds
            around the prior's centre(s).
        fine_halfwidth_sd: the fine grid spans ± this many coarse posterior sds (+ one
            coarse spacing) around the coarse posterior mean.
        n_proposals: K, importance proposals per particle.
        inflate: the proposal's scales are the amortized sds times this factor.
        df: degrees of freedom of the Student-t proposal of z (heavy tails).
        map_batch: grid points / proposals evaluated together inside ``lax.map``.
        min_ess: in :func:`reported_posterior`, particles whose importance ESS is below
            this keep the amortized q (a degenerate weighted sample is worse than q).
    """

    coarse_points: tuple[int, int] = (121, 41)
    fine_points: tuple[int, int] = (64, 24)
    coarse_halfwidth: float = 6.0
    fine_halfwidth_sd: float = 6.0
    n_proposals: int = 256
    inflate: float = 2.0
    df: float = 5.0
    map_batch: int = 8
    min_ess: float = 10.0

    def __post_init__(self) -> None:
        if min(self.coarse_points) < 3 or min(self.fine_points) < 3:
            raise ConfigError(f"refine: grids need >= 3 points, got {self}")
        if not (self.coarse_halfwidth > 0 and self.fine_halfwidth_sd > 0):
            raise ConfigError("refine: grid half-widths must be > 0")
        if self.n_proposals < 2 or not self.inflate > 0 or not self.df > 0:
            raise ConfigError(
                f"refine: n_proposals >= 2, inflate > 0, df > 0 needed; got {self.n_proposals}, "
                f"{self.inflate}, {self.df}"
            )
        if self.map_batch < 1:
            raise ConfigError(f"refine: map_batch must be >= 1, got {self.map_batch}")


@dataclass(frozen=True)
class RefinedPosterior:
    """Refined per-particle posteriors of the particles at ``positions``.

    Attributes:
        z_draws: ``(S, N, D)`` float32 posterior draws of z.
        z_mean, z_sd: ``(N, D)`` posterior mean and sd of z (of the grid density, or the
            self-normalised importance estimates).
        ess: ``(N,)`` importance ESS (``"importance"``, out of K proposals), or the
            effective number of fine-grid cells ``1/Σw²`` (``"grid"``; a few means the
            grid is too coarse for that particle).
        edge_mass: ``(N,)`` ``"grid"``: posterior mass on the outer ring of the coarse grid
            (> 1e-3: the grid does not cover the posterior); NaN for ``"importance"``.
        method: ``"grid"`` or ``"importance"``.
        positions: ``(N,)`` dataset positions of the particles.
        rotation_draws: ``(S, N, 3, 3)`` rotation draws (amortized poses) or None.
        shift_draws: ``(S, N, 2)`` Å shift draws (amortized poses) or None.
    """

    z_draws: np.ndarray
    z_mean: np.ndarray
    z_sd: np.ndarray
    ess: np.ndarray
    edge_mass: np.ndarray
    method: str
    positions: np.ndarray
    rotation_draws: np.ndarray | None = None
    shift_draws: np.ndarray | None = None


def resolve_method(model_cfg: ModelConfig, method: str = "auto") -> str:
    """``"grid"`` for fixed poses and D <= 2 (``"auto"``), else ``"importance"``.

    Raises:
        ConfigError: unknown method, or ``"grid"`` where it does not apply.
    """
    if method not in METHODS:
        raise ConfigError(f"refine method must be one of {METHODS}, got {method!r}")
    grid_ok = model_cfg.poses == "fixed" and model_cfg.latent_dim <= 2
    if method == "auto":
        return "grid" if grid_ok else "importance"
    if method == "grid" and not grid_ok:
        raise ConfigError(
            f"grid refinement needs poses='fixed' and latent_dim <= 2, got {model_cfg.poses!r}, "
            f"{model_cfg.latent_dim}; use method='importance'"
        )
    return method


# ---------------------------------------------------------------- the model's log joint


def particle_log_joint(problem, params: dict, batch: ParticleBatch, latents: dict) -> Array:
    """``(B,)`` log p(latents_i, y_i | θ) of every particle, read off the model's trace.

    Sums the per-particle log-density of every sample site (the latent sites' priors,
    the ``"physics_prior"`` factor, the ``"image"`` likelihood) with ``latents``
    (``{"z": (B, D)[, "rotation": (B, 3, 3), "shift": (B, 2)]}``) and the globals in
    ``params`` substituted; the plate's subsampling scale is not applied.
    """
    model = handlers.substitute(
        handlers.seed(problem.model, jax.random.PRNGKey(0)), data={**params, **latents}
    )
    trace = handlers.trace(model).get_trace(batch)
    total = jnp.zeros(batch.indices.shape[0])
    for site in trace.values():
        if site["type"] == "sample":
            total = total + site["fn"].log_prob(site["value"])
    return total


# ---------------------------------------------------------------- grid refinement


def _coarse_box(model_cfg: ModelConfig, params: dict, halfwidth: float) -> tuple[Array, Array]:
    """``(D,)`` lower and upper corners of the coarse grid (covers the prior's mass)."""
    d = model_cfg.latent_dim
    if model_cfg.z_prior == "normal":
        return jnp.full(d, -halfwidth), jnp.full(d, halfwidth)
    means = jnp.asarray(params["z_mixture_means"])
    sds = jnp.asarray(params["z_mixture_sds"])
    return jnp.min(means - halfwidth * sds, axis=0), jnp.max(means + halfwidth * sds, axis=0)


def _unit_grid(points: int, d: int) -> np.ndarray:
    """``(points^d, d)`` grid of ``linspace(-1, 1, points)`` per dimension."""
    axis = np.linspace(-1.0, 1.0, points)
    mesh = np.meshgrid(*([axis] * d), indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=-1).astype(np.float32)


def _log_joint_on(problem, params, batch, z_points: Array, map_batch: int) -> Array:
    """``(B, G)`` log joint at ``z_points`` ``(G, B, D)`` (``lax.map`` over G)."""
    fn = lambda z: particle_log_joint(problem, params, batch, {"z": z})  # noqa: E731
    return jax.lax.map(fn, z_points, batch_size=map_batch).T


def _grid_chunk(key, problem, params, batch: ParticleBatch, n_draws: int, spec: RefineSpec):
    """Grid posterior of one batch: draws ``(S, B, D)``, mean, sd, cells_eff, edge mass."""
    cfg = problem.model_cfg
    d = cfg.latent_dim
    b = batch.indices.shape[0]
    lo, hi = _coarse_box(cfg, params, spec.coarse_halfwidth)
    centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    unit_c = jnp.asarray(_unit_grid(spec.coarse_points[d - 1], d))  # (Gc, D)
    coarse = centre + half * unit_c
    h_c = 2.0 * half / (spec.coarse_points[d - 1] - 1)  # (D,)
    coarse_b = jnp.broadcast_to(coarse[:, None], (coarse.shape[0], b, d))
    lj = _log_joint_on(problem, params, batch, coarse_b, spec.map_batch)
    w = jax.nn.softmax(lj, axis=-1)  # (B, Gc)
    m1 = w @ coarse
    sd1 = jnp.sqrt(jnp.maximum(w @ coarse**2 - m1**2, 0.0))
    edge = jnp.any(jnp.abs(unit_c) > 1.0 - 1e-6, axis=-1)  # outer ring of the coarse grid
    edge_mass = w @ edge.astype(w.dtype)

    unit_f = jnp.asarray(_unit_grid(spec.fine_points[d - 1], d))  # (Gf, D)
    half_f = spec.fine_halfwidth_sd * sd1 + h_c  # (B, D)
    fine = m1[None] + half_f[None] * unit_f[:, None, :]  # (Gf, B, D)
    h_f = 2.0 * half_f / (spec.fine_points[d - 1] - 1)  # (B, D) cell sides
    lj_f = _log_joint_on(problem, params, batch, fine, spec.map_batch)  # (B, Gf)
    w_f = jax.nn.softmax(lj_f, axis=-1)
    pts = jnp.swapaxes(fine, 0, 1)  # (B, Gf, D)
    mean = jnp.einsum("bg,bgd->bd", w_f, pts)
    var = jnp.einsum("bg,bgd->bd", w_f, pts**2) - mean**2 + h_f**2 / 12.0
    k_cell, k_jit = jax.random.split(key)
    cell = jax.random.categorical(
        k_cell, jnp.log(jnp.maximum(w_f, 1e-37)), axis=-1, shape=(n_draws, b)
    )
    chosen = jnp.take_along_axis(pts[None], cell[..., None, None], axis=2)[:, :, 0, :]  # (S,B,D)
    jitter = jax.random.uniform(k_jit, (n_draws, b, d), minval=-0.5, maxval=0.5) * h_f[None]
    cells_eff = 1.0 / jnp.sum(w_f**2, axis=-1)
    return {"z": chosen + jitter}, mean, jnp.sqrt(jnp.maximum(var, 0.0)), cells_eff, edge_mass


# ---------------------------------------------------------------- importance sampling


def _proposal(problem, enc, spec: RefineSpec):
    """The widened amortized q as a dict of per-site distributions (batch B)."""
    z_q = dist.StudentT(spec.df, enc.z_mean, spec.inflate * enc.z_sd).to_event(1)
    sites = {"z": z_q}
    if problem.model_cfg.poses == "amortized":
        sites["rotation"] = TangentNormalSO3(enc.rotation, spec.inflate * enc.rotation_sd)
        sites["shift"] = dist.Normal(enc.shift_mean, spec.inflate * enc.shift_sd).to_event(1)
    return sites


def _encode(problem, params, batch):
    refine_steps = getattr(getattr(problem, "cfg", None), "refine_steps", 0)
    return problem.guide.encode(params, batch, refine_steps=refine_steps)


def _importance_chunk(key, problem, params, batch, n_draws: int, spec: RefineSpec, enc=None):
    """SNIS of one batch: draws ``{site: (S, B, ...)}``, z mean, z sd, ESS ``(B,)``."""
    enc = _encode(problem, params, batch) if enc is None else enc
    q = _proposal(problem, enc, spec)
    k_prop, k_res = jax.random.split(key)
    keys = jax.random.split(k_prop, spec.n_proposals)

    def one(k):
        ks = jax.random.split(k, len(q))
        latents = {name: fn.sample(kk) for (name, fn), kk in zip(q.items(), ks, strict=True)}
        log_q = sum(fn.log_prob(latents[name]) for name, fn in q.items())
        return latents, particle_log_joint(problem, params, batch, latents) - log_q

    latents, log_w = jax.lax.map(one, keys, batch_size=spec.map_batch)  # (K, B, ...), (K, B)
    log_w = jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)
    w = jax.nn.softmax(log_w, axis=0)  # (K, B)
    ess = 1.0 / jnp.sum(w**2, axis=0)
    z = latents["z"]
    mean = jnp.einsum("kb,kbd->bd", w, z)
    sd = jnp.sqrt(jnp.maximum(jnp.einsum("kb,kbd->bd", w, z**2) - mean**2, 0.0))
    b = w.shape[1]
    pick = jax.random.categorical(
        k_res, jnp.log(jnp.maximum(w.T, 1e-37)), axis=-1, shape=(n_draws, b)
    )
    cols = jnp.arange(b)[None, :]
    draws = {name: v[pick, cols] for name, v in latents.items()}
    return draws, mean, sd, ess


# ---------------------------------------------------------------- drivers


@dataclass(frozen=True, eq=False)
class RefinedSampler:
    """Draws from the refined posterior of a batch (for SBC and predictive checks).

    ``sample(key, params, batch, n_draws)`` returns ``{"z": (n, B, D)[, "rotation",
    "shift"]}``; it ignores the batch's poses when poses are amortized (the proposal comes
    from the encoder).
    """

    problem: object
    method: str
    spec: RefineSpec

    def sample(self, key: Array, params: dict, batch: ParticleBatch, n_draws: int) -> dict:
        if self.method == "grid":
            return _grid_chunk(key, self.problem, params, batch, n_draws, self.spec)[0]
        return _importance_chunk(key, self.problem, params, batch, n_draws, self.spec)[0]


def refined_sampler(
    problem, params: dict | None = None, *, method: str = "auto", spec: RefineSpec | None = None
) -> RefinedSampler:
    """A :class:`RefinedSampler` for ``problem`` (``params`` unused; kept for symmetry)."""
    del params
    return RefinedSampler(problem, resolve_method(problem.model_cfg, method), spec or RefineSpec())


def refine_posterior(
    key: Array,
    problem,
    params: dict,
    positions: np.ndarray | None = None,
    *,
    method: str = "auto",
    n_draws: int = 100,
    amortized: dict | None = None,
    batch_size: int | None = None,
    spec: RefineSpec | None = None,
) -> RefinedPosterior:
    """Refined posteriors of the particles at ``positions`` (default: all), in order.

    Args:
        key: PRNG key.
        problem, params: the fitted problem and its SVI parameters.
        positions: ``(N,)`` dataset positions.
        method: ``"auto"`` (grid for fixed poses and D <= 2, else importance), ``"grid"``
            or ``"importance"``.
        n_draws: S, posterior draws per particle.
        amortized: optional encoder outputs for the same positions (``pipeline.encode_all``:
            ``z_mean``, ``z_sd`` ``(N, D)`` [+ ``rotation_mean``, ``rotation_sd``,
            ``shift_mean``, ``shift_sd``]) used as the importance proposal instead of
            encoding again (so the proposal is exactly the reported amortized q).
        batch_size: particles per compiled call (default ``problem.batch_size`` or 32).
        spec: numerical settings (:class:`RefineSpec`).

    Raises:
        ConfigError: bad method, ``n_draws < 1`` or no particles.
    """
    from atomicspi_bayes.guides import Encoding

    spec = spec or RefineSpec()
    method = resolve_method(problem.model_cfg, method)
    if n_draws < 1:
        raise ConfigError(f"refine: n_draws must be >= 1, got {n_draws}")
    positions = np.arange(problem.n_particles) if positions is None else np.asarray(positions)
    n = positions.size
    if n == 0:
        raise ConfigError("refine: no particles selected")
    bsz = min(batch_size or getattr(problem, "batch_size", 32), n)
    amortized_poses = problem.model_cfg.poses == "amortized"

    if method == "grid":
        fn = jax.jit(lambda k, p, b: _grid_chunk(k, problem, p, b, n_draws, spec))
    else:

        def fn_is(k, p, b, enc):
            return _importance_chunk(k, problem, p, b, n_draws, spec, enc)

        fn = jax.jit(fn_is)

    outs = []
    for i, start in enumerate(range(0, n, bsz)):
        chunk = np.arange(start, min(start + bsz, n))
        padded = np.concatenate([chunk, np.full(bsz - chunk.size, chunk[-1])])
        batch = problem.batch(positions[padded])
        k = jax.random.fold_in(key, i)
        if method == "grid":
            draws, mean, sd, ess, edge = fn(k, params, batch)
        else:
            enc = None
            if amortized is not None:
                enc = _encoding_from(Encoding, amortized, padded, batch, amortized_poses)
            draws, mean, sd, ess = fn(k, params, batch, enc)
            edge = jnp.full(ess.shape, jnp.nan)
        m = chunk.size
        cut = lambda x, m=m: np.asarray(x)[:m]  # noqa: E731
        z_part = {s: np.asarray(v)[:, :m] for s, v in draws.items()}
        outs.append((z_part, cut(mean), cut(sd), cut(ess), cut(edge)))
    z_draws = np.concatenate([o[0]["z"] for o in outs], axis=1).astype(np.float32)
    result = RefinedPosterior(
        z_draws=z_draws,
        z_mean=np.concatenate([o[1] for o in outs]).astype(np.float32),
        z_sd=np.concatenate([o[2] for o in outs]).astype(np.float32),
        ess=np.concatenate([o[3] for o in outs]).astype(np.float64),
        edge_mass=np.concatenate([o[4] for o in outs]).astype(np.float64),
        method=method,
        positions=positions,
    )
    if amortized_poses:
        rot = np.concatenate([o[0]["rotation"] for o in outs], axis=1).astype(np.float32)
        shift = np.concatenate([o[0]["shift"] for o in outs], axis=1).astype(np.float32)
        result = RefinedPosterior(
            **{**result.__dict__, "rotation_draws": rot, "shift_draws": shift}
        )
    _log_quality(result)
    return result


def _encoding_from(Encoding, amortized: dict, rows: np.ndarray, batch, amortized_poses: bool):
    """An ``Encoding`` of the batch from stored encoder outputs (``rows`` into them)."""
    z_mean = jnp.asarray(amortized["z_mean"][rows], jnp.float32)
    z_sd = jnp.asarray(amortized["z_sd"][rows], jnp.float32)
    b = rows.size
    if amortized_poses:
        pose = [jnp.asarray(amortized[k][rows], jnp.float32)
                for k in ("rotation_mean", "rotation_sd", "shift_mean", "shift_sd")]  # fmt: skip
    else:
        pose = [batch.rotations, jnp.zeros((b, 3)), batch.shifts, jnp.zeros((b, 2))]
    return Encoding(z_mean, z_sd, *pose, jnp.zeros(b, jnp.int32))


def _log_quality(result: RefinedPosterior) -> None:
    if result.method == "importance":
        low = float(np.mean(result.ess < 10))
        logger.info(
            "importance refinement: median ESS %.1f, %.1f %% of particles below 10",
            float(np.median(result.ess)), 100 * low,
        )  # fmt: skip
        if low > 0.05:
            logger.warning(
                "importance refinement: %.0f %% of particles have ESS < 10; their refined "
                "posteriors are unreliable (raise n_proposals or inflate)", 100 * low,
            )  # fmt: skip
    else:
        bad = float(np.mean(result.edge_mass > 1e-3))
        if bad > 0:
            logger.warning(
                "grid refinement: %.1f %% of particles have posterior mass on the grid edge",
                100 * bad,
            )
    if not math.isfinite(float(np.sum(result.z_mean))):
        raise ConvergenceError("refine: non-finite posterior means (the model's log joint is NaN)")


def reported_posterior(
    key: Array,
    problem,
    params: dict,
    enc: dict,
    *,
    kind: str = "refined",
    n_draws: int = 100,
    spec: RefineSpec | None = None,
) -> dict:
    """The per-particle posterior a fit reports, for every kept particle, in order.

    Args:
        key: PRNG key of the draws.
        problem, params: the fitted problem and its SVI parameters.
        enc: the encoder outputs of all particles (``pipeline.encode_all``).
        kind: ``"refined"`` (:func:`refine_posterior`, method ``"auto"``) or
            ``"amortized"`` (draws from the encoder's q, as SVI left it).
        n_draws: S, draws per particle.

    Returns:
        ``{"z_mean", "z_sd"`` ``(N, D)``, ``"z_draws"`` ``(S, N, D)`` (the reported
        posterior), ``"z_mean_amortized", "z_sd_amortized"`` ``(N, D)`` (the encoder's q),
        ``"posterior_method"`` (``"amortized"``, ``"grid"`` or ``"importance"``), ``"ess"``
        ``(N,)`` (NaN for amortized), ``"rotation_draws"`` ``(S, N, 3, 3)`` and
        ``"shift_draws"`` ``(S, N, 2)`` (None with fixed poses)}``. With importance
        refinement, particles with ESS < ``spec.min_ess`` keep the amortized q's moments
        and draws (their ``ess`` says so).

    Raises:
        ConfigError: unknown ``kind``.
    """
    if kind not in ("refined", "amortized"):
        raise ConfigError(f"posterior must be 'refined' or 'amortized', got {kind!r}")
    z_mean_q = np.asarray(enc["z_mean"], np.float32)
    z_sd_q = np.asarray(enc["z_sd"], np.float32)
    n = z_mean_q.shape[0]
    amortized_poses = problem.model_cfg.poses == "amortized"
    out = {"z_mean_amortized": z_mean_q, "z_sd_amortized": z_sd_q}
    eps = np.asarray(jax.random.normal(key, (n_draws, *z_mean_q.shape)))
    out.update(
        z_mean=z_mean_q, z_sd=z_sd_q, posterior_method="amortized",
        z_draws=(z_mean_q[None] + z_sd_q[None] * eps).astype(np.float32),
        ess=np.full(n, np.nan), rotation_draws=None, shift_draws=None,
    )  # fmt: skip
    if amortized_poses:
        k_rot, k_shift = jax.random.split(jax.random.fold_in(key, 1))
        q_rot = TangentNormalSO3(enc["rotation_mean"], enc["rotation_sd"])
        out["rotation_draws"] = np.asarray(q_rot.sample(k_rot, (n_draws,)))
        out["shift_draws"] = enc["shift_mean"][None] + enc["shift_sd"][None] * np.asarray(
            jax.random.normal(k_shift, (n_draws, n, 2))
        )
    if kind == "amortized":
        return out
    spec = spec or RefineSpec()
    refined = refine_posterior(
        jax.random.fold_in(key, 2), problem, params, np.arange(n), n_draws=n_draws,
        amortized=enc, spec=spec,
    )  # fmt: skip
    keep = np.ones(n, bool)
    if refined.method == "importance":
        keep = refined.ess >= spec.min_ess
        if not keep.all():
            logger.warning(
                "importance refinement: %d of %d particles have ESS < %g and keep the "
                "amortized q (latents.npz 'ess' tells which)", int((~keep).sum()), n,
                spec.min_ess,
            )  # fmt: skip

    def sel(new, old, draws: bool = False):
        lead = (1,) if draws else ()
        shape = lead + (n,) + (1,) * (np.ndim(old) - len(lead) - 1)
        return np.where(keep.reshape(shape), new, old).astype(np.asarray(old).dtype)

    out.update(
        z_mean=sel(refined.z_mean, out["z_mean"]),
        z_sd=sel(np.maximum(refined.z_sd, 1e-6), out["z_sd"]),
        z_draws=sel(refined.z_draws, out["z_draws"], draws=True),
        posterior_method=refined.method, ess=refined.ess,
    )  # fmt: skip
    if amortized_poses:
        out["rotation_draws"] = sel(refined.rotation_draws, out["rotation_draws"], draws=True)
        out["shift_draws"] = sel(refined.shift_draws, out["shift_draws"], draws=True)
    return out
