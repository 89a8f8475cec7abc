"""The per-step math of the recurrent cells, forward and backward, side by side.

A cell turns the state before a step into the state after it. Every cell
here splits its pre-activations into an *input* part ``z_t = x_t @ w_x + b``,
which :mod:`fnn.layers.recurrent` computes for all time steps in one matmul
before the loop, and a *recurrent* part ``h @ w_h``, computed inside the loop.
The weights hold ``G`` gate blocks side by side: ``w_x (in, G*h)``,
``w_h (h, G*h)``, ``b (G*h,)``.

Each cell gives two functions over one time step, written next to each other
so that the backward visibly mirrors the forward:

``step(params, z_t, carry) -> (new_carry, cache)``
    ``carry`` is ``(h,)`` or ``(h, c)``, each ``(batch, hidden)``; ``cache``
    holds what the backward needs beyond the carries (for the LSTM its four
    gate activations as one array, and ``tanh(c)``: each cached array is one
    stacked write per step of the loop, so the fewer, the faster).
``step_bwd(params, cache, prev, dnew) -> (dz_t, da_t, dprev)``
    ``dnew`` is the cotangent of ``new_carry``, ``prev`` the carry before the
    step. Returns the cotangent of ``z_t`` (which gives ``dx``, ``dw_x`` and
    ``db`` outside the loop), of the recurrent pre-activation ``a_t = h @ w_h``
    (which gives ``dw_h = sum_t prev_h_t^T da_t`` outside the loop) and of the
    previous carry. Only ``dh_prev = ... + da_t @ w_h^T`` needs the loop.

The three cells (``s`` is the sigmoid, ``*`` is elementwise):

rnn (Elman)
    ``h' = act(z + h @ w_h)``; one block.
lstm (Hochreiter & Schmidhuber, 1997; with forget gate, Gers et al., 2000)
    ``a = z + h @ w_h`` split into gates ordered i, f, g, o:
    ``i, f, o = s(a_i), s(a_f), s(a_o)``, ``g = tanh(a_g)``,
    ``c' = f * c + i * g``, ``h' = o * tanh(c')``.
gru (Cho et al., 2014; the "reset after" form of cuDNN and PyTorch)
    gates ordered r (reset), z (update), n (candidate); ``a = h @ w_h``:
    ``r = s(z_r + a_r)``, ``u = s(z_u + a_u)``,
    ``n = tanh(z_n + r * (a_n + b_hn))``, ``h' = (1 - u) * n + u * h``.
    The reset gate multiplies the recurrent product *after* the matmul, so
    the three recurrent blocks share one ``h @ w_h`` per step, and
    ``b_hn (h,)`` is the recurrent bias of the candidate (PyTorch's
    ``b_hh`` of the n block; its r and z parts add to ``b`` and need no
    separate parameter). ``u = 1`` keeps the old state.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from fnn import backend
from fnn import functional as F

__all__ = ["Cell", "rnn_cell", "LSTM", "GRU"]

Array = Any
Carry = tuple


class Cell(NamedTuple):
    """The per-step rules of one recurrent cell (see the module docstring)."""

    kind: str  # "rnn" | "lstm" | "gru": the default layer name
    blocks: int  # G: gate blocks side by side in w_x, w_h and b
    carry: tuple[str, ...]  # names of the state arrays: ("h",) or ("h", "c")
    step: Callable[[dict, Array, Carry], tuple[Carry, Any]]
    step_bwd: Callable[[dict, Any, Carry, Carry], tuple[Array, Array, Carry]]
    extra_params: tuple[str, ...] = ()  # per-unit (hidden,) vectors beyond w_x, w_h, b
    extra_grads: Callable[[Array, int], dict] | None = None  # (da flat (N, G*h), hidden) -> grads


def _blocks(a: Array, n: int) -> list[Array]:
    """The ``n`` equal gate blocks of the last axis of ``a``."""
    size = a.shape[-1] // n
    return [a[..., k * size : (k + 1) * size] for k in range(n)]


# --------------------------------------------------------------------------- #
# Elman RNN: h' = act(z + h @ w_h)
# --------------------------------------------------------------------------- #


def rnn_cell(activation: Any) -> Cell:
    """A plain recurrent cell with an fnn activation layer (its own fwd / bwd)."""

    def step(params, z, carry):
        (h,) = carry
        h_new, _, saved = activation.fwd({}, {}, z + h @ params["w_h"])
        return (h_new,), saved

    def step_bwd(params, saved, prev, dnew):
        (dh,) = dnew
        _, da = activation.bwd({}, saved, dh)
        return da, da, (da @ params["w_h"].T,)

    return Cell("rnn", 1, ("h",), step, step_bwd)


# --------------------------------------------------------------------------- #
# LSTM: gates i, f, g, o; c' = f*c + i*g; h' = o*tanh(c')
# --------------------------------------------------------------------------- #


def _lstm_gate_columns(xp, n: int) -> Array:
    """``(4n,)`` bools: True on the g block's columns (tanh), False on i, f, o (sigmoid)."""
    return xp.asarray(np.arange(4 * n) // n == 2)


def _lstm_step(params, z, carry):
    h, c = carry
    xp = backend.namespace(z, h)
    a = z + h @ params["w_h"]
    is_g = _lstm_gate_columns(xp, a.shape[-1] // 4)
    # all four gates in one elementwise pass: sigmoid(x) = (1 + tanh(x / 2)) / 2
    t = xp.tanh(xp.where(is_g, a, 0.5 * a))
    act = xp.where(is_g, t, 0.5 + 0.5 * t)
    i, f, g, o = _blocks(act, 4)
    c_new = f * c + i * g
    tanh_c = xp.tanh(c_new)
    return (o * tanh_c, c_new), (act, tanh_c)


def _lstm_step_bwd(params, cache, prev, dnew):
    act, tanh_c = cache
    i, f, g, o = _blocks(act, 4)
    _, c_prev = prev
    dh, dc = dnew
    xp = backend.namespace(dh, dc)
    dc = dc + dh * o * F.d_tanh(tanh_c)  # c' reaches the loss directly and through h' = o*tanh(c')
    # da = [dc g, dc c_prev, dc i, dh tanh_c] * (the gates' derivatives), as one elementwise pass
    is_g = _lstm_gate_columns(xp, act.shape[-1] // 4)
    outer = xp.concatenate([dc, dc, dc, dh], axis=-1)
    inner = xp.concatenate([g, c_prev, i, tanh_c], axis=-1)
    da = outer * inner * xp.where(is_g, F.d_tanh(act), F.d_sigmoid(act))
    return da, da, (da @ params["w_h"].T, dc * f)


LSTM = Cell("lstm", 4, ("h", "c"), _lstm_step, _lstm_step_bwd)


# --------------------------------------------------------------------------- #
# GRU (reset after): gates r, z, n; h' = (1 - z)*n + z*h
# --------------------------------------------------------------------------- #


def _gru_step(params, z, carry):
    (h,) = carry
    xp = backend.namespace(z, h)
    z_r, z_u, z_n = _blocks(z, 3)
    a_r, a_u, a_n = _blocks(h @ params["w_h"], 3)
    r, u = F.sigmoid(z_r + a_r), F.sigmoid(z_u + a_u)
    hn = a_n + params["b_hn"][None, :]
    n = xp.tanh(z_n + r * hn)
    return (n + u * (h - n),), (r, u, n, hn)


def _gru_step_bwd(params, cache, prev, dnew):
    r, u, n, hn = cache
    (h_prev,) = prev
    (dh,) = dnew
    xp = backend.namespace(dh, h_prev)
    dn = dh * (1.0 - u) * F.d_tanh(n)  # cotangent of n's pre-activation
    dr = dn * hn * F.d_sigmoid(r)
    du = dh * (h_prev - n) * F.d_sigmoid(u)
    dz = xp.concatenate([dr, du, dn], axis=-1)
    da = xp.concatenate([dr, du, dn * r], axis=-1)  # the reset gate scales the recurrent n block
    return dz, da, (dh * u + da @ params["w_h"].T,)


def _gru_extra_grads(da: Array, hidden: int) -> dict:
    xp = backend.namespace(da)
    return {"b_hn": xp.sum(da[:, 2 * hidden :], axis=0)}


GRU = Cell("gru", 3, ("h",), _gru_step, _gru_step_bwd, ("b_hn",), _gru_extra_grads)
