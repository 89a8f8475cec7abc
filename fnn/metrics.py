"""Metrics: ``metric(pred, target) -> scalar mean over the batch``, computed
from a model's raw outputs (logits), on NumPy and under ``jax.jit``.

:func:`fnn.train.fit` and :func:`fnn.train.evaluate` take a mapping
``{name: metric}``; by default they report :func:`accuracy` when the loss is
a classification loss (see :func:`default_metrics`). They average a metric
over batches, which is exact for :func:`accuracy` and :func:`top_k_accuracy`
(means over examples) but not for precision, recall and F1: compute those
on a whole set, from :func:`fnn.train.predict`'s outputs or from a
:func:`confusion_matrix` summed over batches (:func:`precision_recall_f1`).

>>> import numpy as np, fnn
>>> logits = np.array([[2.0, 0.1], [0.3, 0.9], [1.0, 0.0]])
>>> float(fnn.metrics.accuracy(logits, np.array([0, 1, 1])))
0.6666666666666666

Classification scores (defined in :mod:`fnn.classification`): :func:`top_k_accuracy`,
:func:`confusion_matrix`, :func:`precision`, :func:`recall`, :func:`f1`,
:func:`precision_recall_f1` and :func:`plot_confusion_matrix`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from fnn import backend
from fnn.classification import (
    confusion_matrix,
    f1,
    plot_confusion_matrix,
    precision,
    precision_recall_f1,
    recall,
    top_k_accuracy,
)

__all__ = [
    "Metric",
    "accuracy",
    "top_k_accuracy",
    "confusion_matrix",
    "precision",
    "recall",
    "f1",
    "precision_recall_f1",
    "plot_confusion_matrix",
    "default_metrics",
    "CLASSIFICATION_LOSSES",
]

Array = Any
Metric = Callable[[Array, Array], Array]

#: Losses whose models output class scores, for which fit reports accuracy by default.
CLASSIFICATION_LOSSES = ("softmax_cross_entropy", "sigmoid_binary_cross_entropy", "cross_entropy")


def accuracy(pred: Array, target: Array) -> Array:
    """The fraction of examples classified correctly.

    * ``pred`` ``(N, C)`` with ``C > 1`` class scores (logits or probabilities):
      the predicted class is ``argmax(pred)``; ``target`` is integer labels
      ``(N,)`` or one-hot / soft targets ``(N, C)`` (their argmax).
    * ``pred`` ``(N, 1)`` or ``(N,)`` binary *logits*: the prediction is
      ``pred > 0``, compared with ``target > 0.5``.

    Returns a floating 0-d array (at least float32).
    """
    xp = backend.namespace(pred, target)
    pred_shape, target_shape = np.shape(pred), np.shape(target)
    dtype = np.promote_types(getattr(pred, "dtype", np.float32), np.float32)
    if len(pred_shape) >= 1 and pred_shape[-1] > 1:
        if target_shape == pred_shape:
            target = xp.argmax(target, axis=-1)
        elif target_shape != pred_shape[:-1]:
            raise ValueError(
                f"accuracy: targets must be labels of shape {pred_shape[:-1]} or one-hot of shape {pred_shape}; "
                f"got shape {target_shape}"
            )
        hits = xp.argmax(pred, axis=-1) == target
    else:
        if target_shape != pred_shape:
            raise ValueError(f"accuracy: binary targets must have the shape of pred {pred_shape}; got {target_shape}")
        hits = (pred > 0) == (target > 0.5)
    return xp.mean(hits.astype(dtype))


def default_metrics(loss: Any) -> dict[str, Metric]:
    """``{"accuracy": accuracy}`` for a classification loss (by its ``name``), else ``{}``."""
    return {"accuracy": accuracy} if getattr(loss, "name", None) in CLASSIFICATION_LOSSES else {}


def check_metrics(metrics: Mapping[str, Metric] | None, loss: Any) -> tuple[tuple[str, Metric], ...]:
    """Metrics as a sorted tuple of ``(name, fn)`` (hashable, so compiled functions can be reused)."""
    if metrics is None:
        metrics = default_metrics(loss)
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a dict {{name: fn(pred, target)}}; got {type(metrics).__name__}")
    for name, fn in metrics.items():
        if not isinstance(name, str) or not callable(fn) or name in ("loss", "finite", "grad_stats"):
            raise ValueError(f"metrics: each entry must be name -> fn(pred, target) with a name other than "
                             f"'loss', 'finite', 'grad_stats'; got {name!r}: {fn!r}")
    return tuple(sorted(metrics.items()))
