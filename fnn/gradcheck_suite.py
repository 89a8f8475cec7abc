"""The gradient checks of every layer and loss, as one registry: what
``fnn gradcheck`` runs and prints.

Each :class:`Case` builds a small layer, draws float64 inputs and runs
:func:`fnn.gradcheck.check_layer`: the hand-written ``bwd`` against
``jax.grad`` (when JAX is installed) and against central finite differences,
for params and input, once on NumPy arrays and once on JAX arrays (so that
the JAX backend's own rules -- XLA and CPU convolution forms, JAX col2im, the
tiled max-pool -- are proven too). Adding a case is one line in :data:`CASES`::

    Case("conv2d stride 2", lambda: L.conv2d(3, 3, stride=2, padding="same"), (2, 6, 6, 2)),

>>> from fnn import gradcheck_suite
>>> result = gradcheck_suite.run_case(gradcheck_suite.find("tanh"), methods=("numeric",), backends=("numpy",))
>>> result.passed, result.name, result.backends
(True, 'tanh', ('numpy',))
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import numpy as np

from fnn import backend, gradcheck, losses
from fnn import layers as L
from fnn.core import Layer, no_params
from fnn.models import basic_block
from fnn.models_transformer import last_position

__all__ = ["BACKENDS", "Case", "Result", "CASES", "find", "run_case", "run", "format_table", "loss_as_layer"]

Array = Any

#: The array backends every case runs on by default.
BACKENDS: tuple[str, ...] = ("numpy", "jax") if backend.HAS_JAX else ("numpy",)


@dataclasses.dataclass(frozen=True)
class Case:
    """One gradient check.

    Attributes:
        name: the row's label in the table.
        build: ``() -> Layer`` (called when the case runs).
        input_shape: the input's shape, batch axis included (a tuple of shapes
            for layers taking several inputs).
        train: run in train mode (batch statistics, dropout with a fixed key).
        inputs: ``(rng, shape) -> x``; the default is standard normal entries
            pushed at least 0.05 away from 0, the kink of relu and its kin.
        max_entries: finite differences at this many random entries per leaf
            (None: every entry).
        tol: the largest relative error that passes.
    """

    name: str
    build: Callable[[], Layer]
    input_shape: tuple
    train: bool = False
    inputs: Callable[[np.random.Generator, tuple], Array] | None = None
    max_entries: int | None = None
    tol: float = 1e-6


@dataclasses.dataclass(frozen=True)
class Result:
    """The outcome of one case: the worst per-leaf relative errors over the
    backends it ran on (NaN when that comparison did not run), whether both
    are within ``tol``, and which backends failed."""

    name: str
    autodiff: float
    numeric: float
    passed: bool
    seconds: float
    error: str | None = None
    backends: tuple[str, ...] = ("numpy",)
    failed_on: tuple[str, ...] = ()


def _away_from_kinks(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    x = rng.standard_normal(shape)
    return np.where(x >= 0, x + 0.05, x - 0.05)


def _draw(rng: np.random.Generator, shape: Any, inputs: Callable | None) -> Any:
    make = inputs or _away_from_kinks
    if isinstance(shape[0], tuple):
        return tuple(make(rng, s) for s in shape)
    return make(rng, shape)


def loss_as_layer(loss: losses.Loss, target: Array) -> Layer:
    """A loss with a fixed target, as a parameter-free layer ``pred -> loss(pred, target)``,
    so that :func:`fnn.gradcheck.check_layer` checks its ``bwd``."""

    def fwd(params, state, pred, key, train):
        value, residuals = loss.fwd(pred, backend.namespace(pred).asarray(target))
        return value, state, residuals

    def bwd(params, residuals, dvalue):
        return {}, loss.bwd(residuals, dvalue)

    return Layer(loss.name, no_params, lambda shape: (), fwd, bwd)


_LABELS = np.array([0, 2, 1, 3])
_SOFT = np.full((4, 4), 0.25)
_SOFT_UNNORMALISED = np.array([[0.1, 0.0, 0.2, 0.0], [0.5, 0.5, 0.5, 0.4], [0.0, 0.9, 0.0, 0.0], [0.3, 0.3, 0.6, 0.7]])
_BINARY = np.array([[0.0], [1.0], [1.0], [0.0]])


def _probabilities(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    z = rng.standard_normal(shape)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoids(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-rng.standard_normal(shape)))


def with_fixed_ids(layer: Layer, ids: np.ndarray) -> Layer:
    """``x -> layer(ids) + x``: a layer of integer ids (``embedding``) as a layer
    of a float input of its output's shape, so that :func:`fnn.gradcheck.check_layer`
    (which differentiates its input in float64) checks the params' gradient."""

    def init(key, shape, dtype):
        return layer.init(key, ids.shape, dtype=dtype)

    def fwd(params, state, x, key, train):
        i = ids if backend.namespace(x) is np else backend.jnp.asarray(ids)
        y, new_state, residuals = layer.fwd(params, state, i, key=key, train=train)
        return y + x, new_state, residuals

    def bwd(params, residuals, dy):
        return layer.bwd(params, residuals, dy)[0], dy

    return Layer(layer.name, init, lambda shape: shape, fwd, bwd)


