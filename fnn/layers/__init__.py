"""Layers: one file per family, re-exported here. A layer without
hyper-parameters is a value (``relu``, ``flatten``); one with
hyper-parameters is a factory (``dense(10)``, ``leaky_relu(0.1)``)."""

from fnn.core import fan_in_concat, fan_in_mul, fan_in_sum, fan_out, parallel, residual, serial
from fnn.layers.activations import (
    elu,
    gelu,
    identity,
    leaky_relu,
    log_softmax,
    prelu,
    relu,
    rrelu,
    sigmoid,
    softmax,
    softplus,
    step,
    tanh,
)
from fnn.layers.dense import dense
from fnn.layers.convolution import conv, conv1d, conv2d, conv3d, conv_transpose
from fnn.layers.dropout import dropout
from fnn.layers.normalization import batch_norm, layer_norm
from fnn.layers.pooling import avg_pool, global_avg_pool, max_pool
from fnn.layers.reshape import flatten, reshape
from fnn.layers.recurrent import gru, lstm, rnn
from fnn.layers.attention import multi_head_attention
from fnn.layers.transformer import transformer_block

# sequence layers
from fnn.layers.activations import gelu_exact, silu
from fnn.layers.bidirectional import bidirectional
from fnn.layers.embedding import embedding
from fnn.layers.normalization import group_norm, rms_norm
from fnn.layers.positions import sinusoidal_positions

__all__ = [
    "dense",
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose",
    "max_pool",
    "avg_pool",
    "global_avg_pool",
    "batch_norm",
    "layer_norm",
    "dropout",
    "flatten",
    "reshape",
    "rnn",
    "lstm",
    "gru",
    "identity",
    "step",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "elu",
    "prelu",
    "rrelu",
    "gelu",
    "softplus",
    "softmax",
    "log_softmax",
    "serial",
    "parallel",
    "residual",
    "fan_out",
    "fan_in_sum",
    "fan_in_mul",
    "fan_in_concat",
    # sequence layers
    "embedding",
    "rms_norm",
    "group_norm",
    "silu",
    "gelu_exact",
    "bidirectional",
    "sinusoidal_positions",
    "multi_head_attention",
    "transformer_block",
]
