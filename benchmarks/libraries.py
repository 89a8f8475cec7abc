"""The JAX libraries users pick instead of fnn (flax.linen, Equinox, Haiku) as
contenders of the suite: which of them import, how each one's model is loaded
from fnn's parameters, and the train step every one of them runs.

Each library's workloads live in its own module (``benchmarks.flax_reference``,
``benchmarks.equinox_reference``, ``benchmarks.haiku_reference``), written the
way that library's users write them (its layers, its module system, optax for
the update). Every module's ``build(workload, params, state)`` returns a
:class:`Built`: the library's own parameter (and state) trees filled with fnn's
initial values, its ``loss``, and the :class:`Binding` of each fnn array to the
library's array that holds it, so that the suite starts all contenders from the
same numbers and the tests can read the library's updated parameters back in
fnn's layout.

The libraries are optional (``pip install -e ".[bench]"``): a library that is
absent, or that does not import with the installed JAX, is skipped with a
one-line note (:func:`library_note`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.workloads import Workload

Path = tuple[Any, ...]

# contender name -> (the module the user imports, the reference module of the suite)
LIBRARIES = {
    "Flax linen": ("flax.linen", "benchmarks.flax_reference"),
    "Equinox": ("equinox", "benchmarks.equinox_reference"),
    "Haiku": ("haiku", "benchmarks.haiku_reference"),
}


def _same(a: np.ndarray) -> np.ndarray:
    return a


@dataclass(frozen=True)
class Binding:
    """fnn's arrays at ``fnns`` (paths in fnn's params) are held by the library's
    arrays at ``libs`` (paths of dict keys, list indices or attribute names):
    ``to_lib`` turns fnn's arrays (a tuple, in ``fnns`` order) into the library's
    (a tuple, in ``libs`` order), ``to_fnn`` the library's back into fnn's."""

    fnns: tuple[Path, ...]
    libs: tuple[Path, ...]
    to_lib: Callable[[tuple[np.ndarray, ...]], tuple[np.ndarray, ...]]
    to_fnn: Callable[[tuple[np.ndarray, ...]], tuple[np.ndarray, ...]]


def one(fnn: Path, lib: Path, to_lib: Callable = _same, to_fnn: Callable = _same) -> Binding:
    """fnn's array at ``fnn`` is the library's array at ``lib``, converted by ``to_lib`` / ``to_fnn``."""
    return Binding((fnn,), (lib,), lambda a: (to_lib(a[0]),), lambda t: (to_fnn(t[0]),))


def column_blocks(fnn: Path, libs: tuple[Path, ...]) -> Binding:
    """fnn's array at ``fnn`` is the concatenation, along its last axis, of the
    library's equal-width arrays at ``libs`` (an LSTM's gates)."""
    split = lambda a: tuple(np.split(a[0], len(libs), axis=-1))
    return Binding((fnn,), libs, split, lambda t: (np.concatenate(t, -1),))


@dataclass
class Built:
    """One library's model of a workload, loaded with fnn's initial values.

    ``loss(params, state, x, y) -> (loss, state)`` is differentiable in
    ``params``; ``inputs(x, y)`` turns the suite's NHWC batch into the library's
    layout (once, outside the step, as a user's data pipeline would).
    """

    params: Any
    state: Any
    loss: Callable[[Any, Any, Any, Any], tuple[Any, Any]]
    bindings: list[Binding]
    inputs: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] = field(default=lambda x, y: (x, y))


def library_note(name: str) -> str | None:
    """``None`` if the library of contender ``name`` imports, else a one-line note saying why it is skipped."""
    package, _ = LIBRARIES[name]
    try:
        importlib.import_module(package)
        importlib.import_module("optax")  # every library contender's optimizer
    except ImportError as error:
        return f"{name} not installed ({error.name or package}; pip install -e '.[bench]'): its contender is skipped"
    except Exception as error:  # noqa: BLE001 -- e.g. incompatible with the installed JAX
        return f"{name} does not import with this JAX ({type(error).__name__}: {error}): its contender is skipped"
    return None


def available() -> dict[str, str | None]:
    """Every library contender's name and its skip note (``None`` when it runs)."""
    return {name: library_note(name) for name in LIBRARIES}


def build(name: str, workload: Workload, params: Any, state: Any) -> Built:
    """Library ``name``'s model of ``workload`` loaded from fnn's NumPy ``params`` (and ``state``)."""
    _, module = LIBRARIES[name]
    return importlib.import_module(module).build(workload, params, state)


def get(tree: Any, path: Path) -> Any:
    """The node at ``path``: dict keys and sequence indices subscript, other names are attributes."""
    for key in path:
        tree = tree[key] if isinstance(tree, (dict, list, tuple)) else getattr(tree, key)
    return tree


def fnn_leaves(params: Any) -> dict[Path, np.ndarray]:
    """fnn's params as ``{path: array}`` (nested dicts; empty dicts hold nothing)."""
    out: dict[Path, np.ndarray] = {}

    def walk(node: Any, path: Path) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, (*path, key))
        else:
            out[path] = np.asarray(node)

    walk(params, ())
    return out


