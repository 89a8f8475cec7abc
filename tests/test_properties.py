"""A property-based sweep of every layer's hand-written backward rule.

For each public layer of :mod:`fnn.layers` and :mod:`fnn.combinators`, a
hypothesis strategy draws its hyper-parameters (shapes, strides, paddings,
dilations, groups, masks, train mode) and an input, and the sweep checks, in
float64, the manual ``bwd`` against ``jax.grad`` on a drawn backend (NumPy or
JAX arrays), against central finite differences on tiny cases, and the
float32 rule against the float64 one. A layer without a strategy fails
:func:`test_every_layer_has_a_strategy`.

The default run draws few examples per layer (derandomized: the same ones on
every run); ``pytest -m slow tests/test_properties.py`` runs a wider sweep.
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import fnn
from fnn import combinators as C
from fnn import gradcheck
from fnn import layers as L
from fnn.core import Layer
from fnn.gradcheck_suite import with_fixed_ids

TOL = {"autodiff": 1e-7, "numeric": 2e-5}  # float64; finite differences of a 2-feature norm are ill-conditioned
TINY = 400  # at most this many input and param entries: finite differences too


def _public_layers() -> list[str]:
    """Every public name of fnn.layers (all layers and layer factories), and every
    name of fnn.combinators that is a layer or a layer factory."""
    names = list(L.__all__)
    for name in C.__all__:
        obj = getattr(C, name)
        if (isinstance(obj, Layer) or hasattr(obj, "__wrapped__")) and name not in names:
            names.append(name)
    return names


# --------------------------------------------------------------------------- #
# Drawing helpers
# --------------------------------------------------------------------------- #


class Draw:
    """A drawn case: the layer, its input (and input shape), train mode and whether inputs sit on kinks."""

    def __init__(self, layer: Layer, x: Any, shape: Any, *, train: bool = False, kinks: bool = False):
        self.layer, self.x, self.shape, self.train, self.kinks = layer, x, shape, train, kinks


def _values(draw, shape, *, kinks_allowed: bool = True) -> tuple[np.ndarray, bool]:
    """Standard normal entries away from 0, or (when drawn) with some entries exactly 0 (relu's kink)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal(shape)
    x = np.where(x >= 0, x + 0.05, x - 0.05)
    on_kinks = kinks_allowed and draw(st.booleans())
    if on_kinks:
        x = np.where(rng.random(shape) < 0.25, 0.0, x)
    return x, on_kinks


# train mode first: the simplest example (the first drawn) then runs the random, train-only rules
TRAIN = st.sampled_from([True, False])


def _batch(draw) -> int:
    """2 or 3: with a batch of 1 a sum over the batch is its mean, and a bug confusing them would pass."""
    return draw(st.integers(2, 3))


def _padding(draw, rank: int, window: tuple[int, ...], *, pool: bool = False):
    kind = draw(st.sampled_from(["valid", "same", "pairs"]))
    if kind != "pairs":
        return kind
    top = [k - 1 for k in window] if pool else [2] * rank  # a pool's padding must be smaller than its window
    return tuple((draw(st.integers(0, t)), draw(st.integers(0, t))) for t in top)


def _conv(draw, rank: int | None, factory: Callable) -> Draw:
    r = rank or draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(r))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(r))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(r))
    groups = draw(st.integers(1, 2))
    channels, features = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    padding = _padding(draw, r, kernel)
    sizes = tuple((k - 1) * d + 1 + draw(st.integers(0, 3)) for k, d in zip(kernel, dilation))
    shape = (_batch(draw), *sizes, channels)
    kernel_arg = kernel[0] if rank is not None and draw(st.booleans()) else kernel
    layer = factory(features, kernel_arg, stride=stride, padding=padding, dilation=dilation, groups=groups,
                    use_bias=draw(st.booleans()))
    x, _ = _values(draw, shape, kinks_allowed=False)
    return Draw(layer, x, shape)


