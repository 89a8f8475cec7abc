"""Gradient checking: central finite differences in float64 and per-leaf
comparison of gradient trees (manual, autodiff, numeric).

The error of one leaf is ``max|a - b| / max(max|a|, max|b|, floor)``: relative
to the larger gradient, with an absolute floor so that a gradient that is truly
zero (a bias before batch norm) does not fail on round-off.

Usable in a user's own tests::

    report = fnn.gradcheck.check_layer(layer, params, state, x)
    assert report.max_error("manual", "numeric") < 1e-7, report
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from fnn import backend
from fnn.core import Layer

__all__ = [
    "numerical_grad",
    "relative_error",
    "compare",
    "assert_close",
    "directional_check",
    "GradCheck",
    "check_layer",
]

PyTree = Any


def _require_x64(what: str) -> None:
    """JAX computes in float32 unless x64 is on: refuse rather than compare in float32."""
    if not backend.jax.config.jax_enable_x64:
        raise RuntimeError(
            f"gradient checks run in float64, and {what} needs JAX's float64: call "
            "jax.config.update('jax_enable_x64', True) first"
        )


def _float64_like(tree: PyTree) -> PyTree:
    """Every leaf as float64 on its own backend (JAX leaves need x64 enabled)."""

    def cast(leaf):
        if backend.is_jax_array(leaf):
            _require_x64("an input given as JAX arrays (or pass NumPy arrays and methods=('numeric',))")
            return leaf.astype(np.float64)
        return np.asarray(leaf, dtype=np.float64)

    return backend.tree_map(cast, tree)


def numerical_grad(
    f: Callable[[PyTree], Any],
    params: PyTree,
    *,
    eps: float = 1e-6,
    max_entries: int | None = None,
    seed: int = 0,
) -> PyTree:
    """Central differences ``(f(p + eps e_i) - f(p - eps e_i)) / (2 eps)`` in float64.

    ``f`` maps a tree like ``params`` to a scalar. With ``max_entries``, each
    leaf larger than that is sampled at ``max_entries`` random entries and the
    rest of the returned gradient is NaN (ignored by :func:`compare`).
    Returns NumPy float64 arrays.
    """
    params = _float64_like(params)
    paths_leaves = backend.tree_leaves(params)
    structure = backend.tree_structure(params)
    host = [np.array(leaf, dtype=np.float64) for leaf in paths_leaves]
    rng = np.random.default_rng(seed)
    out = []
    for i, leaf in enumerate(host):
        grad = np.full(leaf.shape, np.nan) if max_entries is not None and leaf.size > max_entries else np.zeros(leaf.shape)
        indices = range(leaf.size)
        if max_entries is not None and leaf.size > max_entries:
            indices = rng.choice(leaf.size, size=max_entries, replace=False)
        for flat in indices:
            idx = np.unravel_index(int(flat), leaf.shape)
            values = []
            for sign in (1.0, -1.0):
                bumped = leaf.copy()
                bumped[idx] += sign * eps
                leaves = list(paths_leaves)
                leaves[i] = bumped if not backend.is_jax_array(paths_leaves[i]) else backend.jnp.asarray(bumped)
                values.append(float(f(backend.tree_unflatten(structure, leaves))))
            grad[idx] = (values[0] - values[1]) / (2.0 * eps)
        out.append(grad)
    return backend.tree_unflatten(structure, out)


def relative_error(a: Any, b: Any, floor: float = 1e-8) -> float:
    """``max|a - b| / max(max|a|, max|b|, floor)``, ignoring entries that are NaN in either."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"relative_error: shapes differ: {a.shape} vs {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    if not keep.any():
        return 0.0
    a, b = a[keep], b[keep]
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))), floor)
    return float(np.max(np.abs(a - b))) / scale


def compare(a: PyTree, b: PyTree, floor: float = 1e-8) -> dict[str, float]:
    """Per-leaf relative error between two gradient trees of the same structure,
    keyed by path (``"dense_1/w"``). Raises if the structures differ."""
    pa = backend.tree_leaves_with_path(a)
    pb = backend.tree_leaves_with_path(b)
    if [p for p, _ in pa] != [p for p, _ in pb]:
        raise ValueError(f"compare: trees differ: {[p for p, _ in pa]} vs {[p for p, _ in pb]}")
    return {path: relative_error(x, y, floor) for (path, x), (_, y) in zip(pa, pb)}


def assert_close(a: PyTree, b: PyTree, tol: float = 1e-7, floor: float = 1e-8, names: tuple[str, str] = ("a", "b")) -> None:
    """Raise AssertionError listing every leaf whose relative error exceeds ``tol``."""
    errors = compare(a, b, floor)
    bad = {p: e for p, e in errors.items() if not e <= tol}
    if bad:
        lines = "\n".join(f"  {p or '<root>'}: {e:.3e}" for p, e in sorted(bad.items(), key=lambda kv: -kv[1]))
        raise AssertionError(f"{names[0]} vs {names[1]}: relative error above {tol:g} in\n{lines}")


