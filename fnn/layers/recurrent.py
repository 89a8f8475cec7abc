"""Recurrent layers ``rnn``, ``lstm`` and ``gru`` with backprop through time
written by hand, on NumPy and under ``jax.jit``.

Shapes and params
-----------------
Inputs are ``(batch, time, features)``. With ``G`` gate blocks (rnn 1,
gru 3, lstm 4) the params are ``{"w_x": (features, G*h), "w_h": (h, G*h),
"b": (G*h,)}``, plus ``"b_hn": (h,)`` for the GRU; the cell equations and the
gate orders are in :mod:`fnn.layers._cells`. The output is the last state
``h_T`` of shape ``(batch, h)``, or with ``return_sequences=True`` every
``h_t`` as ``(batch, time, h)``.

Initial state and mask: the input is ``x`` or a dict
------------------------------------------------------
A layer takes one input. Beside a plain array ``x`` it accepts a dict::

    {"x": x, "mask": mask, "h0": h0, "c0": c0}     # every key but "x" optional

* ``h0`` (and ``c0`` for the LSTM), each ``(batch, h)``: the initial state.
  A state that is not given starts at zeros.
* ``mask`` ``(batch, time)``: True (or 1) at real steps, False (or 0) at
  padding. A padded step leaves the state unchanged, outputs zeros, and gets a
  zero gradient; so ``h_T`` is the state after each sequence's last real step.
  A numeric mask is read as ``mask > 0.5``.

``bwd`` returns the input's cotangent in the same structure: an array for an
array input, a dict with the same keys for a dict input (``dh0``, ``dc0``;
the mask gets ``None`` when it is boolean or integer, which ``jax.grad`` and
``jax.custom_vjp`` accept as a zero, and zeros when it is floating).

Stacking with masks: given a mask, a layer with ``return_sequences=True``
passes it on and returns ``{"x": y, "mask": mask}``, so that
``serial(lstm(32, return_sequences=True), lstm(32))`` applied to
``{"x": x, "mask": mask}`` masks both layers. ``init`` and ``out_shape`` take
the shape of ``x`` alone; the mask and initial state need no params.

How it runs
-----------
The input projection ``x @ w_x + b`` of every time step is one matmul before
the loop; only the recurrent part runs inside :func:`fnn.backend.scan`
(``lax.scan`` on JAX: one compiled loop, whatever ``T``; a Python loop on
NumPy). The backward pass is a reverse scan carrying ``dh`` (and ``dc``)
back through time; ``dw_x``, ``db``, ``dx`` and ``dw_h`` are then again one
matmul each over all time steps.

>>> import numpy as np, fnn
>>> layer = fnn.layers.lstm(8)
>>> params, state = layer.init(np.random.default_rng(0), (None, 5, 3))
>>> sorted((k, v.shape) for k, v in params.items())
[('b', (32,)), ('w_h', (8, 32)), ('w_x', (3, 32))]
>>> x = np.zeros((2, 5, 3), np.float32)
>>> mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
>>> layer.apply(params, state, {"x": x, "mask": mask})[0].shape
(2, 8)
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from fnn import backend, initializers
from fnn.checks import batch_axis_hint
from fnn.core import Layer, LayerError, check_param_shapes, is_multi_shape, layer_factory
from fnn.kernels.weight_grad import weight_gradient
from fnn.layers import _cells
from fnn.layers._masks import keep as keep_steps, mask_cotangent
from fnn.layers import activations as A

__all__ = ["rnn", "lstm", "gru"]

Array = Any
_DEFAULT_W = initializers.glorot_uniform()
_DEFAULT_RECURRENT = initializers.orthogonal()


def _check_hidden(name: str, hidden: Any) -> int:
    if isinstance(hidden, bool) or not isinstance(hidden, (int, np.integer)) or hidden <= 0:
        raise ValueError(f"{name}: hidden must be a positive int; got {hidden!r}")
    return int(hidden)


def _input_features(name: str, shape: Any) -> int:
    """The feature size of an input shape ``(batch, time, features)``."""
    if is_multi_shape(shape):
        raise LayerError(
            name,
            f"input_shape must be the shape of x, (batch, time, features); got several shapes {shape} "
            "(the mask and initial state need no params: init with x's shape, apply with the dict)",
        )
    if len(shape) != 3:
        raise LayerError(name, f"expected input of shape (batch, time, features), got {shape}{batch_axis_hint(shape, 3)}")
    if shape[2] is None or shape[2] == 0:
        raise LayerError(name, f"the feature size must be known and positive; got shape {shape}")
    return shape[2]


def _split_input(
    name: str, inputs: Any, carry_names: tuple[str, ...]
) -> tuple[Array, Array | None, dict, tuple | None]:
    """``(x, mask, {"h0": ..., "c0": ...} given, keys of a dict input or None)``."""
    if isinstance(inputs, Mapping):
        allowed = ["x", "mask"] + [f"{c}0" for c in carry_names]
        extra = sorted(k for k in inputs if k not in allowed)
        if "x" not in inputs or extra:
            what = f"unexpected keys {extra}" if extra else "no 'x'"
            raise LayerError(name, f"the input dict has {what}; expected 'x' and optionally {allowed[1:]}")
        initial = {k: inputs[k] for k in allowed[2:] if inputs.get(k) is not None}
        return inputs["x"], inputs.get("mask"), initial, tuple(sorted(inputs))
    if isinstance(inputs, (tuple, list)):
        raise LayerError(
            name,
            f"got a tuple of {len(inputs)} inputs; pass x of shape (batch, time, features), "
            'or a dict such as {"x": x, "mask": mask}',
        )
    return inputs, None, {}, None


def _expected(cell: _cells.Cell, hidden: int, features: int) -> dict:
    """The param shapes of a layer of ``cell`` with ``hidden`` units on ``features`` inputs."""
    blocks = cell.blocks * hidden
    shapes = {"w_x": (features, blocks), "w_h": (hidden, blocks), "b": (blocks,)}
    shapes.update({k: (hidden,) for k in cell.extra_params})
    return shapes


def _check(name: str, cell: _cells.Cell, hidden: int, params: Any, x: Any, mask: Any, initial: dict) -> None:
    """Shapes of ``x``, the params, the mask and the initial state, with messages naming the layer."""
    shape = tuple(np.shape(x))
    if len(shape) != 3:
        raise LayerError(name, f"expected x of shape (batch, time, features), got shape {shape}{batch_axis_hint(shape, 3)}")
    batch, time, features = shape
    if time == 0:
        raise LayerError(name, f"x has no time steps (shape {shape}); a recurrent layer needs at least one")
    w_x = params.get("w_x") if isinstance(params, Mapping) else None
    if w_x is not None and np.ndim(w_x) == 2 and np.shape(w_x)[0] != features:
        raise LayerError(
            name,
            f"x has {features} features (shape {shape}) but params['w_x'] has shape {tuple(np.shape(w_x))}, "
            f"made for {np.shape(w_x)[0]} features",
        )
    check_param_shapes(name, params, _expected(cell, hidden, features))
    if mask is not None and tuple(np.shape(mask)) != (batch, time):
        raise LayerError(
            name,
            f"mask has shape {tuple(np.shape(mask))}; expected (batch, time) = {(batch, time)} for x of shape {shape}",
        )
    for k, v in initial.items():
        if tuple(np.shape(v)) != (batch, hidden):
            raise LayerError(name, f"{k} has shape {tuple(np.shape(v))}; expected (batch, hidden) = {(batch, hidden)}")


def _forward(cell: _cells.Cell, hidden: int, return_sequences: bool, params, x, mask, initial, keys):
    """The input projection for every step at once, then the cell's scan over time."""
    xp = backend.namespace(params, x, mask, initial)
    batch, time, features = np.shape(x)
    xT = xp.transpose(xp.asarray(x), (1, 0, 2))  # time-major for the scan
    z = xT.reshape(time * batch, features) @ params["w_x"] + params["b"][None, :]
    z = z.reshape(time, batch, cell.blocks * hidden)
    zeros = xp.zeros((batch, hidden), z.dtype)
    carry0 = tuple(xp.asarray(initial[f"{c}0"]).astype(z.dtype) if f"{c}0" in initial else zeros for c in cell.carry)
    keep = None
    if mask is not None:
        mask = xp.asarray(mask)
        keep = xp.transpose(keep_steps(xp, mask))[:, :, None]  # (time, batch, 1)

    def body(carry, step_in):
        z_t, keep_t = step_in
        new, cache = cell.step(params, z_t, carry)
        if keep_t is not None:  # padding: the state stays as it was
            new = tuple(xp.where(keep_t, n, old) for n, old in zip(new, carry))
        return new, (new, cache)

    last, (states, caches) = backend.scan(body, carry0, (z, keep))
    if return_sequences:
        hs = states[0] if keep is None else xp.where(keep, states[0], 0.0)
        y = xp.transpose(hs, (1, 0, 2))
        if mask is not None:
            y = {"x": y, "mask": mask}
    else:
        y = last[0]
    given = None if keys is None else {k: None for k in keys}
    residuals = {"x": xT, "keep": keep, "carry0": carry0, "states": states, "caches": caches}
    residuals.update(given=given, mask=mask, initial=initial)
    return y, residuals


