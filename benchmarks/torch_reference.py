"""PyTorch eager contender for the benchmark workloads W1-W6 (W6, the
transformer block, in ``benchmarks.torch_transformer``): the same networks
written the idiomatic PyTorch way (``torch.nn`` modules, ``nn.CrossEntropyLoss``
/ ``nn.MSELoss``, ``torch.optim.Adam``, or ``torch.optim.SGD`` with momentum
when the suite runs with ``--optimizer momentum``), one training step being
``zero_grad -> forward -> loss -> backward -> optimizer.step()``.

Every model is built from fnn's parameter (and state) dicts, so that the suite
can start PyTorch from the same numbers as the other contenders and check the
first loss. The layouts differ and are converted once, at load time:

* dense ``w (in, out)`` -> ``nn.Linear.weight (out, in)``;
* conv ``w`` HWIO -> ``nn.Conv2d.weight`` OIHW; the NHWC input batch is
  permuted to contiguous NCHW once, outside the step (``CHANNELS_LAST``);
* fnn flattens NHWC feature maps before its dense layers, PyTorch flattens
  NCHW: the rows of LeNet's first dense weight are permuted from (h, w, c) to
  (c, h, w) order, so that the model itself keeps an ordinary ``nn.Flatten``;
* LSTM ``w_x (F, 4H)``, ``w_h (H, 4H)``, ``b (4H,)`` (gates i, f, g, o, as
  PyTorch's) -> ``weight_ih_l0 = w_x.T``, ``weight_hh_l0 = w_h.T``,
  ``bias_ih_l0 = b``; ``bias_hh_l0`` is zero and frozen. PyTorch's LSTM has
  two bias vectors that always receive the same gradient; left trainable,
  Adam would move their sum twice as fast as fnn's single bias (the first Adam
  step is ``-lr * sign(g)`` for each), so the networks would part after one
  step;
* batch norm ``scale`` / ``bias`` -> ``weight`` / ``bias``, the state's
  ``mean`` / ``var`` -> ``running_mean`` / ``running_var``; fnn's running
  average momentum 0.9 is PyTorch's ``momentum=0.1``, eps 1e-5 in both.
  One convention differs and is kept: PyTorch updates ``running_var`` with
  the *unbiased* batch variance (``n / (n - 1)`` times the biased one that
  normalises the batch), fnn with the biased one. The losses and parameters
  do not depend on it.

"same" padding follows XLA / TensorFlow: the odd pixel of padding goes to the
bottom / right. For ResNet's 3x3 stride-2 convolutions on even images that is
a (0, 1) padding, where ``nn.Conv2d(padding=1)`` would pad (1, 1) and shift
every output pixel; those convolutions get an explicit ``nn.ZeroPad2d`` in
front of an unpadded convolution. Symmetric "same" paddings (3x3 and 5x5 at
stride 1, 1x1 at stride 2) are ``nn.Conv2d``'s own ``padding``.

PyTorch is an optional dependency: import this module only when ``torch`` is
importable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.optimizers import ADAM, Optimizer
from benchmarks.workloads import Workload

Tree = dict[str, Any]
Path = tuple[str, ...]

# Image batches and models in channels_last memory format (NHWC strides, which
# the NHWC batch has already, so its permute to NCHW costs no copy) instead of
# contiguous NCHW. Interleaved A/B timings on the 2-core CPU found no difference
# for W2 or W5 (1 thread, 10th percentile: W2 6.5 vs 6.5 ms, W5 9.0 vs 9.3 ms;
# with 2 threads the spread from other load swamped any gap), so the models keep
# PyTorch's default contiguous NCHW.
CHANNELS_LAST = False
IMAGE_WORKLOADS = ("W2", "W5")  # NHWC batches


# --------------------------------------------------------------------------- #
# Layout conversions between fnn's arrays and PyTorch's tensors
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Binding:
    """One fnn array (``path`` in the params, or the state when ``state``) and
    the PyTorch tensor holding it, in ``layout``:

    ``"copy"`` same shape; ``"dense"`` ``(in, out)`` <-> ``(out, in)``;
    ``"conv"`` HWIO <-> OIHW; ``"dense_nhwc"`` a dense weight whose input rows
    are an NHWC feature map of shape ``hwc``, stored for an NCHW flatten.
    """

    path: Path
    tensor: torch.Tensor
    layout: str
    state: bool = False
    hwc: tuple[int, int, int] | None = None

    def to_torch(self, a: np.ndarray) -> np.ndarray:
        """fnn's array in PyTorch's layout."""
        if self.layout == "dense":
            return a.T
        if self.layout == "conv":
            return a.transpose(3, 2, 0, 1)
        if self.layout == "dense_nhwc":
            h, w, c = self.hwc
            return a.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(a.shape[1], -1)
        return a

    def to_fnn(self, t: np.ndarray) -> np.ndarray:
        """PyTorch's array in fnn's layout (the inverse of :meth:`to_torch`)."""
        if self.layout == "dense":
            return t.T
        if self.layout == "conv":
            return t.transpose(2, 3, 1, 0)
        if self.layout == "dense_nhwc":
            h, w, c = self.hwc
            return t.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)
        return t


def _get(tree: Tree, path: Path) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _put(tree: Tree, path: Path, value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def load(bindings: list[Binding], params: Tree, state: Tree) -> None:
    """Copy fnn's arrays into the bound tensors (copies: the NumPy arrays are never touched)."""
    with torch.no_grad():
        for b in bindings:
            a = np.asarray(_get(state if b.state else params, b.path), dtype=np.float32)
            value = torch.from_numpy(np.ascontiguousarray(b.to_torch(a)))
            if tuple(value.shape) != tuple(b.tensor.shape):
                raise ValueError(f"{'/'.join(b.path)}: {tuple(value.shape)} does not fit {tuple(b.tensor.shape)}")
            b.tensor.copy_(value)


