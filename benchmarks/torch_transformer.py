"""PyTorch eager contender for W6: the pre-norm transformer block the way a
PyTorch user writes it (``nn.LayerNorm``, one fused ``nn.Linear`` for q, k and
v, ``F.scaled_dot_product_attention``, an ``nn.Linear`` output projection,
``nn.GELU(approximate="tanh")`` between two ``nn.Linear``), built from fnn's
parameters so that the first losses agree.

Layouts: fnn's q / k / v weights ``(D, H, K)`` are the rows of the fused
``(3 H K, D)`` weight (``w.reshape(D, H K).T``), their biases ``(H, K)`` its
flat bias; the output weight ``(H, V, D)`` is ``nn.Linear.weight (D, H V)``
(``w.reshape(H V, D).T``). Heads are the ``H`` blocks of ``K`` features, as
in fnn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.torch_reference import Binding, Tree, _linear


@dataclass(frozen=True)
class Reshaped(Binding):
    """An fnn array of several axes held by a 2-D ``nn.Linear`` weight (layout
    ``"dense"``: fnn's first ``rows`` axes are its inputs) or by a flat bias
    (layout ``"copy"``)."""

    fnn_shape: tuple[int, ...] = ()
    rows: int = 1

    def to_torch(self, a: np.ndarray) -> np.ndarray:
        if self.layout == "dense":
            return a.reshape(math.prod(a.shape[: self.rows]), -1).T
        return a.reshape(-1)

    def to_fnn(self, t: np.ndarray) -> np.ndarray:
        return (t.T if self.layout == "dense" else t).reshape(self.fnn_shape)


def _layer_norm(name: str, width: int, bindings: list[Binding]) -> nn.LayerNorm:
    norm = nn.LayerNorm(width, eps=1e-5)
    bindings += [Binding((name, "scale"), norm.weight, "copy"), Binding((name, "bias"), norm.bias, "copy")]
    return norm


class TransformerBlock(nn.Module):
    """``h = x + attention(norm(x))``, ``y = h + mlp(norm(h))`` on ``(N, T, D)``."""

    def __init__(self, params: Tree, bindings: list[Binding]) -> None:
        super().__init__()
        p = params["attention"]
        width, self.heads, self.key_size = p["query"]["w"].shape
        self.value_size = p["value"]["w"].shape[2]
        self.attention_norm = _layer_norm("attention_norm", width, bindings)
        sizes = [self.heads * self.key_size] * 2 + [self.heads * self.value_size]
        self.qkv = nn.Linear(width, sum(sizes))
        self.out = nn.Linear(sizes[2], width)
        with torch.no_grad():  # views into the fused weight and bias, one block per projection
            starts = np.cumsum([0, *sizes])
            for part, lo, hi in zip(("query", "key", "value"), starts[:-1], starts[1:]):
                shape_w, shape_b = p[part]["w"].shape, p[part]["b"].shape
                bindings.append(Reshaped(("attention", part, "w"), self.qkv.weight[lo:hi], "dense", fnn_shape=shape_w))
                bindings.append(Reshaped(("attention", part, "b"), self.qkv.bias[lo:hi], "copy", fnn_shape=shape_b))
        out_shape = p["out"]["w"].shape
        bindings.append(Reshaped(("attention", "out", "w"), self.out.weight, "dense", fnn_shape=out_shape, rows=2))
        bindings.append(Binding(("attention", "out", "b"), self.out.bias, "copy"))
        self.mlp_norm = _layer_norm("mlp_norm", width, bindings)
        m = params["mlp"]
        self.mlp = nn.Sequential(
            _linear(("mlp", "dense"), m["dense"]["w"], bindings),
            nn.GELU(approximate="tanh"),
            _linear(("mlp", "dense_1"), m["dense_1"]["w"], bindings),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        hk, hv = self.heads * self.key_size, self.heads * self.value_size
        q, k, v = self.qkv(self.attention_norm(x)).split([hk, hk, hv], dim=-1)
        q, k = (z.view(n, t, self.heads, self.key_size).transpose(1, 2) for z in (q, k))
        v = v.view(n, t, self.heads, self.value_size).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v)  # (N, H, T, V), scores scaled by 1 / sqrt(K)
        h = x + self.out(o.transpose(1, 2).reshape(n, t, hv))
        return h + self.mlp(self.mlp_norm(h))
