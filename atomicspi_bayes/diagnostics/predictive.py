"""Prior and posterior predictive simulation through the fitted NumPyro model itself.

Every diagnostic that needs a simulated image (SBC, PPC) gets it here, and here it comes from
the model's own ``"image"`` site: the model is traced under ``seed`` and ``substitute`` (the
learned globals and, for posterior predictive draws, the latent values) and the site's
distribution ``Normal(clean, sd)`` over the scored Fourier coefficients is read off the
trace. There is no second simulator and no second noise model.

A "fitted problem" is any object with the attributes of ``pipeline.FitProblem``
(:class:`FittedProblem`): ``model(batch)`` and ``guide(batch)`` (NumPyro callables),
``model_cfg``, ``static`` (``model.ModelStatic``), ``batch(positions) -> ParticleBatch`` and
``n_particles``. ``params`` are the SVI parameters (``SVIResult.params``): the model's
globals plus the encoder's.

Scored coefficients and images: the model scores the independent real numbers of
``Y = p² rfft2(ifftshift(y))`` inside ``|k| <= k_max`` (``model.FourierWindow``).
:func:`scored_to_images` turns a vector of scored numbers back into a real image whose
:func:`model.observed_fourier` is that vector exactly; the coefficients the model does not
score are filled with white noise of the model's per-pixel sd, so the image looks like data
to an encoder that sees all frequencies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from numpyro import handlers
from numpyro.primitives import Messenger

from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.model import FourierWindow, ModelConfig, ModelStatic, ParticleBatch
from atomicspi_bayes.physics.cryoem import fourier_to_image, image_to_fourier

logger = logging.getLogger(__name__)

__all__ = [
    "LATENT_SITES",
    "FittedProblem",
    "ImageSite",
    "guide_draws",
    "latent_names",
    "model_globals",
    "noise_free_images",
    "noise_sigma_per_particle",
    "prior_latents",
    "sample_prior",
    "scored_to_images",
    "shrink_guide",
    "simulate_images",
    "trace_image_site",
]

#: Per-particle latent sample sites of the model, in the order diagnostics report them.
LATENT_SITES = ("z", "rotation", "shift")


class FittedProblem(Protocol):
    """What diagnostics need from a fit (``pipeline.FitProblem`` satisfies it)."""

    model_cfg: ModelConfig
    static: ModelStatic
    guide: Callable[[ParticleBatch], None]

    def model(self, batch: ParticleBatch) -> None: ...

    def batch(self, positions: np.ndarray) -> ParticleBatch: ...

    @property
    def n_particles(self) -> int: ...


class ImageSite(NamedTuple):
    """The model's ``"image"`` site for a batch of B particles.

    Attributes:
        observed: ``(B, M)`` scored parts of the batch's images.
        mean: ``(B, M)`` noise-free scored parts ``M(θ)`` (image scale included).
        sd: ``(B, M)`` noise sd of each scored part.
        log_factor: ``(B,)`` the physics log-prior factor of the latents (0 when absent).
    """

    observed: Array
    mean: Array
    sd: Array
    log_factor: Array


def model_globals(params: dict) -> dict:
    """The model's global parameters of an SVI ``params`` dict (encoder weights dropped)."""
    return {k: v for k, v in params.items() if not k.startswith("encoder")}


def latent_names(cfg: ModelConfig) -> list[str]:
    """Names of the scalar latent coordinates SBC ranks: ``z1..zD`` (+ ``shift_x/y``)."""
    names = [f"z{j + 1}" for j in range(cfg.latent_dim)]
    if cfg.poses == "amortized":
        names += ["shift_x", "shift_y"]
    return names


