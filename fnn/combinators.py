"""Combinators: layers made of layers (``serial``, ``parallel``, ``residual``,
``fan_out``, ``fan_in_sum``, ``fan_in_mul``, ``fan_in_concat``), each with its backward rule.

A combinator's forward is written once, over a ``call`` that runs one child.
``fwd`` runs each child's ``fwd`` (keeping the residuals its ``bwd`` needs);
``apply`` runs each child's ``apply``, so a child whose ``apply`` is special
(:func:`fnn.manual_vjp`'s ``jax.custom_vjp``, a precision policy) keeps it
inside any combinator. Children are keyed by unique names in order (``dense``,
``relu``, ``dense_1``, ...), and each child's key is folded from its name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fnn import backend
from fnn.core import (
    Layer,
    LayerError,
    Shape,
    check_keys,
    expect_single,
    is_multi_shape,
    layer_factory,
    no_params,
    same_dims,
    scope,
    single_shape,
)

__all__ = [
    "serial", "parallel", "fan_out", "fan_in_sum", "fan_in_mul", "fan_in_concat", "residual", "unique_names", "modes"
]

Call = Callable[[Layer, Any, Any, Any, Any, bool], tuple[Any, Any, Any]]


def _call_fwd(child: Layer, params: Any, state: Any, x: Any, key: Any, train: bool) -> tuple[Any, Any, Any]:
    return child.fwd(params, state, x, key=key, train=train)


def _call_apply(child: Layer, params: Any, state: Any, x: Any, key: Any, train: bool) -> tuple[Any, Any, None]:
    y, new_state = child.apply(params, state, x, key=key, train=train)
    return y, new_state, None


def modes(forward: Callable) -> dict[str, Callable]:
    """``{"fwd": ..., "apply": ...}`` of a layer made of layers, from its one
    ``forward(params, state, x, key, train, call)``, where ``call(child, params,
    state, x, key, train) -> (y, new_state, residuals)`` runs one child: with
    the child's ``fwd`` for ``fwd``, with its ``apply`` (residuals ``None``) for
    ``apply``. Pass both to :class:`fnn.Layer` (``apply=``)."""

    def fwd(params, state, x, key, train):
        return forward(params, state, x, key, train, _call_fwd)

    def apply(params, state, x, key, train):
        y, new_state, _ = forward(params, state, x, key, train, _call_apply)
        return y, new_state

    return {"fwd": fwd, "apply": apply}


def _run_child(call: Call, name: str, child: Layer, params: Any, state: Any, x: Any, key: Any, train: bool):
    """One child under its name: its key folded from the name, errors prefixed with it."""
    with scope(name):
        return call(child, params[name], state[name], x, backend.fold_in_name(key, name), train)


def unique_names(layers: Sequence[Layer]) -> list[str]:
    """Readable unique keys in order: ``dense``, ``relu``, ``dense_1``, ..."""
    seen: dict[str, int] = {}
    taken = set()
    out = []
    for layer in layers:
        base = layer.name
        n = seen.get(base, 0)
        name = base if n == 0 else f"{base}_{n}"
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        seen[base] = n + 1
        taken.add(name)
        out.append(name)
    return out


def _check_layers(combinator: str, layers: Sequence[Any]) -> None:
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            hint = " (a layer factory such as dense must be called: dense(10))" if callable(layer) else ""
            raise TypeError(f"{combinator}: argument {i} must be an fnn Layer; got {type(layer).__name__}{hint}")


def _multi_shape(layer: str, shape: Shape, n: int | None = None) -> Shape:
    if not is_multi_shape(shape):
        raise LayerError(layer, f"expected a tuple of inputs, got a single input of shape {shape}")
    if n is not None and len(shape) != n:
        raise LayerError(layer, f"expected a tuple of {n} inputs, got {len(shape)}")
    return shape


def _multi_input(layer: str, x: Any, n: int | None = None) -> tuple:
    if not isinstance(x, (tuple, list)):
        raise LayerError(layer, f"expected a tuple of inputs, got a single array of shape {np.shape(x)}")
    if n is not None and len(x) != n:
        raise LayerError(layer, f"expected a tuple of {n} inputs, got {len(x)}")
    return tuple(x)


def _children_init(names, layers, shapes, key, dtype):
    params, state = {}, {}
    for name, layer, shape in zip(names, layers, shapes):
        with scope(name):
            params[name], state[name] = layer.init(backend.fold_in_name(key, name), shape, dtype=dtype)
    return params, state


def _check_children(layer: str, names: Sequence[str], params: Any, state: Any) -> None:
    check_keys(layer, "params", params, names)
    check_keys(layer, "state", state, names)


def _add(a: Any, b: Any) -> Any:
    """``a + b`` where ``None`` (a cotangent nobody computed) is zero."""
    return b if a is None else a if b is None else a + b


# --------------------------------------------------------------------------- #
# serial, parallel
# --------------------------------------------------------------------------- #


@layer_factory
def serial(*layers: Layer, name: str = "serial") -> Layer:
    """Layers applied one after another; params keyed ``dense``, ``relu``, ``dense_1``, ..."""
    _check_layers("serial", layers)
    names = unique_names(layers)

    def sublayers(shape):
        out = []
        for n, layer in zip(names, layers):
            out.append((n, layer, shape))
            with scope(n):
                shape = layer.out_shape(shape)
        return out

    def init(key, shape, dtype):
        return _children_init(names, layers, [s for _, _, s in sublayers(shape)], key, dtype)

    def out_shape(shape):
        for n, layer in zip(names, layers):
            with scope(n):
                shape = layer.out_shape(shape)
        return shape

    def forward(params, state, x, key, train, call):
        _check_children(name, names, params, state)
        new_state, residuals = {}, {}
        for n, layer in zip(names, layers):
            x, new_state[n], residuals[n] = _run_child(call, n, layer, params, state, x, key, train)
        return x, new_state, residuals

    def bwd(params, residuals, dy, *, input_grad=True):
        check_keys(name, "residuals", residuals, names)
        grads = {}
        for i in range(len(layers) - 1, -1, -1):
            n = names[i]
            with scope(n):
                grads[n], dy = layers[i].bwd(params[n], residuals[n], dy, input_grad=input_grad or i > 0)
        return grads, dy

    return Layer(name, init=init, out_shape=out_shape, bwd=bwd, sublayers=sublayers, **modes(forward))


@layer_factory
def parallel(*layers: Layer, name: str = "parallel") -> Layer:
    """Layer ``i`` applied to input ``i`` of a tuple; returns the tuple of outputs."""
    _check_layers("parallel", layers)
    names = unique_names(layers)

    def sublayers(shape):
        return list(zip(names, layers, _multi_shape(name, shape, len(layers))))

    def init(key, shape, dtype):
        return _children_init(names, layers, _multi_shape(name, shape, len(layers)), key, dtype)

    def out_shape(shape):
        outs = []
        for n, layer, s in sublayers(shape):
            with scope(n):
                outs.append(layer.out_shape(s))
        return tuple(outs)

    def forward(params, state, x, key, train, call):
        xs = _multi_input(name, x, len(layers))
        _check_children(name, names, params, state)
        ys, new_state, residuals = [], {}, {}
        for n, layer, xi in zip(names, layers, xs):
            yi, new_state[n], residuals[n] = _run_child(call, n, layer, params, state, xi, key, train)
            ys.append(yi)
        return tuple(ys), new_state, residuals

    def bwd(params, residuals, dy, *, input_grad=True):
        check_keys(name, "residuals", residuals, names)
        grads, dxs = {}, []
        for n, layer, dyi in zip(names, layers, _multi_input(name, dy, len(layers))):
            with scope(n):
                grads[n], dxi = layer.bwd(params[n], residuals[n], dyi, input_grad=input_grad)
            dxs.append(dxi)
        return grads, tuple(dxs)

    return Layer(name, init=init, out_shape=out_shape, bwd=bwd, sublayers=sublayers, **modes(forward))


# --------------------------------------------------------------------------- #
# fan_out, fan_in_sum, fan_in_mul, fan_in_concat
# --------------------------------------------------------------------------- #


@layer_factory
def fan_out(n: int, *, name: str = "fan_out") -> Layer:
    """One input copied into a tuple of ``n``; the backward pass sums the cotangents."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"fan_out: n must be a positive int; got {n!r}")

    def fwd(params, state, x, key, train):
        return (expect_single(name, x),) * n, state, None

    def bwd(params, residuals, dy):
        total = dy[0]
        for d in dy[1:]:
            total = total + d
        return {}, total

    return Layer(name, init=no_params, out_shape=lambda shape: (single_shape(name, shape),) * n, fwd=fwd, bwd=bwd)