def _reverse_scan(cell: _cells.Cell, params, res, dys, dlast):
    """Backprop through time: ``(dcarry0, dz, da, prevs)`` from the reverse scan over the steps."""
    xp = backend.namespace(params, res["x"], dlast)
    carry0, states, keep = res["carry0"], res["states"], res["keep"]
    prevs = tuple(xp.concatenate([c0[None], s[:-1]], axis=0) for c0, s in zip(carry0, states))

    def body(dcarry, step_in):
        cache, prev, dy_t, keep_t = step_in
        dnew = dcarry if dy_t is None else (dcarry[0] + dy_t,) + tuple(dcarry[1:])
        if keep_t is not None:  # a padded step's candidate state was never used
            dnew = tuple(xp.where(keep_t, d, 0.0) for d in dnew)
        dz, da, dprev = cell.step_bwd(params, cache, prev, dnew)
        if keep_t is not None:  # ... and its state came straight from the step before
            dprev = tuple(xp.where(keep_t, dp, d) for dp, d in zip(dprev, dcarry))
        return dprev, (None if dz is da else dz, da)  # stack a shared cotangent once

    dcarry0, (dz, da) = backend.scan(body, dlast, (res["caches"], prevs, dys, keep), reverse=True)
    return dcarry0, (da if dz is None else dz), da, prevs


