"""Plain-JAX reference train step for W5: the small ResNet of
``fnn.models.resnet`` (stem conv 3x3 + batch norm + relu, one basic block
per stage, global average pooling, dense head) written out as ordinary JAX
functions, with batch norm in train mode (batch statistics, running
statistics updated with momentum 0.9), ``jax.value_and_grad`` and an inline
optimizer of :mod:`benchmarks.references` (Adam by default).

It reads fnn's nested parameter and state dicts (``{"stem": {"w"},
"batch_norm": {"scale", "bias"}, "block": {"residual": {"main": ...}}}``).
A block has a projection shortcut exactly when it halves the image (stride 2),
as in ``fnn.models.resnet``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from benchmarks.references import adam_update, add_bias, softmax_cross_entropy

Tree = dict[str, Any]
MOMENTUM, EPS = 0.9, 1e-5


def conv(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """NHWC x HWIO convolution, "SAME" padding, no bias."""
    return lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def batch_norm(p: Tree, s: Tree, x: jax.Array) -> tuple[jax.Array, Tree]:
    """Train-mode batch norm over every axis but the last (biased variance, eps 1e-5)."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    var = jnp.maximum(jnp.mean(jnp.square(x - mean.reshape(1, 1, 1, -1)), axis=axes), 0.0)
    shape = (1, 1, 1, -1)
    y = (x - mean.reshape(shape)) * lax.rsqrt(var.reshape(shape) + EPS) * p["scale"].reshape(shape)
    y = y + p["bias"].reshape(shape)
    new = {
        "mean": MOMENTUM * s["mean"] + (1 - MOMENTUM) * mean,
        "var": MOMENTUM * s["var"] + (1 - MOMENTUM) * var,
    }
    return y, new


def basic_block(p: Tree, s: Tree, x: jax.Array) -> tuple[jax.Array, Tree]:
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``; returns the block's new state."""
    main_p, main_s = p["residual"]["main"], s["residual"]["main"]
    project = "shortcut" in p["residual"]
    stride = 2 if project else 1
    new_main: Tree = dict(main_s)
    h, new_main["batch_norm"] = batch_norm(
        main_p["batch_norm"], main_s["batch_norm"], conv(x, main_p["conv2d"]["w"], stride)
    )
    h = jax.nn.relu(h)
    h, new_main["batch_norm_1"] = batch_norm(
        main_p["batch_norm_1"], main_s["batch_norm_1"], conv(h, main_p["conv2d_1"]["w"], 1)
    )
    new_residual: Tree = {"main": new_main}
    if project:
        sp, ss = p["residual"]["shortcut"], s["residual"]["shortcut"]
        short, bn = batch_norm(sp["batch_norm"], ss["batch_norm"], conv(x, sp["conv2d"]["w"], stride))
        new_residual["shortcut"] = {**ss, "batch_norm": bn}
    else:
        short = x
    return jax.nn.relu(h + short), {**s, "residual": new_residual}


def resnet_forward(p: Tree, s: Tree, x: jax.Array) -> tuple[jax.Array, Tree]:
    """Logits and the new state (running statistics) of the train-mode forward pass."""
    new: Tree = dict(s)
    h, new["batch_norm"] = batch_norm(p["batch_norm"], s["batch_norm"], conv(x, p["stem"]["w"], 1))
    h = jax.nn.relu(h)
    blocks = sorted((k for k in p if k == "block" or k.startswith("block_")), key=lambda k: int(k[6:] or 0))
    for name in blocks:
        h, new[name] = basic_block(p[name], s[name], h)
    h = jnp.mean(h, axis=(1, 2))
    return add_bias(h @ p["dense"]["w"], p["dense"]["b"]), new


def train_step(update: Callable = adam_update) -> Callable:
    """``step(params, state, opt_state, x, y) -> (params, state, opt_state, loss)``, not yet jitted;
    ``update(params, grads, opt_state) -> (params, opt_state)`` is the optimizer."""

    def loss(params, state, x, y):
        logits, new_state = resnet_forward(params, state, x)
        return softmax_cross_entropy(logits, y), new_state

    def step(params, state, opt_state, x, y):
        (value, state), grads = jax.value_and_grad(loss, has_aux=True)(params, state, x, y)
        params, opt_state = update(params, grads, opt_state)
        return params, state, opt_state, value

    return step