def _fan_in_sum() -> Layer:
    name = "fan_in_sum"

    def out_shape(shape):
        shapes = _multi_shape(name, shape)
        for s in shapes[1:]:
            if not same_dims(s, shapes[0]):
                raise LayerError(name, f"all inputs must have the same shape (no broadcasting); got {shapes}")
        return shapes[0]

    def fwd(params, state, x, key, train):
        xs = _multi_input(name, x)
        shapes = [tuple(np.shape(a)) for a in xs]
        if any(s != shapes[0] for s in shapes):
            raise LayerError(name, f"all inputs must have the same shape (no broadcasting); got {shapes}")
        total = xs[0]
        for a in xs[1:]:
            total = total + a
        return total, state, len(xs)

    def bwd(params, n, dy):
        return {}, (dy,) * n

    doc = "Sum of a tuple of inputs of identical shapes."
    return Layer(name, init=no_params, out_shape=out_shape, fwd=fwd, bwd=bwd, doc=doc)


fan_in_sum = _fan_in_sum()


def _fan_in_mul() -> Layer:
    """The multiply node of a computational graph, as a layer.

        forward:   y = x_0 * x_1 * ... * x_{n-1}         (elementwise, identical shapes)
        backward:  dx_i = dy * prod_{j != i} x_j          (two inputs: each gets dy times the other)

    The residuals are the inputs; the products of the others come from prefix
    and suffix products, never from ``y / x_i``, so a zero input is fine.

    >>> import numpy as np, fnn
    >>> price, count = np.array([[100.0]]), np.array([[2.0]])
    >>> y, _, res = fnn.layers.fan_in_mul.fwd({}, {}, (price, count))
    >>> y, fnn.layers.fan_in_mul.bwd({}, res, np.array([[1.1]]))[1]
    (array([[200.]]), (array([[2.2]]), array([[110.]])))
    """
    name = "fan_in_mul"

    def out_shape(shape):
        shapes = _multi_shape(name, shape)
        for s in shapes[1:]:
            if not same_dims(s, shapes[0]):
                raise LayerError(name, f"all inputs must have the same shape (no broadcasting); got {shapes}")
        return shapes[0]

    def fwd(params, state, x, key, train):
        xs = _multi_input(name, x)
        shapes = [tuple(np.shape(a)) for a in xs]
        if any(s != shapes[0] for s in shapes):
            raise LayerError(name, f"all inputs must have the same shape (no broadcasting); got {shapes}")
        product = xs[0]
        for a in xs[1:]:
            product = product * a
        return product, state, xs

    def bwd(params, xs, dy):
        # dx_i = dy * prod_{j != i} x_j, from prefix and suffix products (no division, so a zero input is fine)
        n = len(xs)
        before = [None] * n  # before[i] = x_0 * ... * x_{i-1}
        after = [None] * n  # after[i] = x_{i+1} * ... * x_{n-1}
        for i in range(1, n):
            before[i] = xs[i - 1] if before[i - 1] is None else before[i - 1] * xs[i - 1]
        for i in range(n - 2, -1, -1):
            after[i] = xs[i + 1] if after[i + 1] is None else xs[i + 1] * after[i + 1]
        dxs = []
        for b, a in zip(before, after):
            d = dy
            if b is not None:
                d = d * b
            if a is not None:
                d = d * a
            dxs.append(d)
        return {}, tuple(dxs)

    doc = "Elementwise product of a tuple of inputs of identical shapes; input i's cotangent is dy times the others."
    return Layer(name, init=no_params, out_shape=out_shape, fwd=fwd, bwd=bwd, doc=doc)


