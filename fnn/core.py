"""The Layer contract and the combinators that build models out of layers.

A layer is an immutable value with a name and pure functions::

    layer.init(key, input_shape)                        -> (params, state)
    layer.out_shape(input_shape)                        -> output_shape
    layer.apply(params, state, x, *, key=None, train=False) -> (y, new_state)
    layer.fwd(params, state, x, *, key=None, train=False)   -> (y, new_state, residuals)
    layer.bwd(params, residuals, dy)                    -> (dparams, dx)

``fwd`` is the forward pass that keeps what ``bwd`` needs; ``bwd`` is the
hand-written vector-Jacobian product. ``apply`` is ``fwd`` without the
residuals, so manual backprop and autodiff differentiate the very same forward
computation. A model is just a layer built with the combinators below.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from fnn import backend

__all__ = [
    "Layer",
    "LayerError",
    "Shape",
    "serial",
    "parallel",
    "fan_out",
    "fan_in_sum",
    "fan_in_concat",
    "residual",
    "summary",
    "unique_names",
    "check_keys",
    "check_param_shapes",
    "check_positive_int",
    "normalize_shape",
    "is_multi_shape",
]

Array = Any
PyTree = Any
Shape = tuple  # a tuple of int | None (one input) or a tuple of such tuples (several inputs)


class LayerError(ValueError):
    """Bad input to a layer. The message starts with the layer's path in the
    model (``block_1/conv2d``), and says what was expected and what was given."""

    def __init__(self, layer: str, message: str):
        super().__init__(message)
        self.layer = layer
        self.message = message
        self.path: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = "/".join(self.path) if self.path else self.layer
        return f"{where}: {self.message}"


@contextlib.contextmanager
def scope(child: str) -> Iterator[None]:
    """Prefix the path of any LayerError raised inside with ``child``."""
    try:
        yield
    except LayerError as err:
        err.path = (child,) + err.path
        raise


# --------------------------------------------------------------------------- #
# Shapes
# --------------------------------------------------------------------------- #


def is_multi_shape(shape: Any) -> bool:
    """True for a tuple of shapes (the input of ``parallel`` or ``fan_in_*``)."""
    return isinstance(shape, (tuple, list)) and len(shape) > 0 and all(isinstance(s, (tuple, list)) for s in shape)


def normalize_shape(shape: Any, layer: str = "model") -> Shape:
    """A shape as a tuple of ``int | None`` (``-1`` means unknown, like ``None``),
    or a tuple of such shapes."""
    if is_multi_shape(shape):
        return tuple(normalize_shape(s, layer) for s in shape)
    if not isinstance(shape, (tuple, list)):
        raise LayerError(layer, f"input_shape must be a tuple such as (batch, features); got {shape!r}")
    out = []
    for dim in shape:
        if dim is None or (isinstance(dim, (int, np.integer)) and int(dim) == -1):
            out.append(None)
        elif isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and int(dim) >= 0:
            out.append(int(dim))
        else:
            raise LayerError(layer, f"input_shape entries must be non-negative ints, None or -1; got {tuple(shape)!r}")
    return tuple(out)


def _same_dims(a: Shape, b: Shape) -> bool:
    """Shapes agree where both are known."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


# --------------------------------------------------------------------------- #
# The Layer value
# --------------------------------------------------------------------------- #

InitFn = Callable[[Any, Shape, Any], tuple[PyTree, PyTree]]
ShapeFn = Callable[[Shape], Shape]
FwdFn = Callable[[PyTree, PyTree, Any, Any, bool], tuple[Any, PyTree, PyTree]]
BwdFn = Callable[[PyTree, PyTree, Any], tuple[PyTree, Any]]
SublayersFn = Callable[[Shape], Sequence[tuple[str, "Layer", Shape]]]