def _backward(cell: _cells.Cell, hidden: int, return_sequences: bool, params, res, dy, input_grad: bool):
    """``(grads, dinputs)``: the reverse scan, then ``dw_x``, ``dw_h``, ``db`` and ``dx``
    as one product each over all steps."""
    xT, keep, carry0 = res["x"], res["keep"], res["carry0"]
    xp = backend.namespace(params, xT, dy)
    time, batch, features = np.shape(xT)
    dtype = res["states"][0].dtype
    dmask_out = None
    if isinstance(dy, Mapping):
        dy, dmask_out = dy["x"], dy.get("mask")
    if return_sequences:
        dys = xp.transpose(dy, (1, 0, 2)).astype(dtype)
        dys = dys if keep is None else xp.where(keep, dys, 0.0)
        dlast = tuple(xp.zeros_like(c) for c in carry0)
    else:
        dys, dlast = None, (dy.astype(dtype),) + tuple(xp.zeros_like(c) for c in carry0[1:])
    dcarry0, dz, da, prevs = _reverse_scan(cell, params, res, dys, dlast)
    n = time * batch
    dz, da = dz.reshape(n, cell.blocks * hidden), da.reshape(n, cell.blocks * hidden)
    grads = {
        "w_x": weight_gradient(xT.reshape(n, features), dz),
        "w_h": weight_gradient(prevs[0].reshape(n, hidden), da),
        "b": xp.sum(dz, axis=0),
    }
    if cell.extra_grads is not None:
        grads.update(cell.extra_grads(da, hidden))
    if not input_grad:
        return grads, None
    dx = xp.transpose((dz @ params["w_x"].T).reshape(time, batch, features), (1, 0, 2)).astype(xT.dtype)
    if res["given"] is None:
        return grads, dx
    dinputs = {"x": dx}
    if "mask" in res["given"]:
        dinputs["mask"] = mask_cotangent(xp, res["mask"], dmask_out)
    for c, dc in zip(cell.carry, dcarry0):
        if f"{c}0" in res["given"]:
            given = res["initial"].get(f"{c}0")
            dinputs[f"{c}0"] = None if given is None else dc.astype(given.dtype)
    return grads, dinputs