fan_in_mul = _fan_in_mul()


@layer_factory
def fan_in_concat(axis: int = -1, *, name: str = "fan_in_concat") -> Layer:
    """Concatenation of a tuple of inputs along ``axis`` (not the batch axis)."""

    def resolve(rank):
        ax = axis + rank if axis < 0 else axis
        if not 0 < ax < rank:
            raise LayerError(name, f"axis {axis} is out of range or the batch axis for inputs of rank {rank}")
        return ax

    def out_shape(shape):
        shapes = _multi_shape(name, shape)
        ax = resolve(len(shapes[0]))
        for s in shapes[1:]:
            drop = lambda t: t[:ax] + t[ax + 1 :]  # noqa: E731
            if len(s) != len(shapes[0]) or not same_dims(drop(s), drop(shapes[0])):
                raise LayerError(name, f"inputs must agree on every axis but {axis}; got {shapes}")
        sizes = [s[ax] for s in shapes]
        total = None if any(d is None for d in sizes) else sum(sizes)
        return shapes[0][:ax] + (total,) + shapes[0][ax + 1 :]

    def fwd(params, state, x, key, train):
        xs = _multi_input(name, x)
        out_shape(tuple(tuple(np.shape(a)) for a in xs))
        ax = resolve(np.ndim(xs[0]))
        xp = backend.namespace(xs)
        sizes = [np.shape(a)[ax] for a in xs]
        return xp.concatenate(xs, axis=ax), state, (ax, sizes)

    def bwd(params, residuals, dy):
        ax, sizes = residuals
        xp = backend.namespace(dy)
        cuts = np.cumsum(sizes)[:-1].tolist()
        return {}, tuple(xp.split(dy, cuts, axis=ax))

    return Layer(name, init=no_params, out_shape=out_shape, fwd=fwd, bwd=bwd)


