"""Mixed precision: keep the weights in float32, compute in bfloat16 or float16.

Half-precision arithmetic halves memory traffic and runs much faster on
accelerators, but a weight update smaller than half a unit in the last place
of a 16-bit weight is rounded away (bfloat16 has 8 significant bits). The
usual recipe, a *precision policy*, keeps both:

* **params** stay float32 (the "master weights" the optimizer updates);
* **compute**: each forward pass casts the params and the input to the
  compute dtype (float32, bfloat16 or float16) and runs the model in it;
* **output**: the model's output is cast to float32, so the loss (a mean
  over the batch, a log-sum-exp) is computed in float32.

The backward pass mirrors it: the output cotangent is cast to the compute
dtype, the model's ``bwd`` rules run there, and the parameter and input
cotangents are cast back to float32 (the parameters' and input's dtypes) —
so the optimizer sees float32 gradients. Under ``jax.grad`` the casts do the
same by themselves. Batch-norm statistics are reduced in at least float32
by the layer itself.

float16 (5 exponent bits, smallest normal 6e-5) also needs *loss scaling* —
see :func:`fnn.optim.dynamic_loss_scale`; bfloat16 has float32's range and
does not::

    model = fnn.precision.policy(fnn.models.mlp((128,)), compute="float16")
    opt = fnn.optim.dynamic_loss_scale(fnn.optim.adam(1e-3))
    ts = fnn.train.init_state(model, opt, fnn.key(0), (None, 8, 8, 1))   # float32 params
    ts, history = fnn.train.fit(model, loss, opt, ts, (x, y), epochs=10)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import backend
from fnn.core import Layer, layer_factory

__all__ = ["policy", "resolve_dtype", "COMPUTE_DTYPES"]

Array = Any
PyTree = Any
COMPUTE_DTYPES = ("float32", "bfloat16", "float16", "float64")


def resolve_dtype(dtype: Any, what: str = "dtype") -> np.dtype:
    """A floating NumPy dtype from a name (``"bfloat16"`` included) or a dtype."""
    if isinstance(dtype, str) and dtype == "bfloat16":
        if backend.HAS_JAX:
            return np.dtype(backend.jnp.bfloat16)
        try:
            import ml_dtypes
        except ImportError:
            raise ImportError("bfloat16 needs ml_dtypes (installed with JAX): pip install ml_dtypes") from None
        return np.dtype(ml_dtypes.bfloat16)
    try:
        out = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"policy: {what} must be one of {COMPUTE_DTYPES} or a floating dtype; got {dtype!r}") from None
    if out.kind != "f" and out.name != "bfloat16":
        raise TypeError(f"policy: {what} must be a floating dtype such as {COMPUTE_DTYPES}; got {out.name}")
    return out


def _is_float(a: Any) -> bool:
    dtype = getattr(a, "dtype", None)
    return dtype is not None and (np.dtype(dtype).kind == "f" or np.dtype(dtype).name == "bfloat16")


def _cast(tree: PyTree, dtype: Any) -> PyTree:
    """Floating leaves cast to ``dtype`` (integer leaves, e.g. token ids, unchanged)."""
    return backend.tree_map(lambda a: a.astype(dtype) if _is_float(a) and a.dtype != dtype else a, tree)


def _cast_like(tree: PyTree, like: PyTree) -> PyTree:
    """Each floating leaf of ``tree`` cast to the dtype of its counterpart in ``like``."""
    return backend.tree_map(lambda a, b: a.astype(b.dtype) if _is_float(a) and a.dtype != b.dtype else a, tree, like)


def _marker(xp, a: Any) -> Array:
    """An empty array that remembers ``a``'s dtype (residuals must be arrays under ``jax.custom_vjp``)."""
    return xp.zeros((0,), getattr(a, "dtype", np.float32))


@layer_factory
def policy(model: Layer, *, compute: Any = "bfloat16", output: Any = "float32", name: str | None = None) -> Layer:
    """``model`` running its arithmetic in ``compute`` and returning ``output``.

    The returned layer has the same params and state trees as ``model`` (so
    checkpoints are interchangeable), initialised in the dtype given to
    ``init`` (float32 by default). Its ``apply`` / ``fwd``:

        y = model(cast(params, compute), state, cast(x, compute)).astype(output)

    and its hand-written ``bwd`` casts ``dy`` to ``compute``, runs ``model.bwd``
    and casts ``dparams`` to the params' dtypes and ``dx`` to the input's.
    New state (batch-norm running statistics) keeps the dtype of the old.

    Args:
        model: any fnn layer or model.
        compute: ``"float32"``, ``"bfloat16"``, ``"float16"`` (use loss scaling,
            :func:`fnn.optim.dynamic_loss_scale`) or ``"float64"``.
        output: the dtype of the model's output (and so of the loss).
        name: the layer's name (default ``model.name``).

    >>> import numpy as np, fnn
    >>> model = fnn.precision.policy(fnn.layers.dense(3), compute="float16")
    >>> params, state = model.init(fnn.key(0, backend="numpy"), (None, 2))
    >>> y, _ = model.apply(params, state, np.ones((4, 2), np.float32))
    >>> params["w"].dtype, y.dtype
    (dtype('float32'), dtype('float32'))
    """
    if not isinstance(model, Layer):
        raise TypeError(f"policy: model must be an fnn Layer; got {type(model).__name__}")
    compute_dtype, output_dtype = resolve_dtype(compute, "compute"), resolve_dtype(output, "output")

    def fwd(params, state, x, key, train):
        xp = backend.namespace(params, x)
        y, new_state, residuals = model.fwd(_cast(params, compute_dtype), state, _cast(x, compute_dtype), key=key, train=train)
        markers = backend.tree_map(lambda a: _marker(xp, a), x)
        return _cast(y, output_dtype), _cast_like(new_state, state), (residuals, markers)

    def apply(params, state, x, key, train):  # the model's own apply: a manual_vjp inside keeps its rule
        y, new_state = model.apply(_cast(params, compute_dtype), state, _cast(x, compute_dtype), key=key, train=train)
        return _cast(y, output_dtype), _cast_like(new_state, state)

    def bwd(params, saved, dy, *, input_grad=True):
        residuals, markers = saved
        dparams, dx = model.bwd(_cast(params, compute_dtype), residuals, _cast(dy, compute_dtype), input_grad=input_grad)
        return _cast_like(dparams, params), None if dx is None else _cast_like(dx, markers)

    doc = f"{model.name} computing in {compute_dtype.name}, output {output_dtype.name}"
    return model.replace(name=name or model.name, fwd=fwd, bwd=bwd, apply=apply, doc=doc)