def _image_site(trace: dict) -> ImageSite:
    site = trace["image"]
    fn = site["fn"]
    while hasattr(fn, "base_dist"):  # Independent(Normal) -> Normal
        fn = fn.base_dist
    if "physics_prior" in trace:
        log_factor = jnp.asarray(trace["physics_prior"]["fn"].log_factor)
    else:
        log_factor = jnp.zeros(site["value"].shape[0], site["value"].dtype)
    return ImageSite(site["value"], fn.loc, fn.scale, log_factor)


def trace_image_site(
    key: Array, problem: FittedProblem, params: dict, batch: ParticleBatch, latents: dict
) -> ImageSite:
    """The model's image distribution for ``batch`` with the latent sites set to ``latents``.

    Args:
        key: PRNG key (only used by sites not in ``latents``).
        problem: the fitted problem.
        params: SVI parameters (globals substituted).
        batch: the particles (their images are the observed values).
        latents: ``{"z": (B, D), ...}`` values substituted for the model's latent sites.
    """
    data = {**model_globals(params), **latents}
    model = handlers.substitute(handlers.seed(problem.model, key), data=data)
    return _image_site(handlers.trace(model).get_trace(batch))


def prior_latents(
    key: Array, problem: FittedProblem, params: dict, batch: ParticleBatch
) -> tuple[dict, Array]:
    """Latents drawn from the model's prior sites for ``batch``, and their physics factor.

    Returns ``({"z": (B, D)[, "rotation": (B, 3, 3), "shift": (B, 2)]}, log_factor (B,))``.
    The sites' own distributions are used (``N(0, I)`` or the learned mixture; Haar
    rotations and the shift prior); ``log_factor`` is the model's ``"physics_prior"``
    factor ``log p_phys(X(z))`` (<= 0), which the effective prior also multiplies in.
    """
    model = handlers.substitute(handlers.seed(problem.model, key), data=model_globals(params))
    trace = handlers.trace(model).get_trace(batch)
    latents = {k: trace[k]["value"] for k in LATENT_SITES if k in trace}
    if "physics_prior" in trace:
        log_factor = jnp.asarray(trace["physics_prior"]["fn"].log_factor)
    else:
        log_factor = jnp.zeros(batch.indices.shape[0])
    return latents, log_factor


def guide_draws(
    key: Array, guide: Callable, params: dict, batch: ParticleBatch, n_draws: int
) -> dict:
    """``{site: (n_draws, B, ...)}`` draws of the guide's latent sites for ``batch``.

    The guide is run under ``seed`` and ``substitute(params)`` once per key, vmapped over the
    ``n_draws`` keys; everything that does not depend on the key (the encoder) is computed
    once by ``vmap``. A sampler object with ``sample(key, params, batch, n_draws)`` (e.g.
    ``posterior.RefinedSampler``, the refined per-particle posterior) is called directly.
    """
    if hasattr(guide, "sample"):
        return guide.sample(key, params, batch, n_draws)

    def one(k):
        guide_k = handlers.substitute(handlers.seed(guide, k), data=params)
        trace = handlers.trace(guide_k).get_trace(batch)
        return {s: trace[s]["value"] for s in LATENT_SITES if s in trace}

    return jax.vmap(one)(jax.random.split(key, n_draws))


class _ScaleSites(Messenger):
    """Multiply the scale of the named guide sites' distributions by ``factor``."""

    def __init__(self, fn: Callable, factor: float, sites: tuple[str, ...]):
        super().__init__(fn)
        self.factor = float(factor)
        self.sites = tuple(sites)

    def process_message(self, msg: Any) -> None:
        if msg["type"] == "sample" and msg["name"] in self.sites and not msg["is_observed"]:
            msg["fn"] = _scaled(msg["fn"], self.factor, msg["name"])