def _recurrent(
    cell: _cells.Cell,
    hidden: int,
    *,
    return_sequences: bool,
    w_init: initializers.Initializer,
    recurrent_init: initializers.Initializer,
    b_init: initializers.Initializer,
    bias_offset: dict[int, float],
    name: str,
) -> Layer:
    """A layer running ``cell`` over time; ``bias_offset`` adds a constant to gate blocks of ``b``."""
    hidden = _check_hidden(name, hidden)
    G = cell.blocks

    def init(key, shape, dtype):
        features = _input_features(name, shape)
        k_x, k_h, k_b = backend.split(key, 3)
        xp = backend.namespace_of_key(key)
        blocks = [recurrent_init(k, (hidden, hidden), dtype) for k in backend.split(k_h, G)]
        b = b_init(k_b, (G * hidden,), dtype)
        if bias_offset:
            offset = np.zeros(G * hidden)
            for block, value in bias_offset.items():
                offset[block * hidden : (block + 1) * hidden] = value
            b = b + xp.asarray(offset, dtype=dtype)
        params = {"w_x": w_init(k_x, (features, G * hidden), dtype), "w_h": xp.concatenate(blocks, axis=1), "b": b}
        for i, extra in enumerate(cell.extra_params):
            params[extra] = b_init(backend.fold_in(k_b, i + 1), (hidden,), dtype)
        return params, {}

    def out_shape(shape):
        _input_features(name, shape)
        return (shape[0], shape[1], hidden) if return_sequences else (shape[0], hidden)

    def fwd(params, state, inputs, key, train):
        x, mask, initial, keys = _split_input(name, inputs, cell.carry)
        _check(name, cell, hidden, params, x, mask, initial)
        y, residuals = _forward(cell, hidden, return_sequences, params, x, mask, initial, keys)
        return y, state, residuals

    def bwd(params, res, dy, *, input_grad=True):
        return _backward(cell, hidden, return_sequences, params, res, dy, input_grad)

    return Layer(name, init, out_shape, fwd, bwd)


@layer_factory
def rnn(
    hidden: int,
    activation: A.Activation = A.tanh,
    *,
    return_sequences: bool = False,
    w_init: initializers.Initializer = _DEFAULT_W,
    recurrent_init: initializers.Initializer = _DEFAULT_RECURRENT,
    b_init: initializers.Initializer = initializers.zeros,
    name: str = "rnn",
) -> Layer:
    """Plain (Elman) recurrent layer: ``h_t = activation(x_t @ w_x + h_{t-1} @ w_h + b)``.

    Args:
      hidden: the state size ``h``.
      activation: an fnn activation layer (``fnn.layers.tanh``, ``relu``, ...);
        its own backward rule is used through time.
      return_sequences: return every ``h_t`` ``(batch, time, h)`` instead of ``h_T``.
      w_init, recurrent_init, b_init: initialisers of ``w_x (in, h)``, ``w_h (h, h)``
        (orthogonal by default) and ``b (h,)``.

    Input ``x`` ``(batch, time, features)`` or ``{"x", "mask", "h0"}``; see
    :mod:`fnn.layers.recurrent`. Over long horizons the gradient reaching early
    steps shrinks (or grows) like a power of ``w_h`` times ``activation'``:
    the vanishing-gradient problem that :func:`lstm` was made to fix.
    """
    if not isinstance(activation, A.Activation):
        raise TypeError(
            f"{name}: activation must be an fnn activation layer such as fnn.layers.tanh or fnn.layers.relu "
            f"(it brings its backward rule); got {type(activation).__name__}"
        )
    return _recurrent(
        _cells.rnn_cell(activation), hidden, return_sequences=return_sequences, w_init=w_init,
        recurrent_init=recurrent_init, b_init=b_init, bias_offset={}, name=name,
    )


