"""Plain-JAX reference for W6: a pre-norm transformer block written from
scratch in ``jax.numpy`` (no fnn code), reading fnn's parameter dict::

    h = x + attention(layer_norm(x))
    y = h + dense(gelu(dense(layer_norm(h))))          gelu: the tanh form

Attention: q / k / v projections as einsums with fnn's ``(D, H, K)`` weights,
scores ``q k^T / sqrt(K)``, softmax over the keys, the output projection
``(H, V, D)``. Gradients come from ``jax.value_and_grad`` and the update is
the references' inline optimizer (``benchmarks.references``).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

Params = dict[str, Any]


def lead(b: jax.Array, y: jax.Array) -> jax.Array:
    """``b`` with leading axes of size 1 up to ``y``'s rank (the broadcast spelled out:
    no implicit rank promotion)."""
    return b.reshape((1,) * (y.ndim - b.ndim) + b.shape)


def layer_norm(p: Params, x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Normalise the last axis with its mean and biased variance, then ``scale * x + bias``."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + eps)
    return y * lead(p["scale"], y) + lead(p["bias"], y)


def gelu(x: jax.Array) -> jax.Array:
    """``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))``."""
    return 0.5 * x * (1 + jnp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def attention(p: Params, x: jax.Array) -> jax.Array:
    """Multi-head self-attention of ``x (N, T, D)``: softmax(q k^T / sqrt(K)) v, projected out."""
    q, k, v = (jnp.einsum("ntd,dhk->nthk", x, p[n]["w"]) for n in ("query", "key", "value"))
    q, k, v = (z + lead(p[n]["b"], z) for z, n in ((q, "query"), (k, "key"), (v, "value")))
    scores = jnp.einsum("nqhk,nshk->nhqs", q, k) / math.sqrt(q.shape[-1])
    probs = jax.nn.softmax(scores, axis=-1)
    o = jnp.einsum("nhqs,nshv->nqhv", probs, v)
    y = jnp.einsum("nthv,hvd->ntd", o, p["out"]["w"])
    return y + lead(p["out"]["b"], y)


def forward(p: Params, x: jax.Array) -> jax.Array:
    """The pre-norm block: attention branch, then MLP branch, each added to its input."""
    h = x + attention(p["attention"], layer_norm(p["attention_norm"], x))
    mlp = p["mlp"]
    z = layer_norm(p["mlp_norm"], h) @ mlp["dense"]["w"]
    z = gelu(z + lead(mlp["dense"]["b"], z)) @ mlp["dense_1"]["w"]
    return h + z + lead(mlp["dense_1"]["b"], z)
