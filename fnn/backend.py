"""The array backend: NumPy or JAX, chosen by the arrays themselves.

Everything in fnn is written once against an array namespace ``xp`` that is
either :mod:`numpy` or :mod:`jax.numpy`. This module is the only place that
knows which one is in use, and the only module that imports JAX (guarded, so
``import fnn`` works with NumPy alone).

* :func:`namespace` picks ``xp`` from the arrays it is given: any JAX array
  (a tracer under ``jit`` included) selects ``jax.numpy``, otherwise NumPy.
* Random keys are values on both backends: a JAX PRNG key, or a
  ``numpy.random.Generator`` which fnn never advances (every draw and every
  derived key reads the generator's state without changing it). Use
  :func:`split` or :func:`fold_in` to get fresh keys, exactly as with JAX.
* Pytree helpers (:func:`tree_map`, :func:`tree_leaves`, ...) delegate to
  :mod:`jax.tree` when JAX is present and to a small built-in implementation
  over dicts, lists, tuples and NamedTuples otherwise. Dict keys are visited
  in sorted order on both paths.
* The few operations that differ between the two libraries live here too.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterator, Sequence

import numpy as np

try:  # JAX is optional: the NumPy backend needs nothing else.
    import jax
    import jax.numpy as jnp
    from jax import lax

    HAS_JAX = True
except ImportError:  # pragma: no cover - exercised in a subprocess test
    jax = jnp = lax = None
    HAS_JAX = False

__all__ = [
    "HAS_JAX",
    "namespace",
    "namespace_of_key",
    "is_jax_array",
    "is_concrete",
    "key",
    "is_key",
    "split",
    "fold_in",
    "fold_in_name",
    "normal",
    "uniform",
    "bernoulli",
    "tree_map",
    "tree_leaves",
    "tree_structure",
    "tree_unflatten",
    "tree_leaves_with_path",
    "tree_size",
    "tree_cast",
    "to_numpy",
    "eval_init_shapes",
    "scan",
    "default_platform",
]

Array = Any
Key = Any
PyTree = Any


# --------------------------------------------------------------------------- #
# Array namespace
# --------------------------------------------------------------------------- #


def is_jax_array(x: Any) -> bool:
    """True for a JAX array or tracer (never when JAX is not installed)."""
    return HAS_JAX and isinstance(x, jax.Array)


def namespace(*trees: PyTree):
    """The array namespace for these arrays: ``jax.numpy`` if any leaf is a JAX
    array (tracers included), else ``numpy``."""
    if HAS_JAX:
        for tree in trees:
            for leaf in tree_leaves(tree):
                if isinstance(leaf, jax.Array):
                    return jnp
    return np


def is_concrete(x: Any) -> bool:
    """True when ``x`` has values that can be read now (not a tracer under jit)."""
    return not (HAS_JAX and isinstance(x, jax.core.Tracer))


def to_numpy(tree: PyTree) -> PyTree:
    """Every leaf as a NumPy array (copies device arrays to the host)."""
    return tree_map(np.asarray, tree)


def tree_cast(tree: PyTree, dtype) -> PyTree:
    """Every floating-point leaf cast to ``dtype``, other leaves unchanged."""

    def cast(leaf):
        floating = np.issubdtype(leaf.dtype, np.floating) if hasattr(leaf, "dtype") else False
        return leaf.astype(dtype) if floating else leaf

    return tree_map(cast, tree)


def eval_init_shapes(init: Callable[[Key], PyTree]) -> PyTree:
    """The output of ``init(key)`` as shapes and dtypes, without allocating
    (``jax.eval_shape``) when JAX is present; on NumPy alone it runs ``init``."""
    if HAS_JAX:
        return jax.eval_shape(lambda: init(jax.random.key(0)))
    return init(np.random.default_rng(0))


def scan(f: Callable, init: PyTree, xs: PyTree, length: int | None = None, reverse: bool = False) -> tuple[PyTree, PyTree]:
    """``lax.scan`` on JAX (one compiled loop); a Python loop over the leading
    axis on NumPy. ``f(carry, x) -> (carry, y)``; returns ``(carry, stacked ys)``."""
    if namespace(init, xs) is not np:
        return lax.scan(f, init, xs, length=length, reverse=reverse)
    leaves = tree_leaves(xs)
    n = length if length is not None else (leaves[0].shape[0] if leaves else 0)
    order = range(n - 1, -1, -1) if reverse else range(n)
    carry, ys = init, [None] * n
    for t in order:
        carry, ys[t] = f(carry, tree_map(lambda a: a[t], xs))
    if n == 0 or ys[0] is None:
        return carry, None
    return carry, tree_map(lambda *column: np.stack(column), *ys)


# --------------------------------------------------------------------------- #
# Random keys
# --------------------------------------------------------------------------- #


def _is_raw_jax_key(k: Any) -> bool:
    return is_jax_array(k) and k.dtype == np.uint32 and k.shape == (2,)


def is_key(k: Any) -> bool:
    """True for a JAX PRNG key (typed, or a raw ``uint32[2]``) or a NumPy Generator."""
    if isinstance(k, np.random.Generator):
        return True
    if HAS_JAX and isinstance(k, jax.Array):
        return jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key) or _is_raw_jax_key(k)
    return False


def _check_key(k: Any, where: str = "key") -> None:
    if not is_key(k):
        raise TypeError(
            f"{where} must be a JAX PRNG key (jax.random.key(0)) or a "
            f"numpy.random.Generator (numpy.random.default_rng(0)); got {type(k).__name__}"
        )


def key(seed: int, backend: str = "jax") -> Key:
    """A fresh random key from an integer seed: ``jax.random.key(seed)`` for the
    JAX backend, ``numpy.random.default_rng(seed)`` for the NumPy backend."""
    if backend == "numpy":
        return np.random.default_rng(seed)
    if backend == "jax":
        if not HAS_JAX:
            raise ImportError("backend='jax' needs JAX: pip install 'fnn[jax]', or use backend='numpy'")
        return jax.random.key(seed)
    raise ValueError(f"backend must be 'jax' or 'numpy'; got {backend!r}")


def namespace_of_key(k: Key):
    """The namespace fresh arrays drawn from this key belong to."""
    _check_key(k)
    return np if isinstance(k, np.random.Generator) else jnp


def _fingerprint(gen: np.random.Generator) -> list[int]:
    """Four 32-bit words that identify the generator's current state."""
    digest = hashlib.sha256(repr(gen.bit_generator.state).encode()).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def _np_rng(gen: np.random.Generator, *words: int) -> np.random.Generator:
    """A new generator determined by ``gen``'s state and ``words``; ``gen`` is untouched."""
    return np.random.default_rng(_fingerprint(gen) + [w & 0xFFFFFFFF for w in words])


