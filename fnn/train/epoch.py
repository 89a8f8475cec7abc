"""The epoch runner: one epoch of training, on JAX or NumPy, behind one interface.

``runner = epoch_runner(...)`` then ``ts, columns = runner.run(ts)`` trains
one epoch and returns the state at its end and the per-step outputs as NumPy
columns (``columns["loss"]``: one entry per step). One epoch, on either backend:

1. The order of the examples is a permutation drawn on the host (only the
   indices go to the device) from ``ts.key`` alone; the epoch ends by
   advancing the key (``fold_in(ts.key, _NEXT)``), so the next epoch, or the
   next :func:`~fnn.train.fit` call, shuffles differently, and a run resumed
   from a saved state shuffles as the uninterrupted one.
2. The ``n // batch_size`` full batches of that order run one
   :func:`~fnn.train.train_step` each — on JAX inside one ``lax.scan``, with
   the training set kept on the device and each batch gathered there.
3. The last partial batch, when ``n % batch_size != 0``, runs as one extra
   step of that smaller size (in the same compiled call): every example
   contributes exactly once per epoch, nothing is dropped or repeated.

On JAX, ``run(ts, prefetch=True)`` queues the next epoch on the device
before this one's results are read back, so the device never waits for the
host's bookkeeping; the next ``run`` uses it when it is given that very state
(when a callback replaced the state, the queued epoch is dropped and run
again from the new one; when the run stops, it is dropped). The compiled epoch is cached per model, loss,
optimizer, method and metrics, so a repeated or resumed fit compiles nothing.

A step whose loss or gradients are not finite, or whose update leaves a
non-finite parameter or optimizer state (a NaN learning rate, say), ends
the epoch: ``run`` returns the state from before that step (its key not
advanced) and the columns up to and including that step (``state_finite``
then says whether the update was the cause). The epoch runs the plain steps
(every step reports whether its loss and gradients were finite) and checks
the state once at the end; only when something was not finite is the epoch
replayed from its starting state, guarded: each step's new state is checked
too, and that step and every later one are masked out. The common, finite
epoch thus pays one check of the state per epoch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from fnn import backend
from fnn.core import Layer
from fnn.optim import all_finite
from fnn.data import check_batch_size, check_pair, key_bits, permutation, permutation_from_bits
from fnn.train.evaluate import check_classes
from fnn.train.state import TrainState
from fnn.train.step import train_step

__all__ = ["EpochRunner", "epoch_runner", "next_key", "summarize"]

Array = Any

# step t draws from fold_in(key, t) with t < 2**31 (an int32 count), so these tags never collide with a step
_SHUFFLE = 0xFFFFFFFF
_NEXT = 0xFFFFFFFE
_AHEAD = 64  # shuffles computed ahead in one call on JAX


def next_key(key: Any) -> Any:
    """The key of the epoch after the one that used ``key`` (traceable under ``jit``)."""
    if isinstance(key, np.random.Generator):
        return backend.fold_in(key, _NEXT)
    return backend.jax.random.fold_in(key, _NEXT)


class EpochRunner:
    """Trains one epoch at a time over a fixed training set (see the module docstring).

    Attributes:
        sizes: the batch size of every step of an epoch (the last one maybe smaller).
        on_batch: called after every finished step on NumPy (a progress bar); unused on JAX.
    """

    def __init__(self, train_data: tuple[Array, Array], batch_size: int, model: Layer):
        x, y = train_data
        self.n = check_pair(x, y)
        self.batch_size = check_batch_size(batch_size, self.n)
        check_classes(model, x, y)
        full, rest = divmod(self.n, self.batch_size)
        self.sizes = np.array([self.batch_size] * full + ([rest] if rest else []))
        self.on_batch: Callable[[], None] = lambda: None

    def _split(self, order: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """An epoch's order as ``(full batches (steps, batch_size), last partial batch or None)``."""
        order = order.astype(np.int32)
        full = len(order) // self.batch_size * self.batch_size
        return order[:full].reshape(-1, self.batch_size), (order[full:] if full < len(order) else None)

    def place(self, tree: Any) -> Any:
        """Data (validation sets) on this runner's backend and devices."""
        raise NotImplementedError

    def place_state(self, ts: TrainState) -> TrainState:
        """The train state where the epochs need it (replicated over a mesh)."""
        return ts

    def run(self, ts: TrainState, prefetch: bool = False) -> tuple[TrainState, dict]:
        """One epoch from ``ts``: ``(state at its end, per-step outputs as NumPy columns)``."""
        raise NotImplementedError


