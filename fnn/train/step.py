"""One training step and one evaluation batch, as pure functions.

``train_step(model, loss, optimizer, method)`` returns
``step(ts, x, y) -> (next_ts, out)``: split the key, forward and backward
(hand-written ``bwd`` rules or ``jax.value_and_grad``), optimizer update. It
runs on NumPy as it is and compiles with ``jax.jit``; donate the train state
so XLA updates the parameters in place::

    step = jax.jit(fnn.train.train_step(model, loss, opt, "manual"), donate_argnums=0)
    for xb, yb in batches:
        ts, out = step(ts, xb, yb)

``out`` is a dict of 0-d arrays: ``loss`` (the batch mean), ``finite`` (loss
and every gradient finite), one entry per metric and, with ``grad_stats``,
``out["grad_stats"][path]`` for each parameter leaf (``"dense_1/w"``):

* ``grad_norm``: ``||g||₂`` — shrinking towards 0 layer after layer is the
  vanishing gradient, growing is the exploding one;
* ``grad_max``: ``max |g|``;
* ``nonfinite``: the number of NaN / inf entries of ``g``;
* ``update_ratio``: ``||update|| / ||param||`` — around 1e-3 is healthy for
  SGD-like training; much smaller and the layer barely learns.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from fnn import backend, optim
from fnn.core import Layer
from fnn.grad import forward_and_grad
from fnn.losses import Loss
from fnn.metrics import Metric, check_metrics
from fnn.train.state import TrainState

__all__ = ["train_step", "eval_batch", "gradient_stats", "step_key"]

Array = Any
PyTree = Any


def step_key(key: Any, step: Any) -> Any:
    """The key of the step that applies update number ``step``: ``fold_in(key, step)``
    (``step`` may be traced under ``jit``; a NumPy Generator key is left unchanged)."""
    if isinstance(key, np.random.Generator):
        return backend.fold_in(key, int(step))
    return backend.jax.random.fold_in(key, step)


def gradient_stats(grads: PyTree, updates: PyTree, params: PyTree) -> dict[str, dict[str, Array]]:
    """Per parameter leaf: ``grad_norm``, ``grad_max``, ``nonfinite`` and
    ``update_ratio`` (see the module docstring), reduced in at least float32."""
    xp = backend.namespace(grads, params)

    def norm(a):
        return xp.sqrt(xp.sum(a * a))

    out = {}
    leaves = zip(backend.tree_leaves_with_path(grads), backend.tree_leaves(updates), backend.tree_leaves(params))
    for (path, g), u, p in leaves:
        dtype = np.promote_types(g.dtype, np.float32)
        g, u, p = g.astype(dtype), u.astype(dtype), p.astype(dtype)
        out[path or "<root>"] = {
            "grad_norm": norm(g),
            "grad_max": xp.max(xp.abs(g)) if g.size else xp.zeros((), dtype),
            "nonfinite": xp.sum(~xp.isfinite(g)).astype(np.int32),
            "update_ratio": norm(u) / xp.maximum(norm(p), np.finfo(dtype).tiny),
        }
    return out


def train_step(
    model: Layer,
    loss: Loss | Callable,
    optimizer: Any,
    method: str = "manual",
    *,
    metrics: Mapping[str, Metric] | None = None,
    grad_stats: bool = False,
    mesh: Any = None,
) -> Callable[[TrainState, Array, Array], tuple[TrainState, dict]]:
    """A pure training step ``step(ts, x, y) -> (next_ts, out)``.

    The model runs with ``train=True`` and the key ``step_key(ts.key,
    ts.step)`` (dropout masks: a different key for every step); its new state
    (batch-norm statistics) goes into ``next_ts.state``; ``next_ts.step =
    ts.step + 1`` and ``ts.key`` is unchanged. A model that draws nothing
    leaves the key unused, and under ``jit`` it costs nothing.

    Args:
        model: the model (a Layer).
        loss: an :class:`fnn.losses.Loss` (``method="manual"`` needs its ``bwd``);
            with ``"autodiff"``, any JAX function ``(pred, target) -> scalar``.
        optimizer: an ``init`` / ``update`` optimizer (``fnn.optim`` or optax).
        method: ``"manual"`` (hand-written backward rules, NumPy or JAX) or
            ``"autodiff"`` (``jax.value_and_grad``, JAX only).
        metrics: ``{name: fn(pred, target)}`` reported in ``out`` (batch means);
            default :func:`fnn.metrics.default_metrics` of the loss.
        grad_stats: also report per-leaf gradient statistics in ``out["grad_stats"]``.
        mesh: a ``jax.sharding.Mesh`` with a ``"data"`` axis (JAX only): the
            batch is constrained to be split over that axis and the train state
            to be replicated, so that under ``jax.jit`` the step runs data-parallel
            (see :mod:`fnn.parallel`; the batch size must be divisible by the
            axis size). The result is the single-device one.

    Loss scaling (float16): when ``optimizer`` has a ``loss_scale(opt_state)``
    method (:func:`fnn.optim.dynamic_loss_scale`), the gradients are those of
    ``loss_scale * loss`` (the optimizer unscales them and skips a step whose
    gradients overflowed); ``out["loss"]`` is still the unscaled loss, and
    ``out["finite"]`` then only says whether that loss is finite.

    Otherwise a non-finite loss or gradient is *not* skipped here (``out["finite"]`` is
    False and the update is applied); :func:`fnn.train.fit` stops on it and
    keeps the state from before that step.
    """
    grad_fn = forward_and_grad(model, loss, method)
    metric_items = check_metrics(metrics, loss)
    loss_scale = getattr(optimizer, "loss_scale", None)
    if mesh is not None:
        from fnn import parallel

        parallel.check_mesh(mesh, "train_step")

    def step(ts: TrainState, x: Array, y: Array) -> tuple[TrainState, dict]:
        if mesh is not None:
            if isinstance(ts.key, np.random.Generator):
                raise TypeError("train_step(mesh=...) needs a JAX train state (fnn.key(0)); got a NumPy Generator key")
            ts = parallel.constrain_replicated(ts, mesh)
            x, y = parallel.constrain_batch((x, y), mesh)
        key = step_key(ts.key, ts.step)
        if loss_scale is None:
            value, new_state, pred, grads = grad_fn(ts.params, ts.state, x, y, key=key)
        else:
            factor = loss_scale(ts.opt_state)
            scaled = forward_and_grad(model, _scaled(loss, factor), method)
            value, new_state, pred, grads = scaled(ts.params, ts.state, x, y, key=key)
            value = value / factor  # exact: the scale is a power of two
        updates, opt_state = optimizer.update(grads, ts.opt_state, ts.params)
        params = optim.apply_updates(ts.params, updates)
        xp = backend.namespace(value, grads)
        finite = xp.isfinite(value) if loss_scale is not None else optim.all_finite((value, grads))
        out = {"loss": value, "finite": finite}
        out.update((name, fn(pred, y)) for name, fn in metric_items)
        if grad_stats:
            out["grad_stats"] = gradient_stats(grads, updates, ts.params)
        next_ts = TrainState(params, new_state, opt_state, ts.step + 1, ts.key)
        if mesh is not None:
            next_ts = parallel.constrain_replicated(next_ts, mesh)
        return next_ts, out

    return step


def _scaled(loss: Loss | Callable, factor: Array) -> Loss | Callable:
    """``factor * loss``, keeping a hand-written ``bwd`` when ``loss`` has one."""
    if isinstance(loss, Loss):
        return Loss(
            f"scaled_{loss.name}",
            lambda pred, target: _times(loss.fwd(pred, target), factor),
            lambda residuals, dvalue: loss.bwd(residuals, dvalue * factor),
        )
    return lambda pred, target: loss(pred, target) * factor


def _times(value_and_residuals: tuple, factor: Array) -> tuple:
    value, residuals = value_and_residuals
    return value * factor, residuals


def eval_batch(model: Layer, loss: Any, metrics: Mapping[str, Metric] | None = None) -> Callable:
    """``f(params, state, x, y) -> {"loss": ..., <metric>: ...}`` in eval mode
    (``train=False``: running statistics, no dropout, state unchanged)."""
    metric_items = check_metrics(metrics, loss)

    def run(params, state, x, y):
        pred, _ = model.apply(params, state, x, train=False)
        out = {"loss": loss(pred, y)}
        out.update((name, fn(pred, y)) for name, fn in metric_items)
        return out

    return run