def export(bindings: list[Binding]) -> tuple[Tree, Tree]:
    """The bound tensors as fnn's ``(params, state)`` dicts of NumPy arrays (fnn's layouts)."""
    params: Tree = {}
    state: Tree = {}
    for b in bindings:
        value = b.to_fnn(b.tensor.detach().cpu().numpy())
        _put(state if b.state else params, b.path, np.ascontiguousarray(value))
    return params, state


def _linear(path: Path, w: np.ndarray, bindings: list[Binding], hwc: tuple[int, int, int] | None = None) -> nn.Linear:
    layer = nn.Linear(*w.shape)
    bindings.append(Binding((*path, "w"), layer.weight, "dense" if hwc is None else "dense_nhwc", hwc=hwc))
    bindings.append(Binding((*path, "b"), layer.bias, "copy"))
    return layer


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """XLA's "SAME" padding ``(before, after)`` of one spatial axis (the odd pixel after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv(
    path: Path, w: np.ndarray, bindings: list[Binding], *, stride: int = 1, size: int | None = None, bias: bool = True
) -> nn.Module:
    """``nn.Conv2d`` from an HWIO kernel; "same" padding when ``size`` (the input's
    height = width) is given, else "valid". An asymmetric "same" padding gets an
    ``nn.ZeroPad2d`` in front."""
    kh, kw, c_in, c_out = w.shape
    pad = (0, 0) if size is None else same_padding(size, kh, stride)
    symmetric = pad[0] == pad[1]
    conv = nn.Conv2d(c_in, c_out, (kh, kw), stride=stride, padding=pad[0] if symmetric else 0, bias=bias)
    bindings.append(Binding((*path, "w"), conv.weight, "conv"))
    if bias:
        bindings.append(Binding((*path, "b"), conv.bias, "copy"))
    if symmetric:
        return conv
    return nn.Sequential(nn.ZeroPad2d((pad[0], pad[1], pad[0], pad[1])), conv)


def _batch_norm(path: Path, channels: int, bindings: list[Binding]) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)  # PyTorch's 0.1 = fnn's running-average momentum 0.9
    bindings += [
        Binding((*path, "scale"), bn.weight, "copy"),
        Binding((*path, "bias"), bn.bias, "copy"),
        Binding((*path, "mean"), bn.running_mean, "copy", state=True),
        Binding((*path, "var"), bn.running_var, "copy", state=True),
    ]
    return bn


# --------------------------------------------------------------------------- #
# The models
# --------------------------------------------------------------------------- #


def mlp(params: Tree, bindings: list[Binding]) -> nn.Module:
    """W1, W3: ``dense -> relu -> ... -> dense`` (params ``dense``, ``dense_1``, ...)."""
    names = sorted((k for k in params if k == "dense" or k.startswith("dense_")), key=lambda k: int(k[6:] or 0))
    layers: list[nn.Module] = []
    for name in names:
        layers += [_linear((name,), params[name]["w"], bindings), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def lenet(params: Tree, bindings: list[Binding], image: int) -> nn.Module:
    """W2, ``fnn.models.lenet5(padding="valid")``: conv same -> relu -> pool 2 ->
    conv valid -> relu -> pool 2 -> flatten -> dense -> relu -> dense -> relu -> dense."""
    k = params["conv2d_1"]["w"].shape[0]
    h = image // 2
    h = (h - k + 1) // 2
    if image % 2 or (image // 2 - k + 1) % 2:
        raise ValueError(f"lenet: {image}x{image} needs padding in a 2x2 'same' max pool; not supported here")
    channels = params["conv2d_1"]["w"].shape[3]
    return nn.Sequential(
        _conv(("conv2d",), params["conv2d"]["w"], bindings, size=image),
        nn.ReLU(),
        nn.MaxPool2d(2),
        _conv(("conv2d_1",), params["conv2d_1"]["w"], bindings),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        _linear(("dense",), params["dense"]["w"], bindings, hwc=(h, h, channels)),
        nn.ReLU(),
        _linear(("dense_1",), params["dense_1"]["w"], bindings),
        nn.ReLU(),
        _linear(("dense_2",), params["dense_2"]["w"], bindings),
    )


class LSTMClassifier(nn.Module):
    """W4, ``fnn.models.lstm_classifier``: one LSTM over ``(batch, time, features)``,
    zero initial state; its last ``h`` feeds a linear head."""

    def __init__(self, params: Tree, bindings: list[Binding]) -> None:
        super().__init__()
        features, gates = params["lstm"]["w_x"].shape
        self.lstm = nn.LSTM(features, gates // 4, batch_first=True)
        self.lstm.bias_hh_l0.requires_grad_(False)  # zero: fnn has one bias (module docstring)
        with torch.no_grad():
            self.lstm.bias_hh_l0.zero_()
        bindings += [
            Binding(("lstm", "w_x"), self.lstm.weight_ih_l0, "dense"),
            Binding(("lstm", "w_h"), self.lstm.weight_hh_l0, "dense"),
            Binding(("lstm", "b"), self.lstm.bias_ih_l0, "copy"),
        ]
        self.head = _linear(("dense",), params["dense"]["w"], bindings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        return self.head(h[-1])


class BasicBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``; a projection
    shortcut ``bn(conv 1x1)`` exactly when the block has one in fnn (stride 2)."""

    def __init__(self, path: Path, params: Tree, bindings: list[Binding], size: int) -> None:
        super().__init__()
        main = params["residual"]["main"]
        at = (*path, "residual", "main")
        self.project = "shortcut" in params["residual"]
        stride = 2 if self.project else 1
        w1, w2 = main["conv2d"]["w"], main["conv2d_1"]["w"]
        self.conv1 = _conv((*at, "conv2d"), w1, bindings, stride=stride, size=size, bias=False)
        self.bn1 = _batch_norm((*at, "batch_norm"), w1.shape[3], bindings)
        self.conv2 = _conv((*at, "conv2d_1"), w2, bindings, size=-(-size // stride), bias=False)
        self.bn2 = _batch_norm((*at, "batch_norm_1"), w2.shape[3], bindings)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if self.project:
            sc, at = params["residual"]["shortcut"], (*path, "residual", "shortcut")
            ws = sc["conv2d"]["w"]
            self.shortcut = nn.Sequential(
                _conv((*at, "conv2d"), ws, bindings, stride=stride, size=size, bias=False),
                _batch_norm((*at, "batch_norm"), ws.shape[3], bindings),
            )
        self.out_size = -(-size // stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return self.relu(h + self.shortcut(x))


def resnet(params: Tree, bindings: list[Binding], image: int) -> nn.Module:
    """W5, ``fnn.models.resnet``: stem conv 3x3 -> bn -> relu, the basic blocks,
    global average pooling, linear head."""
    stem = params["stem"]["w"]
    layers: list[nn.Module] = [
        _conv(("stem",), stem, bindings, size=image, bias=False),
        _batch_norm(("batch_norm",), stem.shape[3], bindings),
        nn.ReLU(),
    ]
    size = image
    for name in sorted((k for k in params if k == "block" or k.startswith("block_")), key=lambda k: int(k[6:] or 0)):
        block = BasicBlock((name,), params[name], bindings, size)
        size = block.out_size
        layers.append(block)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), _linear(("dense",), params["dense"]["w"], bindings)]
    return nn.Sequential(*layers)


def build(workload: Workload, params: Tree, state: Tree) -> tuple[nn.Module, list[Binding]]:
    """The workload's PyTorch model in train mode, loaded with fnn's ``params`` and
    ``state``, and the bindings that map its tensors back to fnn's layout."""
    bindings: list[Binding] = []
    if workload.key in ("W1", "W3"):
        model = mlp(params, bindings)
    elif workload.key == "W2":
        model = lenet(params, bindings, workload.input_shape[0])
    elif workload.key == "W4":
        model = LSTMClassifier(params, bindings)
    elif workload.key == "W5":
        model = resnet(params, bindings, workload.input_shape[0])
    elif workload.key == "W6":
        from benchmarks.torch_transformer import TransformerBlock

        model = TransformerBlock(params, bindings)
    else:
        raise ValueError(f"no PyTorch model for workload {workload.key!r}")
    load(bindings, params, state)
    if CHANNELS_LAST and workload.key in IMAGE_WORKLOADS:
        model = model.to(memory_format=torch.channels_last)
    return model.train(), bindings


def inputs(workload: Workload, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch as PyTorch tensors: images NHWC -> NCHW (channels_last memory
    when ``CHANNELS_LAST``), integer labels as int64, regression targets as float32."""
    xt = torch.tensor(np.asarray(x, dtype=np.float32))
    if workload.key in IMAGE_WORKLOADS:
        xt = xt.permute(0, 3, 1, 2)
        xt = xt.contiguous(memory_format=torch.channels_last if CHANNELS_LAST else torch.contiguous_format)
    if workload.classes:
        return xt, torch.tensor(np.asarray(y), dtype=torch.int64)
    return xt, torch.tensor(np.asarray(y, dtype=np.float32))


# --------------------------------------------------------------------------- #
# The training step
# --------------------------------------------------------------------------- #


def device() -> torch.device:
    """A CUDA device when JAX runs on a GPU and PyTorch sees one (so that both run on
    the GPU), else the CPU."""
    import jax

    on_gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    return torch.device("cuda" if on_gpu else "cpu")


class TorchStep:
    """One PyTorch training step, called with no arguments; updates ``model`` and
    ``optimizer`` (``optimizer.torch``'s, Adam unless given) in place and returns
    the step's loss tensor (computed before the update). ``bindings`` map the
    model's tensors back to fnn's layout (on a GPU, :func:`device`, the
    parameters' only: batch norm's running statistics are new tensors after the move)."""

    def __init__(
        self,
        workload: Workload,
        params: Tree,
        state: Tree,
        x: np.ndarray,
        y: np.ndarray,
        optimizer: Optimizer = ADAM,
    ) -> None:
        self.model, self.bindings = build(workload, params, state)
        where = device()
        self.model = self.model.to(where)
        self.x, self.y = (t.to(where) for t in inputs(workload, x, y))
        self.loss_fn: nn.Module = nn.CrossEntropyLoss() if workload.classes else nn.MSELoss()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        # Library defaults: on CPU tensors foreach=None resolves to the single-tensor
        # loop (foreach kernels are chosen by default only on CUDA-like devices), fused=False.
        self.optimizer = optimizer.torch(trainable)

    def __call__(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def export(self) -> tuple[Tree, Tree]:
        """The model's current parameters and running statistics as fnn's
        ``(params, state)`` (PyTorch's ``running_var``: unbiased batch variances)."""
        return export(self.bindings)


def train_step(
    workload: Workload,
    params: Tree,
    state: Tree,
    x: np.ndarray,
    y: np.ndarray,
    optimizer: Optimizer = ADAM,
) -> tuple[Callable[[], Any], float]:
    """``(step, first_loss)``: ``step()`` runs one PyTorch training step in place
    (a :class:`TorchStep` with ``optimizer``, Adam unless given), ``first_loss`` is
    the loss at fnn's ``params``.

    The first loss is taken from a first real step (its loss is computed before
    that step's update), not from a separate forward pass, which in train mode
    would move batch norm's running statistics. So the returned ``step`` has
    already taken one step when it is handed back; later calls continue from there.
    """
    step = TorchStep(workload, params, state, x, y, optimizer)
    return step, float(step().item())


def threads_note(optimizer: Optimizer = ADAM) -> str:
    """PyTorch's version, thread settings (library defaults, left unchanged) and optimizer."""
    return (
        f"PyTorch {torch.__version__}, intra-op threads {torch.get_num_threads()}, "
        f"inter-op threads {torch.get_num_interop_threads()}, "
        f"{'channels_last' if CHANNELS_LAST else 'contiguous NCHW'} images, "
        f"torch.optim.{optimizer.torch_class} with library defaults "
        "(on CPU: the single-tensor loop, no foreach, not fused)"
    )
