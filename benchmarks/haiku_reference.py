"""Haiku contender for W1-W6: the workloads as functions of Haiku modules
(``hk.Linear``, ``hk.Conv2D``, ``hk.max_pool``, ``hk.LSTM`` unrolled by
``hk.dynamic_unroll``, ``hk.BatchNorm`` with its state, ``hk.LayerNorm``,
``hk.MultiHeadAttention``) under ``hk.transform_with_state``, loaded from
fnn's parameters.

Modules are created under ``hk.name_scope`` with fnn's layer paths, so a
Haiku parameter ``"a/b/c"`` / ``leaf`` is fnn's ``a/b/c/leaf`` with
``bias`` called ``offset`` in the normalisations; Linear (``(in, out)``) and
Conv2D (HWIO) weights have fnn's layouts. Batch norm's scale and offset are
``(1, 1, 1, C)`` in Haiku. Attention's projections are ``hk.Linear`` layers
over the ``H * K`` flattened heads: fnn's ``(D, H, K)`` weights reshaped to
``(D, H K)``, the output's ``(H, V, D)`` to ``(H V, D)``. ``hk.LSTM`` holds
one ``(F + H, 4H)`` weight over ``[x, h]`` with its gates in the order (i, g,
f, o) and adds 1 to the forget gate's pre-activation: fnn's ``w_x`` over
``w_h``, columns reordered, and fnn's forget bias minus 1.
"""

from __future__ import annotations

from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.libraries import Binding, Built, block_names, classification_or_mse, fnn_leaves, load_dict, one
from benchmarks.workloads import Workload

HAIKU_GATES = (0, 2, 1, 3)  # Haiku's gate blocks (i, g, f, o) as fnn's (i, f, g, o) indices
FORGET_BIAS = 1.0  # hk.LSTM adds it to the forget gate


def _mlp(params: dict, x, final_relu: bool = False):
    names = sorted(params, key=lambda k: int(k[6:] or 0))
    for i, name in enumerate(names):
        x = hk.Linear(params[name]["w"].shape[1], name=name)(x)
        if i < len(names) - 1 or final_relu:
            x = jax.nn.relu(x)
    return x


def _dense(params: dict) -> dict:
    return {k: v for k, v in params.items() if k == "dense" or k.startswith("dense_")}


def _batch_norm(name: str):
    return hk.BatchNorm(create_scale=True, create_offset=True, decay_rate=0.9, eps=1e-5, name=name)


def forward_of(workload: Workload, params: dict):
    """The workload's forward ``f(x)`` of Haiku modules (to be transformed), its sizes read from fnn's params."""
    key = workload.key
    if key in ("W1", "W3"):
        return lambda x: _mlp(_dense(params), x)
    if key == "W2":
        kernel = params["conv2d"]["w"].shape[0]

        def lenet(x):
            x = hk.Conv2D(params["conv2d"]["w"].shape[3], kernel, padding="SAME", name="conv2d")(x)
            x = hk.max_pool(jax.nn.relu(x), (1, 2, 2, 1), (1, 2, 2, 1), padding="VALID")
            x = hk.Conv2D(params["conv2d_1"]["w"].shape[3], kernel, padding="VALID", name="conv2d_1")(x)
            x = hk.max_pool(jax.nn.relu(x), (1, 2, 2, 1), (1, 2, 2, 1), padding="VALID")
            return _mlp(_dense(params), hk.Flatten()(x))

        return lenet
    if key == "W4":
        hidden = params["lstm"]["w_h"].shape[0]

        def classifier(x):
            core = hk.LSTM(hidden, name="lstm")
            h, _ = hk.dynamic_unroll(core, x, core.initial_state(x.shape[0]), time_major=False)
            return hk.Linear(params["dense"]["w"].shape[1], name="dense")(h[:, -1])

        return classifier
    if key == "W5":
        return lambda x: _resnet(params, x)
    if key == "W6":
        return lambda x: _transformer(params, x)
    raise ValueError(f"no Haiku model for workload {key!r}")


def _resnet(params: dict, x):
    x = hk.Conv2D(params["stem"]["w"].shape[3], 3, padding="SAME", with_bias=False, name="stem")(x)
    x = jax.nn.relu(_batch_norm("batch_norm")(x, is_training=True))
    for name in block_names(params):
        residual = params[name]["residual"]
        stride = 2 if "shortcut" in residual else 1
        features = residual["main"]["conv2d"]["w"].shape[3]
        with hk.name_scope(f"{name}/residual"):
            with hk.name_scope("main"):
                h = hk.Conv2D(features, 3, stride, padding="SAME", with_bias=False, name="conv2d")(x)
                h = jax.nn.relu(_batch_norm("batch_norm")(h, is_training=True))
                h = hk.Conv2D(features, 3, padding="SAME", with_bias=False, name="conv2d_1")(h)
                h = _batch_norm("batch_norm_1")(h, is_training=True)
            if stride != 1:
                with hk.name_scope("shortcut"):
                    x = hk.Conv2D(features, 1, stride, padding="SAME", with_bias=False, name="conv2d")(x)
                    x = _batch_norm("batch_norm")(x, is_training=True)
        x = jax.nn.relu(h + x)
    return hk.Linear(params["dense"]["w"].shape[1], name="dense")(jnp.mean(x, axis=(1, 2)))


