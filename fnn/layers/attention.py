"""Multi-head attention with the flash-attention backward.

Shapes: ``x (N, T, D)``; ``H`` heads of key size ``K`` and value size ``V``;
``Tk`` keys (``T`` for self-attention, the context's length for cross-attention)::

    q = x @ w_q + b_q            (N, T, H, K)
    k = c @ w_k + b_k            (N, Tk, H, K)     c = x, or the context
    v = c @ w_v + b_v            (N, Tk, H, V)
    o = dot_product_attention(q, k, v)            (N, T, H, V)   scores scaled by 1 / sqrt(K)
    y = sum_{h, v} o[..., h, v] w_o[h, v, :] + b_o  (N, T, D_out)

Inputs (a plain array or a dict, as the recurrent layers)::

    x                                            self-attention
    {"x": x, "mask": mask}                       mask (N, T): True at real steps; it masks the keys
    {"x": queries, "context": c, "mask": mask}   cross-attention; mask (N, Tk) over the context

A numeric mask is read as ``mask > 0.5``. A query with no key to attend (all
masked, or masked by ``causal``) gets a zero attention output and zero
gradients. ``init`` takes the shape of ``x``, or for cross-attention the pair
``(x_shape, context_shape)`` (the ``"key"`` and ``"value"`` projections then
take the context's width as their ``D``).

Backward (hand-written): ``dw_o``, ``db_o`` and ``do`` from ``dy``; then
:func:`fnn.kernels.attention.attention_bwd` gives ``dq, dk, dv`` from the kept
``q, k, v, o`` and one log-sum-exp per query row, recomputing the
probabilities (memory linear in the number of keys per query row; autodiff
keeps every ``(T, Tk)`` probability); then each projection's ``dw = c.T @ dz``,
``db = sum(dz)``, ``dc = dz @ w.T``, summed into ``dx`` for self-attention.

Attention dropout (train mode, needs a key): inverted dropout on the
probabilities. The mask is *regenerated* from the key in the backward pass
(tile by tile, see :mod:`fnn.kernels.attention`) rather than kept, so it
costs no ``(T, Tk)`` memory; the key is kept among the residuals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fnn import backend, initializers
from fnn._attention import from_heads_first, to_heads_first
from fnn.checks import batch_axis_hint
from fnn.core import (
    Layer,
    LayerError,
    check_keys,
    check_param_shapes,
    check_positive_int,
    is_multi_shape,
    layer_factory,
)
from fnn.kernels import attention as kernel
from fnn.kernels.weight_grad import weight_gradient
from fnn.layers._masks import keep as keep_steps, mask_cotangent

__all__ = ["multi_head_attention"]

Array = Any
_GLOROT = initializers.glorot_uniform()
_PARTS = ("query", "key", "value", "out")


def split_input(
    name: str, inputs: Any, allowed: tuple[str, ...] = ("x", "mask", "context")
) -> tuple[Array, Array | None, Array | None, tuple | None]:
    """``(x, context, mask, keys of a dict input or None)`` of an attention input."""
    if isinstance(inputs, Mapping):
        extra = sorted(k for k in inputs if k not in allowed)
        if "x" not in inputs or extra:
            what = f"unexpected keys {extra}" if extra else "no 'x'"
            raise LayerError(name, f"the input dict has {what}; expected 'x' and optionally {list(allowed[1:])}")
        return inputs["x"], inputs.get("context"), inputs.get("mask"), tuple(sorted(inputs))
    if isinstance(inputs, (tuple, list)):
        raise LayerError(name, f"got a tuple of {len(inputs)} inputs; pass x (batch, time, features) or a dict "
                               '{"x": x, "mask": mask} (cross-attention: {"x": x, "context": c, "mask": mask})')
    return inputs, None, None, None


def check_sequence(name: str, what: str, shape: tuple) -> tuple:
    if len(shape) != 3 or shape[2] in (None, 0):
        raise LayerError(name, f"{what} must have shape (batch, time, features) with known features; got {shape}"
                               f"{batch_axis_hint(shape, 3)}")
    return shape


def read_mask(name: str, xp, mask: Array | None, expected: tuple) -> Array | None:
    """A ``(N, Tk)`` mask as booleans (numeric: ``> 0.5``), shape-checked."""
    if mask is None:
        return None
    if not hasattr(mask, "dtype"):
        raise LayerError(name, f"the mask must be an array of shape {expected}; got {type(mask).__name__}")
    if tuple(np.shape(mask)) != expected:
        raise LayerError(name, f"the mask has shape {tuple(np.shape(mask))}; expected (batch, keys) = {expected}")
    return keep_steps(xp, mask)


def _project(z: Array, p: Mapping, out: tuple) -> Array:
    """``z (N, T, D) @ w (D, *out) + b`` -> ``(N, T, *out)`` as one matmul."""
    n, t, d = z.shape
    y = z.reshape(n * t, d) @ p["w"].reshape(d, -1)
    if "b" in p:
        y = y + p["b"].reshape(1, -1)
    return y.reshape((n, t) + out)


def _project_bwd(z: Array, dz: Array, w: Array, use_bias: bool, input_grad: bool) -> tuple[dict, Array | None]:
    """``(grads {"w", "b"}, dz @ w.T)`` of :func:`_project`, ``dz (N, T, *out)``."""
    n, t, d = z.shape
    rows = dz.reshape(n * t, -1)
    grads = {"w": weight_gradient(z.reshape(n * t, d), rows).reshape(w.shape)}
    if use_bias:
        grads["b"] = rows.sum(axis=0).reshape(w.shape[1:])
    return grads, (rows @ w.reshape(d, -1).T).reshape(n, t, d) if input_grad else None


def _check_args(name: str, num_heads: Any, sizes: tuple, dropout_rate: Any, implementation: str) -> tuple[int, float]:
    """``(num_heads, dropout_rate)`` checked, with the optional sizes and the kernel's form."""
    heads = check_positive_int(name, "num_heads", num_heads)
    for what, value in zip(("key_size", "value_size", "out_features"), sizes):
        if value is not None:
            check_positive_int(name, what, value)
    if isinstance(dropout_rate, bool) or not isinstance(dropout_rate, (int, float)) or not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"{name}: dropout_rate must be in [0, 1); got {dropout_rate!r}")
    kernel.resolve(implementation, 1)  # a bad name fails here
    return heads, float(dropout_rate)


