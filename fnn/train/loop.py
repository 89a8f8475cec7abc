"""``fit``: the training loop. On JAX a whole epoch is one compiled call; on
NumPy the same steps run eagerly, batch by batch.

One epoch, on either backend:

1. The order of the examples is a permutation drawn on the host (only the
   indices go to the device) from ``ts.key`` and the epoch number alone. On
   JAX the next epoch is drawn and queued on the device before this one's
   results are read back, so the device never waits for the host's
   bookkeeping (each epoch's ``seconds`` is the time since the previous
   epoch's record).
2. The ``n // batch_size`` full batches of that order run one
   :func:`~fnn.train.train_step` each — on JAX inside one ``lax.scan``, with
   the training set kept on the device and each batch gathered there.
3. The last partial batch, when ``n % batch_size != 0``, runs as one extra
   step of that smaller size (in the same compiled call): every example
   contributes exactly once per epoch, nothing is dropped or repeated.
4. The epoch's train loss and metrics are the means over its examples (each
   batch mean weighted by the batch size), from the train-mode forward passes
   of the steps themselves, so they cost no extra pass.

A step whose loss or gradients are not finite stops the run: the state from
before that step is kept, ``history.stopped`` names the epoch and batch, and
``fit`` returns normally. On JAX the compiled epoch runs the plain steps
(every step reports whether it was finite); only when one was not is the
epoch replayed from its starting state by a guarded scan that masks out that
step and every later one. The common, finite epoch thus pays nothing for the
guard: no per-step select over the whole train state, which on a small model
costs as much as the step itself.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fnn import backend, checkpoint
from fnn.core import Layer
from fnn.data import check_batch_size, check_pair, key_bits, permutation, permutation_from_bits
from fnn.metrics import Metric, check_metrics
from fnn.train.evaluate import check_classes, evaluate_checked
from fnn.train.history import History
from fnn.train.state import TrainState
from fnn.train.step import train_step

__all__ = ["fit"]

Array = Any


# --------------------------------------------------------------------------- #
# One epoch
# --------------------------------------------------------------------------- #


def _order(order: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """An epoch's order as ``(full batches (steps, batch_size), last partial batch or None)``."""
    order = order.astype(np.int32)
    full = len(order) // batch_size * batch_size
    return order[:full].reshape(-1, batch_size), (order[full:] if full < len(order) else None)


def _guarded(step: Callable, x: Array, y: Array) -> Callable:
    """The scan body: one step on the examples ``idx``; once a step is not
    finite, that step and every later one leave the state unchanged."""
    jnp = backend.jnp

    def body(carry, idx):
        ts, bad = carry
        new, out = step(ts, x[idx], y[idx])
        ok = out["finite"] & ~bad
        ts = backend.tree_map(lambda a, b: jnp.where(ok, a, b), new, ts)
        return (ts, bad | ~out["finite"]), out

    return body


# step t draws from fold_in(key, t) with t < 2**31 (an int32 count), so this tag never collides with a step
_SHUFFLE = 0xFFFFFFFF


def _plain(step: Callable, x: Array, y: Array) -> Callable:
    """The scan body of a finite epoch: one step on the examples ``idx``."""

    def body(ts, idx):
        return step(ts, x[idx], y[idx])

    return body


def _jax_epoch(
    step: Callable,
    tail_step: Callable | None,
    guarded: bool,
    ts: TrainState,
    x: Array,
    y: Array,
    batches: Array,
    tail: Array | None,
):
    """One epoch: ``lax.scan`` of the step over the full batches, then the
    partial one (with ``tail_step`` when given: a data-parallel run whose last
    batch does not split over the devices runs it replicated). ``guarded``:
    a non-finite step and every later one leave the state unchanged."""
    if not guarded:
        ts, outs = backend.lax.scan(_plain(step, x, y), ts, batches)
        if tail is not None:
            ts, tail = _plain(tail_step or step, x, y)(ts, tail)
        return ts, outs, tail
    carry, outs = backend.lax.scan(_guarded(step, x, y), (ts, backend.jnp.zeros((), bool)), batches)
    if tail is not None:
        carry, tail = _guarded(tail_step or step, x, y)(carry, tail)
    return carry[0], outs, tail