_SPLIT, _FOLD, _DRAW = 0x5EED0001, 0x5EED0002, 0x5EED0003


def split(k: Key, num: int = 2) -> list[Key] | Any:
    """``num`` new independent keys derived from ``k`` (which stays valid and unchanged)."""
    _check_key(k)
    if isinstance(k, np.random.Generator):
        return [_np_rng(k, _SPLIT, i) for i in range(num)]
    return jax.random.split(k, num)


def fold_in(k: Key, data: int) -> Key:
    """A new key determined by ``k`` and the integer ``data``."""
    _check_key(k)
    if isinstance(k, np.random.Generator):
        return _np_rng(k, _FOLD, int(data))
    return jax.random.fold_in(k, int(data) & 0xFFFFFFFF)


def name_hash(name: str) -> int:
    """A stable 32-bit hash of a name (never Python's salted ``hash``)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def fold_in_name(k: Key | None, name: str) -> Key | None:
    """The key of a child called ``name``: the parent key folded with a stable
    hash of the name, so siblings do not change each other's randomness."""
    return None if k is None else fold_in(k, name_hash(name))


def _np_draw(k: np.random.Generator) -> np.random.Generator:
    return _np_rng(k, _DRAW)


def normal(k: Key, shape: Sequence[int], dtype=np.float32) -> Array:
    """Standard normal samples of ``shape`` and ``dtype`` on the key's backend."""
    _check_key(k)
    if isinstance(k, np.random.Generator):
        return _np_draw(k).standard_normal(tuple(shape)).astype(dtype)
    return jax.random.normal(k, tuple(shape), dtype)


def uniform(k: Key, shape: Sequence[int], dtype=np.float32, low: float = 0.0, high: float = 1.0) -> Array:
    """Uniform samples in ``[low, high)`` of ``shape`` and ``dtype`` on the key's backend."""
    _check_key(k)
    if isinstance(k, np.random.Generator):
        return _np_draw(k).uniform(low, high, tuple(shape)).astype(dtype)
    return jax.random.uniform(k, tuple(shape), dtype, low, high)


def bernoulli(k: Key, p: float, shape: Sequence[int]) -> Array:
    """Boolean samples that are True with probability ``p``."""
    _check_key(k)
    if isinstance(k, np.random.Generator):
        return _np_draw(k).random(tuple(shape)) < p
    return jax.random.bernoulli(k, p, tuple(shape))


# --------------------------------------------------------------------------- #
# Pytrees
# --------------------------------------------------------------------------- #


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _children(node: Any) -> tuple[list[tuple[str, Any]], Callable[[list], Any]] | None:
    """(named children, rebuild) for a container node, None for a leaf."""
    if isinstance(node, dict):
        keys = sorted(node)
        return [(str(k), node[k]) for k in keys], lambda vals: dict(zip(keys, vals))
    if _is_namedtuple(node):
        return [(f, getattr(node, f)) for f in node._fields], lambda vals: type(node)(*vals)
    if isinstance(node, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(node)], lambda vals: type(node)(vals)
    return None