@dataclasses.dataclass(frozen=True, eq=False)
class Layer:
    """An immutable layer: a name and the pure functions of the contract.

    Build one by giving the raw functions (without keyword-only arguments)::

        Layer(name, init=lambda key, shape, dtype: (params, state),
              out_shape=lambda shape: shape,
              fwd=lambda params, state, x, key, train: (y, state, residuals),
              bwd=lambda params, residuals, dy: (dparams, dx))

    The public methods add argument checks and error paths around them.
    """

    name: str
    init_fn: InitFn
    out_shape_fn: ShapeFn
    fwd_fn: FwdFn
    bwd_fn: BwdFn
    sublayers_fn: SublayersFn | None = None
    apply_fn: Callable | None = None  # set by fnn.manual_vjp
    doc: str = ""

    # -- the contract ------------------------------------------------------ #

    def init(self, key: Any, input_shape: Shape, *, dtype: Any = np.float32) -> tuple[PyTree, PyTree]:
        """Fresh ``(params, state)`` for inputs of ``input_shape`` (batch dim included).
        The key decides the backend: a JAX key gives JAX arrays, a NumPy
        Generator gives NumPy arrays."""
        if not backend.is_key(key):
            raise TypeError(
                f"{self.name}.init: key must be a JAX PRNG key (jax.random.key(0)) or a "
                f"numpy.random.Generator (numpy.random.default_rng(0)); got {type(key).__name__}"
            )
        return self.init_fn(key, normalize_shape(input_shape, self.name), dtype)

    def out_shape(self, input_shape: Shape) -> Shape:
        """The output shape for inputs of ``input_shape``."""
        return self.out_shape_fn(normalize_shape(input_shape, self.name))

    def fwd(self, params: PyTree, state: PyTree, x: Any, *, key: Any = None, train: bool = False) -> tuple[Any, PyTree, PyTree]:
        """Forward pass returning ``(y, new_state, residuals)`` for :meth:`bwd`."""
        _check_call(self.name, key, train)
        return self.fwd_fn(params, state, x, key, train)

    def apply(self, params: PyTree, state: PyTree, x: Any, *, key: Any = None, train: bool = False) -> tuple[Any, PyTree]:
        """Forward pass returning ``(y, new_state)``; ``train=False`` never changes state."""
        _check_call(self.name, key, train)
        if self.apply_fn is not None:
            return self.apply_fn(params, state, x, key, train)
        y, new_state, _ = self.fwd_fn(params, state, x, key, train)
        return y, new_state

    def bwd(self, params: PyTree, residuals: PyTree, dy: Any) -> tuple[PyTree, Any]:
        """Hand-written vector-Jacobian product: ``(dparams, dx)`` from ``dy``."""
        return self.bwd_fn(params, residuals, dy)

    def sublayers(self, input_shape: Shape) -> Sequence[tuple[str, "Layer", Shape]]:
        """``[(key, child, child_input_shape)]`` for a combinator, ``[]`` for a leaf."""
        if self.sublayers_fn is None:
            return []
        return self.sublayers_fn(normalize_shape(input_shape, self.name))

    def __repr__(self) -> str:
        return f"<fnn layer {self.name!r}>"


def _check_call(name: str, key: Any, train: Any) -> None:
    if not isinstance(train, (bool, np.bool_)):
        raise TypeError(f"{name}: train must be a Python bool (a static flag); got {type(train).__name__}")
    if key is not None and not backend.is_key(key):
        raise TypeError(
            f"{name}: key must be None, a JAX PRNG key or a numpy.random.Generator; got {type(key).__name__}"
        )


# --------------------------------------------------------------------------- #
# Checks shared by layers
# --------------------------------------------------------------------------- #


