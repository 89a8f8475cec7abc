"""Equinox contender for W1-W6: the workloads as ``eqx.Module`` classes the
way an Equinox user writes them (``eqx.nn.Linear``, ``eqx.nn.Conv2d``,
``eqx.nn.MaxPool2d``, ``eqx.nn.LSTMCell`` in a ``lax.scan``,
``eqx.nn.BatchNorm`` with an ``eqx.nn.State``, ``eqx.nn.LayerNorm``,
``eqx.nn.MultiheadAttention``): each model maps one example, and the batch is
a ``jax.vmap`` over it (with ``axis_name="batch"`` for batch norm's
statistics). The model's arrays are its parameters (``eqx.partition``), the
rest is closed over by the step.

Layouts: Linear's weight is ``(out, in)`` (fnn's ``w.T``); Conv2d's is OIHW
on channel-first ``(C, H, W)`` examples (the NHWC batch is transposed once,
outside the step); LeNet's flatten is in (c, h, w) order, so its first dense
weight's rows are permuted from fnn's (h, w, c); LSTMCell's ``weight_ih``,
``weight_hh`` are ``w_x.T``, ``w_h.T`` (gates i, f, g, o, as fnn's); the
attention projections are Linear layers over the ``H * K`` flattened heads.
Batch norm: ``mode="batch"`` (batch statistics in training, as fnn),
``momentum=0.9``, ``eps=1e-5``. "Same" paddings are explicit ``(before,
after)`` pairs, as XLA pads.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks.libraries import (
    Binding,
    Built,
    block_names,
    classification_or_mse,
    dense_names,
    fnn_leaves,
    get,
    one,
    same_padding,
)
from benchmarks.workloads import Workload

KEY = jax.random.PRNGKey(0)  # the layers' own init, replaced by fnn's values


def _linear(w: np.ndarray) -> eqx.nn.Linear:
    return eqx.nn.Linear(w.shape[0], w.shape[1], key=KEY)


def _dense(fnn: tuple, lib: tuple) -> list[Binding]:
    return [one((*fnn, "w"), (*lib, "weight"), lambda a: a.T, lambda t: t.T), one((*fnn, "b"), (*lib, "bias"))]


def _conv(fnn: tuple, lib: tuple, bias: bool = True) -> list[Binding]:
    out = [one((*fnn, "w"), (*lib, "weight"), lambda a: a.transpose(3, 2, 0, 1), lambda t: t.transpose(2, 3, 1, 0))]
    if bias:  # Conv2d's bias is (F, 1, 1)
        out.append(one((*fnn, "b"), (*lib, "bias"), lambda a: a.reshape(-1, 1, 1), lambda t: t.reshape(-1)))
    return out


def _norm(fnn: tuple, lib: tuple) -> list[Binding]:
    return [one((*fnn, "scale"), (*lib, "weight")), one((*fnn, "bias"), (*lib, "bias"))]


class MLP(eqx.Module):
    """``dense -> relu -> ... -> dense`` on one example."""

    layers: list[eqx.nn.Linear]

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


class LeNet(eqx.Module):
    """conv same -> relu -> pool 2 -> conv valid -> relu -> pool 2 -> flatten (c, h, w) -> MLP."""

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    pool: eqx.nn.MaxPool2d
    head: MLP

    def __call__(self, x):
        x = self.pool(jax.nn.relu(self.conv1(x)))
        x = self.pool(jax.nn.relu(self.conv2(x)))
        return self.head(x.reshape(-1))


class LSTMClassifier(eqx.Module):
    """An LSTM cell scanned over one ``(time, features)`` sequence from a zero state; the last ``h`` feeds a head."""

    cell: eqx.nn.LSTMCell
    head: eqx.nn.Linear

    def __call__(self, x):
        zeros = jnp.zeros(self.cell.hidden_size, x.dtype)
        (h, _), _ = lax.scan(lambda carry, xt: (self.cell(xt, carry), None), (zeros, zeros), x)
        return self.head(h)


class Block(eqx.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``, a projection shortcut when it halves the image."""

    conv1: eqx.nn.Conv2d
    bn1: eqx.nn.BatchNorm
    conv2: eqx.nn.Conv2d
    bn2: eqx.nn.BatchNorm
    shortcut: tuple[eqx.nn.Conv2d, eqx.nn.BatchNorm] | None

    def __call__(self, x, state):
        h, state = self.bn1(self.conv1(x), state)
        h, state = self.bn2(self.conv2(jax.nn.relu(h)), state)
        if self.shortcut is not None:
            conv, bn = self.shortcut
            x, state = bn(conv(x), state)
        return jax.nn.relu(h + x), state


class ResNet(eqx.Module):
    """Stem conv 3x3 -> bn -> relu, the basic blocks, global average pooling, linear head."""

    stem: eqx.nn.Conv2d
    bn: eqx.nn.BatchNorm
    blocks: list[Block]
    head: eqx.nn.Linear

    def __call__(self, x, state):
        x, state = self.bn(self.stem(x), state)
        x = jax.nn.relu(x)
        for block in self.blocks:
            x, state = block(x, state)
        return self.head(jnp.mean(x, axis=(1, 2))), state


