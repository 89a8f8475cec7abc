"""Classification scores beyond accuracy: top-k accuracy, the confusion
matrix and its plot, precision, recall and F1 (per class and macro-averaged).
Re-exported by :mod:`fnn.metrics`; each runs on NumPy and under ``jax.jit``.

Predictions and targets take the forms :func:`fnn.metrics.accuracy` takes:
``pred`` is class scores ``(N, C)`` (logits or probabilities; the predicted
class is the first argmax), binary logits ``(N,)`` / ``(N, 1)`` (class 1
where ``pred > 0``), or integer labels ``(N,)``; ``target`` is integer labels
``(N,)`` or one-hot / soft targets ``(N, C)`` (their argmax), or binary
targets of the shape of binary logits (class 1 where ``target > 0.5``).

Where a score is undefined it is NaN, never a confident 0 or 1: the
precision of a class that is never predicted (0 / 0), the recall of a class
that never occurs in the targets, and F1 where either is NaN or both are 0.
A macro average is the mean over the classes whose score is defined (as
scikit-learn's ``zero_division=np.nan``), and NaN when none is.

>>> import numpy as np
>>> from fnn import metrics
>>> pred, target = np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0])
>>> metrics.confusion_matrix(pred, target, num_classes=3).tolist()   # rows: true class; columns: predicted
[[1, 1, 0], [1, 2, 0], [0, 0, 0]]
>>> [round(float(v), 4) for v in metrics.precision(pred, target, num_classes=3, average=None)]
[0.5, 0.6667, nan]
>>> round(float(metrics.precision(pred, target, num_classes=3)), 4)  # macro: over the classes where defined
0.5833
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fnn import backend
from fnn.plotting import pyplot, save

__all__ = [
    "top_k_accuracy",
    "confusion_matrix",
    "precision",
    "recall",
    "f1",
    "precision_recall_f1",
    "plot_confusion_matrix",
]

Array = Any
AVERAGES = ("macro", None)


def _float_dtype(pred: Array) -> Any:
    return np.promote_types(getattr(pred, "dtype", np.float32), np.float32)


def _integer(a: Array) -> bool:
    return np.issubdtype(a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype, np.integer)


def _as_labels(where: str, pred: Array, target: Array, num_classes: int | None) -> tuple[Array, Array, int]:
    """``(predicted labels, true labels, number of classes)`` from any of the accepted forms."""
    xp = backend.namespace(pred, target)
    pred, target = xp.asarray(pred), xp.asarray(target)
    pshape, tshape = tuple(np.shape(pred)), tuple(np.shape(target))
    if _integer(pred) and pred.ndim == 1:  # predicted labels
        if tshape == pshape:
            labels = target
        elif len(tshape) == 2 and tshape[0] == pshape[0]:
            labels = xp.argmax(target, axis=-1)
        else:
            raise ValueError(f"{where}: for predicted labels {pshape}, targets must be labels of the same shape or "
                             f"one-hot (N, C); got shape {tshape}")
        if num_classes is None:
            if not (backend.is_concrete(pred) and backend.is_concrete(labels)):
                raise ValueError(f"{where}: pass num_classes= with integer predictions under jit")
            num_classes = int(max(np.max(np.asarray(pred), initial=0), np.max(np.asarray(labels), initial=0))) + 1
        return pred, labels, _check_classes(where, num_classes)
    if pred.ndim == 2 and pshape[-1] > 1:  # class scores
        if tshape == pshape:
            target = xp.argmax(target, axis=-1)
        elif tshape != pshape[:-1]:
            raise ValueError(f"{where}: targets must be labels of shape {pshape[:-1]} or one-hot of shape {pshape}; "
                             f"got shape {tshape}")
        if num_classes is not None and num_classes != pshape[-1]:
            raise ValueError(f"{where}: num_classes={num_classes} but the scores have {pshape[-1]} classes")
        return xp.argmax(pred, axis=-1), target, pshape[-1]
    if len(pshape) == 1 or (len(pshape) == 2 and pshape[1] == 1):  # binary logits
        if tshape != pshape:
            raise ValueError(f"{where}: binary targets must have the shape of pred {pshape}; got {tshape}")
        if num_classes not in (None, 2):
            raise ValueError(f"{where}: binary logits have 2 classes; got num_classes={num_classes}")
        as_int = np.int32
        return (pred > 0).reshape(-1).astype(as_int), (target > 0.5).reshape(-1).astype(as_int), 2
    raise ValueError(f"{where}: pred must be class scores (N, C), binary logits (N,) or (N, 1), or integer labels "
                     f"(N,); got {getattr(pred, 'dtype', '')} of shape {pshape}")


def _check_classes(where: str, num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"{where}: num_classes must be a positive int; got {num_classes!r}")
    return int(num_classes)


def top_k_accuracy(pred: Array, target: Array, k: int = 5) -> Array:
    """The fraction of examples whose true class is among the ``k`` highest scores.

    ``pred`` is class scores ``(N, C)``; ``target`` labels ``(N,)`` or one-hot
    ``(N, C)``. Ties rank as :func:`~fnn.metrics.accuracy`'s argmax does: of
    equal scores, the lower class index ranks first, so ``k=1`` is accuracy
    exactly. ``k >= C`` gives 1. Pass it to ``fit`` as
    ``{"top5": functools.partial(top_k_accuracy, k=5)}``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"top_k_accuracy: k must be a positive int; got {k!r}")
    xp = backend.namespace(pred, target)
    pshape, tshape = tuple(np.shape(pred)), tuple(np.shape(target))
    if len(pshape) != 2:
        raise ValueError(f"top_k_accuracy: pred must be class scores (N, C); got shape {pshape}")
    if tshape == pshape:
        target = xp.argmax(target, axis=-1)
    elif tshape != pshape[:1]:
        raise ValueError(f"top_k_accuracy: targets must be labels of shape {pshape[:1]} or one-hot of shape {pshape}; "
                         f"got shape {tshape}")
    pred, target = xp.asarray(pred), xp.asarray(target)
    true_score = xp.take_along_axis(pred, target[:, None].astype(np.int32), axis=1)
    classes = xp.arange(pshape[1])[None, :]
    ahead = (pred > true_score) | ((pred == true_score) & (classes < target[:, None]))
    hits = xp.sum(ahead, axis=1) < k
    return xp.mean(hits.astype(_float_dtype(pred)))


