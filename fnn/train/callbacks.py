"""Callbacks: what :func:`~fnn.train.fit` does around its epochs, as separate hooks.

A callback is an object with any of these hooks (subclass :class:`Callback`,
whose hooks do nothing)::

    on_train_begin(train_state, history)       # before the first epoch
    on_epoch_end(epoch, record, train_state)   # after each finished epoch
    on_train_end(train_state, history)         # after the last one, or after a stop

Each returns ``None`` (carry on with the same state), a new
:class:`~fnn.train.TrainState` (training continues from it, e.g. with another
learning rate: :func:`fnn.optim.set_learning_rate`), or, from
``on_epoch_end``, :class:`StopTraining` (the class or an instance with a
reason) to end the run after this epoch. ``fit`` calls the callbacks in list
order, each seeing the state the previous one returned; ``record`` is the
epoch's record (``epoch``, ``step``, ``train_loss``, ``val_loss``, ...), a
copy of which is already in the history.

On JAX, ``fit`` queues the next epoch before the callbacks run; a callback
that returns a new state or stops the run thus costs one epoch of device
time (the queued epoch is dropped), and one that returns None costs nothing.

>>> class PrintLoss(Callback):
...     def on_epoch_end(self, epoch, record, train_state):
...         print(epoch, round(record["train_loss"], 2))

Built in: :class:`EarlyStopping`, :class:`ReduceLROnPlateau` and
:class:`Checkpoint` here; :class:`~fnn.train.CSVLogger` and
:class:`~fnn.train.TensorBoard` in :mod:`fnn.train.loggers`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fnn import checkpoint, optim
from fnn.train.history import History
from fnn.train.state import TrainState

__all__ = ["Callback", "StopTraining", "EarlyStopping", "ReduceLROnPlateau", "Checkpoint"]


class StopTraining:
    """Returned by ``on_epoch_end`` to end the run after this epoch.

    Return the class itself or an instance naming the reason,
    ``StopTraining("val_loss has not improved for 5 epochs")``: the reason
    goes into ``history.stopped["message"]``. It is a value to return, not an
    exception to raise.
    """

    def __init__(self, reason: str = ""):
        self.reason = reason

    def __repr__(self) -> str:
        return f"StopTraining({self.reason!r})"


class Callback:
    """The base class of callbacks: every hook does nothing and returns None."""

    def on_train_begin(self, train_state: TrainState, history: History) -> TrainState | None:
        """Before the first epoch; ``history`` is empty, or holds the epochs of a resumed run."""

    def on_epoch_end(self, epoch: int, record: dict, train_state: TrainState) -> Any:
        """After each finished epoch: None, a new TrainState, or StopTraining."""

    def on_train_end(self, train_state: TrainState, history: History) -> TrainState | None:
        """After the last epoch, or after a stop (``history.stopped`` says which)."""


def _result(callback: Any, hook: str, value: Any, train_state: TrainState) -> tuple[TrainState, str | None]:
    """``(the state to go on with, the stop reason or None)`` from a hook's return value."""
    if value is None:
        return train_state, None
    if isinstance(value, TrainState):
        return value, None
    if hook == "on_epoch_end" and (value is StopTraining or isinstance(value, StopTraining)):
        reason = value.reason if isinstance(value, StopTraining) else ""
        return train_state, reason or f"stopped by {type(callback).__name__}"
    allowed = "None, a TrainState or fnn.train.StopTraining" if hook == "on_epoch_end" else "None or a TrainState"
    raise TypeError(f"{type(callback).__name__}.{hook} must return {allowed}; got {value!r}")


class CallbackList:
    """The callbacks of one run, called in order (used by :func:`~fnn.train.fit`)."""

    def __init__(self, callbacks: Sequence[Any]):
        if isinstance(callbacks, Callback) or not isinstance(callbacks, (list, tuple)):
            raise TypeError(f"fit: callbacks must be a list of callbacks; got {callbacks!r}")
        for cb in callbacks:
            if not any(hasattr(cb, h) for h in ("on_train_begin", "on_epoch_end", "on_train_end")):
                raise TypeError(f"fit: a callback needs on_epoch_end (subclass fnn.train.Callback); got {cb!r}")
        self.callbacks = list(callbacks)

    def train_begin(self, train_state: TrainState, history: History) -> TrainState:
        for cb in self.callbacks:
            if hasattr(cb, "on_train_begin"):
                train_state, _ = _result(cb, "on_train_begin", cb.on_train_begin(train_state, history), train_state)
        return train_state

    def epoch_end(self, epoch: int, record: dict, train_state: TrainState) -> tuple[TrainState, str | None]:
        """``(the state to go on with, the reason to stop or None)``; every callback runs, even after a stop."""
        stop = None
        for cb in self.callbacks:
            if hasattr(cb, "on_epoch_end"):
                value = cb.on_epoch_end(epoch, record, train_state)
                train_state, reason = _result(cb, "on_epoch_end", value, train_state)
                stop = stop or reason
        return train_state, stop

    def train_end(self, train_state: TrainState, history: History) -> TrainState:
        for cb in self.callbacks:
            if hasattr(cb, "on_train_end"):
                train_state, _ = _result(cb, "on_train_end", cb.on_train_end(train_state, history), train_state)
        return train_state