class TransformerBlock(eqx.Module):
    """Pre-norm on one ``(T, D)`` sequence: ``h = x + attention(norm(x))``, ``y = h + mlp(norm(h))``."""

    attention_norm: eqx.nn.LayerNorm
    attention: eqx.nn.MultiheadAttention
    mlp_norm: eqx.nn.LayerNorm
    dense1: eqx.nn.Linear
    dense2: eqx.nn.Linear

    def __call__(self, x):
        y = jax.vmap(self.attention_norm)(x)
        h = x + self.attention(y, y, y)
        z = jax.vmap(self.dense1)(jax.vmap(self.mlp_norm)(h))
        return h + jax.vmap(self.dense2)(jax.nn.gelu(z, approximate=True))


def _batch_norm(channels: int) -> eqx.nn.BatchNorm:
    return eqx.nn.BatchNorm(channels, axis_name="batch", eps=1e-5, momentum=0.9, mode="batch")


def _same_conv(w: np.ndarray, size: int, stride: int) -> eqx.nn.Conv2d:
    kh, _, c_in, c_out = w.shape
    pad = same_padding(size, kh, stride)
    return eqx.nn.Conv2d(c_in, c_out, kh, stride, padding=(pad, pad), use_bias=False, key=KEY)


def _mlp_of(params: dict) -> tuple[MLP, list[Binding]]:
    names = dense_names(params)
    model = MLP([_linear(params[n]["w"]) for n in names])
    return model, [b for i, n in enumerate(names) for b in _dense((n,), ("layers", i))]