def _transformer(params: dict, x):
    width, heads, key_size = params["attention"]["query"]["w"].shape
    norm = lambda name: hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, eps=1e-5, name=name)
    attention = hk.MultiHeadAttention(
        heads, key_size, w_init=hk.initializers.VarianceScaling(1.0), model_size=width, name="attention"
    )
    y = norm("attention_norm")(x)
    h = x + attention(y, y, y)
    z = norm("mlp_norm")(h)
    with hk.name_scope("mlp"):
        z = hk.Linear(params["mlp"]["dense"]["w"].shape[1], name="dense")(z)
        z = hk.Linear(width, name="dense_1")(jax.nn.gelu(z, approximate=True))
    return h + z


def _gates_to_haiku(a: np.ndarray) -> np.ndarray:
    blocks = np.split(a, 4, axis=-1)
    return np.concatenate([blocks[g] for g in HAIKU_GATES], axis=-1)


def _gates_to_fnn(a: np.ndarray) -> np.ndarray:
    blocks = np.split(a, 4, axis=-1)
    return np.concatenate([blocks[HAIKU_GATES.index(g)] for g in range(4)], axis=-1)


def _lstm_bindings(params: dict) -> list[Binding]:
    """Haiku's one weight is ``[w_x; w_h]`` with its columns in Haiku's gate order; its bias
    is fnn's, reordered, minus the forget bias Haiku adds back."""
    features, gates = params["lstm"]["w_x"].shape
    forget = np.zeros(gates, np.float32)
    forget[HAIKU_GATES.index(1) * gates // 4 : (HAIKU_GATES.index(1) + 1) * gates // 4] = FORGET_BIAS
    weight = Binding(
        (("lstm", "w_x"), ("lstm", "w_h")),
        (("lstm/linear", "w"),),
        lambda a: (_gates_to_haiku(np.concatenate(a, axis=0)),),
        lambda t: (_gates_to_fnn(t[0][:features]), _gates_to_fnn(t[0][features:])),
    )
    bias = one(
        ("lstm", "b"), ("lstm/linear", "b"), lambda a: _gates_to_haiku(a) - forget, lambda t: _gates_to_fnn(t + forget)
    )
    return [weight, bias]


def _flat_heads(shape: tuple[int, ...], leading: int) -> tuple:
    """(to Haiku, to fnn) for an attention array whose first ``leading`` axes are Haiku's rows."""
    rows = int(np.prod(shape[:leading]))
    return lambda a: a.reshape(rows, -1) if len(shape) > 1 and leading else a.reshape(-1), lambda t: t.reshape(shape)


def bindings_of(params: dict) -> list[Binding]:
    """Every fnn array's Haiku array."""
    out = _lstm_bindings(params) if "lstm" in params else []
    image = "stem" in params  # the ResNet's batch norms hold (1, 1, 1, C) arrays
    for path in fnn_leaves(params):
        *modules, leaf = path
        module = "/".join(modules)
        shape = params
        for key in path:
            shape = shape[key]
        shape = np.shape(shape)
        if modules[0] == "lstm":
            continue
        if modules[-1].endswith("norm") or modules[-1].startswith("batch_norm"):
            name = "offset" if leaf == "bias" else leaf
            if image:
                out.append(one(path, (module, name), lambda a: a.reshape(1, 1, 1, -1), lambda t: t.reshape(-1)))
            else:
                out.append(one(path, (module, name)))
        elif modules[0] == "attention":
            lib = "attention/linear" if modules[1] == "out" else module
            leading = {"w": 2 if modules[1] == "out" else 1, "b": 0}[leaf]
            out.append(one(path, (lib, leaf), *_flat_heads(shape, leading)))
        else:
            out.append(one(path, (module, leaf)))
    return out


def build(workload: Workload, params: Any, state: Any) -> Built:
    """The Haiku model of ``workload`` with fnn's initial ``params`` (``state``: Haiku's own
    batch-norm averages, which do not enter the train-mode forward)."""
    del state
    transformed = hk.without_apply_rng(hk.transform_with_state(forward_of(workload, params)))
    x, _ = workload.data()
    # shapes only (no computation): every parameter is replaced by fnn's, and Haiku's
    # initial batch-norm averages (counters, hidden and average values) are zeros
    template, state_shapes = jax.eval_shape(transformed.init, jax.random.PRNGKey(0), jnp.asarray(x[:1]))
    template = {k: dict(v) for k, v in template.items()}
    lib_state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state_shapes)
    bindings = bindings_of(params)
    lib_params = load_dict(template, bindings, params, f"Haiku {workload.key}")

    def forward(p, s, x):
        return transformed.apply(p, s, x)

    return Built(lib_params, lib_state, classification_or_mse(workload, forward), bindings)
