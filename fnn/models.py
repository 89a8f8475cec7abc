"""Ready-made models, built only from fnn layers and combinators. Each
function returns a :class:`fnn.Layer` (a model is just a layer), so
``init`` / ``apply`` / ``fwd`` / ``bwd`` and :func:`fnn.summary` work as for
any layer.

* :func:`mlp` -- a multi-layer perceptron (flattens its input first);
* :func:`lenet5` -- LeNet-5 (LeCun et al., 1998) with modern defaults, for
  28x28 and 8x8 grey images;
* :func:`alexnet` -- AlexNet (Krizhevsky et al., 2012) for 224x224x3 images;
* :func:`lstm_classifier` -- stacked LSTMs over ``(batch, time, features)``
  whose last state feeds a dense classifier;
* :func:`resnet` -- a small ResNet (He et al., 2016) of basic residual blocks
  with batch norm, for small images such as 8x8 digits or 28x28 MNIST, in
  the original or the pre-activation form (``preactivation=True``);
* :func:`transformer` -- a pre-norm transformer over token ids (causal by
  default: a language model), logits per position or at the last one
  (:mod:`fnn.models_transformer`).

All image models take NHWC inputs and return logits (no softmax: pair them
with :data:`fnn.losses.softmax_cross_entropy`).
"""

from __future__ import annotations

from typing import Sequence

from fnn import initializers
from fnn.core import Layer, layer_factory, residual, serial
from fnn.layers.activations import relu
from fnn.layers.convolution import conv2d
from fnn.layers.dense import dense
from fnn.layers.dropout import dropout
from fnn.layers.normalization import batch_norm
from fnn.layers.pooling import avg_pool, global_avg_pool, max_pool
from fnn.layers.recurrent import lstm
from fnn.layers.reshape import flatten
from fnn.models_transformer import last_position, transformer

__all__ = ["mlp", "lenet5", "alexnet", "resnet", "basic_block", "lstm_classifier", "transformer", "last_position"]

_HE = initializers.he_normal()


def _check_sizes(name: str, what: str, sizes: Sequence[int], allow_empty: bool = True) -> tuple[int, ...]:
    sizes = tuple(sizes)
    if (not sizes and not allow_empty) or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise ValueError(f"{name}: {what} must be a sequence of positive ints; got {sizes!r}")
    return sizes


@layer_factory
def mlp(
    features: Sequence[int] = (128,),
    num_classes: int = 10,
    *,
    activation: Layer = relu,
    dropout_rate: float = 0.0,
    normalize: bool = False,
    name: str = "mlp",
) -> Layer:
    """``flatten -> [dense(f) -> (batch_norm) -> activation -> (dropout)] * len(features) -> dense(num_classes)``.

    ``features`` are the hidden widths (``()`` gives logistic / softmax
    regression); ``normalize=True`` adds batch norm before each activation,
    ``dropout_rate > 0`` a dropout after it.

    >>> import numpy as np, fnn
    >>> model = fnn.models.mlp((32, 16), num_classes=10)
    >>> model.out_shape((None, 8, 8, 1))
    (None, 10)
    """
    features = _check_sizes(name, "features", features)
    layers: list[Layer] = [flatten]
    for f in features:
        layers.append(dense(f, w_init=_HE if activation is relu else initializers.lecun_normal()))
        if normalize:
            layers.append(batch_norm())
        layers.append(activation)
        if dropout_rate:
            layers.append(dropout(dropout_rate))
    layers.append(dense(num_classes))
    return serial(*layers, name=name)


@layer_factory
def lenet5(
    num_classes: int = 10,
    *,
    features: Sequence[int] = (6, 16),
    hidden: Sequence[int] = (120, 84),
    kernel_size: int = 5,
    activation: Layer = relu,
    pool: str = "max",
    padding: str = "same",
    dropout_rate: float = 0.0,
    name: str = "lenet5",
) -> Layer:
    """LeNet-5: two 5x5 convolutions with 2x2 pooling, then three dense layers.

    ``conv(6, 5x5, same) -> act -> pool 2 -> conv(16, 5x5, padding) -> act -> pool 2
    -> flatten -> dense(120) -> act -> dense(84) -> act -> dense(num_classes)``

    ``features``, ``hidden`` and ``kernel_size`` change the widths and the
    convolutions' size; ``dropout_rate > 0`` inserts a dropout before each
    hidden dense layer (train mode then needs a key).

    The first convolution always uses "same" padding, as LeNet-5's 32x32 input
    was a 28x28 digit with a 2-pixel border. ``padding`` is the second
    convolution's: the default ``"same"`` lets the model run on 8x8 images
    (8 -> 4 -> 2: 2x2x16 features) as well as 28x28 ones (28 -> 14 -> 7:
    7x7x16); ``padding="valid"`` is the original layout on 28x28 inputs
    (14 -> 10 -> 5: 5x5x16 = 400 features). Modern defaults replace the
    original's tanh and trainable average "subsampling" with ReLU and max
    pooling (``activation=tanh, pool="avg"`` is closer to the paper).

    >>> import fnn
    >>> fnn.models.lenet5().out_shape((None, 28, 28, 1)), fnn.models.lenet5().out_shape((None, 8, 8, 1))
    ((None, 10), (None, 10))
    """
    f1, f2 = _check_sizes(name, "features", features)
    if pool not in ("max", "avg"):
        raise ValueError(f"{name}: pool must be 'max' or 'avg'; got {pool!r}")
    pooling = max_pool if pool == "max" else avg_pool
    w_init = _HE if activation is relu else initializers.lecun_normal()
    layers: list[Layer] = [
        conv2d(f1, kernel_size, padding="same", w_init=w_init),
        activation,
        pooling(2, padding="same"),
        conv2d(f2, kernel_size, padding=padding, w_init=w_init),
        activation,
        pooling(2, padding="same"),
        flatten,
    ]
    for h in _check_sizes(name, "hidden", hidden):
        layers += ([dropout(dropout_rate)] if dropout_rate else []) + [dense(h, w_init=w_init), activation]
    layers.append(dense(num_classes))
    return serial(*layers, name=name)