# --------------------------------------------------------------------------- #
# residual
# --------------------------------------------------------------------------- #


@layer_factory
def residual(layer: Layer, shortcut: Layer | None = None, *, name: str = "residual") -> Layer:
    """``y = layer(x) + x``, or ``layer(x) + shortcut(x)`` with a projection
    shortcut (e.g. a 1x1 conv) when the shapes differ. Params are keyed by the
    layer's name and ``shortcut``."""
    _check_layers("residual", [layer] + ([shortcut] if shortcut is not None else []))
    children = [layer] if shortcut is None else [layer, shortcut.replace(name="shortcut")]
    names = unique_names(children)

    def sublayers(shape):
        shape = single_shape(name, shape)
        return [(n, c, shape) for n, c in zip(names, children)]

    def init(key, shape, dtype):
        out_shape(shape)
        return _children_init(names, children, [shape] * len(children), key, dtype)

    def out_shape(shape):
        shape = single_shape(name, shape)
        with scope(names[0]):
            main = layer.out_shape(shape)
        if shortcut is None:
            other, what = shape, "input"
        else:
            with scope(names[1]):
                other = children[1].out_shape(shape)
            what = "shortcut output"
        if not same_dims(main, other):
            raise LayerError(
                name,
                f"the main branch gives shape {main} but the {what} has shape {other}; "
                "pass a projection, e.g. residual(block, shortcut=conv2d(features, 1))",
            )
        return main

    def forward(params, state, x, key, train, call):
        _check_children(name, names, params, state)
        new_state, residuals, outs = {}, {}, []
        for n, child in zip(names, children):
            y, new_state[n], residuals[n] = _run_child(call, n, child, params, state, x, key, train)
            outs.append(y)
        if shortcut is None:
            outs.append(x)
        if np.shape(outs[0]) != np.shape(outs[1]):
            raise LayerError(name, f"branch shapes differ: {np.shape(outs[0])} vs {np.shape(outs[1])}")
        return outs[0] + outs[1], new_state, residuals

    def bwd(params, residuals, dy, *, input_grad=True):
        check_keys(name, "residuals", residuals, names)
        grads, dx = {}, None
        for n, child in zip(names, children):
            with scope(n):
                grads[n], dxi = child.bwd(params[n], residuals[n], dy, input_grad=input_grad)
            dx = _add(dx, dxi) if input_grad else None
        if shortcut is None and input_grad:
            dx = dx + dy
        return grads, dx

    return Layer(name, init=init, out_shape=out_shape, bwd=bwd, sublayers=sublayers, **modes(forward))
