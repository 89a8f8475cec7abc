"""Plain-JAX reference for W6: a pre-norm transformer block written from
scratch in ``jax.numpy`` (no fnn code), reading fnn's parameter dict::

    h = x + attention(layer_norm(x))
    y = h + dense(gelu(dense(layer_norm(h))))          gelu: the tanh form

Attention: q / k / v projections as einsums with fnn's ``(D, H, K)`` weights,
scores ``q k^T / sqrt(K)``, softmax over the keys, the output projection
``(H, V, D)``. Gradients come from ``jax.value_and_grad`` and the update is
the references' inline Adam (``benchmarks.references``).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

Params = dict[str, Any]


def layer_norm(p: Params, x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Normalise the last axis with its mean and biased variance, then ``scale * x + bias``."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def gelu(x: jax.Array) -> jax.Array:
    """``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))``."""
    return 0.5 * x * (1 + jnp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def attention(p: Params, x: jax.Array) -> jax.Array:
    """Multi-head self-attention of ``x (N, T, D)``: softmax(q k^T / sqrt(K)) v, projected out."""
    q = jnp.einsum("ntd,dhk->nthk", x, p["query"]["w"]) + p["query"]["b"]
    k = jnp.einsum("ntd,dhk->nthk", x, p["key"]["w"]) + p["key"]["b"]
    v = jnp.einsum("ntd,dhv->nthv", x, p["value"]["w"]) + p["value"]["b"]
    scores = jnp.einsum("nqhk,nshk->nhqs", q, k) / math.sqrt(q.shape[-1])
    probs = jax.nn.softmax(scores, axis=-1)
    o = jnp.einsum("nhqs,nshv->nqhv", probs, v)
    return jnp.einsum("nthv,hvd->ntd", o, p["out"]["w"]) + p["out"]["b"]


def forward(p: Params, x: jax.Array) -> jax.Array:
    """The pre-norm block: attention branch, then MLP branch, each added to its input."""
    h = x + attention(p["attention"], layer_norm(p["attention_norm"], x))
    mlp = p["mlp"]
    z = gelu(layer_norm(p["mlp_norm"], h) @ mlp["dense"]["w"] + mlp["dense"]["b"])
    return h + z @ mlp["dense_1"]["w"] + mlp["dense_1"]["b"]