class _Structure:
    """Tree structure for the NumPy-only path (a nested template with leaf slots)."""

    def __init__(self, template: Any, num_leaves: int):
        self.template = template
        self.num_leaves = num_leaves

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Structure) and _structure_repr(self.template) == _structure_repr(other.template)

    def __hash__(self) -> int:
        return hash(_structure_repr(self.template))

    def __repr__(self) -> str:
        return f"PyTreeDef({_structure_repr(self.template)})"


class _Leaf:
    pass


_LEAF = _Leaf()


def _structure_repr(t: Any) -> str:
    if t is _LEAF:
        return "*"
    if t is None:
        return "None"
    kids = _children(t)
    names = ",".join(f"{n}:{_structure_repr(v)}" for n, v in kids[0])
    return f"{type(t).__name__}({names})"


def _py_flatten(tree: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    if tree is None:
        return []
    kids = _children(tree)
    if kids is None:
        return [(path, tree)]
    out = []
    for name, child in kids[0]:
        out.extend(_py_flatten(child, path + (name,)))
    return out


def _py_template(tree: Any) -> Any:
    if tree is None:
        return None
    kids = _children(tree)
    if kids is None:
        return _LEAF
    return kids[1]([_py_template(c) for _, c in kids[0]])


def _py_fill(template: Any, leaves: Iterator) -> Any:
    if template is None:
        return None
    if template is _LEAF:
        return next(leaves)
    kids = _children(template)
    return kids[1]([_py_fill(c, leaves) for _, c in kids[0]])



def tree_leaves(tree: PyTree) -> list:
    """The leaves of ``tree`` in canonical order (dict keys sorted)."""
    if HAS_JAX:
        return jax.tree.leaves(tree)
    return [leaf for _, leaf in _py_flatten(tree)]


def tree_structure(tree: PyTree):
    """The structure of ``tree``, comparable with ``==``."""
    if HAS_JAX:
        return jax.tree.structure(tree)
    return _Structure(_py_template(tree), len(_py_flatten(tree)))


def tree_unflatten(structure, leaves: Sequence) -> PyTree:
    """Rebuild a tree of ``structure`` from its leaves."""
    if HAS_JAX:
        return jax.tree.unflatten(structure, leaves)
    leaves = list(leaves)
    if len(leaves) != structure.num_leaves:
        raise ValueError(f"structure has {structure.num_leaves} leaves, got {len(leaves)}")
    return _py_fill(structure.template, iter(leaves))


def tree_map(f: Callable, tree: PyTree, *rest: PyTree) -> PyTree:
    """Apply ``f`` leaf-wise over ``tree`` and trees of the same structure."""
    if HAS_JAX:
        return jax.tree.map(f, tree, *rest)
    structure = tree_structure(tree)
    columns = [tree_leaves(tree)]
    for other in rest:
        other_structure = tree_structure(other)
        if other_structure != structure:
            raise ValueError(f"tree structures differ: {structure} vs {other_structure}")
        columns.append(tree_leaves(other))
    return tree_unflatten(structure, [f(*args) for args in zip(*columns)])


def _format_jax_path(path: tuple) -> tuple[str, ...]:
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:  # pragma: no cover - unusual custom key types
            parts.append(str(entry))
    return tuple(parts)


def tree_leaves_with_path(tree: PyTree) -> list[tuple[str, Any]]:
    """``[(path, leaf)]`` with paths like ``"dense_1/w"``, in the order of :func:`tree_leaves`."""
    if HAS_JAX:
        pairs = [(_format_jax_path(p), leaf) for p, leaf in jax.tree.leaves_with_path(tree)]
    else:
        pairs = _py_flatten(tree)
    return [("/".join(p), leaf) for p, leaf in pairs]


def tree_size(tree: PyTree) -> int:
    """Total number of scalar entries in the tree's leaves."""
    return int(sum(int(np.prod(np.shape(leaf))) for leaf in tree_leaves(tree)))


# --------------------------------------------------------------------------- #
# Platform
# --------------------------------------------------------------------------- #
# The kernels of fnn/kernels/ (convolution, pooling, ...) choose their form by
# the platform where jit-compiled code runs.


def default_platform() -> str:
    """The platform of JAX's default device (``"cpu"``, ``"gpu"``, ``"tpu"``, ...),
    where jit-compiled code runs unless told otherwise; ``"numpy"`` without JAX."""
    if not HAS_JAX:
        return "numpy"
    return jax.default_backend()