@functools.cache
def _shuffle_bits() -> Callable:
    """``key -> the bits of its shuffle key``, compiled once."""
    jax = backend.jax
    return jax.jit(lambda key: key_bits(jax.random.fold_in(key, _SHUFFLE)))


def _shuffler(key: Any, bits: Array | None, n: int) -> Callable[[int], np.ndarray]:
    """``epoch -> that epoch's order of the n examples``, drawn on the host from the
    run's key and the epoch number alone (so a resumed run shuffles as the original)."""
    if isinstance(key, np.random.Generator):
        root = backend.fold_in(key, _SHUFFLE)
        return lambda epoch: permutation(backend.fold_in(root, epoch), n)
    bits = np.asarray(bits).ravel()
    return lambda epoch: permutation_from_bits(np.append(bits, np.uint32(epoch)), n)


@functools.lru_cache(maxsize=16)
def _cached_epoch(model, loss, optimizer, method, metric_items, grad_stats, mesh, tail_sharded) -> Callable:
    return _build_epoch(model, loss, optimizer, method, metric_items, grad_stats, mesh, tail_sharded)


def _build_epoch(
    model, loss, optimizer, method, metric_items, grad_stats, mesh=None, tail_sharded=True
) -> tuple[Callable, Callable]:
    def make(mesh):
        return train_step(model, loss, optimizer, method, metrics=dict(metric_items), grad_stats=grad_stats, mesh=mesh)

    step, tail_step = make(mesh), None if tail_sharded else make(None)
    jit = backend.jax.jit
    # not donated: the epoch's starting state is kept for a guarded replay
    # (the guarded epoch compiles only when a step was not finite)
    return jit(functools.partial(_jax_epoch, step, tail_step, False)), jit(
        functools.partial(_jax_epoch, step, tail_step, True)
    )


def _compiled_epoch(*parts: Any) -> tuple[Callable, Callable]:
    """The jitted ``(epoch, guarded epoch)``, reused by every fit call with the same
    model, loss, optimizer, method and metrics (so a resumed or repeated fit compiles nothing)."""
    try:
        hash(parts)
    except TypeError:  # e.g. an optimizer holding a list: compile for this call only
        return _build_epoch(*parts)
    return _cached_epoch(*parts)


def _numpy_epoch(step: Callable, ts: TrainState, x, y, batches, tail, on_batch: Callable) -> tuple[TrainState, list]:
    outs = []
    # overflow is detected and reported by fit itself (out["finite"]), not by NumPy warnings
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for idx in list(batches) + ([tail] if tail is not None else []):
            new, out = step(ts, x[idx], y[idx])
            outs.append(out)
            if not out["finite"]:
                break
            ts = new
            on_batch()
    return ts, outs


# --------------------------------------------------------------------------- #
# Per-step outputs -> one epoch record
# --------------------------------------------------------------------------- #


def _columns(outs: Any, tail: Any) -> dict:
    """Per-step outputs as NumPy columns ``(steps,)`` (full batches, then the tail)."""
    if isinstance(outs, list):  # NumPy: one dict per step
        return backend.tree_map(lambda *c: np.stack([np.asarray(v) for v in c]), *outs)
    outs, tail = backend.jax.device_get((outs, tail))
    if tail is None:
        return outs
    return backend.tree_map(lambda a, b: np.concatenate([a, np.asarray(b)[None]]), outs, tail)


def _summarize(columns: dict, sizes: np.ndarray, metric_names: list[str]) -> tuple[dict, dict | None, int]:
    """``(means, grad stats, number of good steps)`` over the steps before the first non-finite one."""
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


# --------------------------------------------------------------------------- #
# fit
# --------------------------------------------------------------------------- #


def _stop(epoch: int, batch: int, batches: int, update: int, loss: float) -> dict[str, Any]:
    """``history.stopped`` for a step whose loss or gradients were not finite."""
    what = f"loss {loss}" if not np.isfinite(loss) else "gradients (the loss was finite)"
    message = (f"non-finite {what} at epoch {epoch}, batch {batch} of {batches} (update {update}); "
               f"stopped and kept the state after update {update - 1}")
    return {"reason": "non-finite", "epoch": epoch, "batch": batch, "step": update, "loss": loss, "message": message}