def directional_check(
    f: Callable[[PyTree], Any], params: PyTree, grads: PyTree, *, eps: float = 1e-6, seed: int = 0
) -> float:
    """Relative error between ``<grads, v>`` and the central difference of ``f``
    along a random unit direction ``v``: a cheap check for layers too large for
    entry-by-entry differences."""
    params = _float64_like(params)
    rng = np.random.default_rng(seed)
    leaves = backend.tree_leaves(params)
    direction = [rng.standard_normal(np.shape(leaf)) for leaf in leaves]
    norm = np.sqrt(sum(float(np.sum(d * d)) for d in direction)) or 1.0
    direction = [d / norm for d in direction]
    structure = backend.tree_structure(params)

    def shifted(sign):
        moved = [leaf + sign * eps * (backend.jnp.asarray(d) if backend.is_jax_array(leaf) else d) for leaf, d in zip(leaves, direction)]
        return float(f(backend.tree_unflatten(structure, moved)))

    numeric = (shifted(1.0) - shifted(-1.0)) / (2 * eps)
    analytic = sum(float(np.sum(np.asarray(g, np.float64) * d)) for g, d in zip(backend.tree_leaves(grads), direction))
    return relative_error(np.array(analytic), np.array(numeric))


@dataclasses.dataclass
class GradCheck:
    """Gradients of one check and their pairwise per-leaf errors.

    ``grads[method]`` is ``{"params": ..., "x": ...}`` for each method that ran
    (``manual``, ``autodiff``, ``numeric``)."""

    grads: dict[str, PyTree]
    floor: float = 1e-8

    def errors(self, a: str, b: str) -> dict[str, float]:
        return compare(self.grads[a], self.grads[b], self.floor)

    def max_error(self, a: str, b: str) -> float:
        errs = self.errors(a, b)
        return max(errs.values()) if errs else 0.0

    def __str__(self) -> str:
        methods = [m for m in ("autodiff", "numeric") if m in self.grads]
        lines = [f"{'leaf':30s}" + "".join(f"  manual vs {m:9s}" for m in methods)]
        columns = [self.errors("manual", m) for m in methods]
        for path in (columns[0] if columns else {}):
            lines.append(f"{path:30s}" + "".join(f"  {col[path]:20.2e}" for col in columns))
        return "\n".join(lines)


def check_layer(
    layer: Layer,
    params: PyTree,
    state: PyTree,
    x: Any,
    *,
    key: Any = None,
    train: bool = False,
    cotangent: Any = None,
    eps: float = 1e-6,
    max_entries: int | None = None,
    methods: tuple[str, ...] = ("autodiff", "numeric"),
    seed: int = 0,
) -> GradCheck:
    """Compare the layer's hand-written ``bwd`` with ``jax.grad`` and with finite
    differences, for the scalar ``sum(apply(params, state, x) * cotangent)``.

    Runs in float64 on the backend of ``params``/``x``. ``cotangent`` defaults
    to a fixed random array of the output's shape (a tuple for several outputs).
    The gradient is taken with respect to params and to the input ``x``.
    """
    params, x = _float64_like(params), _float64_like(x)
    xp = backend.namespace(params, x)
    y, _, residuals = layer.fwd(params, state, x, key=key, train=train)
    if cotangent is None:
        rng = np.random.default_rng(seed + 1)
        cotangent = backend.tree_map(lambda a: xp.asarray(rng.standard_normal(np.shape(a))), y)
    cotangent = _float64_like(cotangent)

    def scalar(inputs):
        out, _ = layer.apply(inputs["params"], state, inputs["x"], key=key, train=train)
        terms = backend.tree_leaves(backend.tree_map(lambda o, c: xp.sum(o * c), out, cotangent))
        return sum(terms)

    dparams, dx = layer.bwd(params, residuals, cotangent)
    grads = {"manual": {"params": dparams, "x": dx}}
    inputs = {"params": params, "x": x}
    if "autodiff" in methods:
        if not backend.HAS_JAX:
            raise ImportError("check_layer(methods=('autodiff', ...)) needs JAX")
        _require_x64("the comparison with jax.grad (methods=('autodiff', ...))")
        jnp = backend.jnp
        jax_inputs = backend.tree_map(jnp.asarray, inputs)
        jax_state = backend.tree_map(jnp.asarray, state)
        jax_cot = backend.tree_map(jnp.asarray, cotangent)

        def jax_scalar(inp):
            out, _ = layer.apply(inp["params"], jax_state, inp["x"], key=key, train=train)
            return sum(backend.tree_leaves(backend.tree_map(lambda o, c: jnp.sum(o * c), out, jax_cot)))

        grads["autodiff"] = backend.jax.jit(backend.jax.grad(jax_scalar))(jax_inputs)
    if "numeric" in methods:
        if xp is not np:  # one compilation instead of op-by-op dispatch for every bumped entry
            scalar = backend.jax.jit(scalar)
        grads["numeric"] = numerical_grad(scalar, inputs, eps=eps, max_entries=max_entries, seed=seed)
    return GradCheck(backend.to_numpy(grads))
