"""The benchmark workloads W1-W6: an fnn model, its input shape, batch size,
loss and a synthetic float32 batch, at full size or at a tiny ``quick`` size.

Every workload trains with Adam (learning rate 1e-3) by default, or with
SGD + momentum 0.9 (learning rate 1e-2) when the suite runs with
``--optimizer momentum`` (``benchmarks.optimizers``); a train step is
forward + backward + update. The data are random (the timings do not depend
on their values), drawn from a fixed seed so that every contender sees the
same batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

import fnn
import fnn.models
from fnn import layers as L

LEARNING_RATE = 1e-3  # Adam's
MOMENTUM_LEARNING_RATE = 1e-2  # SGD + momentum's
MOMENTUM = 0.9  # SGD's momentum coefficient (no Nesterov)


@dataclass(frozen=True)
class Workload:
    """One benchmark case.

    Attributes:
        key: short name, ``"W1"`` ... ``"W5"``.
        title: what is trained, with its sizes, for the table.
        model: the fnn model (a Layer).
        input_shape: one example's shape (no batch dimension).
        batch: examples per step.
        classes: number of classes (integer labels), or ``None`` for a
            regression target of shape ``(batch, 1)`` trained with MSE.
        sizes: the hyper-parameters the hand-written references need to
            rebuild the same network (widths, kernel sizes, ...).
        target_shape: one example's regression target shape (MSE), when
            ``classes`` is ``None``.
    """

    key: str
    title: str
    model: fnn.Layer
    input_shape: tuple[int, ...]
    batch: int
    classes: int | None
    sizes: dict[str, Any] = field(default_factory=dict)
    target_shape: tuple[int, ...] = (1,)

    @property
    def loss(self) -> fnn.losses.Loss:
        """Softmax cross-entropy for classification, MSE for regression."""
        return fnn.losses.softmax_cross_entropy if self.classes else fnn.losses.mse

    def data(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """One batch ``(x, y)`` of NumPy arrays: float32 inputs, int32 labels
        (or float32 regression targets)."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.batch, *self.input_shape)).astype(np.float32)
        return x, self.targets(rng, self.batch)

    def targets(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` random labels (int32) or regression targets (float32, ``(n, *target_shape)``)."""
        if self.classes:
            return rng.integers(0, self.classes, n).astype(np.int32)
        return rng.standard_normal((n, *self.target_shape)).astype(np.float32)


def _mlp(widths: tuple[int, ...], outputs: int) -> fnn.Layer:
    """``dense -> relu -> ... -> dense(outputs)`` (params ``dense``, ``dense_1``, ...)."""
    hidden = [layer for width in widths for layer in (L.dense(width), L.relu)]
    return L.serial(*hidden, L.dense(outputs))


def workloads(quick: bool = False) -> dict[str, Workload]:
    """The six workloads, keyed ``"W1"`` ... ``"W6"``; ``quick`` shrinks every size."""
    mlp_widths = (32, 32) if quick else (512, 512)
    lenet_batch = 4 if quick else 64
    time_steps, hidden, features = (5, 8, 4) if quick else (50, 128, 32)
    resnet_stages = (4, 8, 8) if quick else (16, 32, 64)
    # W6: batch, sequence length, model width, heads, MLP width (4 x width)
    tf_batch, tf_steps, tf_width, tf_heads = (2, 8, 16, 2) if quick else (32, 128, 128, 4)
    return {
        "W1": Workload(
            "W1",
            f"MLP 784-{mlp_widths[0]}-{mlp_widths[1]}-10, batch {8 if quick else 128}",
            _mlp(mlp_widths, 10),
            (784,),
            8 if quick else 128,
            10,
            {"widths": mlp_widths},
        ),
        "W2": Workload(
            "W2",
            f"LeNet 28x28x1, batch {lenet_batch}",
            fnn.models.lenet5(padding="valid"),
            (28, 28, 1),
            lenet_batch,
            10,
            {"kernel": 5},
        ),
        "W3": Workload(
            "W3",
            "tiny MLP 2-16-16-1, batch 32 (MSE)",
            _mlp((16, 16), 1),
            (2,),
            32,
            None,
            {"widths": (16, 16)},
        ),
        "W4": Workload(
            "W4",
            f"LSTM batch {4 if quick else 64}, T={time_steps}, hidden {hidden}, {features} features, dense head",
            fnn.models.lstm_classifier(10, hidden),
            (time_steps, features),
            4 if quick else 64,
            10,
            {"hidden": hidden},
        ),
        "W5": Workload(
            "W5",
            f"ResNet {'-'.join(map(str, resnet_stages))} + batch norm, 8x8x1, batch {4 if quick else 64}",
            fnn.models.resnet(10, stages=resnet_stages),
            (8, 8, 1),
            4 if quick else 64,
            10,
            {"stages": resnet_stages},
        ),
        "W6": Workload(
            "W6",
            f"transformer block batch {tf_batch}, T={tf_steps}, D={tf_width}, {tf_heads} heads, "
            f"MLP {4 * tf_width} (MSE)",
            L.transformer_block(tf_heads, 4 * tf_width),
            (tf_steps, tf_width),
            tf_batch,
            None,
            {"heads": tf_heads, "mlp": 4 * tf_width},
            (tf_steps, tf_width),
        ),
    }


def resized(workload: Workload, *, batch: int | None = None, time_steps: int | None = None) -> Workload:
    """W1 at another ``batch`` or W4 at another sequence length ``time_steps`` (and/or batch),
    for the scaling benchmark: the same model, so the same parameters (neither size enters them)."""
    batch = workload.batch if batch is None else batch
    if workload.key == "W1":
        if time_steps is not None:
            raise ValueError("W1 has no time steps")
        widths = "-".join(map(str, workload.sizes["widths"]))
        return replace(workload, batch=batch, title=f"MLP 784-{widths}-10, batch {batch}")
    if workload.key == "W4":
        steps, features = workload.input_shape if time_steps is None else (time_steps, workload.input_shape[1])
        title = f"LSTM batch {batch}, T={steps}, hidden {workload.sizes['hidden']}, {features} features, dense head"
        return replace(workload, batch=batch, input_shape=(steps, features), title=title)
    raise ValueError(f"only W1 and W4 can be resized, not {workload.key}")
