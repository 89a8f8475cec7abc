"""Evaluation and prediction over a whole dataset in eval mode (``train=False``).

On JAX each call is one compiled function: ``lax.scan`` over the full
batches in order, plus one call on the remaining examples, so every example
counts exactly once and the dataset stays on the device. The compiled
function is cached per (model, loss, metrics, batch size), so calling
:func:`evaluate` after every epoch compiles once. On NumPy the same batches
run eagerly.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import numpy as np

from fnn import backend
from fnn.core import Layer
from fnn.data import check_batch_size, check_labels, check_pair
from fnn.metrics import Metric, check_metrics
from fnn.train.step import eval_batch

__all__ = ["evaluate", "predict"]

Array = Any
PyTree = Any


def check_classes(model: Layer, x: Array, y: Array) -> None:
    """Integer labels must fit the model's number of outputs (checked once, on the host)."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        return
    try:
        out = model.out_shape((None,) + tuple(np.shape(x)[1:]))
    except Exception:  # noqa: BLE001 - a model whose input is not one array: the loss checks later
        return
    if len(out) == y.ndim + 1 and out[-1] is not None:
        check_labels(y, out[-1])


def _map_batches(fn: Callable, arrays: tuple, batch_size: int) -> tuple[Any, Any]:
    """``fn`` on consecutive batches of ``arrays``: ``(stacked outputs of the
    full batches, output of the last partial batch or None)``.

    On JAX arrays (traced under ``jit``) the full batches run in one
    ``lax.scan``; on NumPy in a Python loop (outputs stacked the same way).
    """
    n = np.shape(arrays[0])[0]
    full, rest = divmod(n, batch_size)
    tail = fn(*(a[full * batch_size :] for a in arrays)) if rest else None
    if backend.namespace(*arrays) is np:
        outs = [fn(*(a[i * batch_size : (i + 1) * batch_size] for a in arrays)) for i in range(full)]
        stacked = backend.tree_map(lambda *c: np.stack(c), *outs) if outs else None
        return stacked, tail
    lax, jnp = backend.lax, backend.jnp

    def body(carry, i):
        return carry, fn(*(lax.dynamic_slice_in_dim(a, i * batch_size, batch_size) for a in arrays))

    _, stacked = lax.scan(body, None, jnp.arange(full))
    return stacked, tail


def _evaluate(run: Callable, batch_size: int, params, state, x, y) -> dict[str, Array]:
    n = np.shape(x)[0]
    full, rest = _map_batches(lambda xb, yb: run(params, state, xb, yb), (x, y), batch_size)
    xp = backend.namespace(x)
    totals = {}
    for name in (full if full is not None else rest):
        total = xp.sum(full[name]) * batch_size if full is not None else 0.0
        if rest is not None:
            total = total + rest[name] * (n % batch_size)
        totals[name] = total / n
    return totals


@functools.lru_cache(maxsize=32)
def _compiled_evaluate(model: Layer, loss: Any, metric_items: tuple, batch_size: int) -> Callable:
    run = eval_batch(model, loss, dict(metric_items))
    return backend.jax.jit(functools.partial(_evaluate, run, batch_size))


def evaluate(
    model: Layer,
    params: PyTree,
    state: PyTree,
    x: Array,
    y: Array,
    *,
    loss: Any,
    metrics: Mapping[str, Metric] | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Mean loss and metrics over ``(x, y)`` in eval mode: ``{"loss": ..., "accuracy": ...}``.

    Each batch's mean is weighted by its size, so the result is the mean over
    all examples whatever ``batch_size`` (which only bounds memory). Metrics
    default to :func:`fnn.metrics.default_metrics` of the loss. JAX params run
    compiled (``x`` and ``y`` are moved to the device); NumPy params eagerly.
    """
    n = check_pair(x, y)
    if n == 0:
        raise ValueError("evaluate: the dataset is empty")
    check_classes(model, x, y)
    batch_size = min(check_batch_size(batch_size), n)  # a batch larger than the data is just the data
    return evaluate_checked(model, loss, check_metrics(metrics, loss), batch_size, params, state, x, y)


def evaluate_checked(
    model: Layer, loss: Any, metric_items: tuple, batch_size: int, params: PyTree, state: PyTree, x: Array, y: Array
) -> dict[str, float]:
    """:func:`evaluate` without its argument checks (fit checks once, then calls this every epoch)."""
    if backend.namespace(params, state, x) is np:
        run = eval_batch(model, loss, dict(metric_items))
        out = _evaluate(run, batch_size, params, state, np.asarray(x), np.asarray(y))
    else:
        jnp = backend.jnp
        out = _compiled_evaluate(model, loss, metric_items, batch_size)(params, state, jnp.asarray(x), jnp.asarray(y))
    return {name: float(value) for name, value in out.items()}


def _predict(model: Layer, batch_size: int, params, state, x):
    run = lambda xb: model.apply(params, state, xb, train=False)[0]  # noqa: E731
    full, rest = _map_batches(run, (x,), batch_size)
    xp = backend.namespace(x)
    parts = [] if full is None else [full.reshape((-1,) + full.shape[2:])]
    return xp.concatenate(parts + ([rest] if rest is not None else []), axis=0)


@functools.lru_cache(maxsize=32)
def _compiled_predict(model: Layer, batch_size: int) -> Callable:
    return backend.jax.jit(functools.partial(_predict, model, batch_size))


def predict(model: Layer, params: PyTree, state: PyTree, x: Array, *, batch_size: int = 256) -> Array:
    """The model's outputs (logits) for every example of ``x``, in eval mode, batch by batch.

    Returns a JAX array for JAX params (one compiled call), NumPy otherwise.
    """
    n = np.shape(x)[0]
    if n == 0:
        raise ValueError("predict: x is empty")
    batch_size = min(check_batch_size(batch_size), n)  # a batch larger than the data is just the data
    if backend.namespace(params, state, x) is np:
        return _predict(model, batch_size, params, state, np.asarray(x))
    return _compiled_predict(model, batch_size)(params, state, backend.jnp.asarray(x))