def epoch_runner(
    model: Layer,
    loss: Any,
    optimizer: Any,
    train_data: tuple[Array, Array],
    *,
    batch_size: int,
    method: str,
    metric_items: tuple,
    grad_stats: bool,
    on_jax: bool,
    mesh: Any = None,
) -> EpochRunner:
    """The runner for a JAX train state (``on_jax``: compiled epochs) or a NumPy one (eager)."""
    if on_jax:
        return JaxEpochs(model, loss, optimizer, train_data, batch_size, method, metric_items, grad_stats, mesh)
    if mesh is not None:
        raise TypeError("fit(mesh=...) needs a JAX train state (init_state with fnn.key(0)); got a NumPy Generator key")
    if method == "autodiff":  # jax.grad would silently turn the NumPy run into a JAX one
        raise TypeError(
            "fit(method='autodiff') needs a JAX train state (init_state with fnn.key(0)); this one is NumPy "
            "(a numpy Generator key): use method='manual' on NumPy"
        )
    step = train_step(model, loss, optimizer, method, metrics=dict(metric_items), grad_stats=grad_stats)
    return NumpyEpochs(step, train_data, batch_size, model)


# --------------------------------------------------------------------------- #
# NumPy: the steps run eagerly, batch by batch
# --------------------------------------------------------------------------- #


class NumpyEpochs(EpochRunner):
    def __init__(self, step: Callable, train_data: tuple[Array, Array], batch_size: int, model: Layer):
        super().__init__(train_data, batch_size, model)
        self.step = step
        self.x, self.y = (np.asarray(a) for a in train_data)

    def place(self, tree: Any) -> Any:
        return backend.tree_map(np.asarray, tree)

    def run(self, ts: TrainState, prefetch: bool = False) -> tuple[TrainState, dict]:
        batches, tail = self._split(permutation(backend.fold_in(ts.key, _SHUFFLE), self.n))
        indices = list(batches) + ([tail] if tail is not None else [])
        new, outs = self._steps(ts, indices, guarded=False)
        if not state_finite(new):  # a step with a finite loss and gradients made a non-finite state
            new, outs = self._steps(ts, indices, guarded=True)  # replay, checking the state after each step
        if len(outs) < len(indices) or not outs[-1]["finite"]:
            return new, _columns(outs)
        return new._replace(key=next_key(new.key)), _columns(outs)

    def _steps(self, ts: TrainState, indices: list, guarded: bool) -> tuple[TrainState, list]:
        """The steps of one epoch; the first that is not finite (and, when ``guarded``,
        the first whose new params or optimizer state are not) ends it, its state dropped."""
        outs = []
        # overflow is detected and reported by fit itself (out["finite"]), not by NumPy warnings
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for idx in indices:
                new, out = self.step(ts, self.x[idx], self.y[idx])
                if guarded:
                    out = _with_state_check(out, new)
                outs.append(out)
                if not out["finite"]:
                    return ts, outs
                ts = new
                if not guarded:
                    self.on_batch()
        return ts, outs


# --------------------------------------------------------------------------- #
# JAX: one compiled call per epoch
# --------------------------------------------------------------------------- #


def _plain(step: Callable, x: Array, y: Array) -> Callable:
    """The scan body of a finite epoch: one step on the examples ``idx``."""

    def body(ts, idx):
        return step(ts, x[idx], y[idx])

    return body


def state_finite(ts: TrainState) -> Array:
    """True when every entry of the params and of the optimizer state is finite."""
    return all_finite((ts.params, ts.opt_state))


def _with_state_check(out: dict, new: TrainState) -> dict:
    """A step's outputs, ``finite`` also covering the state it made (``state_finite``:
    whether that state alone was finite, to name the cause)."""
    ok = state_finite(new)
    return {**out, "finite": out["finite"] & ok, "state_finite": ok}


