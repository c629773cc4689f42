"""Neural encoders of the amortized guides (equinox modules; parameters only, no NumPyro).

Each encoder maps the features of ONE particle to the raw parameters of its variational
distribution; guides ``jax.vmap`` them over the batch and register them with
``numpyro.contrib.module.eqx_module``. Build an encoder once, outside model and guide.

* :class:`MLPEncoder` -- a flat feature vector ``(F,)`` (e.g. mode-sensitivity features or
  low-pass Fourier coefficients) -> ``(out_size,)``.
* :class:`ConvEncoder` -- a low-pass, CTF phase-flipped image ``(S, S)`` plus an optional
  flat side vector ``(F,)`` (pose, CTF) -> ``(out_size,)``.

The last layer is initialised at ``output_scale`` times equinox's default, so that a fresh
guide starts close to the prior's scale (means ~0, log-sds ~0) rather than at random extremes.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["ConvEncoder", "MLPEncoder"]


def _scale_last_linear(linear: eqx.nn.Linear, scale: float) -> eqx.nn.Linear:
    linear = eqx.tree_at(lambda m: m.weight, linear, linear.weight * scale)
    if linear.bias is not None:
        linear = eqx.tree_at(lambda m: m.bias, linear, linear.bias * 0.0)
    return linear


class MLPEncoder(eqx.Module):
    """Multi-layer perceptron ``(in_size,) -> (out_size,)`` with GELU hidden activations.

    Inputs are standardised with fixed ``(in_size,)`` ``offset``/``scale`` arrays (set from a
    batch of data when the guide is built; not trained) before the first layer.
    """

    layers: tuple[eqx.nn.Linear, ...]
    offset: Array
    scale: Array

    def __init__(
        self,
        in_size: int,
        out_size: int,
        hidden: tuple[int, ...],
        *,
        key: Array,
        output_scale: float = 0.1,
        offset: Array | None = None,
        scale: Array | None = None,
    ):
        sizes = (in_size, *hidden, out_size)
        keys = jax.random.split(key, len(sizes) - 1)
        pairs = zip(sizes[:-1], sizes[1:], keys, strict=True)
        layers = [eqx.nn.Linear(i, o, key=k) for i, o, k in pairs]
        layers[-1] = _scale_last_linear(layers[-1], output_scale)
        self.layers = tuple(layers)
        self.offset = jnp.zeros(in_size) if offset is None else jnp.asarray(offset)
        self.scale = jnp.ones(in_size) if scale is None else jnp.asarray(scale)

    def __call__(self, x: Array) -> Array:
        h = (x - jax.lax.stop_gradient(self.offset)) / jax.lax.stop_gradient(self.scale)
        for layer in self.layers[:-1]:
            h = jax.nn.gelu(layer(h))
        return self.layers[-1](h)


class ConvEncoder(eqx.Module):
    """Small CNN on one ``(S, S)`` image (+ optional side vector) -> ``(out_size,)``.

    ``len(channels)`` blocks of 3x3 convolution + GELU + 2x2 average pooling, then global
    flattening, concatenation with the side vector and an MLP head. ``S`` must be divisible
    by ``2**len(channels)``.
    """

    convs: tuple[eqx.nn.Conv2d, ...]
    head: MLPEncoder

    def __init__(
        self,
        image_size: int,
        side_size: int,
        out_size: int,
        channels: tuple[int, ...] = (16, 32, 32),
        hidden: tuple[int, ...] = (128,),
        *,
        key: Array,
        output_scale: float = 0.1,
    ):
        if image_size % (2 ** len(channels)):
            raise ValueError(
                f"image_size {image_size} must be divisible by 2**{len(channels)} for "
                f"{len(channels)} pooling blocks"
            )
        keys = jax.random.split(key, len(channels) + 1)
        chans = (1, *channels)
        self.convs = tuple(
            eqx.nn.Conv2d(i, o, 3, padding=1, key=k)
            for i, o, k in zip(chans[:-1], chans[1:], keys[:-1], strict=False)
        )
        flat = channels[-1] * (image_size // 2 ** len(channels)) ** 2
        self.head = MLPEncoder(
            flat + side_size, out_size, hidden, key=keys[-1], output_scale=output_scale
        )

    def __call__(self, image: Array, side: Array | None = None) -> Array:
        h = image[None]
        for conv in self.convs:
            h = jax.nn.gelu(conv(h))
            c, s, _ = h.shape
            h = h.reshape(c, s // 2, 2, s // 2, 2).mean(axis=(2, 4))
        h = h.ravel()
        if side is not None:
            h = jnp.concatenate([h, side])
        return self.head(h)
