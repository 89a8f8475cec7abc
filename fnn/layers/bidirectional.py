"""``bidirectional``: a recurrent layer run forward and on the time-reversed
sequence, its two outputs concatenated on the last axis.

Forward, with ``R`` the time reversal and ``f`` the wrapped layer::

    y_fwd = f(params["forward"], x)
    y_bwd = f(params["backward"], R(x))
    y     = concat([y_fwd, R(y_bwd)], -1)     # return_sequences=True: aligned in time
    y     = concat([h_fwd, h_bwd], -1)        # return_sequences=False: the two last states

With a mask (input ``{"x": x, "mask": mask}``) ``R`` reverses each
sequence's real steps only: the step at the ``k``-th real position trades
places with the one at the ``k``-th real position from the end, and padded
steps stay where they are (so padding at the end stays at the end, and the
backward run's last state is the one after the sequence's first step). ``R``
is a permutation of the time axis that is its own inverse, and the mask is
unchanged by it.

Backward: the composition of the wrapped layer's hand-written rules. The
output's cotangent is split in two halves; the second half is reversed
(return_sequences=True), each half goes through the ``bwd`` of its run, and
``dx = dx_fwd + R(dx_bwd)``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from fnn import backend
from fnn.checks import batch_axis_hint
from fnn.core import Layer, LayerError, check_keys, layer_factory, scope
from fnn.layers._masks import keep as keep_steps, mask_cotangent

__all__ = ["bidirectional"]

Array = Any
_RUNS = ("forward", "backward")


def _reversal(xp, mask: Array, time: int) -> Array:
    """``(batch, time)`` int indices of ``R``: real steps reversed among themselves,
    padding in place (see the module docstring)."""
    keep = keep_steps(xp, mask)
    steps = xp.arange(time).reshape(1, time)
    rank = xp.cumsum(keep.astype(np.int32), axis=1) - 1  # the k of each real step
    length = xp.sum(keep.astype(np.int32), axis=1, keepdims=True)
    real_first = xp.argsort(xp.where(keep, 0, time) + steps, axis=1)  # real positions, in order, then padding
    partner = xp.take_along_axis(real_first, xp.clip(length - 1 - rank, 0, time - 1), axis=1)
    return xp.where(keep, partner, steps)


def _reverse(xp, a: Array, order: Array | None) -> Array:
    """``R(a)`` on the time axis (axis 1) of ``a`` ``(batch, time, ...)``."""
    if order is None:
        return xp.flip(a, axis=1)
    index = order.reshape(order.shape + (1,) * (a.ndim - 2))
    return xp.take_along_axis(a, index, axis=1)


def _split_input(name: str, inputs: Any) -> tuple[Array, Array | None, tuple | None]:
    if isinstance(inputs, Mapping):
        extra = sorted(k for k in inputs if k not in ("x", "mask"))
        if "x" not in inputs or extra:
            what = f"unexpected keys {extra}" if extra else "no 'x'"
            raise LayerError(
                name, f"the input dict has {what}; expected 'x' and optionally 'mask' (each run starts from zeros)"
            )
        return inputs["x"], inputs.get("mask"), tuple(sorted(inputs))
    if isinstance(inputs, (tuple, list)):
        raise LayerError(name, f"got a tuple of {len(inputs)} inputs; pass x or {{'x': x, 'mask': mask}}")
    return inputs, None, None


@layer_factory
def bidirectional(rnn_layer: Layer, *, name: str = "bidirectional") -> Layer:
    """Runs ``rnn_layer`` forward and on the time-reversed input; the outputs are
    concatenated on the last axis (module docstring for the formulas).

    Params ``{"forward": ..., "backward": ...}``: two independent copies of the
    wrapped layer's params (likewise its state). Input ``(batch, time,
    features)`` or ``{"x": x, "mask": mask}`` (``mask (batch, time)``, True at
    real steps; each sequence's real steps are reversed, padding stays put).
    Output ``(batch, time, 2h)`` for a layer with ``return_sequences=True``
    (the backward run re-reversed to align in time; ``{"x": y, "mask": mask}``
    when a mask was given), else ``(batch, 2h)``: ``[h_T forward, last state
    of the backward run]``.

    >>> import numpy as np, fnn
    >>> layer = fnn.layers.bidirectional(fnn.layers.lstm(4, return_sequences=True))
    >>> params, state = layer.init(np.random.default_rng(0), (None, 5, 3))
    >>> sorted(params), layer.apply(params, state, np.zeros((2, 5, 3)))[0].shape
    (['backward', 'forward'], (2, 5, 8))
    """
    if not isinstance(rnn_layer, Layer):
        hint = " (a layer factory such as lstm must be called: lstm(32))" if callable(rnn_layer) else ""
        raise TypeError(f"{name}: rnn_layer must be an fnn Layer; got {type(rnn_layer).__name__}{hint}")

    def init(key, shape, dtype):
        params, state = {}, {}
        for run in _RUNS:
            with scope(run):
                params[run], state[run] = rnn_layer.init(backend.fold_in_name(key, run), shape, dtype=dtype)
        return params, state

    def out_shape(shape):
        with scope("forward"):
            inner = tuple(rnn_layer.out_shape(shape))
        if len(inner) < 2:
            raise LayerError(name, f"the wrapped layer's output {inner} has no feature axis to concatenate on")
        return inner[:-1] + (None if inner[-1] is None else 2 * inner[-1],)

    def fwd(params, state, inputs, key, train):
        x, mask, keys = _split_input(name, inputs)
        check_keys(name, "params", params, list(_RUNS))
        check_keys(name, "state", state, list(_RUNS))
        if np.ndim(x) != 3:
            raise LayerError(name, f"expected x of shape (batch, time, features), got shape {tuple(np.shape(x))}"
                                   f"{batch_axis_hint(np.shape(x), 3)}")
        xp = backend.namespace(x, mask, params)
        if mask is not None and tuple(np.shape(mask)) != tuple(np.shape(x))[:2]:
            expected = tuple(np.shape(x))[:2]
            raise LayerError(name, f"mask has shape {tuple(np.shape(mask))}; expected (batch, time) = {expected}")
        order = None if mask is None else _reversal(xp, xp.asarray(mask), np.shape(x)[1])
        x_rev = _reverse(xp, x, order)
        run_inputs = {"forward": inputs, "backward": x_rev if keys is None else {**inputs, "x": x_rev}}
        outs, new_state, residuals = {}, {}, {"order": order, "mask": mask}
        for run in _RUNS:
            with scope(run):
                outs[run], new_state[run], residuals[run] = rnn_layer.fwd(
                    params[run], state[run], run_inputs[run], key=backend.fold_in_name(key, run), train=train
                )
        passed = outs["forward"] if isinstance(outs["forward"], Mapping) else None
        y_f, y_b = (outs[run]["x"] if passed is not None else outs[run] for run in _RUNS)
        if np.ndim(y_f) == 3:  # sequences: align the backward run's outputs in time
            y_b = _reverse(xp, y_b, order)
        y = xp.concatenate([y_f, y_b], axis=-1)
        residuals["given"] = None if keys is None else {k: None for k in keys}
        return (y if passed is None else {**passed, "x": y}), new_state, residuals

    def bwd(params, residuals, dy, *, input_grad=True):
        order = residuals["order"]
        dmask_out = dy.get("mask") if isinstance(dy, Mapping) else None
        d = dy["x"] if isinstance(dy, Mapping) else dy
        xp = backend.namespace(d, order, params)
        half = d.shape[-1] // 2
        halves = {"forward": d[..., :half], "backward": d[..., half:]}
        if d.ndim == 3:
            halves["backward"] = _reverse(xp, halves["backward"], order)
        grads, dxs = {}, {}
        for run in _RUNS:
            d_run = {"x": halves[run], "mask": None} if isinstance(dy, Mapping) else halves[run]
            with scope(run):
                grads[run], dxs[run] = rnn_layer.bwd(params[run], residuals[run], d_run, input_grad=input_grad)
        if not input_grad:
            return grads, None
        dx_f, dx_b = (dxs[run]["x"] if isinstance(dxs[run], Mapping) else dxs[run] for run in _RUNS)
        dx = dx_f + _reverse(xp, dx_b, order)
        if residuals["given"] is None:
            return grads, dx
        dinputs = {"x": dx}
        if "mask" in residuals["given"]:
            dinputs["mask"] = mask_cotangent(xp, residuals["mask"], dmask_out)
        return grads, dinputs

    return Layer(name, init, out_shape, fwd, bwd, sublayers=lambda shape: [(run, rnn_layer, shape) for run in _RUNS])