_IDS = np.array([[1, 4, 1], [6, 0, 4]])  # (batch 2, time 3), repeated ids, rows 2, 3 and 5 unused
_LENGTHS_MASK = np.array([[True, True, True, False, False], [True] * 5])


def _masked(rng: np.random.Generator, shape: tuple) -> dict:
    return {"x": _away_from_kinks(rng, shape), "mask": _LENGTHS_MASK}


# fmt: off
CASES: list[Case] = [
    # dense, activations, reshapes
    Case("dense", lambda: L.dense(3), (4, 5)),
    Case("dense (no bias)", lambda: L.dense(3, use_bias=False), (4, 5)),
    *[Case(name, lambda name=name: getattr(L, name), (4, 5)) for name in
      ("identity", "step", "sigmoid", "tanh", "relu", "gelu", "softplus", "softmax", "log_softmax")],
    Case("leaky_relu", lambda: L.leaky_relu(0.1), (4, 5)),
    Case("elu", lambda: L.elu(0.7), (4, 5)),
    Case("prelu", lambda: L.prelu(0.25), (4, 5)),
    Case("rrelu (train)", lambda: L.rrelu(0.1, 0.3), (4, 5), train=True),
    Case("rrelu (eval)", lambda: L.rrelu(0.1, 0.3), (4, 5)),
    Case("flatten", lambda: L.flatten, (2, 3, 4)),
    Case("reshape", lambda: L.reshape((4, 3)), (2, 3, 4)),
    # convolution and pooling
    Case("conv2d valid", lambda: L.conv2d(3, 3), (2, 5, 6, 4)),
    Case("conv2d same stride 2", lambda: L.conv2d(3, (3, 2), stride=2, padding="same"), (2, 6, 7, 4)),
    Case("conv1d stride 2 same", lambda: L.conv1d(3, 3, stride=2, padding="same"), (2, 7, 2)),
    Case("conv3d", lambda: L.conv3d(2, (2, 3, 2), padding=((1, 0), (0, 1), (1, 1))), (2, 3, 4, 5, 2)),
    Case("conv2d dilation 2", lambda: L.conv2d(3, (3, 2), dilation=(2, 1), padding="same"), (2, 6, 5, 2)),
    Case("conv2d groups 2", lambda: L.conv2d(4, 3, groups=2, stride=(1, 2)), (2, 5, 6, 4)),
    Case("conv2d depthwise", lambda: L.conv2d(6, 3, groups=3, padding=((1, 0), (0, 2))), (2, 4, 5, 3)),
    Case("conv (N-d, 1-D kernel tuple)", lambda: L.conv(3, (2,), dilation=2), (2, 6, 3)),
    Case("conv_transpose stride 2", lambda: L.conv_transpose(3, (3, 2), stride=2, padding=1), (2, 3, 4, 2)),
    Case("conv_transpose 1-D", lambda: L.conv_transpose(2, 4, stride=3, padding=((1, 2),)), (2, 4, 3)),
    Case("max_pool 2", lambda: L.max_pool((2, 3)), (2, 4, 6, 3)),
    Case("max_pool 1-D 3 stride 2", lambda: L.max_pool(3, stride=2, padding="same"), (2, 7, 3)),
    Case("max_pool 3-D (2, 2, 3)", lambda: L.max_pool((2, 2, 3)), (2, 4, 5, 6, 2)),
    Case("avg_pool 1-D 2", lambda: L.avg_pool((2,), stride=1), (2, 5, 3)),
    Case("avg_pool 3-D same", lambda: L.avg_pool((2, 3, 2), stride=(1, 2, 2), padding="same"), (2, 3, 5, 4, 2)),
    Case("max_pool 3 stride 2 (overlap)", lambda: L.max_pool((3, 2), stride=(2, 1)), (2, 5, 7, 3)),
    Case("avg_pool 2 same", lambda: L.avg_pool((2, 3), padding="same"), (2, 5, 7, 3)),
    Case("global_avg_pool", lambda: L.global_avg_pool, (2, 3, 5, 4)),
    # normalisation and dropout
    Case("batch_norm (train)", lambda: L.batch_norm(), (6, 3), train=True),
    Case("batch_norm (eval)", lambda: L.batch_norm(), (6, 3)),
    Case("batch_norm NHWC (train)", lambda: L.batch_norm(), (2, 3, 4, 5), train=True),
    Case("layer_norm", lambda: L.layer_norm(), (4, 5)),
    Case("dropout (train)", lambda: L.dropout(0.5), (4, 5), train=True),
    # recurrent
    Case("rnn", lambda: L.rnn(4), (2, 5, 3)),
    Case("lstm", lambda: L.lstm(4), (2, 5, 3)),
    Case("lstm (sequences)", lambda: L.lstm(4, return_sequences=True), (2, 5, 3)),
    Case("gru", lambda: L.gru(4), (2, 5, 3)),
    # attention (use_bias=False: the key projection's bias has an exactly zero gradient, which finite
    # differences only see as round-off; tests/test_attention.py checks the biases apart)
    Case("multi_head_attention", lambda: L.multi_head_attention(2, use_bias=False), (2, 4, 6)),
    Case("multi_head_attention causal", lambda: L.multi_head_attention(2, causal=True, use_bias=False), (2, 4, 6)),
    Case("multi_head_attention dropout (train)", lambda: L.multi_head_attention(2, dropout_rate=0.3, use_bias=False),
         (2, 4, 6), train=True),
    Case("transformer_block", lambda: L.transformer_block(2, 8, causal=True, use_bias=False), (2, 4, 6)),
    Case("last_position (models.transformer's pool)", lambda: last_position(), (2, 4, 3)),
    # combinators
    Case("serial", lambda: L.serial(L.dense(4), L.tanh, L.dense(2)), (3, 5)),
    Case("residual", lambda: L.residual(L.serial(L.dense(5), L.tanh)), (3, 5)),
    Case("residual (projection)", lambda: L.residual(L.dense(4), L.dense(4)), (3, 5)),
    Case("pre-activation block (models.basic_block, train)",
         lambda: basic_block(3, stride=2, project=True, preactivation=True), (2, 4, 4, 2), train=True, max_entries=6),
    Case("parallel", lambda: L.parallel(L.dense(2), L.tanh), ((3, 4), (3, 2))),
    Case("fan_out + fan_in_sum", lambda: L.serial(L.fan_out(2), L.parallel(L.dense(3), L.dense(3)), L.fan_in_sum),
         (3, 4)),
    Case("fan_in_concat", lambda: L.fan_in_concat(), ((3, 2), (3, 4))),
    Case("fan_in_mul", lambda: L.fan_in_mul, ((3, 4), (3, 4), (3, 4))),
    # losses (the pred is the input)
    Case("mse", lambda: loss_as_layer(losses.mse, _SOFT), (4, 4)),
    Case("huber", lambda: loss_as_layer(losses.huber.replace(delta=0.5), _SOFT), (4, 4)),
    Case("softmax_cross_entropy (labels)", lambda: loss_as_layer(losses.softmax_cross_entropy, _LABELS), (4, 4)),
    Case("softmax_cross_entropy (soft)", lambda: loss_as_layer(losses.softmax_cross_entropy, _SOFT), (4, 4)),
    Case("softmax_cross_entropy (soft, rows not summing to 1)",
         lambda: loss_as_layer(losses.softmax_cross_entropy, _SOFT_UNNORMALISED), (4, 4)),
    Case("sigmoid_binary_cross_entropy", lambda: loss_as_layer(losses.sigmoid_binary_cross_entropy, _BINARY), (4, 1)),
    Case("cross_entropy", lambda: loss_as_layer(losses.cross_entropy, _LABELS), (4, 4), inputs=_probabilities),
    Case("binary_cross_entropy", lambda: loss_as_layer(losses.binary_cross_entropy, _BINARY), (4, 1),
         inputs=_sigmoids),
    # sequence layers
    Case("embedding", lambda: with_fixed_ids(L.embedding(7, 5), _IDS), (2, 3, 5)),
    Case("rms_norm", lambda: L.rms_norm(), (2, 3, 5)),
    Case("group_norm", lambda: L.group_norm(3), (2, 3, 4, 6)),
    Case("silu", lambda: L.silu, (2, 3, 5)),
    Case("gelu_exact", lambda: L.gelu_exact, (2, 3, 5)),
    Case("sinusoidal_positions", lambda: L.sinusoidal_positions(), (2, 3, 6)),
    Case("bidirectional lstm (sequences)", lambda: L.bidirectional(L.lstm(4, return_sequences=True)), (2, 5, 3)),
    Case("bidirectional gru", lambda: L.bidirectional(L.gru(4)), (2, 5, 3)),
    Case("bidirectional lstm (mask)", lambda: L.bidirectional(L.lstm(4, return_sequences=True)), (2, 5, 3),
         inputs=_masked),
]
# fmt: on