def _scaled(fn: Any, factor: float, name: str) -> Any:
    import numpyro.distributions as dist

    from atomicspi_bayes.model import TangentNormalSO3

    if isinstance(fn, dist.Independent):
        return _scaled(fn.base_dist, factor, name).to_event(fn.reinterpreted_batch_ndims)
    if isinstance(fn, dist.Normal):
        return dist.Normal(fn.loc, fn.scale * factor)
    if isinstance(fn, TangentNormalSO3):
        return TangentNormalSO3(fn.loc, fn.scale * factor)
    raise ConfigError(
        f"cannot rescale guide site {name!r}: {type(fn).__name__} is not a Normal or "
        "TangentNormalSO3"
    )


def shrink_guide(guide: Callable, factor: float, sites: tuple[str, ...] = ("z",)) -> Callable:
    """A deliberately miscalibrated copy of ``guide``: the sds of ``sites`` times ``factor``.

    ``factor = 0.5`` halves every posterior sd (over-confident); ``2.0`` doubles them. Used
    to show that SBC can fail. The wrapped guide has the same parameters as ``guide``.
    """
    if not factor > 0:
        raise ConfigError(f"guide scale factor must be > 0, got {factor}")
    return _ScaleSites(guide, factor, sites)


def sample_prior(
    key: Array, problem: FittedProblem, params: dict, templates: list[ParticleBatch]
) -> tuple[dict, float]:
    """Latents for ``len(templates) * B`` particles from the model's effective prior.

    The latent sites' prior draws (:func:`prior_latents`) are accepted with probability
    ``exp(log p_phys - max log p_phys)``, the maximum over the proposal pool (rejection
    sampling against ``p(z) p_phys(X(z))``; exact when the pool's maximum is the supremum,
    which a pool of ``>= max(2 n, 1024)`` draws approaches). Proposal batches cycle
    through ``templates`` (equal-size batches).

    Returns:
        ``({site: (len(templates) * B, ...)}, acceptance rate)``.

    Raises:
        ConfigError: fewer than one in 50 proposals accepted.
    """
    bsz = templates[0].indices.shape[0]
    draw = jax.jit(lambda k, p, b: prior_latents(k, problem, p, b))
    needed = len(templates) * bsz
    pool, factors = [], []
    n_rounds = 0
    accepted = np.zeros(0, dtype=bool)
    uniforms = []
    min_pool = max(2 * needed, 1024)  # a stable estimate of the factor's maximum
    while accepted.sum() < needed or accepted.size < min_pool:
        if n_rounds * bsz >= 50 * min_pool:
            raise ConfigError(
                f"prior rejection kept {accepted.sum()} of {accepted.size} proposals: the "
                "physics prior factor varies too much across the latent prior"
            )
        template = templates[n_rounds % len(templates)]
        k_draw, k_u = jax.random.split(jax.random.fold_in(key, n_rounds))
        lat, lf = draw(k_draw, params, template)
        pool.append(jax.tree_util.tree_map(np.asarray, lat))
        factors.append(np.asarray(lf, dtype=np.float64))
        uniforms.append(np.asarray(jax.random.uniform(k_u, (bsz,)), dtype=np.float64))
        n_rounds += 1
        lf_all = np.concatenate(factors)
        # accept with probability exp(lf - max lf) (the max over the pool drawn so far)
        accepted = np.log(np.concatenate(uniforms)) <= lf_all - lf_all.max()
    latents = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *pool)
    keep = np.flatnonzero(accepted)[:needed]
    latents = jax.tree_util.tree_map(lambda x: jnp.asarray(x[keep]), latents)
    rate = float(accepted.mean())
    logger.info("prior: kept %d of %d proposals (%.3f)", accepted.sum(), accepted.size, rate)
    return latents, rate


