"""Applying optimizers to some parameters only: ``masked``, ``freeze``, ``partition``.

A *mask* selects parameters. It is either

* a pytree of Python booleans with the structure of the params, or
* a predicate ``(path, leaf) -> bool`` where ``path`` is the leaf's location
  like ``"dense_1/w"`` (see :func:`fnn.backend.tree_leaves_with_path`).

Masks are resolved from the tree's structure and shapes only, so they cost
nothing under ``jit``. An optimizer that runs on a subset keeps state for that
subset only: the other leaves appear as ``None`` (empty subtrees) in its state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from fnn import backend
from fnn.optim.base import EmptyState, GradientTransformation, check_optimizer, check_trees_match
from fnn.optim.calls import call

__all__ = ["Mask", "MaskedState", "PartitionState", "freeze", "masked", "partition", "resolve_mask"]

PyTree = Any
Mask = Any  # PyTree of bool, or Callable[[str, leaf], bool]


class MaskedState(NamedTuple):
    """State of :func:`masked` and :func:`freeze`: the inner optimizer's state (selected leaves only)."""

    inner_state: PyTree


class PartitionState(NamedTuple):
    """State of :func:`partition`: ``{label: state of that label's optimizer}``."""

    inner_states: dict


def resolve_mask(where: str, mask: Mask, tree: PyTree) -> list[bool]:
    """The mask as one Python bool per leaf of ``tree`` (in :func:`backend.tree_leaves` order)."""
    pairs = backend.tree_leaves_with_path(tree)
    if callable(mask):
        out = []
        for path, leaf in pairs:
            chosen = mask(path, leaf)
            if not isinstance(chosen, (bool, np.bool_)):
                raise TypeError(
                    f"{where}: the mask predicate must return a Python bool for each (path, leaf); "
                    f"got {type(chosen).__name__} for '{path}'"
                )
            out.append(bool(chosen))
        return out
    check_trees_match(where, tree, mask, "params", "mask")
    out = []
    for (path, _), chosen in zip(pairs, backend.tree_leaves(mask)):
        if not isinstance(chosen, (bool, np.bool_)):
            raise TypeError(f"{where}: mask leaves must be Python bools; got {chosen!r} at '{path}'")
        out.append(bool(chosen))
    return out


def _subtree(tree: PyTree, keep: list[bool]) -> PyTree:
    """``tree`` with the leaves not kept replaced by ``None`` (an empty subtree)."""
    leaves = backend.tree_leaves(tree)
    return backend.tree_unflatten(backend.tree_structure(tree), [x if k else None for x, k in zip(leaves, keep)])


def _merge(tree: PyTree, keep: list[bool], sub: PyTree) -> PyTree:
    """``tree`` with its kept leaves replaced, in order, by the leaves of ``sub``."""
    replacements = iter(backend.tree_leaves(sub))
    leaves = [next(replacements) if k else x for x, k in zip(backend.tree_leaves(tree), keep)]
    return backend.tree_unflatten(backend.tree_structure(tree), leaves)


def _masked(where: str, optimizer: Any, select: Callable[[PyTree], list[bool]], name: str) -> GradientTransformation:
    def init(params: PyTree) -> MaskedState:
        return MaskedState(optimizer.init(_subtree(params, select(params))))

    def update(grads: PyTree, state: MaskedState, params: PyTree = None):
        if params is not None:
            check_trees_match(where, params, grads, "params", "grads")
        keep = select(params if params is not None else grads)
        sub_params = None if params is None else _subtree(params, keep)
        sub_updates, inner = optimizer.update(_subtree(grads, keep), state.inner_state, sub_params)
        return _merge(grads, keep, sub_updates), MaskedState(inner)

    return GradientTransformation(init, update, name)


def masked(optimizer: GradientTransformation, mask: Mask) -> GradientTransformation:
    """Run ``optimizer`` on the leaves where ``mask`` is True; pass the others through unchanged.

    The inner optimizer sees, and keeps state for, the selected leaves only.

    Args:
        optimizer: the optimizer to apply to the selected leaves.
        mask: a pytree of bools like the params, or a predicate ``(path, leaf) -> bool``.

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.masked(optim.scale(10.0), lambda path, leaf: path == "w")
        >>> updates, _ = opt.update({"w": np.ones(1), "b": np.ones(1)}, opt.init({"w": np.ones(1), "b": np.ones(1)}))
        >>> updates["w"], updates["b"]
        (array([10.]), array([1.]))
    """
    check_optimizer("masked", "optimizer", optimizer)
    opt = _masked("masked", optimizer, lambda tree: resolve_mask("masked", mask, tree), "masked")
    return dataclasses.replace(opt, call=call("masked", optimizer=optimizer, mask=mask))