def confusion_matrix(pred: Array, target: Array, num_classes: int | None = None) -> Array:
    """Counts ``(C, C)``: row ``i``, column ``j`` is the number of examples of
    true class ``i`` predicted as class ``j`` (int32).

    ``num_classes`` is needed only for integer predictions whose classes may
    not all appear (it is read from the labels otherwise; pass it under ``jit``).
    Matrices of several batches add up to the matrix of the whole set.
    """
    predicted, true, c = _as_labels("confusion_matrix", pred, target, num_classes)
    xp = backend.namespace(predicted, true)
    classes = xp.arange(c)
    rows = (true[:, None] == classes[None, :]).astype(np.int32)
    cols = (predicted[:, None] == classes[None, :]).astype(np.int32)
    return rows.T @ cols


def _ratio(xp: Any, num: Array, den: Array) -> Array:
    """``num / den``, NaN where ``den == 0``."""
    safe = xp.where(den == 0, 1, den)
    return xp.where(den == 0, xp.nan, num / safe)


def _average(xp: Any, per_class: Array, average: str | None) -> Array:
    if average is None:
        return per_class
    defined = ~xp.isnan(per_class)
    count = xp.sum(defined)
    total = xp.sum(xp.where(defined, per_class, 0.0))
    return xp.where(count == 0, xp.nan, total / xp.maximum(count, 1))


