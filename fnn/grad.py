"""Gradients of a model's loss, by hand-written backprop or by autodiff.

``value_and_grad(model, loss, method)`` gives one signature for both methods,
so they can be compared and timed side by side. ``manual_vjp(model)`` runs the
hand-written rules inside ``jax.grad`` through ``jax.custom_vjp``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from fnn import backend
from fnn.core import Layer, LayerError, layer_factory
from fnn.losses import Loss, check_loss

__all__ = ["forward_and_grad", "manual_vjp", "value_and_grad"]

PyTree = Any
METHODS = ("manual", "autodiff")


def _require_jax(what: str) -> None:
    if not backend.HAS_JAX:
        raise ImportError(f"{what} needs JAX (pip install 'fnn[jax]'); on NumPy alone use method='manual'")


def _like_params(grads: PyTree, params: PyTree) -> PyTree:
    """Each gradient in its parameter's dtype (as ``jax.grad`` returns them)."""
    return backend.tree_map(lambda g, p: g.astype(p.dtype) if g.dtype != p.dtype else g, grads, params)


def _check_grads(model: Layer, grads: PyTree, params: PyTree) -> None:
    """The manual gradients must mirror the params, leaf for leaf and shape for shape
    (a custom ``bwd`` returning a wrong shape is named, never broadcast into an update)."""
    if backend.tree_structure(grads) == backend.tree_structure(params) and all(
        np.shape(g) == np.shape(p) for g, p in zip(backend.tree_leaves(grads), backend.tree_leaves(params))
    ):
        return  # the common case, checked without building paths (this runs every NumPy step)
    want, got = dict(backend.tree_leaves_with_path(params)), dict(backend.tree_leaves_with_path(grads))
    if want.keys() != got.keys():
        missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
        raise LayerError(
            model.name, f"the backward rules returned gradients that do not match the params: missing {missing}, unexpected {extra}"
        )
    for path, p in want.items():
        if np.shape(got[path]) != np.shape(p):
            *where, leaf = path.split("/")
            err = LayerError(model.name, f"its backward rule returned a gradient of shape {np.shape(got[path])} "
                                         f"for params[{leaf!r}] of shape {np.shape(p)}")
            err.path = (model.name, *where)
            raise err


def forward_and_grad(model: Layer, loss: Loss | Callable, method: str = "manual") -> Callable:
    """``f(params, state, x, target, *, key=None) -> (loss, new_state, pred, grads)``.

    The computation behind :func:`value_and_grad`, also returning the model's
    output ``pred`` (a training step needs it for its metrics, without a
    second forward pass).
    """
    if method not in METHODS:
        raise ValueError(f"value_and_grad: method must be one of {METHODS}; got {method!r}")
    if not isinstance(model, Layer):
        raise TypeError(f"value_and_grad: model must be an fnn Layer; got {type(model).__name__}")
    check_loss(loss, "value_and_grad")

    if method == "manual":
        if not isinstance(loss, Loss):
            raise TypeError(
                "value_and_grad(method='manual'): loss must be an fnn.losses.Loss with a hand-written bwd; "
                f"got {type(loss).__name__} (use method='autodiff' for an arbitrary loss function)"
            )

        def manual(params, state, x, target, *, key=None):
            pred, new_state, residuals = model.fwd(params, state, x, key=key, train=True)
            value, loss_residuals = loss.fwd(pred, target)
            # the input's cotangent is dropped: a layer fed by the input may skip it (dense skips dy @ w.T)
            grads, _ = model.bwd(params, residuals, loss.bwd(loss_residuals, 1.0), input_grad=False)
            _check_grads(model, grads, params)
            return value, new_state, pred, _like_params(grads, params)

        return manual

    _require_jax("value_and_grad(method='autodiff')")
    jax = backend.jax

    def autodiff(params, state, x, target, *, key=None):
        def objective(p):
            pred, new_state = model.apply(p, state, x, key=key, train=True)
            return loss(pred, target), (new_state, pred)

        (value, (new_state, pred)), grads = jax.value_and_grad(objective, has_aux=True)(params)
        return value, new_state, pred, grads

    return autodiff


def value_and_grad(model: Layer, loss: Loss | Callable, method: str = "manual") -> Callable:
    """``f(params, state, x, target, *, key=None) -> ((loss, new_state), grads)``.

    The model runs in train mode (batch statistics, dropout with ``key``);
    ``new_state`` is what that forward pass returns.

    * ``method="manual"``: forward with every layer's ``fwd``, then the reverse
      sweep of hand-written ``bwd`` rules. Runs on NumPy and under ``jax.jit``.
      ``loss`` must be an :class:`fnn.losses.Loss` (it needs its ``bwd``).
    * ``method="autodiff"``: ``jax.value_and_grad`` of the pure forward
      (``model.apply``); ``loss`` may be any JAX function ``(pred, target) -> scalar``.
    """
    run = forward_and_grad(model, loss, method)

    def f(params, state, x, target, *, key=None):
        value, new_state, _, grads = run(params, state, x, target, key=key)
        return (value, new_state), grads

    return f


@layer_factory
def manual_vjp(model: Layer) -> Layer:
    """The same model whose ``apply`` is a ``jax.custom_vjp`` running the
    hand-written ``fwd``/``bwd`` rules.

    ``jax.grad`` of any JAX function around ``model.apply`` then uses the
    manual backward pass for the model (and JAX's own for the rest). Gradients
    flow to ``params`` and ``x``; ``state`` and ``key`` get none. The rule
    stays in force wherever the returned layer goes: combinators apply their
    children with the children's own ``apply``, so a wrapped sub-model inside
    ``serial`` (or under :func:`fnn.precision.policy`) is differentiated by its
    hand-written rule. Its ``fwd`` / ``bwd`` are the model's.

    >>> import jax, fnn
    >>> model = fnn.manual_vjp(fnn.layers.serial(fnn.layers.dense(3), fnn.layers.tanh))
    >>> params, state = model.init(jax.random.key(0), (2, 4))
    >>> x = jax.numpy.ones((2, 4))
    >>> g = jax.grad(lambda p: model.apply(p, state, x)[0].sum())(params)
    >>> sorted(g)
    ['dense', 'tanh']
    """
    _require_jax("manual_vjp")
    jax = backend.jax

    @functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
    def run(params, state, x, key, train):
        y, new_state, _ = model.fwd(params, state, x, key=key, train=train)
        return y, new_state

    def run_fwd(params, state, x, key, train):
        y, new_state, residuals = model.fwd(params, state, x, key=key, train=train)
        return (y, new_state), (params, residuals)

    def run_bwd(train, saved, cotangents):
        params, residuals = saved
        dy, _ = cotangents
        dparams, dx = model.bwd(params, residuals, dy)
        return _like_params(dparams, params), None, dx, None

    run.defvjp(run_fwd, run_bwd)
    return model.replace(apply=run, doc=f"{model.name} with its hand-written backward under jax.grad")