def find(name: str) -> Case:
    """The case called ``name``."""
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(f"no gradient-check case {name!r}; cases: {[c.name for c in CASES]}")


def _check_on(case: Case, array_backend: str, methods: Sequence[str], seed: int) -> dict[str, float]:
    """The worst errors of one case on one array backend (``"numpy"`` or ``"jax"``)."""
    layer = case.build()
    rng = np.random.default_rng(seed)
    key = np.random.default_rng(seed + 1)
    params, state = layer.init(key, case.input_shape, dtype=np.float64)
    x = _draw(rng, case.input_shape, case.inputs)
    if array_backend == "jax":
        params, state, x = backend.tree_map(backend.jnp.asarray, (params, state, x))
        key = backend.key(seed + 1, backend="jax")
    report = gradcheck.check_layer(layer, params, state, x, key=key if case.train else None, train=case.train,
                                   max_entries=case.max_entries, methods=tuple(methods), seed=seed)
    return {m: report.max_error("manual", m) if m in methods else np.nan for m in ("autodiff", "numeric")}


def run_case(
    case: Case, *, methods: Sequence[str] | None = None, seed: int = 0, backends: Sequence[str] | None = None
) -> Result:
    """Run one case in float64 on each array backend of ``backends`` (default
    :data:`BACKENDS`: NumPy arrays, and JAX arrays when JAX is installed).
    ``methods`` default to ``("autodiff", "numeric")`` with JAX (which needs
    ``jax_enable_x64``), ``("numeric",)`` without. The errors are the worst
    over the backends."""
    if methods is None:
        methods = ("autodiff", "numeric") if backend.HAS_JAX else ("numeric",)
    backends = tuple(BACKENDS if backends is None else backends)
    start = time.perf_counter()
    worst = {"autodiff": np.nan, "numeric": np.nan}
    failed_on = []
    for array_backend in backends:
        try:
            errors = _check_on(case, array_backend, methods, seed)
        except Exception as err:  # noqa: BLE001 - reported as a failed row, the other cases still run
            return Result(case.name, np.nan, np.nan, False, time.perf_counter() - start,
                          f"{type(err).__name__} on {array_backend}: {err}", backends, (*failed_on, array_backend))
        if not all(errors[m] <= case.tol for m in methods):
            failed_on.append(array_backend)
        worst = {m: np.fmax(worst[m], errors[m]) for m in worst}
    return Result(case.name, worst["autodiff"], worst["numeric"], not failed_on, time.perf_counter() - start,
                  backends=backends, failed_on=tuple(failed_on))