@layer_factory
def lstm(
    hidden: int,
    *,
    return_sequences: bool = False,
    forget_bias: float = 1.0,
    w_init: initializers.Initializer = _DEFAULT_W,
    recurrent_init: initializers.Initializer = _DEFAULT_RECURRENT,
    b_init: initializers.Initializer = initializers.zeros,
    name: str = "lstm",
) -> Layer:
    """Long short-term memory layer.

    Params ``{"w_x": (in, 4h), "w_h": (h, 4h), "b": (4h,)}``, gates ordered
    i, f, g, o::

        i, f, o = sigmoid(x_t @ w_x + h @ w_h + b)[i, f, o blocks]
        g       = tanh(   x_t @ w_x + h @ w_h + b)[g block]
        c_t = f * c_{t-1} + i * g            h_t = o * tanh(c_t)

    The cell ``c`` is updated additively, so its gradient passes back through
    time multiplied by ``f`` alone: with ``f`` near 1 it neither vanishes nor
    explodes (the point of the LSTM). To start there, ``b``'s forget block is
    initialised to ``forget_bias`` (default 1, Jozefowicz et al., 2015) on top
    of ``b_init``; every other block of ``b`` is ``b_init`` (zeros).

    Args:
      hidden: the state size ``h``.
      return_sequences: return every ``h_t`` ``(batch, time, h)`` instead of ``h_T``.
      forget_bias: added to the forget-gate block of ``b`` at init.
      w_init, recurrent_init, b_init: initialisers of ``w_x``, of each
        ``(h, h)`` gate block of ``w_h`` (orthogonal by default) and of ``b``.

    Input ``x`` ``(batch, time, features)`` or ``{"x", "mask", "h0", "c0"}``;
    see :mod:`fnn.layers.recurrent`.
    """
    return _recurrent(
        _cells.LSTM, hidden, return_sequences=return_sequences, w_init=w_init, recurrent_init=recurrent_init,
        b_init=b_init, bias_offset={1: float(forget_bias)} if forget_bias else {}, name=name,
    )


@layer_factory
def gru(
    hidden: int,
    *,
    return_sequences: bool = False,
    w_init: initializers.Initializer = _DEFAULT_W,
    recurrent_init: initializers.Initializer = _DEFAULT_RECURRENT,
    b_init: initializers.Initializer = initializers.zeros,
    name: str = "gru",
) -> Layer:
    """Gated recurrent unit, in the "reset after" form of cuDNN and PyTorch.

    Params ``{"w_x": (in, 3h), "w_h": (h, 3h), "b": (3h,), "b_hn": (h,)}``,
    gates ordered r (reset), z (update), n (candidate)::

        r = sigmoid(x_t @ w_x_r + b_r + h @ w_h_r)
        z = sigmoid(x_t @ w_x_z + b_z + h @ w_h_z)
        n = tanh(x_t @ w_x_n + b_n + r * (h @ w_h_n + b_hn))
        h_t = (1 - z) * n + z * h_{t-1}

    ``z = 1`` keeps the old state. From PyTorch's ``nn.GRU``: ``w_x = W_ih.T``,
    ``w_h = W_hh.T``, ``b = b_ih + b_hh`` with the n block of ``b_hh`` moved to
    ``b_hn`` (that bias sits inside ``r * (...)`` and cannot be folded into ``b``).

    Args:
      hidden: the state size ``h``.
      return_sequences: return every ``h_t`` ``(batch, time, h)`` instead of ``h_T``.
      w_init, recurrent_init, b_init: initialisers of ``w_x``, of each ``(h, h)``
        gate block of ``w_h`` (orthogonal by default) and of ``b`` and ``b_hn``.

    Input ``x`` ``(batch, time, features)`` or ``{"x", "mask", "h0"}``; see
    :mod:`fnn.layers.recurrent`.
    """
    return _recurrent(
        _cells.GRU, hidden, return_sequences=return_sequences, w_init=w_init, recurrent_init=recurrent_init,
        b_init=b_init, bias_offset={}, name=name,
    )