def _guarded(step: Callable, x: Array, y: Array) -> Callable:
    """The scan body: one step on the examples ``idx``; once a step is not
    finite (its loss, its gradients, or the params and optimizer state it
    makes), that step and every later one leave the state unchanged."""
    jnp = backend.jnp

    def body(carry, idx):
        ts, bad = carry
        new, out = step(ts, x[idx], y[idx])
        out = _with_state_check(out, new)
        ok = out["finite"] & ~bad
        ts = backend.tree_map(lambda a, b: jnp.where(ok, a, b), new, ts)
        return (ts, bad | ~out["finite"]), out

    return body


def _jax_epoch(step, tail_step, guarded: bool, ts: TrainState, x, y, batches, tail):
    """One epoch: ``lax.scan`` of the step over the full batches, then the
    partial one (with ``tail_step`` when given: a data-parallel run whose last
    batch does not split over the devices runs it replicated), then the key
    advanced. ``guarded``: a non-finite step and every later one leave the
    state unchanged (and the key is not advanced: the epoch did not finish)."""
    if not guarded:  # one check of the final state per epoch, not one per step
        ts, outs = backend.lax.scan(_plain(step, x, y), ts, batches)
        if tail is not None:
            ts, tail = _plain(tail_step or step, x, y)(ts, tail)
        return ts._replace(key=next_key(ts.key)), outs, tail, state_finite(ts)
    carry, outs = backend.lax.scan(_guarded(step, x, y), (ts, backend.jnp.zeros((), bool)), batches)
    if tail is not None:
        carry, tail = _guarded(tail_step or step, x, y)(carry, tail)
    return carry[0], outs, tail, carry[1]


def _build_epoch(model, loss, optimizer, method, metric_items, grad_stats, mesh, tail_sharded) -> tuple:
    def make(mesh):
        return train_step(model, loss, optimizer, method, metrics=dict(metric_items), grad_stats=grad_stats, mesh=mesh)

    step, tail_step = make(mesh), None if tail_sharded else make(None)
    jit = backend.jax.jit
    # not donated: the epoch's starting state is kept for a guarded replay
    # (the guarded epoch compiles only when a step was not finite)
    plain = jit(functools.partial(_jax_epoch, step, tail_step, False))
    return plain, jit(functools.partial(_jax_epoch, step, tail_step, True))


_cached_epoch = functools.lru_cache(maxsize=16)(_build_epoch)


def _compiled_epoch(*parts: Any) -> tuple[Callable, Callable]:
    """The jitted ``(epoch, guarded epoch)``, reused by every fit call with the same
    model, loss, optimizer, method and metrics (so a resumed or repeated fit compiles nothing)."""
    try:
        hash(parts)
    except TypeError:  # e.g. an optimizer holding a list: compile for this call only
        return _build_epoch(*parts)
    return _cached_epoch(*parts)


@functools.cache
def _shuffle_chain() -> Callable:
    """``key -> (its _AHEAD-th successor, shuffle bits (_AHEAD, words))``: the
    shuffle bits of ``key`` and of its next ``_AHEAD - 1`` successors, compiled once."""
    jax = backend.jax

    def body(key, _):
        return next_key(key), key_bits(jax.random.fold_in(key, _SHUFFLE))

    return jax.jit(lambda key: jax.lax.scan(body, key, None, length=_AHEAD))


