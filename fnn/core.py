"""The Layer contract: an immutable value with a name, its hyper-parameters and
pure functions::

    layer.init(key, input_shape)                        -> (params, state)
    layer.out_shape(input_shape)                        -> output_shape
    layer.apply(params, state, x, *, key=None, train=False) -> (y, new_state)
    layer.fwd(params, state, x, *, key=None, train=False)   -> (y, new_state, residuals)
    layer.bwd(params, residuals, dy, *, input_grad=True)    -> (dparams, dx)

``fwd`` is the forward pass that keeps what ``bwd`` needs; ``bwd`` is the
hand-written vector-Jacobian product. ``apply`` is ``fwd`` without the
residuals, so manual backprop and autodiff differentiate the very same forward
computation. A model is just a layer built with the combinators of
:mod:`fnn.combinators` (re-exported here).

Layers are values: a layer made by a :func:`layer_factory` (every layer of
fnn is) exposes its hyper-parameters as :attr:`Layer.config`, prints as the
call that built it (``dense(features=64, ...)``), and compares and hashes equal
to any layer built with the same arguments, so rebuilding a model reuses
every compiled function cached for it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fnn import backend
from fnn.values import value_key
from fnn.checks import (  # noqa: F401  (re-exported: the checks every layer uses)
    LayerError,
    Shape,
    check_keys,
    check_no_params,
    check_param_shapes,
    check_positive_int,
    expect_single,
    is_multi_shape,
    no_params,
    normalize_shape,
    same_dims,
    scope,
    single_shape,
)

__all__ = [
    "Layer",
    "LayerError",
    "Shape",
    "layer_factory",
    "serial",
    "parallel",
    "fan_out",
    "fan_in_sum",
    "fan_in_mul",
    "fan_in_concat",
    "residual",
    "summary",
    "unique_names",
    "check_keys",
    "check_no_params",
    "check_param_shapes",
    "check_positive_int",
    "expect_single",
    "no_params",
    "normalize_shape",
    "is_multi_shape",
    "single_shape",
]

Array = Any
PyTree = Any


def _check_call(name: str, key: Any, train: Any) -> None:
    if not isinstance(train, (bool, np.bool_)):
        raise TypeError(f"{name}: train must be a Python bool (a static flag); got {type(train).__name__}")
    if key is not None and not backend.is_key(key):
        raise TypeError(
            f"{name}: key must be None, a JAX PRNG key or a numpy.random.Generator; got {type(key).__name__}"
        )


# --------------------------------------------------------------------------- #
# Hyper-parameters as values
# --------------------------------------------------------------------------- #


class _Spec:
    """What built a layer: the factory and its arguments (``name`` aside)."""

    __slots__ = ("factory", "args", "kwargs", "frozen", "default_name")

    def __init__(self, factory: str, args: tuple, kwargs: dict, default_name: str | None):
        self.factory, self.args, self.kwargs = factory, args, kwargs
        self.default_name = default_name  # the name a call without ``name=`` gives
        self.frozen = (factory, value_key(args), value_key(kwargs))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Spec) and self.frozen == other.frozen

    def __hash__(self) -> int:
        return hash(self.frozen)


# --------------------------------------------------------------------------- #
# The Layer value
# --------------------------------------------------------------------------- #

InitFn = Callable[[Any, Shape, Any], tuple[PyTree, PyTree]]
ShapeFn = Callable[[Shape], Shape]
FwdFn = Callable[[PyTree, PyTree, Any, Any, bool], tuple[Any, PyTree, PyTree]]
ApplyFn = Callable[[PyTree, PyTree, Any, Any, bool], tuple[Any, PyTree]]
BwdFn = Callable[..., tuple[PyTree, Any]]
SublayersFn = Callable[[Shape], Sequence[tuple[str, "Layer", Shape]]]


def _accepts_input_grad(bwd: Callable) -> bool:
    try:
        return "input_grad" in inspect.signature(bwd).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


class Layer:
    """An immutable layer: a name, its hyper-parameters and the pure functions
    of the contract (see :mod:`fnn.core`).

    Build a layer from its raw functions (each takes its arguments
    positionally), usually inside a :func:`layer_factory`::

        Layer(name,
              init=lambda key, shape, dtype: (params, state),
              out_shape=lambda shape: shape,
              fwd=lambda params, state, x, key, train: (y, state, residuals),
              bwd=lambda params, residuals, dy: (dparams, dx))

    Args:
        name: the layer's key in a combinator's params (``dense``, ``dense_1``, ...).
        init, out_shape, fwd, bwd: the raw functions. ``bwd`` may take a
            keyword ``input_grad``: when the caller passes ``input_grad=False``
            it does not need ``dx`` and the layer may return ``None`` for it
            (skipping, say, ``dy @ w.T``); a ``bwd`` without that keyword always
            computes ``dx`` and the caller drops it.
        apply: ``(params, state, x, key, train) -> (y, new_state)``, when it is
            not ``fwd`` without the residuals (a combinator applies its children
            with their own ``apply``; :func:`fnn.manual_vjp` installs a
            ``jax.custom_vjp`` here).
        sublayers: ``shape -> [(key, child, child_input_shape)]`` for a combinator.
        doc: a one-line description for :func:`summary` and ``help``.

    The public methods add argument checks and error paths around the raw functions.
    """

    __slots__ = ("name", "doc", "_init", "_out_shape", "_fwd", "_bwd", "_apply", "_sublayers", "_spec", "_skips_dx")

    def __init__(
        self,
        name: str,
        init: InitFn,
        out_shape: ShapeFn,
        fwd: FwdFn,
        bwd: BwdFn,
        *,
        apply: ApplyFn | None = None,
        sublayers: SublayersFn | None = None,
        doc: str = "",
    ):
        if not isinstance(name, str) or not name:
            raise TypeError(f"Layer: name must be a non-empty str; got {name!r}")
        for what, fn in (("init", init), ("out_shape", out_shape), ("fwd", fwd), ("bwd", bwd)):
            if not callable(fn):
                raise TypeError(f"Layer {name!r}: {what} must be a function; got {type(fn).__name__}")
        values = dict(name=name, doc=doc, _init=init, _out_shape=out_shape, _fwd=fwd, _bwd=bwd, _apply=apply)
        values.update(_sublayers=sublayers, _spec=None, _skips_dx=_accepts_input_grad(bwd))
        for k, v in values.items():
            object.__setattr__(self, k, v)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"fnn layers are immutable; use layer.replace({key}=...) for a changed copy")

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
        return self._init(key, normalize_shape(input_shape, self.name), dtype)

    def out_shape(self, input_shape: Shape) -> Shape:
        """The output shape for inputs of ``input_shape``."""
        return self._out_shape(normalize_shape(input_shape, self.name))

    def fwd(self, params: PyTree, state: PyTree, x: Any, *, key: Any = None, train: bool = False) -> tuple[Any, PyTree, PyTree]:
        """Forward pass returning ``(y, new_state, residuals)`` for :meth:`bwd`."""
        _check_call(self.name, key, train)
        return self._fwd(params, state, x, key, train)

    def apply(self, params: PyTree, state: PyTree, x: Any, *, key: Any = None, train: bool = False) -> tuple[Any, PyTree]:
        """Forward pass returning ``(y, new_state)``; ``train=False`` never changes state."""
        _check_call(self.name, key, train)
        if self._apply is not None:
            return self._apply(params, state, x, key, train)
        y, new_state, _ = self._fwd(params, state, x, key, train)
        return y, new_state

    def bwd(self, params: PyTree, residuals: PyTree, dy: Any, *, input_grad: bool = True) -> tuple[PyTree, Any]:
        """Hand-written vector-Jacobian product: ``(dparams, dx)`` from ``dy``.

        ``input_grad=False`` says the caller drops ``dx`` (the model input's
        cotangent in :func:`fnn.value_and_grad`): a layer that can skip it
        returns ``None`` for ``dx``."""
        if self._skips_dx:
            return self._bwd(params, residuals, dy, input_grad=input_grad)
        return self._bwd(params, residuals, dy)

    def sublayers(self, input_shape: Shape) -> Sequence[tuple[str, "Layer", Shape]]:
        """``[(key, child, child_input_shape)]`` for a combinator, ``[]`` for a leaf."""
        if self._sublayers is None:
            return []
        return self._sublayers(normalize_shape(input_shape, self.name))

    # -- a value ----------------------------------------------------------- #

    @property
    def config(self) -> dict[str, Any]:
        """The hyper-parameters the layer was built with (``name`` aside; a
        combinator's child layers under their argument's name). ``{}`` for a
        layer that is a value (``relu``) or was built from raw functions."""
        if self._spec is None:
            return {}
        return dict(self._spec.kwargs)

    def replace(self, **changes: Any) -> "Layer":
        """A copy with some of ``name``, ``doc`` or the raw functions (``init``,
        ``out_shape``, ``fwd``, ``bwd``, ``apply``, ``sublayers``) changed.

        A copy with other functions is another layer: it no longer compares
        equal to the layers built by its factory."""
        fields = ("init", "out_shape", "fwd", "bwd", "apply", "sublayers")
        unknown = sorted(set(changes) - {"name", "doc", *fields})
        if unknown:
            raise TypeError(f"{self.name}.replace: unknown fields {unknown}; expected name, doc or {', '.join(fields)}")
        current = {f: getattr(self, f"_{f}") for f in fields}
        current.update(name=self.name, doc=self.doc)
        current.update(changes)
        new = type(self)._rebuild(self, current)
        if not set(changes) & set(fields):
            object.__setattr__(new, "_spec", self._spec)
        return new

    def _rebuild(self, values: dict) -> "Layer":
        return Layer(values.pop("name"), **values)

    def _identity(self) -> tuple:
        return (type(self), self.name, self._spec) if self._spec is not None else (id(self),)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Layer) or self._spec is None or other._spec is None:
            return False
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def __repr__(self) -> str:
        spec = self._spec
        if spec is None:
            return self.name
        parts = [repr(a) for a in spec.args] + [f"{k}={v!r}" for k, v in spec.kwargs.items()]
        if self.name != spec.default_name:
            parts.append(f"name={self.name!r}")
        return f"{spec.factory}({', '.join(parts)})"


def layer_factory(factory: Callable[..., Layer]) -> Callable[..., Layer]:
    """Decorate a function that builds a :class:`Layer` from hyper-parameters,
    so that its layers are readable values.

    The layer it returns records the call: :attr:`Layer.config` holds every
    argument but ``name`` (defaults included), ``repr`` reads like the call,
    and two layers built with equal arguments compare and hash equal. The
    factory's closures must depend on its arguments only.

    >>> import fnn
    >>> @fnn.layer_factory
    ... def scale(factor: float, *, name: str = "scale") -> fnn.Layer:
    ...     return fnn.Layer(name, init=fnn.core.no_params, out_shape=lambda s: s,
    ...                      fwd=lambda p, s, x, key, train: (factor * x, s, None),
    ...                      bwd=lambda p, r, dy: ({}, factor * dy))
    >>> scale(2.0), scale(2.0) == scale(2.0), scale(2.0).config
    (scale(factor=2.0), True, {'factor': 2.0})
    """
    signature = inspect.signature(factory)
    star = [p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.VAR_POSITIONAL]
    name_param = signature.parameters.get("name")
    name_default = name_param.default if name_param is not None and isinstance(name_param.default, str) else None

    @functools.wraps(factory)
    def build(*args: Any, **kwargs: Any) -> Layer:
        layer = factory(*args, **kwargs)
        if not isinstance(layer, Layer):
            raise TypeError(f"{factory.__name__} must return an fnn Layer; got {type(layer).__name__}")
        bound = signature.bind(*args, **kwargs)
        default_name = name_default if "name" in bound.arguments else layer.name
        bound.apply_defaults()
        arguments = {k: v for k, v in bound.arguments.items() if k != "name"}
        positional = tuple(arguments.pop(star[0])) if star else ()
        object.__setattr__(layer, "_spec", _Spec(factory.__name__, positional, arguments, default_name))
        return layer

    return build


# --------------------------------------------------------------------------- #
# Combinators and the summary (in modules of their own, re-exported here)
# --------------------------------------------------------------------------- #

from fnn.combinators import (  # noqa: E402  (they build on the Layer above)
    fan_in_concat,
    fan_in_mul,
    fan_in_sum,
    fan_out,
    parallel,
    residual,
    serial,
    unique_names,
)
from fnn.summary import summary  # noqa: E402
