"""The optimizers' kernels: Adam's moments and direction, a scaled update, params plus updates.

Each kernel takes pytrees and an explicit ``implementation``:

* ``"xla"`` -- the plain form: the tree expression of the formula, which runs
  on NumPy and JAX arrays alike (and under ``jit``, where XLA fuses it into
  one loop; it is what a GPU runs). It is the reference;
* ``"numpy"`` -- in-place fused kernels for plain NumPy float arrays: each
  result is written with ``out=`` into the array that is returned anyway
  (recycled by :mod:`fnn.kernels.optim_buffers`), scalar factors (bias
  corrections, learning rate) folded into one multiplier, and Adam's passes
  done tile by tile in the core's cache. It is valid only when every leaf of
  every tree is a ``numpy.ndarray`` of one floating dtype and shape per
  position, and refuses anything else (JAX arrays, tracers, mixed dtypes);
* ``"auto"`` (the default) -- what :func:`fnn.kernels.plan.optimizer_form` picks.

No kernel writes into its inputs: every array it returns is new, or a
recycled one that nothing else references.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fnn import backend
from fnn.kernels import plan
from fnn.kernels.optim_buffers import _RECYCLER

__all__ = ["OPTIMIZER_IMPLEMENTATIONS", "adam_update", "add_updates", "scale_updates"]

Array = Any
PyTree = Any

OPTIMIZER_IMPLEMENTATIONS = ("xla", "numpy")  # the forms of every kernel here ("auto" picks one)
TILE_BYTES = 1 << 17  # per array and tile: six arrays of a tile stay within a core's L2 cache


# --------------------------------------------------------------------------- #
# Choosing the form
# --------------------------------------------------------------------------- #


def _numpy_columns(trees: tuple[PyTree, ...]) -> list[list[np.ndarray]] | None:
    """The leaves of each tree when all hold plain NumPy arrays of one floating
    dtype and shape per position (the numpy form's inputs); else None."""
    columns = [backend.tree_leaves(t) for t in trees]
    if any(len(c) != len(columns[0]) for c in columns):
        return None
    for leaves in zip(*columns):
        first = leaves[0]
        if type(first) is not np.ndarray or first.dtype.kind != "f":
            return None
        for leaf in leaves[1:]:
            if type(leaf) is not np.ndarray or leaf.dtype != first.dtype or leaf.shape != first.shape:
                return None
    return columns


def _host_scalar(x: Any) -> bool:
    """A Python number or a 0-d NumPy value (a factor the numpy form can read)."""
    kind = type(x)
    if kind is float or kind is int:
        return True
    return x.ndim == 0 if kind is np.ndarray else isinstance(x, np.generic)


def _why_not_numpy(names: tuple[str, ...], trees: tuple[PyTree, ...], scalars: dict[str, Any]) -> str:
    """The first input that the numpy form cannot take, in words."""
    for name, value in scalars.items():
        if not _host_scalar(value):
            return f"{name} is {type(value).__name__}, not a number or a 0-d NumPy array"
    first = backend.tree_leaves_with_path(trees[0])
    for name, tree in zip(names, trees):
        for (path, leaf), (_, ref) in zip(backend.tree_leaves_with_path(tree), first):
            if type(leaf) is not np.ndarray:
                return f"{name} at '{path}' is a {type(leaf).__module__}.{type(leaf).__name__}"
            if leaf.dtype.kind != "f":
                return f"{name} at '{path}' has dtype {leaf.dtype}, not a floating dtype"
            if type(ref) is np.ndarray and (leaf.dtype != ref.dtype or leaf.shape != ref.shape):
                got, want = f"{leaf.dtype}{list(leaf.shape)}", f"{ref.dtype}{list(ref.shape)}"
                return f"{name} at '{path}' is {got} where {names[0]} is {want}"
    return "the trees have different numbers of leaves"  # pragma: no cover - callers check the structures first


def _choose(
    kernel: str, implementation: str, names: tuple[str, ...], trees: tuple[PyTree, ...], scalars: dict[str, Any]
) -> list[list[np.ndarray]] | None:
    """The numpy form's leaf columns when it runs, None when the xla form runs."""
    if implementation not in ("auto", *OPTIMIZER_IMPLEMENTATIONS):
        raise ValueError(f"{kernel}: implementation must be 'auto', 'xla' or 'numpy'; got {implementation!r}")
    if implementation == "xla":
        return None
    columns = _numpy_columns(trees) if all(_host_scalar(v) for v in scalars.values()) else None
    if implementation == "numpy":
        if columns is None:
            raise TypeError(
                f"{kernel}: implementation='numpy' runs only on plain NumPy arrays of one floating dtype "
                f"per leaf ({', '.join(names)}); here {_why_not_numpy(names, trees, scalars)}. "
                "Use implementation='xla' (any arrays, under jit too) or 'auto'."
            )
        return columns
    return columns if plan.optimizer_form(kernel, numpy_ready=columns is not None) == "numpy" else None


def _map(xp, f: Callable, tree: PyTree, *rest: PyTree) -> PyTree:
    """``tree_map`` whose results are ``xp`` arrays (NumPy turns 0-d results into scalars)."""
    return backend.tree_map(lambda *leaves: xp.asarray(f(*leaves)), tree, *rest)


def _is_one(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == 1


# --------------------------------------------------------------------------- #
# Adam
# --------------------------------------------------------------------------- #


def adam_update(
    grads: PyTree,
    mu: PyTree,
    nu: PyTree,
    count: Array,
    *,
    b1: float,
    b2: float,
    eps: float,
    scale: Any = 1.0,
    implementation: str = "auto",
) -> tuple[PyTree, PyTree, PyTree]:
    """Adam's new moments and its update times ``scale``: ``(updates, mu, nu)``.

    With ``t = count`` (this update's number, counted from 1)::

        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        update = scale * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)

    Moments keep their own dtype, updates take the gradient's. ``scale`` (a
    number or a 0-d array, e.g. ``-learning_rate``) lets a caller fold a factor
    into the same pass; the xla form multiplies by it after the cast to the
    gradient's dtype, exactly as a separate scaling would.

    Args:
        grads, mu, nu: pytrees of one structure and shapes (the caller checks it).
        count: this update's number t >= 1 (0-d int array or number).
        b1, b2, eps: Adam's hyper-parameters.
        scale: a factor applied to the update (1.0: none).
        implementation: ``"auto"``, ``"xla"`` or ``"numpy"`` (see the module).
    """
    names, trees = ("grads", "mu", "nu"), (grads, mu, nu)
    columns = _choose("adam_update", implementation, names, trees, {"count": count, "scale": scale})
    if columns is None:
        return _adam_xla(grads, mu, nu, count, b1, b2, eps, scale)
    multiplier, eps_hat = adam_factors(float(count), b1, b2, eps, float(scale))
    results = [adam_leaf(g, m, v, b1, b2, multiplier, eps_hat) for g, m, v in zip(*columns)]
    structure = backend.tree_structure(grads)
    new_mu, new_nu, updates = (backend.tree_unflatten(structure, [r[i] for r in results]) for i in range(3))
    return updates, new_mu, new_nu


def _adam_xla(grads, mu, nu, count, b1, b2, eps, scale):
    """The plain form: one tree expression per result."""
    xp = backend.namespace(grads, mu, count, scale)
    t = xp.asarray(count, dtype=float)
    # the bias corrections as scalar reciprocals: one multiply per entry instead of a divide
    inv_correction1 = 1 / (1 - b1**t)
    inv_correction2 = 1 / (1 - b2**t)
    mu = _map(xp, lambda g, m: (b1 * m + (1 - b1) * g).astype(m.dtype, copy=False), grads, mu)
    nu = _map(xp, lambda g, v: (b2 * v + (1 - b2) * g * g).astype(v.dtype, copy=False), grads, nu)
    factor = None if _is_one(scale) else xp.asarray(scale)

    def direction(g, m, v):
        m_hat = m * inv_correction1.astype(m.dtype, copy=False)
        v_hat = v * inv_correction2.astype(v.dtype, copy=False)
        u = (m_hat / (xp.sqrt(v_hat) + eps)).astype(g.dtype, copy=False)
        return u if factor is None else u * factor.astype(u.dtype, copy=False)

    return _map(xp, direction, grads, mu, nu), mu, nu


def adam_factors(t: float, b1: float, b2: float, eps: float, scale: float) -> tuple[float, float]:
    """``(multiplier, eps_hat)`` with ``scale * m_hat / (sqrt(v_hat) + eps) ==
    multiplier * m / (sqrt(v) + eps_hat)``: the bias corrections folded into
    one scalar (``sqrt(v / c2) = sqrt(v) / sqrt(c2)``)."""
    correction1 = 1.0 - b1**t
    root2 = float(np.sqrt(1.0 - b2**t))
    return scale * root2 / correction1, eps * root2


def adam_leaf(
    g: np.ndarray, m: np.ndarray, v: np.ndarray, b1: float, b2: float, multiplier: float, eps_hat: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """New ``m``, ``v`` and ``multiplier * m / (sqrt(v) + eps_hat)`` of one leaf, each written once.

    ``m = b1 m + (1 - b1) g`` and ``v = b2 v + (1 - b2) g g`` in the same order
    of operations as the xla form; the update's buffer doubles as scratch, so
    there are no temporaries. Large contiguous leaves are done tile by tile
    (:data:`TILE_BYTES` per array), so that the eleven passes of each tile run
    in the core's cache instead of streaming whole arrays eleven times.
    """
    f = g.dtype.type
    u = _RECYCLER.empty(g.shape, g.dtype)
    m_new = _RECYCLER.empty(g.shape, g.dtype)
    v_new = _RECYCLER.empty(g.shape, g.dtype)
    factors = (f(1 - b1), f(b1), f(1 - b2), f(b2), f(eps_hat), f(multiplier))
    tile = max(1, TILE_BYTES // g.dtype.itemsize)
    if g.size <= tile or not (g.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous):
        _adam_passes(g, m, v, m_new, v_new, u, *factors)
        return m_new, v_new, u
    flat = [a.reshape(-1) for a in (g, m, v, m_new, v_new, u)]
    for start in range(0, g.size, tile):
        _adam_passes(*[a[start : start + tile] for a in flat], *factors)
    return m_new, v_new, u


def _adam_passes(g, m, v, m_new, v_new, u, one_minus_b1, b1, one_minus_b2, b2, eps_hat, multiplier) -> None:
    """The eleven in-place passes of :func:`adam_leaf` over one block."""
    np.multiply(g, one_minus_b1, out=u)
    np.multiply(m, b1, out=m_new)
    np.add(m_new, u, out=m_new)
    np.multiply(g, one_minus_b2, out=u)
    np.multiply(u, g, out=u)
    np.multiply(v, b2, out=v_new)
    np.add(v_new, u, out=v_new)
    np.sqrt(v_new, out=u)
    np.add(u, eps_hat, out=u)
    np.divide(m_new, u, out=u)
    np.multiply(u, multiplier, out=u)


# --------------------------------------------------------------------------- #
# Scaling and applying updates
# --------------------------------------------------------------------------- #


def scale_updates(updates: PyTree, factor: Any, *, implementation: str = "auto") -> PyTree:
    """``factor * u`` for every leaf, the factor cast to the leaf's dtype first.

    Args:
        updates: a pytree of float arrays.
        factor: a number or a 0-d array (e.g. ``-learning_rate``).
        implementation: ``"auto"``, ``"xla"`` or ``"numpy"`` (see the module).
    """
    columns = _choose("scale_updates", implementation, ("updates",), (updates,), {"factor": factor})
    if columns is not None:
        structure = backend.tree_structure(updates)
        return backend.tree_unflatten(
            structure, [np.multiply(g, g.dtype.type(factor), out=_RECYCLER.empty(g.shape, g.dtype)) for g in columns[0]]
        )
    xp = backend.namespace(updates, factor)
    factor = xp.asarray(factor)
    return _map(xp, lambda g: g * factor.astype(g.dtype, copy=False), updates)


def add_updates(params: PyTree, updates: PyTree, *, implementation: str = "auto") -> PyTree:
    """``p + u`` for every leaf, cast back to the parameter's dtype.

    Args:
        params, updates: pytrees of one structure (the caller checks it).
        implementation: ``"auto"``, ``"xla"`` or ``"numpy"`` (see the module);
            the numpy form needs updates of the parameters' dtypes.
    """
    columns = _choose("add_updates", implementation, ("params", "updates"), (params, updates), {})
    if columns is not None:
        added = [np.add(p, u, out=_RECYCLER.empty(p.shape, p.dtype)) for p, u in zip(*columns)]
        return backend.tree_unflatten(backend.tree_structure(params), added)
    xp = backend.namespace(params, updates)

    def add(p, u):
        p = xp.asarray(p)
        return xp.asarray(p + u).astype(p.dtype, copy=False)

    return backend.tree_map(add, params, updates)