def simulate_images(
    key: Array, problem: FittedProblem, params: dict, template: ParticleBatch, latents: dict
) -> Array:
    """``(B, L, L)`` images drawn from the model's image site given ``latents``.

    The template's poses, CTFs and optics groups are used (with latent poses, the
    ``"rotation"``/``"shift"`` entries of ``latents``); its images are ignored. Noise is the
    model's: ``Normal(M(θ), sd)`` on the scored coefficients, white noise of the same
    per-pixel sd outside them.
    """
    k_site, k_noise, k_fill = jax.random.split(key, 3)
    site = trace_image_site(k_site, problem, params, template, latents)
    scored = site.mean + site.sd * jax.random.normal(k_noise, site.mean.shape)
    sigma = noise_sigma_per_particle(params, problem.static, template)
    return scored_to_images(k_fill, scored, problem.static.window, sigma)


def noise_free_images(
    problem: FittedProblem, params: dict, template: ParticleBatch, latents: dict
) -> Array:
    """``(B, L, L)`` noise-free images M(θ) of the model (band-limited to the window)."""
    site = trace_image_site(jax.random.PRNGKey(0), problem, params, template, latents)
    zero = jnp.zeros(site.mean.shape[0], site.mean.dtype)
    return scored_to_images(jax.random.PRNGKey(0), site.mean, problem.static.window, zero)


# ---------------------------------------------------------------- scored parts <-> images


def _embedding(window: FourierWindow) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays placing scored parts in the flat rfft grid, and their Hermitian mirrors.

    Returns ``(self_conj_pos, mirror_src, mirror_dst, n_re)``: positions (into the Re part)
    of the self-conjugate coefficients, and flat grid indices of scored coefficients on the
    rfft columns 0 and L/2 (``mirror_src``) whose conjugates live at ``mirror_dst``.
    """
    box = window.box
    width = box // 2 + 1
    idx = np.asarray(window.re_index)
    rows, cols = idx // width, idx % width
    boundary = (cols == 0) | (2 * cols == box)
    self_conj = boundary & ((rows == 0) | (2 * rows == box))
    mirror = boundary & ~self_conj
    src = idx[mirror]
    dst = ((box - rows[mirror]) % box) * width + cols[mirror]
    return np.flatnonzero(self_conj), src, dst, np.asarray(idx.size)


@partial(jax.jit, static_argnames=("window",))
def scored_to_images(key: Array, scored: Array, window: FourierWindow, sigma: Array) -> Array:
    """``(B, M)`` scored parts -> ``(B, L, L)`` real images (origin at pixel (L//2, L//2)).

    ``observed_fourier(images, window)`` returns ``scored`` (to float32 round-off). The
    coefficients outside the window are those of white noise with per-pixel sd ``sigma``
    ``(B,)``, as in data; inside the window the values are exactly ``scored``.
    """
    box, pixel = window.box, window.pixel_size
    b = scored.shape[0]
    noise = sigma[:, None, None] * jax.random.normal(key, (b, box, box), dtype=jnp.float32)
    grid = image_to_fourier(noise, pixel).reshape(b, -1)
    self_conj, src, dst, n_re = _embedding(window)
    re_idx = jnp.asarray(window.re_index)
    im_idx = jnp.asarray(window.im_index)
    re, im = scored[:, : int(n_re)], scored[:, int(n_re) :]
    grid = grid.at[:, re_idx].set(re + 1j * grid[:, re_idx].imag)
    grid = grid.at[:, im_idx].set(grid[:, im_idx].real + 1j * im)
    if self_conj.size:
        grid = grid.at[:, re_idx[self_conj]].set(re[:, self_conj].astype(grid.dtype))
    if src.size:
        grid = grid.at[:, jnp.asarray(dst)].set(jnp.conj(grid[:, jnp.asarray(src)]))
    ft = grid.reshape(b, box, box // 2 + 1)
    return fourier_to_image(ft, box, pixel).astype(jnp.float32)


def noise_sigma_per_particle(params: dict, static: ModelStatic, batch: ParticleBatch) -> Array:
    """``(B,)`` per-pixel noise sd of each particle's optics group (learned or fixed)."""
    sigma = params.get("noise_sigma", jnp.asarray(static.noise_sigma))
    return jnp.asarray(sigma)[batch.optics_group]
