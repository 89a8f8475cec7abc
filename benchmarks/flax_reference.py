"""flax.linen contender for W1-W6: the workloads as ``nn.Module`` classes the
way a Flax user writes them (``nn.Dense``, ``nn.Conv``, ``nn.max_pool``,
``nn.RNN`` over an ``nn.OptimizedLSTMCell``, ``nn.BatchNorm`` with its
``batch_stats`` collection, ``nn.LayerNorm``, ``nn.MultiHeadDotProductAttention``),
loaded from fnn's parameters.

The submodules carry fnn's layer names, so most arrays are the same arrays
under Flax's leaf names (``w`` -> ``kernel``, ``b`` -> ``bias``); Flax's
Dense, Conv (HWIO) and attention kernels (``(D, H, K)`` and ``(H, V, D)``)
have fnn's layouts. A ResNet block's ``residual/main/X`` is the block's ``X``
and ``residual/shortcut/X`` its ``shortcut_X``. The LSTM cell holds one
kernel per gate (``ii``, ``if``, ``ig``, ``io`` on the input, ``hi`` ... on
``h``, the bias on the latter): the column blocks (i, f, g, o) of fnn's
``w_x``, ``w_h`` and ``b``. Batch norm: ``momentum=0.9`` (fnn's running
average) and ``epsilon=1e-5``; layer norm ``epsilon=1e-5`` (Flax's default is
1e-6).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.libraries import (
    Binding,
    Built,
    block_names,
    classification_or_mse,
    column_blocks,
    dense_names,
    fnn_leaves,
    load_dict,
    one,
)
from benchmarks.workloads import Workload

LEAF = {"w": "kernel", "b": "bias", "scale": "scale", "bias": "bias"}
GATES = "ifgo"  # fnn's (and Flax's) gate order


class MLP(nn.Module):
    """``dense -> relu -> ... -> dense``."""

    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        names = ["dense"] + [f"dense_{i}" for i in range(1, len(self.widths))]
        for i, (name, width) in enumerate(zip(names, self.widths)):
            x = nn.Dense(width, name=name)(x)
            if i < len(self.widths) - 1:
                x = nn.relu(x)
        return x


class LeNet(nn.Module):
    """LeNet with its dense layers inline (Flax names them as fnn does: ``dense``, ``dense_1``, ...)."""

    channels: tuple[int, int]
    kernel: int
    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        k = (self.kernel, self.kernel)
        x = nn.max_pool(nn.relu(nn.Conv(self.channels[0], k, padding="SAME", name="conv2d")(x)), (2, 2), (2, 2))
        x = nn.max_pool(nn.relu(nn.Conv(self.channels[1], k, padding="VALID", name="conv2d_1")(x)), (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.widths):
            x = nn.Dense(width, name="dense" if i == 0 else f"dense_{i}")(x)
            if i < len(self.widths) - 1:
                x = nn.relu(x)
        return x


class LSTMClassifier(nn.Module):
    """An LSTM over ``(batch, time, features)`` from a zero state; its last ``h`` feeds a dense head."""

    hidden: int
    classes: int

    @nn.compact
    def __call__(self, x):
        h = nn.RNN(nn.OptimizedLSTMCell(self.hidden, name="lstm"))(x)
        return nn.Dense(self.classes, name="dense")(h[:, -1])


class Block(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``, a projection shortcut when ``stride`` is 2."""

    features: int
    stride: int

    @nn.compact
    def __call__(self, x):
        norm = lambda name: nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, name=name)
        s = (self.stride, self.stride)
        h = nn.Conv(self.features, (3, 3), s, padding="SAME", use_bias=False, name="conv2d")(x)
        h = nn.relu(norm("batch_norm")(h))
        h = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False, name="conv2d_1")(h)
        h = norm("batch_norm_1")(h)
        if self.stride != 1:
            x = nn.Conv(self.features, (1, 1), s, padding="SAME", use_bias=False, name="shortcut_conv2d")(x)
            x = norm("shortcut_batch_norm")(x)
        return nn.relu(h + x)


class ResNet(nn.Module):
    """Stem conv 3x3 -> bn -> relu, the basic blocks, global average pooling, dense head."""

    stem: int
    blocks: tuple[tuple[str, int, int], ...]  # (name, features, stride)
    classes: int

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.stem, (3, 3), padding="SAME", use_bias=False, name="stem")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, name="batch_norm")(x))
        for name, features, stride in self.blocks:
            x = Block(features, stride, name=name)(x)
        return nn.Dense(self.classes, name="dense")(jnp.mean(x, axis=(1, 2)))