class JaxEpochs(EpochRunner):
    def __init__(self, model, loss, optimizer, train_data, batch_size, method, metric_items, grad_stats, mesh):
        super().__init__(train_data, batch_size, model)
        self.mesh, tail_sharded = mesh, True
        if mesh is not None:
            from fnn import parallel

            parallel.check_mesh(mesh, "fit")
            parallel.check_batch(self.batch_size, mesh, "fit")
            tail_sharded = (self.n % self.batch_size) % parallel.data_size(mesh) == 0
        parts = (model, loss, optimizer, method, metric_items, grad_stats, mesh, tail_sharded)
        self._epoch, self._replay = _compiled_epoch(*parts)
        self.x, self.y = self.place(tuple(np.asarray(a) for a in train_data))
        self._pending = None  # (the state it started from, its batches, its tail, its running result)
        # the shuffle bits of _chain_key (row 0) and of its successors, computed ahead
        self._chain_key, self._chain, self._chain_next = None, np.zeros((0, 0), np.uint32), None

    def place(self, tree: Any) -> Any:
        if self.mesh is None:
            return backend.tree_map(backend.jnp.asarray, tree)
        from fnn import parallel

        return parallel.replicate(backend.tree_map(np.asarray, tree), self.mesh)

    def place_state(self, ts: TrainState) -> TrainState:
        if self.mesh is None:
            return ts
        from fnn import parallel

        return parallel.replicate(ts, self.mesh)

    def _order(self, key: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """The batches of the epoch that shuffles with ``key``. The shuffles of
        its successors are computed ahead, so that the next epoch's order never
        waits for the device to finish this one."""
        if key is not self._chain_key or not len(self._chain):
            start = key if key is not self._chain_key else self._chain_next
            self._chain_next, bits = _shuffle_chain()(start)
            self._chain_key, self._chain = key, np.asarray(backend.jax.device_get(bits))
        return self._split(permutation_from_bits(self._chain[0], self.n))

    def _advance(self, key: Any) -> None:
        """``key``, an epoch's result, is the successor of the chain's first key."""
        self._chain_key, self._chain = key, self._chain[1:]

    def _start(self, ts: TrainState) -> tuple:
        batches, tail = self._order(ts.key)
        return ts, batches, tail, self._epoch(ts, self.x, self.y, batches, tail)

    def run(self, ts: TrainState, prefetch: bool = False) -> tuple[TrainState, dict]:
        pending, self._pending = self._pending, None
        _, batches, tail, (new, outs, tail_out, ok) = pending if pending and pending[0] is ts else self._start(ts)
        self._advance(new.key)
        if prefetch:  # queue the next epoch before reading this one: the device never waits for the host
            self._pending = self._start(new)
        (outs, tail_out), ok = backend.jax.device_get(((outs, tail_out), ok))  # one round-trip to the host
        columns = _columns(outs, tail_out)
        if not (columns["finite"].all() and bool(ok)):  # replay from the epoch's start, stopping before that step
            self._pending, self._chain_key = None, None
            new, outs, tail_out, _ = self._replay(ts, self.x, self.y, batches, tail)
            columns = _columns(outs, tail_out)
        return new, columns


# --------------------------------------------------------------------------- #
# Per-step outputs -> one epoch record
# --------------------------------------------------------------------------- #


def _columns(outs: Any, tail: Any = None) -> dict:
    """Per-step outputs as NumPy columns ``(steps,)`` (full batches, then the tail)."""
    if isinstance(outs, list):  # NumPy: one dict per step
        return backend.tree_map(lambda *c: np.stack([np.asarray(v) for v in c]), *outs)
    outs, tail = backend.jax.device_get((outs, tail))
    if tail is None:
        return outs
    return backend.tree_map(lambda a, b: np.concatenate([a, np.asarray(b)[None]]), outs, tail)


def summarize(columns: dict, sizes: np.ndarray, metric_names: list[str]) -> tuple[dict, dict | None, int]:
    """``(means, grad stats, number of good steps)`` over the steps before the first non-finite one.

    The means are over the examples (each batch mean weighted by its size), from
    the train-mode forward passes of the steps themselves: they cost no extra pass.
    """
    finite = columns["finite"].astype(bool)
    good = int(np.argmin(finite)) if not finite.all() else len(finite)
    w = sizes[:good].astype(np.float64)
    record = {}
    if good:
        for name in ["loss"] + metric_names:
            record[f"train_{name}"] = float(np.sum(columns[name][:good] * w) / w.sum())
    grads = None
    if "grad_stats" in columns and good:
        reduce = {"grad_norm": np.mean, "grad_max": np.max, "nonfinite": np.sum, "update_ratio": np.mean}
        grads = {
            path: {stat: float(reduce[stat](values[:good])) for stat, values in stats.items()}
            for path, stats in columns["grad_stats"].items()
        }
    return record, grads, good
