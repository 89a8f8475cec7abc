"""The pre-norm transformer block, composed of fnn layers (layer_norm,
multi_head_attention, and an MLP built with serial from dense and gelu), so
that its backward pass is the composition of their hand-written rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fnn import backend
from fnn.combinators import modes, serial
from fnn.core import Layer, LayerError, check_keys, check_positive_int, is_multi_shape, layer_factory, scope
from fnn.layers.activations import gelu
from fnn.layers._masks import mask_cotangent
from fnn.layers.attention import check_sequence, multi_head_attention, split_input
from fnn.layers.dense import dense
from fnn.layers.dropout import dropout
from fnn.layers.normalization import layer_norm

__all__ = ["transformer_block"]


def _backward(parts: dict, params: dict, res: dict, dy: Any, input_grad: bool, drop: bool) -> tuple:
    """The block's backward: its children's hand-written rules in reverse, each
    residual add passing ``dy`` to both of its branches."""
    given = res.get("given")
    passed_on = None
    if given is not None:
        dy, passed_on = dy["x"], dy.get("mask")

    def back(n, d, need=True):
        with scope(n):
            g, dz = parts[n].bwd(params.get(n, {}), res[n], d, input_grad=need)
        if n in params:
            grads[n] = g
        return dz

    grads = {}
    dh = dy + back("mlp_norm", back("mlp", dy))
    da = back("dropout", dh) if drop else dh
    da = back("attention", da)
    if isinstance(da, Mapping):
        da = da["x"]
    dx = back("attention_norm", da, input_grad)
    if not input_grad:
        return grads, None
    dx = dh + dx
    if given is None:
        return grads, dx
    dinputs = {"x": dx}
    if "mask" in given:
        dinputs["mask"] = mask_cotangent(backend.namespace(dy), given["mask"], passed_on)
    return grads, dinputs


@layer_factory
def transformer_block(
    num_heads: int,
    mlp_features: int,
    *,
    causal: bool = False,
    dropout_rate: float = 0.0,
    key_size: int | None = None,
    use_bias: bool = True,
    eps: float = 1e-5,
    implementation: str = "auto",
    name: str = "transformer_block",
) -> Layer:
    """Pre-norm transformer block on ``x (N, T, D)`` or ``{"x": x, "mask": mask}``::

        h = x + drop(attention(layer_norm(x), mask))
        y = h + drop(dense_D(gelu(dense_F(layer_norm(h)))))      F = mlp_features

    Params ``{"attention_norm": layer_norm, "attention": multi_head_attention,
    "mlp_norm": layer_norm, "mlp": {"dense", "gelu", "dense_1"}}``: each child is
    an fnn layer (the MLP a :func:`fnn.layers.serial`), and the backward pass is
    the composition of their hand-written rules (the residual adds pass ``dy``
    to both branches). ``dropout_rate`` is the attention dropout and the
    dropout of each branch before its residual add (train mode, needs a key);
    ``use_bias`` and ``key_size`` are the attention's.

    A dict input keeps its form: ``{"x": y, "mask": mask}`` comes out, so that
    blocks stack with :func:`fnn.layers.serial` and every block sees the mask.

    >>> import numpy as np, fnn
    >>> block = fnn.layers.transformer_block(2, 16)
    >>> params, state = block.init(np.random.default_rng(0), (None, 5, 8))
    >>> sorted(params)
    ['attention', 'attention_norm', 'mlp', 'mlp_norm']
    >>> block.apply(params, state, np.ones((3, 5, 8), np.float32))[0].shape
    (3, 5, 8)
    """
    check_positive_int(name, "mlp_features", mlp_features)
    attention = multi_head_attention(num_heads, key_size=key_size, use_bias=use_bias, causal=causal,
                                     dropout_rate=dropout_rate, implementation=implementation, name="attention")
    norms = {n: layer_norm(eps=eps, name=n) for n in ("attention_norm", "mlp_norm")}
    drop = [dropout(dropout_rate)] if dropout_rate > 0 else []

    def children(d: int) -> dict[str, Layer]:
        mlp = serial(dense(mlp_features), gelu, dense(d), *drop, name="mlp")
        return {"attention_norm": norms["attention_norm"], "attention": attention, "mlp_norm": norms["mlp_norm"],
                "mlp": mlp, **({"dropout": drop[0]} if drop else {})}

    def out_shape(shape):
        if is_multi_shape(shape):
            raise LayerError(name, f"expected the shape of x, (batch, time, features); got several shapes {shape}")
        return check_sequence(name, "x", shape)

    def init(key, shape, dtype):
        parts = children(out_shape(shape)[2])
        params, state = {}, {}
        for n in ("attention_norm", "attention", "mlp_norm", "mlp"):
            with scope(n):
                params[n], state[n] = parts[n].init(backend.fold_in_name(key, n), shape, dtype=dtype)
        return params, state

    def forward(params, state, inputs, key, train, call):
        x, _, mask, given = split_input(name, inputs, ("x", "mask"))
        parts = children(check_sequence(name, "x", tuple(np.shape(x)))[2])
        check_keys(name, "params", params, ["attention_norm", "attention", "mlp_norm", "mlp"])
        new_state, res = dict(state), {}

        def run(n, z):
            with scope(n):
                out, child_state, res[n] = call(parts[n], params.get(n, {}), state.get(n, {}), z,
                                                backend.fold_in_name(key, n), train)
            if n in state:
                new_state[n] = child_state
            return out

        a = run("attention_norm", x)
        a = run("attention", a if mask is None else {"x": a, "mask": mask})
        h = x + (run("dropout", a) if drop else a)
        y = h + run("mlp", run("mlp_norm", h))
        if given is not None:
            res["given"] = {"mask": mask} if mask is not None else {}
            y = {"x": y, "mask": mask} if mask is not None else {"x": y}
        return y, new_state, res

    def bwd(params, res, dy, *, input_grad=True):
        return _backward(children(params["mlp"]["dense_1"]["w"].shape[1]), params, res, dy, input_grad, bool(drop))

    both = modes(forward)  # fwd runs the children's fwd, apply their own apply
    return Layer(name, init, out_shape, both["fwd"], bwd, apply=both["apply"])