def _progress(total: int, initial: int, unit: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit=unit, dynamic_ncols=True, leave=True)


def _postfix(record: dict) -> dict[str, str]:
    short = {"train_loss": "loss", "train_accuracy": "acc", "val_loss": "val_loss", "val_accuracy": "val_acc"}
    return {name: f"{record[k]:.4g}" for k, name in short.items() if k in record}


def fit(
    model: Layer,
    loss: Any,
    optimizer: Any,
    state: TrainState,
    train_data: tuple[Array, Array],
    *,
    epochs: int,
    batch_size: int = 32,
    validation_data: tuple[Array, Array] | None = None,
    method: str = "manual",
    metrics: Mapping[str, Metric] | None = None,
    grad_stats: bool = False,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    keep_checkpoints: int | None = 3,
    resume: bool = False,
    progress: bool = True,
    eval_batch_size: int = 256,
    mesh: Any = None,
) -> tuple[TrainState, History]:
    """Train ``model`` on ``train_data = (x, y)`` for ``epochs`` epochs; returns ``(state, history)``.

    The backend is the state's: a JAX key in ``state`` trains with one
    compiled call per epoch (the training set is copied to the device once;
    ``state`` itself is never invalidated; up to three train states are alive at
    once: an epoch's start, its end and the next epoch's), a NumPy Generator
    trains eagerly. See the module docstring for what an epoch does.

    Args:
        model, loss, optimizer, method, metrics: as for :func:`~fnn.train.train_step`.
        state: a :class:`TrainState`, e.g. from :func:`~fnn.train.init_state`.
        epochs: the epoch to reach: a resumed run continues from its checkpoint up to it.
        batch_size: examples per step, ``1 <= batch_size <= len(x)``.
        validation_data: ``(x_val, y_val)`` evaluated after every epoch (eval mode).
        grad_stats: record per-leaf gradient statistics each epoch (computed
            inside the compiled step; see :mod:`fnn.train.step`) in ``history.grad_stats``.
        checkpoint_dir: save the state and the history there every
            ``checkpoint_every`` epochs and after the last one, keeping the
            ``keep_checkpoints`` newest (:func:`fnn.checkpoint.save_numbered`).
        resume: continue from the newest checkpoint in ``checkpoint_dir``
            (``state`` is then the template it is loaded into). The result is the
            same, bit for bit on CPU, as a run that was never interrupted.
        progress: show a progress bar (tqdm) on stderr.
        eval_batch_size: batch size of the validation passes.
        mesh: train data-parallel over this ``jax.sharding.Mesh`` (axis
            ``"data"``, e.g. :func:`fnn.parallel.data_mesh`; JAX only): the
            training and validation data and the state are replicated on every
            device, each batch is split over the devices, and the result is the
            single-device one. ``batch_size`` must be divisible by the number of
            devices; see :mod:`fnn.parallel`. With several processes, every
            process passes the same data and state, and only process 0 writes
            checkpoints.
    """
    if not isinstance(state, TrainState):
        raise TypeError(
            f"fit: state must be a fnn.train.TrainState (fnn.train.init_state(...)); got {type(state).__name__}"
        )
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"fit: epochs must be a non-negative int; got {epochs!r}")
    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"fit: checkpoint_every must be a positive int; got {checkpoint_every!r}")
    if resume and checkpoint_dir is None:
        raise ValueError("fit(resume=True) needs checkpoint_dir, the directory to resume from")
    x, y = train_data
    n = check_pair(x, y)
    batch_size = check_batch_size(batch_size, n)
    check_classes(model, x, y)
    if validation_data is not None:
        val_batch = min(check_batch_size(eval_batch_size), check_pair(*validation_data))
        check_classes(model, *validation_data)
    metric_items = check_metrics(metrics, loss)
    metric_names = [name for name, _ in metric_items]
    on_jax = not isinstance(state.key, np.random.Generator)
    tail_sharded = True
    if mesh is not None:
        from fnn import parallel

        parallel.check_mesh(mesh, "fit")
        if not on_jax:
            raise TypeError("fit(mesh=...) needs a JAX train state (init_state with fnn.key(0)); got a NumPy Generator key")
        parallel.check_batch(batch_size, mesh, "fit")
        tail_sharded = (n % batch_size) % parallel.data_size(mesh) == 0
    step = train_step(model, loss, optimizer, method, metrics=dict(metric_items), grad_stats=grad_stats)

    history, start = History(), 0
    if resume and checkpoint.latest(checkpoint_dir) is not None:
        path = checkpoint.latest(checkpoint_dir)
        state = checkpoint.load(path, like=state)
        meta = checkpoint.read_metadata(path)
        history, start = History.from_dict(meta["history"]), int(meta["epoch"])

    xp = backend.jnp if on_jax else np
    if mesh is not None:  # a full copy on every device; each step splits its batch
        x, y, state = parallel.replicate((np.asarray(x), np.asarray(y), state), mesh)
        if validation_data is not None:
            validation_data = parallel.replicate(tuple(np.asarray(a) for a in validation_data), mesh)
    x, y = xp.asarray(x), xp.asarray(y)
    if validation_data is not None:
        validation_data = tuple(xp.asarray(a) for a in validation_data)
    sizes = np.array([batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else []))
    if on_jax:
        parts = (model, loss, optimizer, method, metric_items, grad_stats, mesh, tail_sharded)
        run_epoch, replay_epoch = _compiled_epoch(*parts)
        ts = state
        order = _shuffler(state.key, _shuffle_bits()(state.key), n)
        bar = _progress(epochs, start, "epoch", progress)
        if bar is not None:
            bar.set_description_str("compiling")
    else:
        ts, order = state, _shuffler(state.key, None, n)
        bar = _progress(epochs * len(sizes), start * len(sizes), "batch", progress)

    upcoming = _order(order(start + 1), batch_size)
    began = time.perf_counter()
    if on_jax and start < epochs:
        running = run_epoch(ts, x, y, *upcoming)
    try:
        for epoch in range(start + 1, epochs + 1):
            batches, tail = upcoming
            if on_jax:
                new_ts, outs, tail_out = running
                upcoming = _order(order(epoch + 1), batch_size)  # on the host while the device runs
                if epoch < epochs:  # queue the next epoch now: the device never waits for the host
                    running = run_epoch(new_ts, x, y, *upcoming)
                columns = _columns(outs, tail_out)
                if not columns["finite"].all():  # replay from the epoch's start, stopping before that step
                    new_ts, outs, tail_out = replay_epoch(ts, x, y, batches, tail)
                    columns = _columns(outs, tail_out)
                ts = new_ts
            else:
                ts, outs = _numpy_epoch(step, ts, x, y, batches, tail, bar.update if bar else lambda: None)
                upcoming = _order(order(epoch + 1), batch_size)
                columns = _columns(outs, None)
            means, grads, good = _summarize(columns, sizes, metric_names)
            if good < len(sizes):
                history.stopped = _stop(epoch, good + 1, len(sizes), int(ts.step) + 1, float(columns["loss"][good]))
                if bar is not None:
                    bar.write(f"fnn.train.fit: {history.stopped['message']}")
                break
            record = {"epoch": epoch, "step": int(ts.step), **means}
            if validation_data is not None:
                scores = evaluate_checked(model, loss, metric_items, val_batch, ts.params, ts.state, *validation_data)
                record.update({f"val_{k}": v for k, v in scores.items()})
            record["seconds"] = time.perf_counter() - began  # since the previous epoch's record
            began = time.perf_counter()
            history.append(record, grads)
            if bar is not None:
                bar.set_description_str("")
                bar.set_postfix(_postfix(record), refresh=False)
                if on_jax:
                    bar.update(1)
            writes = checkpoint_dir is not None and (epoch % checkpoint_every == 0 or epoch == epochs)
            if writes and (mesh is None or parallel.is_main_process()):
                meta = {"epoch": epoch, "history": history.to_dict(), "model": model.name, "batch_size": batch_size}
                checkpoint.save_numbered(checkpoint_dir, epoch, ts, metadata=meta, keep=keep_checkpoints)
    finally:
        if bar is not None:
            bar.close()
    return ts, history