def _init_params(key: Any, shapes: dict, w_init: Any, b_init: Any, dtype: Any) -> dict:
    """Fresh projections: each ``w`` drawn as the matrix it multiplies as (fans of
    ``(D, H*K)``, or ``(H*V, D_out)`` for "out"), then shaped per head."""
    params = {}
    for i, (part, leaves) in enumerate(shapes.items()):
        k_w, k_b = backend.split(backend.fold_in(key, i))
        w = leaves["w"]
        flat = (int(np.prod(w[:-1])), w[-1]) if part == "out" else (w[0], int(np.prod(w[1:])))
        params[part] = {"w": w_init(k_w, flat, dtype).reshape(w)}
        if "b" in leaves:
            params[part]["b"] = b_init(k_b, leaves["b"], dtype)
    return params


def _out(xp, o_t: Array, p: dict, use_bias: bool) -> Array:
    """The output projection: ``(N, T, H, V) -> (N, T, D_out)`` as one product over ``H * V``."""
    n, t, h, v = o_t.shape
    y = o_t.reshape(n * t, h * v) @ p["w"].reshape(h * v, -1)
    if use_bias:
        y = y + p["b"].reshape(1, -1)
    return y.reshape(n, t, -1)


def _backward(params: dict, res: dict, dy: Array, input_grad: bool, *, use_bias: bool, causal: bool, rate: float,
              implementation: str) -> tuple:
    """multi_head_attention's hand-written backward: the output projection's, the attention
    kernel's (recomputing the probabilities from the log-sum-exp), then the three projections'."""
    xp = backend.namespace(res["q"], dy)
    q, k, v, o = res["q"], res["k"], res["v"], res["o"]
    n, h, t, v_size = o.shape
    w_out = params["out"]["w"]
    dy_rows = dy.reshape(n * t, -1)
    o_rows = from_heads_first(xp, o).reshape(n * t, h * v_size)
    grads = {"out": {"w": weight_gradient(o_rows, dy_rows).reshape(w_out.shape)}}
    if use_bias:
        grads["out"]["b"] = dy_rows.sum(axis=0)
    do = to_heads_first(xp, (dy_rows @ w_out.reshape(h * v_size, -1).T).reshape(n, t, h, v_size))
    drop = "dropout_key" in res
    dq, dk, dv = kernel.attention_bwd(q, k, v, o, res["lse"], do, mask=res.get("mask4"), causal=causal,
                                      dropout_rate=rate if drop else 0.0, dropout_key=res.get("dropout_key"),
                                      implementation=implementation)
    cross = "context" in res
    x, c = res["x"], res.get("context", res["x"])
    grads["query"], dx = _project_bwd(x, from_heads_first(xp, dq), params["query"]["w"], use_bias, input_grad)
    grads["key"], dc_k = _project_bwd(c, from_heads_first(xp, dk), params["key"]["w"], use_bias, input_grad)
    grads["value"], dc_v = _project_bwd(c, from_heads_first(xp, dv), params["value"]["w"], use_bias, input_grad)
    if not input_grad:
        return grads, None
    dc = dc_k + dc_v
    if not cross:
        dx = dx + dc
    if "given" not in res:
        return grads, dx
    dinputs = {g: None for g in res["given"]}
    dinputs["x"] = dx
    if cross:
        dinputs["context"] = dc
    if "mask" in dinputs:
        dinputs["mask"] = mask_cotangent(xp, res["given"]["mask"])
    return grads, dinputs