def _conv_transpose(draw) -> Draw:
    r = draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(r))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(r))
    lows = [draw(st.integers(0, k - 1)) for k in kernel]
    padding = tuple((lo, draw(st.integers(0, k - 1 - lo))) for lo, k in zip(lows, kernel))  # lo + hi < k: an output
    shape = (_batch(draw), *(draw(st.integers(1, 4)) for _ in range(r)), draw(st.integers(1, 3)))
    layer = L.conv_transpose(draw(st.integers(1, 3)), kernel, stride=stride, padding=padding, use_bias=draw(st.booleans()))
    x, _ = _values(draw, shape, kinks_allowed=False)
    return Draw(layer, x, shape)


def _pool(draw, factory: Callable) -> Draw:
    r = draw(st.integers(1, 3))
    window = tuple(draw(st.integers(1, 3)) for _ in range(r))
    stride = draw(st.one_of(st.none(), st.tuples(*(st.integers(1, 3) for _ in range(r)))))
    padding = _padding(draw, r, window, pool=True)
    sizes = tuple(k + draw(st.integers(0, 3)) for k in window)
    shape = (_batch(draw), *sizes, draw(st.integers(1, 3)))
    x, _ = _values(draw, shape, kinks_allowed=False)  # ties of max would make finite differences meaningless
    return Draw(factory(window, stride=stride, padding=padding), x, shape)


def _features(draw, rank_low: int = 2, rank_high: int = 3, *, low: int = 1) -> tuple[int, ...]:
    rank = draw(st.integers(rank_low, rank_high))
    return (_batch(draw), *(draw(st.integers(low, 4)) for _ in range(rank - 1)))


def _plain(layer_or_build: Any, *, rank_low: int = 2, rank_high: int = 3, kinks: bool = True, low: int = 1):
    def strategy(draw) -> Draw:
        layer = layer_or_build(draw) if callable(layer_or_build) and not isinstance(layer_or_build, Layer) else layer_or_build
        shape = _features(draw, rank_low, rank_high, low=low)
        x, on_kinks = _values(draw, shape, kinks_allowed=kinks)
        return Draw(layer, x, shape, kinks=on_kinks)

    return strategy


def _normalisation(draw, which: str) -> Draw:
    if which == "group_norm":
        groups = draw(st.integers(1, 3))
        shape = (_batch(draw), *(draw(st.integers(2, 3)) for _ in range(draw(st.integers(1, 2)))),
                 groups * draw(st.integers(1, 2)))  # >= 2 spatial entries: statistics over space and channels
        layer = L.group_norm(groups, eps=draw(st.sampled_from([1e-5, 0.1])))
        x, _ = _values(draw, shape, kinks_allowed=False)
        return Draw(layer, x, shape)
    shape = _features(draw, 2, 4, low=2)
    train = which == "batch_norm" and draw(TRAIN)
    layer = {"batch_norm": lambda: L.batch_norm(momentum=draw(st.sampled_from([0.9, 0.5]))),
             "layer_norm": lambda: L.layer_norm(eps=draw(st.sampled_from([1e-5, 0.1]))),
             "rms_norm": lambda: L.rms_norm(eps=draw(st.sampled_from([1e-6, 0.1])))}[which]()
    x, _ = _values(draw, shape, kinks_allowed=False)
    return Draw(layer, x, shape, train=train)


def _mask(draw, batch: int, time: int) -> np.ndarray:
    lengths = [draw(st.integers(1, time)) for _ in range(batch)]
    return np.arange(time)[None, :] < np.array(lengths)[:, None]


def _sequence_input(draw, *, masked: bool | None = None):
    batch, time, features = _batch(draw), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    shape = (batch, time, features)
    x, _ = _values(draw, shape, kinks_allowed=False)
    if masked if masked is not None else draw(st.booleans()):
        return {"x": x, "mask": _mask(draw, batch, time)}, shape
    return x, shape