def run(
    cases: Sequence[Case] = CASES,
    *,
    methods: Sequence[str] | None = None,
    seed: int = 0,
    backends: Sequence[str] | None = None,
) -> list[Result]:
    """Run every case on every backend (each failure is a row, never an exception)."""
    return [run_case(case, methods=methods, seed=seed, backends=backends) for case in cases]


def format_table(results: Sequence[Result]) -> str:
    """The results as a text table: layer, manual vs autodiff, manual vs finite differences, pass/fail."""
    width = max(len("layer"), *(len(r.name) for r in results))
    fmt = lambda v: "-" if np.isnan(v) else f"{v:.1e}"  # noqa: E731
    lines = [f"{'layer':{width}s}  {'manual vs autodiff':>18s}  {'manual vs finite diff':>21s}  result"]
    lines.append("-" * len(lines[0]))
    for r in results:
        verdict = "pass" if r.passed else ("ERROR " + (r.error or "") if r.error else "FAIL on " + ", ".join(r.failed_on))
        lines.append(f"{r.name:{width}s}  {fmt(r.autodiff):>18s}  {fmt(r.numeric):>21s}  {verdict}")
    failed = sum(not r.passed for r in results)
    lines.append(f"{len(results) - failed} of {len(results)} passed" + (f", {failed} failed" if failed else ""))
    return "\n".join(lines)