@layer_factory
def multi_head_attention(
    num_heads: int,
    *,
    key_size: int | None = None,
    value_size: int | None = None,
    out_features: int | None = None,
    use_bias: bool = True,
    causal: bool = False,
    dropout_rate: float = 0.0,
    w_init: initializers.Initializer = _GLOROT,
    b_init: initializers.Initializer = initializers.zeros,
    implementation: str = "auto",
    name: str = "multi_head_attention",
) -> Layer:
    """Multi-head (self- or cross-) attention; see the module docstring for the formulas.

    Params ``{"query": {"w": (D, H, K), "b": (H, K)}, "key": {"w": (Dc, H, K), "b": (H, K)},
    "value": {"w": (Dc, H, V), "b": (H, V)}, "out": {"w": (H, V, D_out), "b": (D_out,)}}``
    (no ``"b"`` with ``use_bias=False``); ``key_size`` defaults to ``D // H``,
    ``value_size`` to ``key_size``, ``out_features`` to ``D``; ``Dc = D`` for
    self-attention. ``causal``: query ``i`` attends keys ``j <= i``.
    ``dropout_rate``: attention dropout in train mode (needs a ``key``).
    ``implementation``: the attention kernel's form (:mod:`fnn.kernels.attention`).

    >>> import numpy as np, fnn
    >>> mha = fnn.layers.multi_head_attention(2)
    >>> params, state = mha.init(np.random.default_rng(0), (None, 5, 8))
    >>> params["query"]["w"].shape, params["out"]["w"].shape
    ((8, 2, 4), (2, 4, 8))
    >>> mha.apply(params, state, np.ones((3, 5, 8), np.float32))[0].shape
    (3, 5, 8)
    """
    heads, rate = _check_args(name, num_heads, (key_size, value_size, out_features), dropout_rate, implementation)

    def sizes(d: int) -> tuple[int, int, int]:
        k = key_size if key_size is not None else d // heads
        if k == 0:
            raise LayerError(name, f"key_size defaults to D // num_heads = {d} // {heads} = 0; pass key_size")
        return k, value_size if value_size is not None else k, out_features if out_features is not None else d

    def shapes(d: int, dc: int) -> dict:
        k, v, d_out = sizes(d)
        parts = {"query": ((d, heads, k), (heads, k)), "key": ((dc, heads, k), (heads, k)),
                 "value": ((dc, heads, v), (heads, v)), "out": ((heads, v, d_out), (d_out,))}
        return {p: {"w": w, "b": b} if use_bias else {"w": w} for p, (w, b) in parts.items()}

    def input_shapes(shape) -> tuple[tuple, tuple | None]:
        if is_multi_shape(shape):
            if len(shape) != 2:
                raise LayerError(name, f"expected the shape of x, or the pair (x_shape, context_shape); got {shape}")
            return check_sequence(name, "x", shape[0]), check_sequence(name, "the context", shape[1])
        return check_sequence(name, "x", shape), None

    def out_shape(shape):
        x_shape, _ = input_shapes(shape)
        return x_shape[:2] + (sizes(x_shape[2])[2],)

    def init(key, shape, dtype):
        x_shape, c_shape = input_shapes(shape)
        d = x_shape[2]
        return _init_params(key, shapes(d, d if c_shape is None else c_shape[2]), w_init, b_init, dtype), {}

    def fwd(params, state, inputs, key, train):
        x, context, mask, given = split_input(name, inputs)
        xp = backend.namespace(x, context, params)
        x_shape = check_sequence(name, "x", tuple(np.shape(x)))
        c = x if context is None else context
        c_shape = check_sequence(name, "the context", tuple(np.shape(c)))
        if c_shape[0] != x_shape[0]:
            raise LayerError(name, f"x has batch {x_shape[0]} but the context has batch {c_shape[0]}")
        check_keys(name, "params", params, list(_PARTS))
        for part, expected in shapes(x_shape[2], c_shape[2]).items():
            check_param_shapes(f"{name}/{part}", params[part], expected)
        keep = read_mask(name, xp, mask, c_shape[:2])
        drop = train and rate > 0.0
        if drop and key is None:
            raise LayerError(name, "train mode with dropout_rate > 0 needs a random key for the attention dropout; "
                                   "pass key=..., or use train=False")
        k_size, v_size, _ = sizes(x_shape[2])
        q = to_heads_first(xp, _project(x, params["query"], (heads, k_size)))
        k = to_heads_first(xp, _project(c, params["key"], (heads, k_size)))
        v = to_heads_first(xp, _project(c, params["value"], (heads, v_size)))
        mask4 = None if keep is None else keep.reshape(c_shape[0], 1, 1, c_shape[1])
        opts = dict(mask=mask4, causal=causal, dropout_rate=rate if drop else 0.0, dropout_key=key if drop else None,
                    implementation=implementation)
        o, lse = kernel.attention_fwd(q, k, v, **opts)
        y = _out(xp, from_heads_first(xp, o), params["out"], use_bias)
        res = {"x": x, "q": q, "k": k, "v": v, "o": o, "lse": lse, "context": context, "mask4": mask4,
               "dropout_key": key if drop else None,
               "given": None if given is None else {g: (mask if g == "mask" else None) for g in given}}
        return y, state, {k_: v_ for k_, v_ in res.items() if v_ is not None}

    def bwd(params, res, dy, *, input_grad=True):
        opts = dict(use_bias=use_bias, causal=causal, rate=rate, implementation=implementation)
        return _backward(params, res, dy, input_grad, **opts)

    return Layer(name, init, out_shape, fwd, bwd)