def _recurrent(draw, factory: Callable) -> Draw:
    layer = factory(draw(st.integers(1, 3)), return_sequences=draw(st.booleans()))
    x, shape = _sequence_input(draw)
    return Draw(layer, x, shape)


def _bidirectional(draw) -> Draw:
    inner = draw(st.sampled_from([L.rnn, L.lstm, L.gru]))
    layer = L.bidirectional(inner(draw(st.integers(1, 3)), return_sequences=draw(st.booleans())))
    x, shape = _sequence_input(draw)
    return Draw(layer, x, shape)


def _attention(draw) -> Draw:
    heads = draw(st.integers(1, 2))
    width = heads * draw(st.integers(1, 3))
    train = draw(TRAIN)
    layer = L.multi_head_attention(heads, key_size=draw(st.sampled_from([None, 2])), causal=draw(st.booleans()),
                                   use_bias=draw(st.booleans()), dropout_rate=0.3 if train else 0.0)
    batch, time = _batch(draw), draw(st.integers(1, 4))
    x, _ = _values(draw, (batch, time, width), kinks_allowed=False)
    if draw(st.booleans()):
        x = {"x": x, "mask": _mask(draw, batch, time)}
    return Draw(layer, x, (batch, time, width), train=train)


def _transformer(draw) -> Draw:
    heads = draw(st.integers(1, 2))
    width = heads * draw(st.integers(1, 2))
    layer = L.transformer_block(heads, draw(st.integers(1, 4)), causal=draw(st.booleans()))
    shape = (_batch(draw), draw(st.integers(1, 3)), width)
    x, _ = _values(draw, shape, kinks_allowed=False)
    return Draw(layer, x, shape)


def _embedding(draw) -> Draw:
    rows, features = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    id_shape = (_batch(draw), draw(st.integers(1, 4)))
    ids = np.random.default_rng(draw(st.integers(0, 99))).integers(0, rows, size=id_shape)
    shape = (*id_shape, features)
    x, _ = _values(draw, shape, kinks_allowed=False)
    return Draw(with_fixed_ids(L.embedding(rows, features), ids), x, shape)