def precision_recall_f1(confusion: Array, average: str | None = "macro") -> dict[str, Array]:
    """``{"precision", "recall", "f1"}`` from a confusion matrix (rows true, columns predicted).

    Per class ``c``: precision ``tp / (tp + fp)`` (NaN when ``c`` is never
    predicted), recall ``tp / (tp + fn)`` (NaN when ``c`` never occurs), F1
    their harmonic mean ``2 p r / (p + r)`` (NaN when either is NaN or both
    are 0). ``average="macro"``: the mean over the classes where the score is
    defined (NaN when none is); ``average=None``: the per-class arrays ``(C,)``.
    """
    if average not in AVERAGES:
        raise ValueError(f"precision_recall_f1: average must be 'macro' or None; got {average!r}")
    xp = backend.namespace(confusion)
    confusion = xp.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"precision_recall_f1: confusion must be a square (C, C) matrix; got shape {confusion.shape}")
    counts = confusion.astype(np.promote_types(confusion.dtype, np.float32))
    tp = xp.diagonal(counts)
    p = _ratio(xp, tp, xp.sum(counts, axis=0))
    r = _ratio(xp, tp, xp.sum(counts, axis=1))
    f = _ratio(xp, 2 * p * r, p + r)  # NaN where p or r is NaN (it propagates) or both are 0
    return {name: _average(xp, v, average) for name, v in (("precision", p), ("recall", r), ("f1", f))}


def _score(name: str, pred: Array, target: Array, num_classes: int | None, average: str | None) -> Array:
    if average not in AVERAGES:
        raise ValueError(f"{name}: average must be 'macro' or None; got {average!r}")
    return precision_recall_f1(confusion_matrix(pred, target, num_classes), average)[name]


def precision(pred: Array, target: Array, *, num_classes: int | None = None, average: str | None = "macro") -> Array:
    """Of the examples predicted as each class, the fraction that are of it:
    macro-averaged (a scalar) or per class (``average=None``: ``(C,)``), NaN
    for a class never predicted (see :func:`precision_recall_f1`)."""
    return _score("precision", pred, target, num_classes, average)


def recall(pred: Array, target: Array, *, num_classes: int | None = None, average: str | None = "macro") -> Array:
    """Of the examples of each class, the fraction predicted as it: macro or
    per class, NaN for a class absent from the targets (see :func:`precision_recall_f1`)."""
    return _score("recall", pred, target, num_classes, average)


def f1(pred: Array, target: Array, *, num_classes: int | None = None, average: str | None = "macro") -> Array:
    """The harmonic mean of precision and recall, per class then macro-averaged
    (not the F1 of the averaged precision and recall); NaN where undefined."""
    return _score("f1", pred, target, num_classes, average)


def plot_confusion_matrix(
    confusion: Array, path: str | Path, *, class_names: list[str] | None = None, normalize: bool = False,
    title: str | None = None,
) -> Path:
    """Save the confusion matrix as a PNG heat map, each cell annotated with its count
    (or, with ``normalize``, its fraction of the row: the recall on the diagonal).

    Needs matplotlib (``pip install 'fnn[plot]'``); uses the Agg backend.
    """
    plt = pyplot("plot_confusion_matrix")
    return save(_figure(plt, np.asarray(confusion), class_names, normalize, title), path)


def _figure(plt: Any, counts: np.ndarray, class_names: list[str] | None, normalize: bool, title: str | None) -> Any:
    """The heat map of :func:`plot_confusion_matrix`, as a matplotlib figure."""
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"plot_confusion_matrix: confusion must be a square (C, C) matrix; got shape {counts.shape}")
    c = counts.shape[0]
    names = [str(i) for i in range(c)] if class_names is None else [str(n) for n in class_names]
    if len(names) != c:
        raise ValueError(f"plot_confusion_matrix: {c} classes but {len(names)} class_names")
    shown = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * c, 0.8 + 0.5 * c))
    image = ax.imshow(shown, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(c), names)
    ax.set_yticks(range(c), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    threshold = shown.max() / 2 if shown.size else 0
    for i in range(c):
        for j in range(c):
            text = f"{shown[i, j]:.2f}" if normalize else f"{int(shown[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if shown[i, j] > threshold else "black")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