@layer_factory
def alexnet(num_classes: int = 1000, *, dropout_rate: float = 0.5, name: str = "alexnet") -> Layer:
    """AlexNet for 224x224x3 images (about 62 million parameters at 1000 classes).

    ==========================================  ==============
    layer                                       output
    ==========================================  ==============
    conv 96, 11x11, stride 4, padding 2, ReLU   55 x 55 x 96
    max pool 3, stride 2                        27 x 27 x 96
    conv 256, 5x5, "same", ReLU                 27 x 27 x 256
    max pool 3, stride 2                        13 x 13 x 256
    conv 384, 3x3, "same", ReLU                 13 x 13 x 384
    conv 384, 3x3, "same", ReLU                 13 x 13 x 384
    conv 256, 3x3, "same", ReLU                 13 x 13 x 256
    max pool 3, stride 2                        6 x 6 x 256
    flatten, dropout, dense 4096, ReLU          4096
    dropout, dense 4096, ReLU                   4096
    dense num_classes                           num_classes
    ==========================================  ==============

    The channel counts are the paper's (its two GPU halves joined); the
    2-pixel padding of the first convolution makes the stated 224x224 input
    give the paper's 55x55 maps. Local response normalisation is omitted (it
    adds little; insert ``batch_norm()`` layers for a modern variant).
    Overlapping pooling (window 3, stride 2) is kept.
    """
    relu_init = _HE
    return serial(
        conv2d(96, 11, stride=4, padding=2, w_init=relu_init),
        relu,
        max_pool(3, stride=2),
        conv2d(256, 5, padding="same", w_init=relu_init),
        relu,
        max_pool(3, stride=2),
        conv2d(384, 3, padding="same", w_init=relu_init),
        relu,
        conv2d(384, 3, padding="same", w_init=relu_init),
        relu,
        conv2d(256, 3, padding="same", w_init=relu_init),
        relu,
        max_pool(3, stride=2),
        flatten,
        dropout(dropout_rate),
        dense(4096, w_init=relu_init),
        relu,
        dropout(dropout_rate),
        dense(4096, w_init=relu_init),
        relu,
        dense(num_classes),
        name=name,
    )


@layer_factory
def basic_block(
    features: int, *, stride: int = 1, project: bool = False, preactivation: bool = False, name: str = "block"
) -> Layer:
    """A ResNet basic block: ``relu(main(x) + shortcut(x))`` with

    ``main = conv 3x3 (stride) -> batch_norm -> relu -> conv 3x3 -> batch_norm``

    and an identity shortcut, or, with ``project=True`` (needed when the
    stride or the channel count changes), the projection
    ``conv 1x1 (stride) -> batch_norm``. Convolutions carry no bias (batch
    norm's bias replaces it). Params: ``{"residual": {"main": ..., "shortcut": ...}, "relu": {}}``.

    ``preactivation=True`` gives the pre-activation block of He et al.,
    "Identity Mappings in Deep Residual Networks" (2016): ``main(x) + shortcut(x)``
    with nothing after the sum and

    ``main = batch_norm -> relu -> conv 3x3 (stride) -> batch_norm -> relu -> conv 3x3``

    so that the identity path from a block's input to its output (and back, for
    the gradient) passes through no normalisation and no non-linearity. The
    projection shortcut is then a bare ``conv 1x1 (stride)``. Params:
    ``{"residual": {"main": ..., "shortcut": ...}}``.

    >>> import numpy as np, fnn
    >>> params, _ = fnn.models.basic_block(8, preactivation=True).init(np.random.default_rng(0), (None, 4, 4, 8))
    >>> list(params), list(params["residual"]["main"])
    (['residual'], ['batch_norm', 'relu', 'conv2d', 'batch_norm_1', 'relu_1', 'conv2d_1'])
    """
    if not isinstance(preactivation, bool):
        raise TypeError(f"{name}: preactivation must be True or False; got {preactivation!r}")
    if preactivation:
        main = serial(
            batch_norm(),
            relu,
            conv2d(features, 3, stride=stride, padding="same", use_bias=False, w_init=_HE),
            batch_norm(),
            relu,
            conv2d(features, 3, padding="same", use_bias=False, w_init=_HE),
            name="main",
        )
        shortcut = conv2d(features, 1, stride=stride, padding="same", use_bias=False, w_init=_HE) if project else None
        return serial(residual(main, shortcut), name=name)
    main = serial(
        conv2d(features, 3, stride=stride, padding="same", use_bias=False, w_init=_HE),
        batch_norm(),
        relu,
        conv2d(features, 3, padding="same", use_bias=False, w_init=_HE),
        batch_norm(),
        name="main",
    )
    shortcut = None
    if project:
        shortcut = serial(conv2d(features, 1, stride=stride, padding="same", use_bias=False, w_init=_HE), batch_norm())
    return serial(residual(main, shortcut), relu, name=name)