def load_dict(template: dict, bindings: list[Binding], params: Any, where: str) -> dict:
    """A copy of the library's nested-dict ``template`` (its own init, or its shapes) with every
    bound array replaced by fnn's, after checking that the bindings cover every
    array of both sides and that the shapes fit."""
    values = fnn_leaves(params)
    _check_cover(where, values, [p for b in bindings for p in b.fnns])
    out = _copy_dicts(template)
    template_paths = set(_dict_paths(template))
    bound = {lib for b in bindings for lib in b.libs}
    if bound != template_paths:
        unmatched = sorted(map(str, bound ^ template_paths))
        raise ValueError(f"{where}: bindings {unmatched} do not match the library's arrays")
    for b in bindings:
        for lib, value in zip(b.libs, b.to_lib(tuple(values[p] for p in b.fnns)), strict=True):
            value = np.asarray(value, dtype=np.float32)
            old = tuple(get(template, lib).shape)
            if tuple(value.shape) != old:
                raise ValueError(f"{where}: {b.fnns} -> {lib}: shape {value.shape} does not fit {old}")
            get(out, lib[:-1])[lib[-1]] = value
    return out


def export(lib_params: Any, bindings: list[Binding]) -> dict[Path, np.ndarray]:
    """The library's parameters in fnn's layout, ``{fnn path: array}``."""
    out = {}
    for b in bindings:
        arrays = b.to_fnn(tuple(np.asarray(get(lib_params, lib)) for lib in b.libs))
        out.update(zip(b.fnns, (np.asarray(a) for a in arrays), strict=True))
    return out


def _check_cover(where: str, values: dict[Path, np.ndarray], bound: list[Path]) -> None:
    if sorted(bound) != sorted(values):
        missing = set(values) - set(bound)
        extra = set(bound) - set(values)
        raise ValueError(f"{where}: fnn arrays not bound {sorted(missing)}, bound but absent {sorted(extra)}")


def _copy_dicts(tree: Any) -> Any:
    return {k: _copy_dicts(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


def _dict_paths(tree: Any, path: Path = ()) -> list[Path]:
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in _dict_paths(v, (*path, k))]
    return [path]


def train_step(loss: Callable, optimizer: Any) -> Callable:
    """``step(params, state, opt_state, x, y) -> (params, state, opt_state, loss)`` with an
    optax ``optimizer``, not yet jitted: the step every library's users write."""
    import jax
    import optax

    def step(params, state, opt_state, x, y):
        (value, state), grads = jax.value_and_grad(loss, has_aux=True)(params, state, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, value

    return step


def classification_or_mse(workload: Workload, forward: Callable) -> Callable:
    """``loss(params, state, x, y) -> (loss, state)`` from ``forward(params, state, x) ->
    (outputs, state)``: softmax cross-entropy on integer labels (optax's) or the mean squared error."""
    import jax.numpy as jnp
    import optax

    if workload.classes:

        def loss(params, state, x, y):
            logits, state = forward(params, state, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), state

    else:

        def loss(params, state, x, y):
            outputs, state = forward(params, state, x)
            return jnp.mean(jnp.square(outputs - y)), state

    return loss


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """XLA's "SAME" padding ``(before, after)`` of one spatial axis (the odd pixel after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def block_names(params: dict) -> list[str]:
    """The ResNet's block names in order (``block``, ``block_1``, ...)."""
    return sorted((k for k in params if k == "block" or k.startswith("block_")), key=lambda k: int(k[6:] or 0))


def dense_names(params: dict) -> list[str]:
    """The dense layers' names in order (``dense``, ``dense_1``, ...)."""
    return sorted((k for k in params if k == "dense" or k.startswith("dense_")), key=lambda k: int(k[6:] or 0))