class MLPBlock(nn.Module):
    """``dense(gelu(dense(x)))``, the tanh form of gelu."""

    hidden: int
    width: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.width, name="dense_1")(nn.gelu(nn.Dense(self.hidden, name="dense")(x), approximate=True))


class TransformerBlock(nn.Module):
    """Pre-norm: ``h = x + attention(norm(x))``, ``y = h + mlp(norm(h))``."""

    heads: int
    key_size: int
    hidden: int

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        attention = nn.MultiHeadDotProductAttention(
            self.heads, qkv_features=self.heads * self.key_size, out_features=width, name="attention"
        )
        h = x + attention(nn.LayerNorm(epsilon=1e-5, name="attention_norm")(x))
        return h + MLPBlock(self.hidden, width, name="mlp")(nn.LayerNorm(epsilon=1e-5, name="mlp_norm")(h))


def _renamed(path: tuple[str, ...]) -> tuple[str, ...]:
    """fnn's path of an array -> Flax's (the leaf renamed; a block's ``residual`` levels folded)."""
    *modules, leaf = path
    if len(modules) >= 3 and modules[1] == "residual":
        prefix = "" if modules[2] == "main" else "shortcut_"
        modules = [modules[0], prefix + modules[3]]
    return (*modules, LEAF[leaf])


def bindings_of(workload: Workload, params: dict) -> list[Binding]:
    """Every fnn array's Flax array(s); an LSTM's ``w_x``, ``w_h``, ``b`` are the gates' column blocks."""
    out = []
    for path in fnn_leaves(params):
        if path[0] == "lstm":
            kind, leaf = {"w_x": ("i", "kernel"), "w_h": ("h", "kernel"), "b": ("h", "bias")}[path[1]]
            out.append(column_blocks(path, tuple(("lstm", kind + gate, leaf) for gate in GATES)))
        else:
            out.append(one(path, _renamed(path)))
    return out


def model_of(workload: Workload, params: dict) -> nn.Module:
    """The workload's Flax module, its sizes read from fnn's params."""
    key = workload.key
    if key in ("W1", "W3"):
        return MLP(tuple(params[n]["w"].shape[1] for n in dense_names(params)))
    if key == "W2":
        widths = tuple(params[n]["w"].shape[1] for n in dense_names(params))
        channels = (params["conv2d"]["w"].shape[3], params["conv2d_1"]["w"].shape[3])
        return LeNet(channels, params["conv2d"]["w"].shape[0], widths)
    if key == "W4":
        return LSTMClassifier(params["lstm"]["w_h"].shape[0], params["dense"]["w"].shape[1])
    if key == "W5":
        blocks = tuple(
            (n, params[n]["residual"]["main"]["conv2d"]["w"].shape[3], 2 if "shortcut" in params[n]["residual"] else 1)
            for n in block_names(params)
        )
        return ResNet(params["stem"]["w"].shape[3], blocks, params["dense"]["w"].shape[1])
    if key == "W6":
        _, heads, key_size = params["attention"]["query"]["w"].shape
        return TransformerBlock(heads, key_size, params["mlp"]["dense"]["w"].shape[1])
    raise ValueError(f"no Flax model for workload {key!r}")


def initial_statistics(shapes: Any) -> Any:
    """Batch norm's running statistics as Flax's init makes them: means 0, variances 1."""
    paths = jax.tree_util.tree_flatten_with_path(shapes)[0]
    treedef = jax.tree.structure(shapes)
    values = [(np.ones if str(path[-1].key) == "var" else np.zeros)(s.shape, s.dtype) for path, s in paths]
    return jax.tree.unflatten(treedef, [jnp.asarray(v) for v in values])


def build(workload: Workload, params: Any, state: Any) -> Built:
    """The Flax model of ``workload`` with fnn's initial ``params`` (``state``: batch norm's
    running statistics start at Flax's own zeros / ones, which equal fnn's)."""
    del state
    model = model_of(workload, params)
    x, _ = workload.data()
    # shapes only (no computation): every parameter is replaced by fnn's
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.asarray(x[:1]))
    template = dict(variables["params"])
    collections = {k: initial_statistics(v) for k, v in variables.items() if k != "params"}
    bindings = bindings_of(workload, params)
    lib_params = load_dict(template, bindings, params, f"Flax {workload.key}")

    def forward(p, s, x):
        if s:
            return model.apply({"params": p, **s}, x, mutable=list(s))
        return model.apply({"params": p}, x), s

    return Built(lib_params, collections, classification_or_mse(workload, forward), bindings)