def freeze(mask: Mask, optimizer: GradientTransformation | None = None) -> GradientTransformation:
    """Frozen parameters (``mask`` True) get zero updates and no optimizer state.

    ``freeze(mask, opt)`` runs ``opt`` on the trainable leaves only (its state
    covers them alone) and gives the frozen leaves a zero update. ``freeze(mask)``
    alone is a stateless transform that zeroes the frozen leaves' updates; put it
    last in a :func:`chain`, or use it as a group of :func:`partition`.

    Args:
        mask: True for the leaves to freeze: a pytree of bools or a predicate ``(path, leaf) -> bool``.
        optimizer: the optimizer of the trainable leaves (None: pass their updates through).

    Example (train only the last layer):
        >>> import numpy as np
        >>> from fnn import optim
        >>> params = {"dense": {"w": np.ones((2, 2))}, "dense_1": {"w": np.ones((2, 1))}}
        >>> opt = optim.freeze(lambda path, leaf: path.startswith("dense/"), optim.adam(0.1))
        >>> state = opt.init(params)
        >>> sorted(state.inner_state["scale_by_adam"].mu)   # no moments for the frozen layer
        ['dense', 'dense_1']
        >>> state.inner_state["scale_by_adam"].mu["dense"]
        {'w': None}
        >>> grads = {"dense": {"w": np.ones((2, 2))}, "dense_1": {"w": np.ones((2, 1))}}
        >>> updates, state = opt.update(grads, state, params)
        >>> float(abs(updates["dense"]["w"]).max()), bool((updates["dense_1"]["w"] < 0).all())
        (0.0, True)
    """
    where = "freeze"
    if optimizer is not None:
        check_optimizer(where, "optimizer", optimizer)

    def frozen(tree: PyTree) -> list[bool]:
        return resolve_mask(where, mask, tree)

    if optimizer is None:

        def init(params: PyTree) -> EmptyState:
            return EmptyState()

        def update(grads: PyTree, state: EmptyState, params: PyTree = None):
            xp = backend.namespace(grads)
            zeros = [xp.zeros_like(g) if f else g for g, f in zip(backend.tree_leaves(grads), frozen(grads))]
            return backend.tree_unflatten(backend.tree_structure(grads), zeros), state

        return GradientTransformation(init, update, where, call(where, mask=mask))

    inner = _masked(where, optimizer, lambda tree: [not f for f in frozen(tree)], where)
    zero = freeze(mask)

    def update_both(grads: PyTree, state: MaskedState, params: PyTree = None):
        updates, state = inner.update(grads, state, params)
        updates, _ = zero.update(updates, EmptyState())
        return updates, state

    return GradientTransformation(inner.init, update_both, where, call(where, mask=mask, optimizer=optimizer))


def partition(transforms: Mapping[str, GradientTransformation], labels: Any) -> GradientTransformation:
    """A different optimizer for each labelled group of parameters.

    Every leaf gets a label; the leaves labelled ``k`` are updated by
    ``transforms[k]`` alone, which keeps state for them only.

    Args:
        transforms: ``{label: optimizer}``; labels are strings.
        labels: a pytree of labels like the params, or a function ``(path, leaf) -> label``.

    Example (no momentum on biases, a smaller rate for them):
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.partition(
        ...     {"weights": optim.sgd(0.1, momentum=0.9), "biases": optim.sgd(0.01)},
        ...     lambda path, leaf: "biases" if path.endswith("b") else "weights")
        >>> params = {"w": np.ones(2), "b": np.ones(2)}
        >>> state = opt.init(params)
        >>> updates, state = opt.update({"w": np.ones(2), "b": np.ones(2)}, state, params)
        >>> updates["w"], updates["b"]
        (array([-0.1, -0.1]), array([-0.01, -0.01]))
    """
    where = "partition"
    if not isinstance(transforms, Mapping) or not transforms:
        raise TypeError(f"{where}: transforms must be a non-empty dict {{label: optimizer}}; got {transforms!r}")
    for label, opt in transforms.items():
        if not isinstance(label, str):
            raise TypeError(f"{where}: labels must be strings; got {label!r}")
        check_optimizer(where, f"transforms[{label!r}]", opt)
    transforms = dict(transforms)

    def label_leaves(tree: PyTree) -> list[str]:
        pairs = backend.tree_leaves_with_path(tree)
        if callable(labels):
            found = [labels(path, leaf) for path, leaf in pairs]
        else:
            check_trees_match(where, tree, labels, "params", "labels")
            found = backend.tree_leaves(labels)
        for (path, _), label in zip(pairs, found):
            if label not in transforms:
                raise ValueError(
                    f"{where}: no optimizer for label {label!r} (of '{path}'); transforms has {sorted(transforms)}"
                )
        return found

    def init(params: PyTree) -> PartitionState:
        found = label_leaves(params)
        return PartitionState({k: opt.init(_subtree(params, [f == k for f in found])) for k, opt in transforms.items()})

    def update(grads: PyTree, state: PartitionState, params: PyTree = None):
        if params is not None:
            check_trees_match(where, params, grads, "params", "grads")
        found = label_leaves(params if params is not None else grads)
        if not isinstance(state, PartitionState) or set(state.inner_states) != set(transforms):
            raise ValueError(f"{where}: state must be the PartitionState made by this optimizer's init")
        updates, new_states = grads, {}
        for k, opt in transforms.items():
            keep = [f == k for f in found]
            sub_params = None if params is None else _subtree(params, keep)
            sub_updates, new_states[k] = opt.update(_subtree(grads, keep), state.inner_states[k], sub_params)
            updates = _merge(updates, keep, sub_updates)
        return updates, PartitionState(new_states)

    return GradientTransformation(init, update, where, call(where, transforms=dict(transforms), labels=labels))