def _lenet(params: dict, image: int) -> tuple[LeNet, list[Binding]]:
    w1, w2 = params["conv2d"]["w"], params["conv2d_1"]["w"]
    pad = same_padding(image, w1.shape[0], 1)
    conv1 = eqx.nn.Conv2d(w1.shape[2], w1.shape[3], w1.shape[0], padding=(pad, pad), key=KEY)
    conv2 = eqx.nn.Conv2d(w2.shape[2], w2.shape[3], w2.shape[0], key=KEY)
    head, bindings = _mlp_of(params)
    side = (image // 2 - w2.shape[0] + 1) // 2
    hwc = (side, side, w2.shape[3])
    first = params["dense"]["w"].shape[1]

    def to_lib(a):  # rows (h, w, c) -> columns (c, h, w)
        return a.reshape(*hwc, first).transpose(3, 2, 0, 1).reshape(first, -1)

    def to_fnn(t):
        return t.reshape(first, hwc[2], hwc[0], hwc[1]).transpose(2, 3, 1, 0).reshape(-1, first)

    bindings = [
        Binding(b.fnns, tuple(("head", *lib) for lib in b.libs), b.to_lib, b.to_fnn)
        for b in bindings
        if b.fnns != (("dense", "w"),)
    ]
    bindings.append(one(("dense", "w"), ("head", "layers", 0, "weight"), to_lib, to_fnn))
    bindings += _conv(("conv2d",), ("conv1",)) + _conv(("conv2d_1",), ("conv2",))
    return LeNet(conv1, conv2, eqx.nn.MaxPool2d(2, 2), head), bindings


def _resnet(params: dict, image: int) -> tuple[ResNet, list[Binding]]:
    stem = params["stem"]["w"]
    bindings = _conv(("stem",), ("stem",), bias=False) + _norm(("batch_norm",), ("bn",))
    blocks, size = [], image
    for i, name in enumerate(block_names(params)):
        residual = params[name]["residual"]
        main, project = residual["main"], "shortcut" in residual
        stride = 2 if project else 1
        w1, w2 = main["conv2d"]["w"], main["conv2d_1"]["w"]
        shortcut = None
        at, lib = (name, "residual", "main"), ("blocks", i)
        bindings += _conv((*at, "conv2d"), (*lib, "conv1"), bias=False) + _norm((*at, "batch_norm"), (*lib, "bn1"))
        bindings += _conv((*at, "conv2d_1"), (*lib, "conv2"), bias=False) + _norm((*at, "batch_norm_1"), (*lib, "bn2"))
        if project:
            ws = residual["shortcut"]["conv2d"]["w"]
            shortcut = (_same_conv(ws, size, stride), _batch_norm(ws.shape[3]))
            at = (name, "residual", "shortcut")
            bindings += _conv((*at, "conv2d"), (*lib, "shortcut", 0), bias=False)
            bindings += _norm((*at, "batch_norm"), (*lib, "shortcut", 1))
        conv1 = _same_conv(w1, size, stride)
        size = -(-size // stride)
        block = Block(conv1, _batch_norm(w1.shape[3]), _same_conv(w2, size, 1), _batch_norm(w2.shape[3]), shortcut)
        blocks.append(block)
    bindings += _dense(("dense",), ("head",))
    model = ResNet(_same_conv(stem, image, 1), _batch_norm(stem.shape[3]), blocks, _linear(params["dense"]["w"]))
    return model, bindings


def _transformer(params: dict) -> tuple[TransformerBlock, list[Binding]]:
    p = params["attention"]
    width, heads, key_size = p["query"]["w"].shape
    value_size = p["value"]["w"].shape[2]
    attention = eqx.nn.MultiheadAttention(
        heads,
        width,
        qk_size=key_size,
        vo_size=value_size,
        use_query_bias=True,
        use_key_bias=True,
        use_value_bias=True,
        use_output_bias=True,
        key=KEY,
    )
    bindings = _norm(("attention_norm",), ("attention_norm",)) + _norm(("mlp_norm",), ("mlp_norm",))
    for name, proj in (("query", "query_proj"), ("key", "key_proj"), ("value", "value_proj")):
        shape_w, shape_b = p[name]["w"].shape, p[name]["b"].shape
        bindings += [
            one(("attention", name, "w"), ("attention", proj, "weight"), lambda a: a.reshape(a.shape[0], -1).T,
                lambda t, s=shape_w: t.T.reshape(s)),
            one(("attention", name, "b"), ("attention", proj, "bias"), lambda a: a.reshape(-1),
                lambda t, s=shape_b: t.reshape(s)),
        ]
    shape_out = p["out"]["w"].shape
    bindings += [
        one(("attention", "out", "w"), ("attention", "output_proj", "weight"), lambda a: a.reshape(-1, a.shape[-1]).T,
            lambda t, s=shape_out: t.T.reshape(s)),
        one(("attention", "out", "b"), ("attention", "output_proj", "bias")),
    ]
    bindings += _dense(("mlp", "dense"), ("dense1",)) + _dense(("mlp", "dense_1"), ("dense2",))
    mlp = params["mlp"]
    model = TransformerBlock(
        eqx.nn.LayerNorm(width, eps=1e-5),
        attention,
        eqx.nn.LayerNorm(width, eps=1e-5),
        _linear(mlp["dense"]["w"]),
        _linear(mlp["dense_1"]["w"]),
    )
    return model, bindings


def model_of(workload: Workload, params: dict) -> tuple[eqx.Module, list[Binding]]:
    """The workload's Equinox model (random init) and the bindings of its arrays to fnn's."""
    key = workload.key
    if key in ("W1", "W3"):
        return _mlp_of(params)
    if key == "W2":
        return _lenet(params, workload.input_shape[0])
    if key == "W4":
        w_x, w_h = params["lstm"]["w_x"], params["lstm"]["w_h"]
        model = LSTMClassifier(eqx.nn.LSTMCell(w_x.shape[0], w_h.shape[0], key=KEY), _linear(params["dense"]["w"]))
        bindings = [
            one(("lstm", "w_x"), ("cell", "weight_ih"), lambda a: a.T, lambda t: t.T),
            one(("lstm", "w_h"), ("cell", "weight_hh"), lambda a: a.T, lambda t: t.T),
            one(("lstm", "b"), ("cell", "bias")),
        ]
        return model, bindings + _dense(("dense",), ("head",))
    if key == "W5":
        return _resnet(params, workload.input_shape[0])
    if key == "W6":
        return _transformer(params)
    raise ValueError(f"no Equinox model for workload {key!r}")


def load(model: eqx.Module, bindings: list[Binding], params: Any, where: str) -> eqx.Module:
    """``model`` with every bound array replaced by fnn's (shapes checked)."""
    values = fnn_leaves(params)
    bound = [p for b in bindings for p in b.fnns]
    if sorted(bound) != sorted(values):
        raise ValueError(f"{where}: fnn arrays {sorted(set(values) ^ set(bound))} are not bound exactly once")
    paths, arrays = [], []
    for b in bindings:
        for lib, value in zip(b.libs, b.to_lib(tuple(values[p] for p in b.fnns)), strict=True):
            old = get(model, lib)
            if tuple(np.shape(value)) != tuple(old.shape):
                raise ValueError(f"{where}: {b.fnns} -> {lib}: shape {np.shape(value)} does not fit {old.shape}")
            paths.append(lib)
            arrays.append(jnp.asarray(value, dtype=jnp.float32))
    return eqx.tree_at(lambda m: [get(m, p) for p in paths], model, arrays)


def build(workload: Workload, params: Any, state: Any) -> Built:
    """The Equinox model of ``workload`` with fnn's initial ``params`` (``state``: batch
    norm's running statistics, Equinox's own, which the train-mode forward does not read)."""
    del state
    model, bindings = model_of(workload, params)
    model = load(model, bindings, params, f"Equinox {workload.key}")
    lib_params, static = eqx.partition(model, eqx.is_inexact_array)
    images = workload.key in ("W2", "W5")
    if workload.key == "W5":
        lib_state = eqx.nn.State(model)

        def forward(p, s, x):
            batched = jax.vmap(eqx.combine(p, static), axis_name="batch", in_axes=(0, None), out_axes=(0, None))
            return batched(x, s)

    else:
        lib_state = None

        def forward(p, s, x):
            return jax.vmap(eqx.combine(p, static))(x), s

    def inputs(x, y):
        return (np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if images else x), y

    return Built(lib_params, lib_state, classification_or_mse(workload, forward), bindings, inputs)
