"""Scaled dot-product attention, forward and hand-written backward, in two forms.

Layout inside the kernel: ``q (N, H, Tq, K)``, ``k (N, H, Tk, K)``,
``v (N, H, Tk, V)``; ``allowed`` a boolean mask broadcastable to
``(N, H, Tq, Tk)`` (or None). With ``scale = 1 / sqrt(K)``::

    s   = scale * q @ k.T                        masked entries: -inf
    lse = log(sum_t exp(s_t))                    one per query row (+inf for a row with no key)
    p   = exp(s - lse)                           0 where masked, and on a row with no key
    o   = dropout(p) @ v

The backward keeps ``q, k, v, o`` and ``lse`` only, and recomputes ``p``
(the flash-attention backward)::

    dv    = dropout(p).T @ do
    dp    = dropout'(do @ v.T)                   (the same mask, scaled by 1 / keep)
    delta = sum(do * o, -1)                      = sum_t p_t dp_t
    ds    = p * (dp - delta)
    dq    = scale * ds @ k,   dk = scale * ds.T @ q

A query row with no key to attend has ``p = 0``: a zero output and zero
gradients, never NaN.

Forms (``implementation``):

* ``"xla"``: the whole ``(Tq, Tk)`` score matrix at once (the reference);
* ``"blocked"``: a loop (``lax.scan`` on JAX, a Python loop on NumPy) over
  blocks of ``block_size`` keys. The forward keeps a running max and sum (the
  online softmax), the backward accumulates ``dq`` and emits ``dk, dv`` per
  block, so the temporaries are ``(Tq, block_size)`` instead of ``(Tq, Tk)``.
* ``"auto"``: on a CPU (and on NumPy), ``"blocked"`` with :data:`BLOCK_SIZE`
  keys when ``Tk`` is at least :data:`BLOCKED_FROM`, else ``"xla"``; on
  other platforms (GPU, TPU: not measured, no such machine was available)
  ``"xla"``, whose backward still recomputes the probabilities.

Measured on a 2-core Xeon VM, JAX 0.10 CPU, float32, N=1, H=4, K=V=32, the
jitted forward + backward (``python -m benchmarks.attention --block B``):

* at T=256 the plain form was the faster (1.7 ms against 2.4 ms blocked) and
  its temporaries barely larger (3.0 against 2.8 MiB): one block buys nothing;
* from T=512 the blocked form was as fast or faster than the plain one
  (T=512: 8.7-13 ms against 29 ms) and its compiled temporaries ``~block/T``
  of the plain form's;
* 128-key blocks: temp memory 0.35x autodiff at T=512 and 0.07x at T=2048;
  256-key blocks: 0.66x and 0.13x; 512-key blocks: 0.75x and 0.26x, with
  times within the machine's noise of each other. 128 is the default.
* NumPy (same machine, forward + backward): blocked 14 / 23 / 136 ms against
  plain 18 / 65 / 188 ms at T = 256 / 512 / 1024: the same rule serves.

Dropout: the mask is drawn in tiles of :data:`DROPOUT_TILE` keys, tile ``c``
from ``fold_in(key, c)`` as ``bernoulli(keep, (N, H, Tq, DROPOUT_TILE))``, so
both forms (and any block size that is a multiple of the tile) draw the same
mask, and the backward *regenerates* it from the key instead of keeping an
``(N, H, Tq, Tk)`` array.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fnn import backend
from fnn.kernels import plan

__all__ = ["IMPLEMENTATIONS", "BLOCK_SIZE", "BLOCKED_FROM", "DROPOUT_TILE", "resolve", "attention_fwd", "attention_bwd"]

Array = Any
IMPLEMENTATIONS = ("auto", "xla", "blocked")
BLOCK_SIZE = plan.ATTENTION_BLOCK_SIZE  # keys per block of the blocked form (measured: fnn.kernels.plan)
BLOCKED_FROM = plan.ATTENTION_BLOCKED_FROM  # "auto" takes the blocked form from this many keys on
DROPOUT_TILE = 32  # keys per tile of the dropout mask (block sizes are multiples of it)


def resolve(implementation: str, tk: int, block_size: int | None = None, platform: str = "cpu") -> tuple[str, int]:
    """The form and the block size that ``implementation`` means for ``tk`` keys on
    ``platform`` (``"numpy"``, or JAX's ``"cpu"``, ``"gpu"``, ...)."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention: implementation must be one of {IMPLEMENTATIONS}; got {implementation!r}")
    block = BLOCK_SIZE if block_size is None else block_size
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block <= 0 or block % DROPOUT_TILE:
        raise ValueError(f"attention: block_size must be a positive multiple of {DROPOUT_TILE}; got {block_size!r}")
    if implementation == "auto":
        implementation = plan.attention_form(tk, platform)
    return implementation, int(block)


# --------------------------------------------------------------------------- #
# Pieces shared by both forms
# --------------------------------------------------------------------------- #


def _compute_dtype(dtype: Any) -> Any:
    return np.promote_types(dtype, np.float32)


def _allowed(xp, mask: Array | None, causal: bool, tq: int, start: Any, width: int, tk: int) -> Array | None:
    """Where queries may attend keys ``start .. start + width``: the mask's
    block, the causal rule (key index <= query index) and keys that exist."""
    keys = start + xp.arange(width)
    allowed = mask
    if causal:
        rule = xp.arange(tq).reshape(tq, 1) >= keys.reshape(1, width)
        rule = rule.reshape(1, 1, tq, width)
        allowed = rule if allowed is None else allowed & rule
    if not isinstance(start, int) or start + width > tk:  # a traced block start, or padded keys
        real = (keys < tk).reshape(1, 1, 1, width)
        allowed = real if allowed is None else allowed & real
    return allowed


def _dropout_tiles(xp, key: Any, first_tile: Any, count: int, shape: tuple, keep: float) -> Array:
    """The dropout mask of ``count`` tiles from ``first_tile``: ``shape + (count * DROPOUT_TILE,)``."""
    tiles = []
    for i in range(count):
        if isinstance(key, np.random.Generator):
            k = backend.fold_in(key, int(first_tile) + i)
        else:
            k = backend.jax.random.fold_in(key, first_tile + i)
        tiles.append(xp.asarray(backend.bernoulli(k, keep, shape + (DROPOUT_TILE,))))
    return tiles[0] if count == 1 else xp.concatenate(tiles, axis=-1)


def _drop(xp, values: Array, dmask: Array | None, keep: float) -> Array:
    return values if dmask is None else xp.where(dmask, values / keep, 0.0)


def _exp_where(xp, allowed: Array | None, z: Array) -> Array:
    """``exp(z)`` where allowed, 0 elsewhere (no overflow is ever evaluated)."""
    return xp.exp(z) if allowed is None else xp.exp(xp.where(allowed, z, -np.inf))


# --------------------------------------------------------------------------- #
# The plain form
# --------------------------------------------------------------------------- #


def _xla_fwd(xp, q, k, v, mask, causal, keep, key, scale):
    tq, tk = q.shape[2], k.shape[2]
    s = (q @ xp.swapaxes(k, -1, -2)) * scale
    allowed = _allowed(xp, mask, causal, tq, 0, tk, tk)
    s_m = s if allowed is None else xp.where(allowed, s, -np.inf)
    m = xp.max(s_m, axis=-1, keepdims=True)
    has = m > -np.inf
    m0 = xp.where(has, m, 0.0)
    e = xp.exp(s_m - m0)
    l = xp.sum(e, axis=-1, keepdims=True)
    l_safe = xp.where(has, l, 1.0)
    p = e / l_safe
    dmask = _dropout_mask(xp, key, q.shape[:3], tk, keep)
    o = _drop(xp, p, dmask, keep) @ v
    lse = xp.where(has, m0 + xp.log(l_safe), np.inf)
    return o, lse


def _dropout_mask(xp, key, shape, tk, keep):
    if key is None:
        return None
    tiles = -(-tk // DROPOUT_TILE)
    return _dropout_tiles(xp, key, 0, tiles, tuple(shape), keep)[..., :tk]


def _xla_bwd(xp, q, k, v, o, lse, do, mask, causal, keep, key, scale):
    tq, tk = q.shape[2], k.shape[2]
    s = (q @ xp.swapaxes(k, -1, -2)) * scale
    allowed = _allowed(xp, mask, causal, tq, 0, tk, tk)
    p = _exp_where(xp, allowed, s - lse)
    dmask = _dropout_mask(xp, key, q.shape[:3], tk, keep)
    dv = xp.swapaxes(_drop(xp, p, dmask, keep), -1, -2) @ do
    dp = _drop(xp, do @ xp.swapaxes(v, -1, -2), dmask, keep)
    delta = xp.sum(do * o, axis=-1, keepdims=True)
    ds = p * (dp - delta) * scale
    return ds @ k, xp.swapaxes(ds, -1, -2) @ q, dv


# --------------------------------------------------------------------------- #
# The blocked form
# --------------------------------------------------------------------------- #


def _python_scan(f, init, xs):
    n = backend.tree_leaves(xs)[0].shape[0]
    carry, ys = init, []
    for j in range(n):
        carry, y = f(carry, backend.tree_map(lambda a: a[j], xs))
        ys.append(y)
    xp = backend.namespace(ys)
    return carry, None if ys[0] is None else backend.tree_map(lambda *c: xp.stack(c), *ys)


def _blocks(xp, a: Array, block: int, nb: int, fill: Any = 0) -> Array:
    """``(..., Tk, X)`` keys axis -2 cut into ``(nb, ..., block, X)`` (padded with ``fill``)."""
    pad = nb * block - a.shape[-2]
    if pad:
        widths = [(0, 0)] * a.ndim
        widths[-2] = (0, pad)
        a = xp.pad(a, widths, constant_values=fill)
    a = a.reshape(a.shape[:-2] + (nb, block, a.shape[-1]))
    return xp.moveaxis(a, -3, 0)


def _block_inputs(xp, k, v, mask, block, nb):
    xs = {"k": _blocks(xp, k, block, nb), "v": _blocks(xp, v, block, nb), "j": xp.arange(nb)}
    if mask is not None and mask.shape[-1] != 1:  # the mask's keys axis is cut too; (.., Tq, Tk) -> (.., Tk, Tq)
        xs["mask"] = xp.swapaxes(_blocks(xp, xp.swapaxes(mask, -1, -2), block, nb, False), -1, -2)
    return xs


def _scan_for(xp, key):
    if xp is np or isinstance(key, np.random.Generator):
        return _python_scan  # a NumPy Generator cannot be folded with a traced block index
    return lambda f, init, xs: backend.scan(f, init, xs)


def _block_parts(xp, q, b, mask, causal, tk, block, keep, key, scale):
    """The scores, where they are allowed and the dropout mask of block ``b``."""
    s = (q @ xp.swapaxes(b["k"], -1, -2)) * scale
    m = b.get("mask", mask)
    allowed = _allowed(xp, m, causal, q.shape[2], b["j"] * block, block, tk)
    tiles = block // DROPOUT_TILE
    dmask = None if key is None else _dropout_tiles(xp, key, b["j"] * tiles, tiles, tuple(q.shape[:3]), keep)
    return s, allowed, dmask


def _blocked_fwd(xp, q, k, v, mask, causal, keep, key, scale, block):
    tk = k.shape[2]
    nb = -(-tk // block)
    rows = q.shape[:3] + (1,)

    def body(carry, b):
        m, l, acc = carry
        s, allowed, dmask = _block_parts(xp, q, b, mask, causal, tk, block, keep, key, scale)
        s_m = s if allowed is None else xp.where(allowed, s, -np.inf)
        m_new = xp.maximum(m, xp.max(s_m, axis=-1, keepdims=True))
        m_safe = xp.where(m_new > -np.inf, m_new, 0.0)
        alpha = xp.exp(m - m_safe)
        e = xp.exp(s_m - m_safe)
        l = l * alpha + xp.sum(e, axis=-1, keepdims=True)
        acc = acc * alpha + _drop(xp, e, dmask, keep) @ b["v"]
        return (m_new, l, acc), None

    init = (xp.full(rows, -np.inf, q.dtype), xp.zeros(rows, q.dtype), xp.zeros(q.shape[:3] + v.shape[3:], q.dtype))
    (m, l, acc), _ = _scan_for(xp, key)(body, init, _block_inputs(xp, k, v, mask, block, nb))
    has = l > 0
    l_safe = xp.where(has, l, 1.0)
    m_safe = xp.where(has, m, 0.0)
    return acc / l_safe, xp.where(has, m_safe + xp.log(l_safe), np.inf)


def _blocked_bwd(xp, q, k, v, o, lse, do, mask, causal, keep, key, scale, block):
    tk = k.shape[2]
    nb = -(-tk // block)
    delta = xp.sum(do * o, axis=-1, keepdims=True)

    def body(dq, b):
        s, allowed, dmask = _block_parts(xp, q, b, mask, causal, tk, block, keep, key, scale)
        p = _exp_where(xp, allowed, s - lse)
        dv = xp.swapaxes(_drop(xp, p, dmask, keep), -1, -2) @ do
        dp = _drop(xp, do @ xp.swapaxes(b["v"], -1, -2), dmask, keep)
        ds = p * (dp - delta) * scale
        return dq + ds @ b["k"], (xp.swapaxes(ds, -1, -2) @ q, dv)

    dq, (dk, dv) = _scan_for(xp, key)(body, xp.zeros(q.shape, q.dtype), _block_inputs(xp, k, v, mask, block, nb))

    def unblock(a):  # (nb, N, H, block, X) -> (N, H, Tk, X)
        a = xp.moveaxis(a, 0, -3)
        return a.reshape(a.shape[:-3] + (nb * block, a.shape[-1]))[..., :tk, :]

    return dq, unblock(dk), unblock(dv)


# --------------------------------------------------------------------------- #
# Entry points
# --------------------------------------------------------------------------- #


def _platform(xp) -> str:
    return "numpy" if xp is np else backend.default_platform()


def _prepare(q, k, v, dropout_rate, dropout_key):
    xp = backend.namespace(q, k, v)
    ct = _compute_dtype(q.dtype)
    keep = 1.0 - float(dropout_rate)
    key = dropout_key if dropout_rate > 0 else None
    if dropout_rate > 0 and key is None:
        raise ValueError("attention: dropout needs a random key")
    return xp, ct, keep, key, 1.0 / math.sqrt(q.shape[-1])


def attention_fwd(
    q: Array, k: Array, v: Array, *, mask: Array | None = None, causal: bool = False,
    dropout_rate: float = 0.0, dropout_key: Any = None, implementation: str = "auto", block_size: int | None = None,
) -> tuple[Array, Array]:
    """``(o (N, H, Tq, V), lse (N, H, Tq, 1))`` for ``q, k, v`` in the kernel's
    layout (module docstring); ``mask`` boolean, 4-D, broadcastable to ``(N, H, Tq, Tk)``."""
    xp, ct, keep, key, scale = _prepare(q, k, v, dropout_rate, dropout_key)
    form, block = resolve(implementation, k.shape[2], block_size, _platform(xp))
    q32, k32, v32 = q.astype(ct), k.astype(ct), v.astype(ct)
    if form == "xla":
        o, lse = _xla_fwd(xp, q32, k32, v32, mask, causal, keep, key, scale)
    else:
        o, lse = _blocked_fwd(xp, q32, k32, v32, mask, causal, keep, key, scale, block)
    return o.astype(q.dtype), lse


def attention_bwd(
    q: Array, k: Array, v: Array, o: Array, lse: Array, do: Array, *, mask: Array | None = None,
    causal: bool = False, dropout_rate: float = 0.0, dropout_key: Any = None, implementation: str = "auto",
    block_size: int | None = None,
) -> tuple[Array, Array, Array]:
    """``(dq, dk, dv)`` from the forward's ``q, k, v, o, lse`` and the output's cotangent ``do``."""
    xp, ct, keep, key, scale = _prepare(q, k, v, dropout_rate, dropout_key)
    form, block = resolve(implementation, k.shape[2], block_size, _platform(xp))
    q, k, v, o, do = (a.astype(ct) for a in (q, k, v, o, do))
    args = (xp, q, k, v, o, lse, do, mask, causal, keep, key, scale)
    dq, dk, dv = _xla_bwd(*args) if form == "xla" else _blocked_bwd(*args, block)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)