@layer_factory
def resnet(
    num_classes: int = 10,
    *,
    stages: Sequence[int] = (16, 32, 64),
    blocks_per_stage: int = 1,
    preactivation: bool = False,
    name: str = "resnet",
) -> Layer:
    """A small ResNet for small images (8x8 digits, 28x28 MNIST, 32x32 CIFAR).

    ``stem: conv 3x3 (stages[0]) -> batch_norm -> relu``, then for each stage
    ``blocks_per_stage`` :func:`basic_block` s -- the first block of every stage
    after the first halves the image (stride 2) and doubles the channels
    through a projection shortcut, the others keep an identity shortcut --
    then global average pooling and ``dense(num_classes)``.

    ``preactivation=True`` builds the pre-activation ResNet (He et al., 2016,
    "Identity Mappings in Deep Residual Networks"): a bare ``conv 3x3`` stem,
    pre-activation blocks (``basic_block(..., preactivation=True)``:
    ``batch_norm -> relu -> conv -> batch_norm -> relu -> conv`` plus the
    shortcut, nothing after the sum), and one ``batch_norm -> relu`` after the
    last block, before the pooling. The convolutions are the same as the
    original's; the batch norms move (none after the stem or in the
    projections, one after the last block).

    With the defaults: 8x8 -> 8x8x16 -> 4x4x32 -> 2x2x64 -> 64 -> classes
    (28x28 -> 28 -> 14 -> 7); about 78 k parameters (0.17 M with ``blocks_per_stage=2``).

    >>> import fnn
    >>> fnn.models.resnet().out_shape((None, 8, 8, 1)), fnn.models.resnet(preactivation=True).out_shape((None, 8, 8, 1))
    ((None, 10), (None, 10))
    """
    stages = _check_sizes(name, "stages", stages, allow_empty=False)
    if not isinstance(blocks_per_stage, int) or blocks_per_stage < 1:
        raise ValueError(f"{name}: blocks_per_stage must be a positive int; got {blocks_per_stage!r}")
    if not isinstance(preactivation, bool):
        raise TypeError(f"{name}: preactivation must be True or False; got {preactivation!r}")
    layers: list[Layer] = [conv2d(stages[0], 3, padding="same", use_bias=False, w_init=_HE, name="stem")]
    if not preactivation:
        layers += [batch_norm(), relu]
    previous = stages[0]
    for s, features in enumerate(stages):
        for b in range(blocks_per_stage):
            stride = 2 if s > 0 and b == 0 else 1
            project = stride != 1 or features != previous
            layers.append(basic_block(features, stride=stride, project=project, preactivation=preactivation))
            previous = features
    if preactivation:  # the last block's sum is not normalised: do it once before the head
        layers += [batch_norm(), relu]
    layers += [global_avg_pool, dense(num_classes)]
    return serial(*layers, name=name)


@layer_factory
def lstm_classifier(num_classes: int = 10, hidden: int = 128, *, depth: int = 1, name: str = "lstm_classifier") -> Layer:
    """Stacked LSTMs over ``(batch, time, features)`` (or ``{"x": x, "mask": mask}``
    for variable lengths); the last state of the top LSTM feeds a dense layer
    giving ``num_classes`` logits. An 8x8 digit read row by row is a sequence
    of 8 steps of 8 features."""
    _check_sizes(name, "num_classes, hidden and depth", (num_classes, hidden, depth), allow_empty=False)
    cells = [lstm(hidden, return_sequences=True) for _ in range(depth - 1)] + [lstm(hidden)]
    return serial(*cells, dense(num_classes), name=name)
