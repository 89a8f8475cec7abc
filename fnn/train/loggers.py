"""Callbacks that write a run down as it goes: :class:`CSVLogger` (one CSV row
per epoch) and :class:`TensorBoard` (an event file TensorBoard reads).

Both log every epoch's record (``epoch``, ``step``, ``train_loss``,
``val_loss``, ... :class:`~fnn.train.History`) and, when ``fit`` runs with
``grad_stats=True``, the epoch's gradient statistics, one scalar per
parameter leaf and statistic, named ``<statistic>/<leaf path>``
(``grad_norm/dense/w``, ``update_ratio/dense_1/b``; see
:func:`~fnn.train.gradient_stats`).

>>> epoch_scalars({"epoch": 1, "train_loss": 0.5}, {"dense/w": {"grad_norm": 0.1, "nonfinite": 0.0}})
{'epoch': 1, 'train_loss': 0.5, 'grad_norm/dense/w': 0.1, 'nonfinite/dense/w': 0.0}
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from fnn.train.callbacks import Callback, _main_process
from fnn.train.history import History
from fnn.train.state import TrainState

__all__ = ["CSVLogger", "TensorBoard", "epoch_scalars"]


def epoch_scalars(record: dict, grad_stats: dict | None = None) -> dict[str, Any]:
    """The record, then the gradient statistics flattened as ``<statistic>/<leaf path>``."""
    scalars = dict(record)
    for path, stats in (grad_stats or {}).items():
        for stat, value in stats.items():
            scalars[f"{stat}/{path}"] = value
    return scalars


class _EpochLogger(Callback):
    """Finds each epoch's gradient statistics in the history ``fit`` passes to ``on_train_begin``."""

    _history: History | None = None
    _grads_seen: int = 0

    def on_train_begin(self, train_state: TrainState, history: History) -> None:
        self._history, self._grads_seen = history, len(history.grad_stats)

    def _scalars(self, record: dict) -> dict[str, Any]:
        """This epoch's record and, when ``fit`` recorded them, its gradient statistics."""
        grads = None
        if self._history is not None and len(self._history.grad_stats) > self._grads_seen:
            grads, self._grads_seen = self._history.grad_stats[-1], len(self._history.grad_stats)
        return epoch_scalars(record, grads)


class CSVLogger(_EpochLogger):
    """One CSV row per epoch: the record and, with ``fit(grad_stats=True)``, the
    gradient statistics (columns ``grad_norm/dense/w``, ...); the header from the first row's keys.

    Every row is appended and flushed to disk as soon as its epoch ends, so a
    crash loses at most the running epoch. Floats are written with every digit
    (``repr``). ``append=False`` starts a new file at the start of the run;
    ``append=True`` (e.g. with ``fit(resume=True)``) adds rows to an existing
    one, whose header must name the same columns. Only process 0 of a
    multi-process run writes.
    """

    def __init__(self, path: str | Path, append: bool = False):
        self.path, self.append, self._columns, self._writes = Path(path), append, None, True

    def on_train_begin(self, train_state: TrainState, history: History) -> None:
        super().on_train_begin(train_state, history)
        self._columns, self._writes = None, _main_process(train_state)
        if not self._writes:
            return
        if not self.append:
            self.path.unlink(missing_ok=True)
        elif self.path.exists() and self.path.stat().st_size:
            with self.path.open(newline="") as f:
                self._columns = next(csv.reader(f), None)

    def on_epoch_end(self, epoch: int, record: dict, train_state: TrainState) -> None:
        row = self._scalars(record)
        if not self._writes:
            return
        if self._columns is not None and list(row) != self._columns:
            raise ValueError(f"CSVLogger: {self.path} has the columns {self._columns}; "
                             f"this run's records have {list(row)}")
        with self.path.open("a", newline="") as f:
            writer = csv.writer(f)
            if self._columns is None:
                self._columns = list(row)
                writer.writerow(self._columns)
            writer.writerow([repr(float(v)) if isinstance(v, float) else v for v in row.values()])
            f.flush()
            os.fsync(f.fileno())


def _summary_writer() -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError as err:
        raise ImportError(
            "fnn.train.TensorBoard needs tensorboardX: pip install 'fnn[log]' (or pip install tensorboardX)"
        ) from err
    return SummaryWriter


class TensorBoard(_EpochLogger):
    """Write every epoch's record and gradient statistics as TensorBoard scalars
    in ``log_dir`` (``tensorboard --logdir DIR`` shows them).

    Each key of the record but ``epoch`` is a scalar tag (``train_loss``,
    ``val_accuracy``, ``seconds``, ...), each gradient statistic a tag
    ``<statistic>/<leaf path>``, all at ``global_step = epoch``. The events are
    flushed after every epoch. Needs tensorboardX, the ``log`` extra
    (``pip install 'fnn[log]'``): the error says so when it is missing. Only
    process 0 of a multi-process run writes.
    """

    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir)
        self._writer_class, self._writer = _summary_writer(), None

    def on_train_begin(self, train_state: TrainState, history: History) -> None:
        super().on_train_begin(train_state, history)
        if self._writer is None and _main_process(train_state):
            self._writer = self._writer_class(logdir=str(self.log_dir))

    def on_epoch_end(self, epoch: int, record: dict, train_state: TrainState) -> None:
        scalars = self._scalars(record)
        if self._writer is None:
            return
        for tag, value in scalars.items():
            if tag != "epoch":
                self._writer.add_scalar(tag, float(value), global_step=epoch)
        self._writer.flush()

    def on_train_end(self, train_state: TrainState, history: History) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
