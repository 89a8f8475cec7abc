"""``fit``: the training loop, a short loop over an epoch runner with callbacks.

Each epoch: run it (:mod:`fnn.train.epoch`: on JAX one compiled call, on
NumPy eager steps), summarise its per-step outputs, validate, append the
record to the history, then call the callbacks (:mod:`fnn.train.callbacks`),
which may replace the train state or stop the run.

A step whose loss or gradients are not finite stops the run: the state from
before that step is kept, ``history.stopped`` names the epoch and batch, and
``fit`` returns normally.

The train state carries the data key forward: each epoch shuffles with
``ts.key`` and advances it, so ``fit`` for one epoch twice gives the same
state, bit for bit on CPU, as ``fit`` for two epochs.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fnn import optim
from fnn.core import Layer
from fnn.data import check_batch_size, check_pair
from fnn.metrics import Metric, check_metrics
from fnn.train.callbacks import Callback, CallbackList, Checkpoint, resume as resume_from
from fnn.train.epoch import epoch_runner, summarize
from fnn.train.evaluate import check_classes, evaluate_checked
from fnn.train.history import History
from fnn.train.state import TrainState

__all__ = ["fit"]

Array = Any


def _stop(epoch: int, batch: int, batches: int, update: int, loss: float, state_ok: bool) -> dict[str, Any]:
    """``history.stopped`` for a step whose loss, gradients or new state were not finite."""
    what = f"loss {loss}" if not np.isfinite(loss) else "gradients (the loss was finite)"
    if np.isfinite(loss) and not state_ok:
        what = "params or optimizer state after the update (the loss was finite: a learning rate or transform?)"
    message = (f"non-finite {what} at epoch {epoch}, batch {batch} of {batches} (update {update}); "
               f"stopped and kept the state after update {update - 1}")
    return {"reason": "non-finite", "epoch": epoch, "batch": batch, "step": update, "loss": loss, "message": message}


class _Bar:
    """The progress bar (tqdm, on stderr): epochs on JAX, batches on NumPy; or nothing.

    On JAX the first epoch includes compiling it, which can take far longer
    than the epoch itself: the bar restarts its clock after that epoch, so the
    rate and the time left are those of the compiled epochs only (and the
    elapsed time it shows counts from there; the record's ``seconds`` keep
    the whole first epoch).
    """

    def __init__(self, enabled: bool, on_jax: bool, epochs: int, start: int, steps: int):
        self.bar, self.per_epoch, self.compiled = None, on_jax, not on_jax
        if enabled:
            from tqdm.auto import tqdm

            scale = 1 if on_jax else steps
            self.bar = tqdm(total=epochs * scale, initial=start * scale, unit="epoch" if on_jax else "batch",
                            dynamic_ncols=True, leave=True)
            if on_jax:
                self.bar.set_description_str("compiling")

    def batch(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def epoch(self, record: dict) -> None:
        if self.bar is not None:
            short = {"train_loss": "loss", "train_accuracy": "acc", "val_loss": "val_loss", "val_accuracy": "val_acc"}
            self.bar.set_description_str("")
            self.bar.set_postfix({name: f"{record[k]:.4g}" for k, name in short.items() if k in record}, refresh=False)
            if not self.compiled:  # the rate and the time left from here on exclude compiling
                self.compiled, done = True, self.bar.n + 1
                self.bar.reset()
                self.bar.initial = self.bar.n = self.bar.last_print_n = done
                self.bar.refresh()
            elif self.per_epoch:
                self.bar.update(1)

    def write(self, message: str) -> None:
        """A note for the user: above the bar, or on stderr without one."""
        if self.bar is not None:
            self.bar.write(f"fnn.train.fit: {message}")
        else:
            print(f"fnn.train.fit: {message}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check(state: Any, epochs: Any, resume: bool, checkpoint_dir: Any, callbacks: Sequence) -> Path | None:
    """Check the arguments; the directory to resume from (None when not resuming)."""
    if not isinstance(state, TrainState):
        raise TypeError(
            f"fit: state must be a fnn.train.TrainState (fnn.train.init_state(...)); got {type(state).__name__}"
        )
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"fit: epochs must be a non-negative int; got {epochs!r}")
    if not resume:
        return None
    dirs = [cb.dir for cb in callbacks if isinstance(cb, Checkpoint)] if checkpoint_dir is None else [checkpoint_dir]
    if len(dirs) != 1:
        raise ValueError("fit(resume=True) needs checkpoint_dir, the directory to resume from "
                         "(or exactly one Checkpoint callback)")
    return Path(dirs[0])


def _validation(model: Layer, loss: Any, metric_items: tuple, data: Any, batch_size: int, runner: Any):
    """``ts -> {"val_loss": ..., "val_<metric>": ...}`` on the validation data (eval mode), or ``{}``."""
    if data is None:
        return lambda ts: {}
    n = check_pair(*data)
    if n == 0:
        raise ValueError("fit: validation_data is empty; pass None for no validation, or hold out some examples")
    batch_size = min(check_batch_size(batch_size), n)
    check_classes(model, *data)
    data = runner.place(tuple(data))

    def validate(ts: TrainState) -> dict:
        scores = evaluate_checked(model, loss, metric_items, batch_size, ts.params, ts.state, *data)
        return {f"val_{k}": v for k, v in scores.items()}

    return validate


def _resume(directory: Path | None, state: TrainState, model: Layer, optimizer: Any) -> tuple:
    """``(state, history, start epoch, note for the user)``: from the newest checkpoint in
    ``directory`` when there is one (refusing another model's), else the fresh ``state``."""
    if directory is None:
        return state, History(), 0, None
    found = resume_from(directory, like=state, model=model)
    if found is None:
        return state, History(), 0, f"no checkpoint in {directory}: starting fresh"
    loaded, history, start = found
    note = None
    try:  # the checkpoint carries its learning rate; say so when the optimizer was built with another
        saved, given = optim.get_learning_rate(loaded.opt_state), optim.get_learning_rate(optimizer.init(state.params))
    except (KeyError, ValueError, TypeError):  # an optimizer without one learning rate in its state
        saved = given = None
    if saved is not None and float(saved) != float(given):
        note = (f"resumed from epoch {start} at the checkpoint's learning rate {float(saved):g}, not the "
                f"optimizer's {float(given):g} (set it with fnn.optim.set_learning_rate in a callback's on_train_begin)")
        warnings.warn(f"fit: {note}", stacklevel=3)
    return loaded, history, start, note


def fit(
    model: Layer, loss: Any, optimizer: Any, state: TrainState, train_data: tuple[Array, Array], *, epochs: int,
    batch_size: int = 32, validation_data: tuple[Array, Array] | None = None, method: str = "manual",
    metrics: Mapping[str, Metric] | None = None, grad_stats: bool = False, callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | Path | None = None, checkpoint_every: int = 1, keep_checkpoints: int | None = 3,
    resume: bool = False, progress: bool = True, eval_batch_size: int = 256, mesh: Any = None,
) -> tuple[TrainState, History]:
    """Train ``model`` on ``train_data = (x, y)`` for ``epochs`` epochs; returns ``(state, history)``.

    The backend is the state's: a JAX key trains with one compiled call per
    epoch (the training set is copied to the device once; ``state`` is never
    invalidated), a NumPy Generator trains eagerly (see :mod:`fnn.train.epoch`).

    Args:
        model, loss, optimizer, method, metrics: as for :func:`~fnn.train.train_step`.
        state: a :class:`TrainState`, e.g. from :func:`~fnn.train.init_state`.
        epochs: the epoch to reach: a resumed run continues from its checkpoint up to it.
        batch_size: examples per step, ``1 <= batch_size <= len(x)``.
        validation_data: ``(x_val, y_val)`` evaluated after every epoch (eval mode).
        grad_stats: record per-leaf gradient statistics in ``history.grad_stats``.
        callbacks: :class:`~fnn.train.Callback` objects, called in order after every epoch.
        checkpoint_dir, checkpoint_every, keep_checkpoints: add
            ``Checkpoint(checkpoint_dir, every=checkpoint_every, keep=keep_checkpoints)`` after the callbacks.
        resume: continue from the newest checkpoint in ``checkpoint_dir`` (or of the
            one Checkpoint callback); ``state`` is then the template it is loaded into.
            The result is the same, bit for bit on CPU, as an uninterrupted run.
        progress: show a progress bar (tqdm) on stderr.
        eval_batch_size: batch size of the validation passes.
        mesh: train data-parallel over this ``jax.sharding.Mesh`` (axis ``"data"``;
            JAX only; see :mod:`fnn.parallel`): the data and state replicated, each
            batch split over the devices (``batch_size`` divisible by their number).
    """
    calls, metric_items = CallbackList(callbacks), check_metrics(metrics, loss)
    resume_dir = _check(state, epochs, resume, checkpoint_dir, calls.callbacks)
    if checkpoint_dir is not None:
        meta = {"model": repr(model), "batch_size": batch_size}  # resume checks the model against it
        calls.callbacks.append(Checkpoint(checkpoint_dir, checkpoint_every, keep_checkpoints, metadata=meta))
    on_jax = not isinstance(state.key, np.random.Generator)
    runner = epoch_runner(model, loss, optimizer, train_data, batch_size=batch_size, method=method, on_jax=on_jax,
                          metric_items=metric_items, grad_stats=grad_stats, mesh=mesh)
    validate = _validation(model, loss, metric_items, validation_data, eval_batch_size, runner)
    state, history, start, note = _resume(resume_dir, state, model, optimizer)
    ts, bar = runner.place_state(state), _Bar(progress, on_jax, epochs, start, len(runner.sizes))
    if note is not None:
        bar.write(note)
    runner.on_batch, began = bar.batch, time.perf_counter()
    try:
        ts = calls.train_begin(ts, history)
        for epoch in range(start + 1, epochs + 1):
            new, columns = runner.run(ts, prefetch=epoch < epochs)
            means, grads, good = summarize(columns, runner.sizes, [name for name, _ in metric_items])
            if good < len(runner.sizes):
                ts, loss_value = new, float(columns["loss"][good])
                state_ok = bool(columns["state_finite"][good]) if "state_finite" in columns else True
                history.stopped = _stop(epoch, good + 1, len(runner.sizes), int(ts.step) + 1, loss_value, state_ok)
                bar.write(history.stopped["message"])
                break
            ts = new
            record = {"epoch": epoch, "step": int(ts.step), **means, **validate(ts)}
            record["seconds"], began = time.perf_counter() - began, time.perf_counter()  # since the previous record
            history.append(record, grads)
            bar.epoch(record)
            ts, reason = calls.epoch_end(epoch, record, ts)
            if reason is not None:
                history.stopped = {"reason": "callback", "epoch": epoch, "step": int(ts.step), "message": reason}
                break
        ts = calls.train_end(ts, history)
    finally:
        bar.close()
    return ts, history