# --------------------------------------------------------------------------- #
# Watching a monitored value
# --------------------------------------------------------------------------- #


class _Monitor(Callback):
    """The best value of ``record[monitor]`` so far and the epochs since it improved."""

    def __init__(self, monitor: str, mode: str, min_delta: float, patience: int):
        name = type(self).__name__
        if mode not in ("min", "max"):
            raise ValueError(f"{name}: mode must be 'min' or 'max'; got {mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"{name}: patience must be a non-negative int; got {patience!r}")
        if not (isinstance(min_delta, (int, float)) and min_delta >= 0):
            raise ValueError(f"{name}: min_delta must be a number >= 0; got {min_delta!r}")
        self.monitor, self.mode, self.min_delta, self.patience = monitor, mode, float(min_delta), patience
        self.best, self.best_epoch, self.wait = None, None, 0

    def on_train_begin(self, train_state: TrainState, history: History) -> None:
        self.best, self.best_epoch, self.wait = None, None, 0

    def _improved(self, epoch: int, record: dict) -> bool:
        """Whether this epoch improved on the best by more than ``min_delta`` (and count the wait)."""
        if self.monitor not in record:
            hint = " (val_* needs fit(validation_data=...))" if self.monitor.startswith("val_") else ""
            raise ValueError(f"{type(self).__name__}: monitor {self.monitor!r} is not in the epoch record{hint}; "
                             f"it has {sorted(record)}")
        value = float(record[self.monitor])
        sign = 1.0 if self.mode == "min" else -1.0
        if math.isfinite(value) and (self.best is None or sign * (self.best - value) > self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True
        self.wait += 1
        return False


class EarlyStopping(_Monitor):
    """Stop when ``record[monitor]`` has not improved for ``patience`` epochs.

    An epoch improves when its value beats the best so far by more than
    ``min_delta`` (lower for ``mode="min"``, higher for ``"max"``). With
    ``restore_best``, the run ends with the whole train state of the best
    epoch (params, optimizer state, step and key), whether it stopped early or
    ran all its epochs.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, mode: str = "min",
                 restore_best: bool = True, min_delta: float = 0.0):
        super().__init__(monitor, mode, min_delta, patience)
        self.restore_best, self.best_state = restore_best, None

    def on_train_begin(self, train_state: TrainState, history: History) -> None:
        super().on_train_begin(train_state, history)
        self.best_state = None

    def on_epoch_end(self, epoch: int, record: dict, train_state: TrainState) -> StopTraining | None:
        if self._improved(epoch, record):
            self.best_state = train_state
        elif self.wait >= self.patience:
            return StopTraining(f"EarlyStopping: {self.monitor} has not improved for {self.wait} epochs "
                                f"(best {self.best:.6g} at epoch {self.best_epoch})")
        return None

    def on_train_end(self, train_state: TrainState, history: History) -> TrainState | None:
        return self.best_state if self.restore_best else None


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``record[monitor]`` has not
    improved for ``patience`` epochs (never below ``min_lr``), then wait
    ``patience`` epochs again.

    The rate is the one in the optimizer state (:func:`fnn.optim.set_learning_rate`,
    ``path`` picking one of several), so the compiled epoch is not recompiled.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, min_lr: float = 0.0,
                 mode: str = "min", min_delta: float = 0.0, path: str | None = None):
        super().__init__(monitor, mode, min_delta, patience)
        if not 0 < factor < 1:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1); got {factor!r}")
        self.factor, self.min_lr, self.path = factor, min_lr, path

    def on_epoch_end(self, epoch: int, record: dict, train_state: TrainState) -> TrainState | None:
        if self._improved(epoch, record) or self.wait < self.patience:
            return None
        self.wait = 0
        lr = float(optim.get_learning_rate(train_state.opt_state, self.path))
        new = max(lr * self.factor, self.min_lr)
        if new >= lr:
            return None
        return train_state._replace(opt_state=optim.set_learning_rate(train_state.opt_state, new, self.path))


# --------------------------------------------------------------------------- #
# Writing things down
# --------------------------------------------------------------------------- #


def _main_process(train_state: TrainState) -> bool:
    """Only one process of a multi-process JAX run writes files."""
    if isinstance(train_state.key, np.random.Generator):
        return True
    from fnn import parallel

    return parallel.is_main_process()


class Checkpoint(Callback):
    """Save the train state and the history every ``every`` epochs and after
    the last one, keeping the ``keep`` newest (None: all) as
    ``dir/checkpoint_<epoch>.safetensors``, each written atomically
    (:func:`fnn.checkpoint.save_numbered`). ``fit(resume=True)`` continues from
    the newest one (:func:`resume`). Put it last in the list, so that it saves
    the state the next epoch starts from. Only process 0 of a multi-process run writes.

    A fresh (not resumed) run refuses a directory that already holds
    checkpoints, so that no run deletes another's: resume it, choose another
    directory, or pass ``overwrite=True`` to delete them first.
    """

    def __init__(
        self, dir: str | Path, every: int = 1, keep: int | None = 3, metadata: dict | None = None, overwrite: bool = False
    ):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"Checkpoint: every must be a positive int; got {every!r}")
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ValueError(f"Checkpoint: keep must be None or a positive int; got {keep!r}")
        self.dir, self.every, self.keep, self.metadata = Path(dir), every, keep, dict(metadata or {})
        self.overwrite = bool(overwrite)
        self._history, self._last, self._saved = History(), None, None

    def on_train_begin(self, train_state: TrainState, history: History) -> None:
        """Refuse a directory that holds another run's checkpoints (``keep`` would prune
        this run's files by number against them), unless resuming it or told to overwrite."""
        self._history, self._last, self._saved = history, None, None
        found = checkpoint.list_checkpoints(self.dir)
        if found and not len(history):  # a fresh run, not the continuation of what is there
            if not self.overwrite:
                raise ValueError(
                    f"Checkpoint: {self.dir} already holds checkpoints of another run (newest {found[-1].name}); "
                    "continue it with fit(..., resume=True), write to another directory, or pass "
                    "Checkpoint(..., overwrite=True) to delete them"
                )
            if _main_process(train_state):
                for old in found:
                    old.unlink(missing_ok=True)

    def _save(self, epoch: int, train_state: TrainState) -> None:
        if _main_process(train_state):
            meta = {"epoch": epoch, "history": self._history.to_dict(), **self.metadata}
            checkpoint.save_numbered(self.dir, epoch, train_state, metadata=meta, keep=self.keep)
        self._saved = epoch

    def on_epoch_end(self, epoch: int, record: dict, train_state: TrainState) -> None:
        self._last = (epoch, train_state)
        if epoch % self.every == 0:
            self._save(epoch, train_state)

    def on_train_end(self, train_state: TrainState, history: History) -> None:
        # the state at the end of the last finished epoch (not one restored by
        # EarlyStopping, nor the state before a non-finite step)
        non_finite = (history.stopped or {}).get("reason") == "non-finite"
        if self._last is not None and self._saved != self._last[0] and not non_finite:
            self._save(*self._last)


def resume(
    directory: str | Path, like: TrainState, model: Any = None
) -> tuple[TrainState, History, int] | None:
    """``(train state, history, epoch)`` from the newest checkpoint in ``directory``, or None when it has none.

    With ``model``, a checkpoint written for another model (the ``model`` its
    metadata records, the layer's repr) is refused, even when the two have the
    same parameter tree (relu where the checkpoint had tanh)."""
    path = checkpoint.latest(directory)
    if path is None:
        return None
    meta = checkpoint.read_metadata(path)
    written_for = meta.get("model") if isinstance(meta, dict) else None
    if model is not None and isinstance(written_for, str) and "(" in written_for and written_for != repr(model):
        raise checkpoint.CheckpointError(
            f"{path} was written for another model:\n  checkpoint: {written_for}\n  this run:   {model!r}\n"
            "resume with the model that wrote it, or train into another directory"
        )
    train_state = checkpoint.load(path, like=like)
    history = History.from_dict(meta["history"])
    history.stopped = None  # the resumed run is a new attempt
    return train_state, history, int(meta["epoch"])