def _reshape(draw, which: str) -> Draw:
    shape = (_batch(draw), draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    layer = L.flatten if which == "flatten" else L.reshape((shape[3], shape[1] * shape[2]))
    x, _ = _values(draw, shape, kinks_allowed=False)
    return Draw(layer, x, shape)


def _dense(draw) -> Draw:
    return _plain(lambda d: L.dense(d(st.integers(1, 4)), use_bias=d(st.booleans())), kinks=False)(draw)


def _dropout(draw) -> Draw:
    shape = _features(draw)
    x, _ = _values(draw, shape, kinks_allowed=False)
    return Draw(L.dropout(draw(st.sampled_from([0.3, 0.0, 0.7]))), x, shape, train=draw(TRAIN))


def _sinusoidal(draw) -> Draw:
    shape = (_batch(draw), draw(st.integers(1, 4)), 2 * draw(st.integers(1, 3)))
    x, _ = _values(draw, shape, kinks_allowed=False)
    return Draw(L.sinusoidal_positions(), x, shape)


def _global_pool(draw) -> Draw:
    shape = (_batch(draw), *(draw(st.integers(1, 3)) for _ in range(draw(st.integers(1, 2)))), draw(st.integers(1, 3)))
    x, _ = _values(draw, shape, kinks_allowed=False)
    return Draw(L.global_avg_pool, x, shape)


def _rrelu(draw) -> Draw:
    lower = draw(st.sampled_from([0.1, 0.25]))
    layer = L.rrelu(lower, lower + draw(st.sampled_from([0.2, 0.0])))  # the simplest example: random slopes
    shape = _features(draw)
    x, on_kinks = _values(draw, shape)
    return Draw(layer, x, shape, train=draw(TRAIN), kinks=on_kinks)


def _block(draw) -> Layer:
    return draw(st.sampled_from([L.tanh, L.relu, L.dense(3), L.serial(L.dense(3), L.sigmoid)]))


def _combinator(draw, which: str) -> Draw:
    features = 3
    shape = (_batch(draw), features)
    if which == "serial":
        layer = L.serial(*[_block(draw) for _ in range(draw(st.integers(1, 3)))])
    elif which == "residual":
        projection = draw(st.booleans())
        layer = L.residual(L.serial(L.dense(4), L.tanh), L.dense(4)) if projection else L.residual(_block(draw))
    elif which == "fan_out":
        n = draw(st.integers(1, 3))
        layer = L.serial(L.fan_out(n), L.parallel(*[L.dense(2) for _ in range(n)]), L.fan_in_sum)
    elif which in ("fan_in_sum", "fan_in_mul"):
        n = draw(st.integers(1, 3))
        shape = tuple((shape[0], features) for _ in range(n))
        layer = getattr(L, which)
    elif which == "fan_in_concat":
        rank = draw(st.integers(2, 4))
        axis = draw(st.sampled_from([a for a in range(1, rank)] + [-a for a in range(1, rank)]))
        base = [_batch(draw)] + [draw(st.integers(1, 3)) for _ in range(rank - 1)]
        shapes = []
        for _ in range(draw(st.integers(1, 3))):
            s = list(base)
            s[axis] = draw(st.integers(1, 3))
            shapes.append(tuple(s))
        shape, layer = tuple(shapes), L.fan_in_concat(axis)
    else:  # parallel
        n = draw(st.integers(1, 3))
        shape = tuple((shape[0], features) for _ in range(n))
        layer = L.parallel(*[_block(draw) for _ in range(n)])
    rng_seed = draw(st.integers(0, 99))
    rng = np.random.default_rng(rng_seed)
    x = tuple(rng.standard_normal(s) for s in shape) if isinstance(shape[0], tuple) else rng.standard_normal(shape)
    return Draw(layer, x, shape)


STRATEGIES: dict[str, Callable[[Any], Draw]] = {
    "dense": _dense,
    "conv": lambda d: _conv(d, None, L.conv),
    "conv1d": lambda d: _conv(d, 1, L.conv1d),
    "conv2d": lambda d: _conv(d, 2, L.conv2d),
    "conv3d": lambda d: _conv(d, 3, L.conv3d),
    "conv_transpose": _conv_transpose,
    "max_pool": lambda d: _pool(d, L.max_pool),
    "avg_pool": lambda d: _pool(d, L.avg_pool),
    "global_avg_pool": _global_pool,
    "batch_norm": lambda d: _normalisation(d, "batch_norm"),
    "layer_norm": lambda d: _normalisation(d, "layer_norm"),
    "rms_norm": lambda d: _normalisation(d, "rms_norm"),
    "group_norm": lambda d: _normalisation(d, "group_norm"),
    "dropout": _dropout,
    "flatten": lambda d: _reshape(d, "flatten"),
    "reshape": lambda d: _reshape(d, "reshape"),
    "rnn": lambda d: _recurrent(d, L.rnn),
    "lstm": lambda d: _recurrent(d, L.lstm),
    "gru": lambda d: _recurrent(d, L.gru),
    "bidirectional": _bidirectional,
    "embedding": _embedding,
    "sinusoidal_positions": _sinusoidal,
    "multi_head_attention": _attention,
    "transformer_block": _transformer,
    **{name: _plain(getattr(L, name)) for name in
       ("identity", "step", "sigmoid", "tanh", "relu", "gelu", "softplus", "softmax", "log_softmax", "silu",
        "gelu_exact")},
    "leaky_relu": _plain(lambda d: L.leaky_relu(d(st.sampled_from([0.01, 0.2, -0.5])))),
    "elu": _plain(lambda d: L.elu(d(st.sampled_from([0.3, 1.0, 2.5])))),
    "prelu": _plain(lambda d: L.prelu(d(st.sampled_from([0.25, -0.4, 1.5])))),
    "rrelu": lambda d: _rrelu(d),
    **{name: (lambda d, name=name: _combinator(d, name)) for name in
       ("serial", "parallel", "residual", "fan_out", "fan_in_sum", "fan_in_mul", "fan_in_concat")},
}


# --------------------------------------------------------------------------- #
# The checks
# --------------------------------------------------------------------------- #


def _on(backend_name: str, tree: Any) -> Any:
    to = np.asarray if backend_name == "numpy" else jnp.asarray
    return fnn.backend.tree_map(to, tree)


def _size(tree: Any) -> int:
    return sum(int(np.size(leaf)) for leaf in fnn.backend.tree_leaves(tree))


def check_case(case: Draw, backend_name: str, seed: int) -> None:
    layer = case.layer
    params, state = layer.init(np.random.default_rng(seed), case.shape, dtype=np.float64)
    key = fnn.key(seed, backend=backend_name) if case.train else None
    y, _, _ = layer.fwd(params, state, case.x, key=fnn.key(seed, backend="numpy") if case.train else None, train=case.train)
    rng = np.random.default_rng(seed + 1)
    cot = fnn.backend.tree_map(lambda a: rng.standard_normal(np.shape(a)), y)
    # finite differences on NumPy arrays only (on JAX each case would compile one more function)
    tiny = backend_name == "numpy" and not case.kinks and _size(params) + _size(case.x) <= TINY
    methods = ("autodiff", "numeric") if tiny else ("autodiff",)
    report = gradcheck.check_layer(layer, _on(backend_name, params), _on(backend_name, state), _on(backend_name, case.x),
                                   key=key, train=case.train, cotangent=_on(backend_name, cot), methods=methods, seed=seed)
    for method in methods:
        error = report.max_error("manual", method)
        assert error < TOL[method], f"{layer!r} on {backend_name}, input {case.shape}: manual vs {method} {error:.2e}\n{report}"
    if backend_name != "numpy":
        return
    # the float32 rule (on NumPy arrays, no compilation): float32 gradients, close to the float64 ones just proven
    p32, s32, x32, c32 = (fnn.backend.tree_cast(t, np.float32) for t in (params, state, case.x, cot))
    _, _, residuals = layer.fwd(p32, s32, x32, key=key, train=case.train)
    dparams, dx = layer.bwd(p32, residuals, c32)
    got = {"params": dparams, "x": dx}
    proven = dict(fnn.backend.tree_leaves_with_path(report.grads["manual"]))
    for path, g32 in fnn.backend.tree_leaves_with_path(got):
        g64 = proven.get(path)
        if g64 is not None and np.issubdtype(np.asarray(g32).dtype, np.floating) and not path.endswith("mask"):
            assert np.asarray(g32).dtype == np.float32, f"{layer!r}: the float32 gradient of {path} is {g32.dtype}"
            assert gradcheck.relative_error(g32, g64, floor=1e-2) < 1e-3, f"{layer!r}: float32 {path} far from float64"


NAMES = _public_layers()
# no shrinking: a failure reports the drawn example as it is (shrinking one re-runs dozens of checks)
PHASES = (Phase.explicit, Phase.reuse, Phase.generate)
SETTINGS = dict(derandomize=True, deadline=None, database=None, phases=PHASES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


def _sweep(name: str, data) -> None:
    case = STRATEGIES[name](data.draw)
    backend_name = data.draw(st.sampled_from(["jax", "numpy"]), label="backend")  # the simplest example: JAX
    check_case(case, backend_name, seed=data.draw(st.integers(0, 99), label="seed"))


def test_every_layer_has_a_strategy():
    missing = [name for name in NAMES if name not in STRATEGIES]
    assert not missing, f"add a strategy for {missing} to STRATEGIES in tests/test_properties.py"


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=2, **SETTINGS)
@given(data=st.data())
def test_manual_backward_equals_jax_grad(name, data):
    _sweep(name, data)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, **SETTINGS)
@given(data=st.data())
def test_manual_backward_equals_jax_grad_wide(name, data):
    _sweep(name, data)