def check_keys(layer: str, what: str, tree: Any, expected: Sequence[str]) -> None:
    """``tree`` must be a dict with exactly the keys ``expected``."""
    if not isinstance(tree, Mapping):
        raise LayerError(layer, f"{what} must be a dict with keys {sorted(expected)}; got {type(tree).__name__}")
    missing = [k for k in expected if k not in tree]
    extra = [k for k in tree if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unexpected {extra}")
        raise LayerError(
            layer, f"{what} does not match the model: {', '.join(parts)}; expected keys {sorted(expected)}, got {sorted(tree)}"
        )


def check_param_shapes(layer: str, params: Any, expected: Mapping[str, tuple]) -> None:
    """``params`` must be a dict of arrays with exactly these shapes."""
    check_keys(layer, "params", params, list(expected))
    for k, shape in expected.items():
        got = tuple(np.shape(params[k]))
        if got != tuple(shape):
            raise LayerError(layer, f"params[{k!r}] has shape {got}; expected {tuple(shape)} for this input")


def check_positive_int(layer: str, what: str, value: Any) -> int:
    """``value`` as an int, or a ValueError naming the layer and the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{layer}: {what} must be a positive int; got {value!r}")
    return int(value)


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


def _single_shape(layer: str, shape: Shape) -> Shape:
    if is_multi_shape(shape):
        raise LayerError(layer, f"expected a single input, got a tuple of {len(shape)} inputs with shapes {shape}")
    return shape


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


# --------------------------------------------------------------------------- #
# Combinators
# --------------------------------------------------------------------------- #


def _stateless_init(key: Any, shape: Shape, dtype: Any) -> tuple[dict, dict]:
    return {}, {}


def _children_init(names, layers, shapes, key, dtype):
    params, state = {}, {}
    for name, layer, shape in zip(names, layers, shapes):
        with scope(name):
            params[name], state[name] = layer.init(backend.fold_in_name(key, name), shape, dtype=dtype)
    return params, state


def _check_children(layer: str, names: Sequence[str], params: Any, state: Any) -> None:
    check_keys(layer, "params", params, names)
    check_keys(layer, "state", state, names)


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
        subs = sublayers(shape)
        return _children_init(names, layers, [s for _, _, s in subs], key, dtype)

    def out_shape(shape):
        for n, layer in zip(names, layers):
            with scope(n):
                shape = layer.out_shape(shape)
        return shape

    def fwd(params, state, x, key, train):
        _check_children(name, names, params, state)
        new_state, residuals = {}, {}
        for n, layer in zip(names, layers):
            with scope(n):
                x, new_state[n], residuals[n] = layer.fwd(
                    params[n], state[n], x, key=backend.fold_in_name(key, n), train=train
                )
        return x, new_state, residuals

    def bwd(params, residuals, dy):
        grads = {}
        for n, layer in reversed(list(zip(names, layers))):
            grads[n], dy = layer.bwd(params[n], residuals[n], dy)
        return grads, dy

    return Layer(name, init, out_shape, fwd, bwd, sublayers)


def parallel(*layers: Layer, name: str = "parallel") -> Layer:
    """Layer ``i`` applied to input ``i`` of a tuple; returns the tuple of outputs."""
    _check_layers("parallel", layers)
    names = unique_names(layers)

    def sublayers(shape):
        shapes = _multi_shape(name, shape, len(layers))
        return list(zip(names, layers, shapes))

    def init(key, shape, dtype):
        return _children_init(names, layers, _multi_shape(name, shape, len(layers)), key, dtype)

    def out_shape(shape):
        outs = []
        for n, layer, s in sublayers(shape):
            with scope(n):
                outs.append(layer.out_shape(s))
        return tuple(outs)

    def fwd(params, state, x, key, train):
        xs = _multi_input(name, x, len(layers))
        _check_children(name, names, params, state)
        ys, new_state, residuals = [], {}, {}
        for n, layer, xi in zip(names, layers, xs):
            with scope(n):
                yi, new_state[n], residuals[n] = layer.fwd(
                    params[n], state[n], xi, key=backend.fold_in_name(key, n), train=train
                )
            ys.append(yi)
        return tuple(ys), new_state, residuals

    def bwd(params, residuals, dy):
        grads, dxs = {}, []
        for n, layer, dyi in zip(names, layers, dy):
            grads[n], dxi = layer.bwd(params[n], residuals[n], dyi)
            dxs.append(dxi)
        return grads, tuple(dxs)

    return Layer(name, init, out_shape, fwd, bwd, sublayers)


def fan_out(n: int, *, name: str = "fan_out") -> Layer:
    """One input copied into a tuple of ``n``; the backward pass sums the cotangents."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"fan_out: n must be a positive int; got {n!r}")

    def out_shape(shape):
        return (_single_shape(name, shape),) * n

    def fwd(params, state, x, key, train):
        if isinstance(x, (tuple, list)):
            raise LayerError(name, f"expected a single array, got a tuple of {len(x)} inputs")
        return (x,) * n, state, None

    def bwd(params, residuals, dy):
        total = dy[0]
        for d in dy[1:]:
            total = total + d
        return {}, total

    return Layer(name, _stateless_init, out_shape, fwd, bwd)


def _fan_in_sum() -> Layer:
    name = "fan_in_sum"

    def out_shape(shape):
        shapes = _multi_shape(name, shape)
        for s in shapes[1:]:
            if not _same_dims(s, shapes[0]):
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

    return Layer(name, _stateless_init, out_shape, fwd, bwd, doc="Sum of a tuple of inputs of identical shapes.")


fan_in_sum = _fan_in_sum()


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
            if len(s) != len(shapes[0]) or not _same_dims(drop(s), drop(shapes[0])):
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

    return Layer(name, _stateless_init, out_shape, fwd, bwd)


def residual(layer: Layer, shortcut: Layer | None = None, *, name: str = "residual") -> Layer:
    """``y = layer(x) + x``, or ``layer(x) + shortcut(x)`` with a projection
    shortcut (e.g. a 1x1 conv) when the shapes differ. Params are keyed by the
    layer's name and ``shortcut``."""
    _check_layers("residual", [layer] + ([shortcut] if shortcut is not None else []))
    children = [layer] if shortcut is None else [layer, dataclasses.replace(shortcut, name="shortcut")]
    names = unique_names(children)

    def sublayers(shape):
        shape = _single_shape(name, shape)
        return [(n, c, shape) for n, c in zip(names, children)]

    def init(key, shape, dtype):
        out_shape(shape)
        return _children_init(names, children, [shape] * len(children), key, dtype)

    def out_shape(shape):
        shape = _single_shape(name, shape)
        with scope(names[0]):
            main = layer.out_shape(shape)
        if shortcut is None:
            other = shape
            what = "input"
        else:
            with scope(names[1]):
                other = shortcut.out_shape(shape)
            what = "shortcut output"
        if not _same_dims(main, other):
            raise LayerError(
                name,
                f"the main branch gives shape {main} but the {what} has shape {other}; "
                "pass a projection, e.g. residual(block, shortcut=conv2d(features, 1))",
            )
        return main

    def fwd(params, state, x, key, train):
        _check_children(name, names, params, state)
        new_state, residuals = {}, {}
        outs = []
        for n, child in zip(names, children):
            with scope(n):
                y, new_state[n], residuals[n] = child.fwd(params[n], state[n], x, key=backend.fold_in_name(key, n), train=train)
            outs.append(y)
        if shortcut is None:
            outs.append(x)
        if np.shape(outs[0]) != np.shape(outs[1]):
            raise LayerError(name, f"branch shapes differ: {np.shape(outs[0])} vs {np.shape(outs[1])}")
        return outs[0] + outs[1], new_state, residuals

    def bwd(params, residuals, dy):
        grads = {}
        dx = None
        for n, child in zip(names, children):
            grads[n], dxi = child.bwd(params[n], residuals[n], dy)
            dx = dxi if dx is None else dx + dxi
        if shortcut is None:
            dx = dx + dy
        return grads, dx

    return Layer(name, init, out_shape, fwd, bwd, sublayers)


# --------------------------------------------------------------------------- #
# Summary
# --------------------------------------------------------------------------- #


def _param_shapes(model: Layer, input_shape: Shape) -> PyTree:
    """Param shapes without allocating (``jax.eval_shape``) when JAX is present."""
    concrete = tuple(
        tuple(1 if d is None else d for d in s) for s in input_shape
    ) if is_multi_shape(input_shape) else tuple(1 if d is None else d for d in input_shape)
    if backend.HAS_JAX:
        return backend.jax.eval_shape(lambda: model.init(backend.jax.random.key(0), concrete)[0])
    return model.init(np.random.default_rng(0), concrete)[0]


def summary(model: Layer, input_shape: Shape) -> None:
    """Print every layer's path, output shape and parameter count."""
    input_shape = normalize_shape(input_shape, model.name)
    params = _param_shapes(model, input_shape)
    rows: list[tuple[str, str, str, int]] = []

    def visit(layer: Layer, path: str, shape: Shape, p: PyTree) -> None:
        count = backend.tree_size(p)
        rows.append((path or layer.name, layer.name, str(layer.out_shape(shape)), count))
        for key, child, child_shape in layer.sublayers(shape):
            visit(child, f"{path}/{key}" if path else key, child_shape, p[key])

    visit(model, "", input_shape, params)
    headers = ("path", "layer", "output shape", "params")
    widths = [max(len(h), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    print(f"total params: {rows[0][3]:,}")
