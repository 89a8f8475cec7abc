"""What a training run reports: one record per epoch, gradient statistics,
why it stopped; and a plot of the training curves.

>>> h = History()
>>> h.append({"epoch": 1, "train_loss": 0.9, "val_loss": 1.0})
>>> h.append({"epoch": 2, "train_loss": 0.5, "val_loss": 0.7})
>>> h["val_loss"], len(h)
([1.0, 0.7], 2)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fnn.plotting import pyplot, save

__all__ = ["History", "plot_history", "plot_grad_stats"]


@dataclasses.dataclass
class History:
    """Per-epoch records of a :func:`fnn.train.fit` run.

    Attributes:
        records: one dict per finished epoch: ``epoch`` (1-based), ``step``
            (updates applied at its end), ``train_loss``, ``train_<metric>``
            (running means over the epoch's batches, in train mode),
            ``val_loss``, ``val_<metric>`` (eval mode, when validation data was
            given) and ``seconds`` (the epoch's wall time, validation included;
            the first epoch on JAX includes compiling it).
        grad_stats: with ``fit(grad_stats=True)``, one dict per epoch
            ``{leaf path: {"grad_norm": mean, "grad_max": max, "nonfinite": sum,
            "update_ratio": mean}}`` over the epoch's steps.
        stopped: None, or why the run stopped early: ``{"reason": "non-finite",
            "epoch", "batch", "step", "loss", "message"}`` (a non-finite loss or
            gradient) or ``{"reason": "callback", "epoch", "step", "message"}``
            (a callback returned :class:`~fnn.train.StopTraining`).
    """

    records: list[dict[str, float]] = dataclasses.field(default_factory=list)
    grad_stats: list[dict[str, dict[str, float]]] = dataclasses.field(default_factory=list)
    stopped: dict[str, Any] | None = None

    def append(self, record: dict[str, float], grad_stats: dict | None = None) -> None:
        self.records.append(dict(record))
        if grad_stats is not None:
            self.grad_stats.append(grad_stats)

    def __getitem__(self, name: str) -> list[float]:
        """The column ``name`` over the epochs, e.g. ``history["val_accuracy"]``."""
        if self.records and name not in self.records[-1]:
            raise KeyError(f"History has no column {name!r}; it has {sorted(self.records[-1])}")
        return [r[name] for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def last(self) -> dict[str, float]:
        """The record of the last finished epoch (``{}`` before the first)."""
        return self.records[-1] if self.records else {}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (stored in checkpoints)."""
        return {"records": self.records, "grad_stats": self.grad_stats, "stopped": self.stopped}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "History":
        return cls([dict(r) for r in data.get("records", [])], list(data.get("grad_stats", [])), data.get("stopped"))


def plot_history(history: History, path: str | Path, *, title: str | None = None) -> Path:
    """Save the loss and accuracy curves (train and validation) as a PNG.

    Needs matplotlib (``pip install 'fnn[plot]'``); uses the Agg backend, so
    it runs without a display.
    """
    plt = pyplot("plot_history")
    columns = history.records[-1].keys() if history.records else ()
    metrics = sorted({c.split("_", 1)[1] for c in columns if c.startswith(("train_", "val_"))} - {"loss"})
    panels = ["loss"] + metrics
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    epochs = history["epoch"] if history.records else []
    for ax, name in zip(axes[0], panels):
        for split, style in (("train", "-"), ("val", "--")):
            column = f"{split}_{name}"
            if column in columns:
                ax.plot(epochs, history[column], style, marker="o", markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        if name == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def plot_grad_stats(history: History, path: str | Path, *, stat: str = "grad_norm", title: str | None = None) -> Path:
    """Save one curve per parameter leaf of a gradient statistic over the epochs
    (default the gradient norm, log scale) as a PNG: where gradients vanish or explode.

    Needs ``fit(grad_stats=True)``'s ``history.grad_stats`` and matplotlib.
    """
    if not history.grad_stats:
        raise ValueError("plot_grad_stats: the history has no gradient statistics; train with fit(grad_stats=True)")
    leaves = list(history.grad_stats[0])
    if stat not in history.grad_stats[0][leaves[0]]:
        raise ValueError(f"plot_grad_stats: unknown statistic {stat!r}; "
                         f"expected one of {sorted(history.grad_stats[0][leaves[0]])}")
    plt = pyplot("plot_grad_stats")
    epochs = history["epoch"][-len(history.grad_stats):] if history.records else []
    fig, ax = plt.subplots(figsize=(7, 4.2))
    positive = True
    for leaf in leaves:
        values = [stats[leaf][stat] for stats in history.grad_stats]
        positive = positive and min(values) > 0
        ax.plot(epochs[:len(values)], values, marker="o", markersize=3, label=leaf)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{stat} (mean over the epoch's steps)" if stat in ("grad_norm", "update_ratio") else stat)
    if positive:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(leaves) > 8 else 1)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save(fig, path)
