"""Plain-JAX reference train steps for W1-W4 and W6 (the transformer block in
``benchmarks.transformer_reference``): the networks written out as
ordinary functions, gradients from ``jax.value_and_grad``, convolutions with
``lax.conv_general_dilated``, pooling with ``lax.reduce_window`` and the optimizer
written inline (Adam, or SGD + momentum: ``benchmarks.optimizers`` picks). No fnn code runs inside them.

They read the parameters from the same nested dicts that fnn's ``init``
returns (``{"dense": {"w", "b"}, ...}``), so the suite can start every
contender from the same numbers and check that the first losses agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from benchmarks.workloads import LEARNING_RATE, MOMENTUM, MOMENTUM_LEARNING_RATE, Workload

Params = dict[str, Any]


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean over the batch of ``-log softmax(logits)[label]``."""
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


def add_bias(y: jax.Array, b: jax.Array) -> jax.Array:
    """``y + b`` over the last axis, the broadcast spelled out (no implicit rank promotion)."""
    return y + b.reshape((1,) * (y.ndim - 1) + (-1,))


def mlp_forward(p: Params, x: jax.Array, depth: int) -> jax.Array:
    """``depth`` hidden ``relu(x @ w + b)`` layers, then a linear output layer."""
    names = ["dense"] + [f"dense_{i}" for i in range(1, depth + 1)]
    for name in names[:-1]:
        x = jax.nn.relu(add_bias(x @ p[name]["w"], p[name]["b"]))
    return add_bias(x @ p[names[-1]]["w"], p[names[-1]]["b"])


def conv(x: jax.Array, w: jax.Array, b: jax.Array, padding: str) -> jax.Array:
    """NHWC x HWIO convolution, stride 1, plus bias."""
    y = lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return add_bias(y, b)


def max_pool2(x: jax.Array) -> jax.Array:
    """2x2 max pooling with stride 2 (NHWC)."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")


def lenet_forward(p: Params, x: jax.Array) -> jax.Array:
    """conv 5x5x6 same -> relu -> pool -> conv 5x5x16 valid -> relu -> pool -> 120 -> 84 -> 10."""
    x = max_pool2(jax.nn.relu(conv(x, p["conv2d"]["w"], p["conv2d"]["b"], "SAME")))
    x = max_pool2(jax.nn.relu(conv(x, p["conv2d_1"]["w"], p["conv2d_1"]["b"], "VALID")))
    x = x.reshape(x.shape[0], -1)
    return mlp_forward(p, x, depth=2)


def lstm_forward(p: Params, x: jax.Array) -> jax.Array:
    """An LSTM (gates i, f, g, o) over ``(batch, time, features)``; the last h feeds a dense layer."""
    w_x, w_h, b = p["lstm"]["w_x"], p["lstm"]["w_h"], p["lstm"]["b"]
    hidden = w_h.shape[0]
    x_proj = add_bias(jnp.einsum("btf,fg->tbg", x, w_x), b)  # the input projection of every step at once

    def cell(carry, xg):
        h, c = carry
        gates = xg + h @ w_h
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), None

    zeros = jnp.zeros((x.shape[0], hidden), x.dtype)
    (h, _), _ = lax.scan(cell, (zeros, zeros), x_proj)
    return add_bias(h @ p["dense"]["w"], p["dense"]["b"])


def adam_init(params: Params) -> tuple:
    """Adam state ``(count, first moments, second moments)``, moments at zero (two
    distinct sets of arrays: one shared buffer would halve the reads of a step
    that is timed again and again from this state)."""
    return jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params)


def adam_update(
    params: Params,
    grads: Params,
    opt_state: tuple,
    lr: float = LEARNING_RATE,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> tuple[Params, tuple]:
    """One Adam step with bias-corrected moments: ``p - lr * m_hat / (sqrt(v_hat) + eps)``."""
    count, m, v = opt_state
    count = count + 1
    m = jax.tree.map(lambda m_, g: b1 * m_ + (1 - b1) * g, m, grads)
    v = jax.tree.map(lambda v_, g: b2 * v_ + (1 - b2) * g * g, v, grads)
    t = count.astype(jnp.float32)
    scale_m, scale_v = 1 / (1 - b1**t), 1 / (1 - b2**t)
    params = jax.tree.map(lambda p, m_, v_: p - lr * (m_ * scale_m) / (jnp.sqrt(v_ * scale_v) + eps), params, m, v)
    return params, (count, m, v)


def momentum_init(params: Params) -> Params:
    """SGD + momentum's state: the velocity, one zero array per parameter."""
    return jax.tree.map(jnp.zeros_like, params)


def momentum_update(
    params: Params, grads: Params, velocity: Params, lr: float = MOMENTUM_LEARNING_RATE, momentum: float = MOMENTUM
) -> tuple[Params, Params]:
    """One SGD + momentum step (no Nesterov, the learning rate outside the velocity):
    ``v = momentum * v + g``, ``p - lr * v``."""
    velocity = jax.tree.map(lambda v, g: momentum * v + g, velocity, grads)
    params = jax.tree.map(lambda p, v: p - lr * v, params, velocity)
    return params, velocity


def loss_function(workload: Workload) -> Callable[[Params, jax.Array, jax.Array], jax.Array] | None:
    """The plain-JAX ``loss(params, x, y)`` of a workload, or ``None`` if it has no reference (W5)."""
    if workload.key in ("W1", "W3"):
        depth = len(workload.sizes["widths"])
        forward = lambda p, x: mlp_forward(p, x, depth)
    elif workload.key == "W2":
        forward = lenet_forward
    elif workload.key == "W4":
        forward = lstm_forward
    elif workload.key == "W6":
        from benchmarks import transformer_reference

        forward = transformer_reference.forward
    else:
        return None
    if workload.classes:
        return lambda p, x, y: softmax_cross_entropy(forward(p, x), y)
    return lambda p, x, y: jnp.mean((forward(p, x) - y) ** 2)  # both (batch, *target_shape)


def train_step(workload: Workload, update: Callable = adam_update) -> Callable | None:
    """``step(params, opt_state, x, y) -> (params, opt_state, loss)``, not yet jitted;
    ``update(params, grads, opt_state) -> (params, opt_state)`` is the optimizer
    (:func:`adam_update` or :func:`momentum_update`)."""
    loss = loss_function(workload)
    if loss is None:
        return None

    def step(params, opt_state, x, y):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        params, opt_state = update(params, grads, opt_state)
        return params, opt_state, value

    return step
