"""Layers are values: readable hyper-parameters, a repr that reads like the
call, equality and hashing by construction arguments (so a rebuilt model hits
every compile cache), and immutability."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import initializers as I
from fnn import layers as L
from fnn import models

# one builder per public factory: (build, a different build)
FACTORIES = {
    "dense": (lambda: L.dense(4), lambda: L.dense(5)),
    "dense no bias": (lambda: L.dense(4, use_bias=False), lambda: L.dense(4)),
    "dense init": (lambda: L.dense(4, w_init=I.normal(0.1)), lambda: L.dense(4, w_init=I.normal(0.2))),
    "leaky_relu": (lambda: L.leaky_relu(0.1), lambda: L.leaky_relu(0.2)),
    "elu": (lambda: L.elu(0.5), lambda: L.elu(1.0)),
    "prelu": (lambda: L.prelu(0.1), lambda: L.prelu(0.3)),
    "rrelu": (lambda: L.rrelu(0.1, 0.2), lambda: L.rrelu(0.1, 0.3)),
    "batch_norm": (lambda: L.batch_norm(momentum=0.8), lambda: L.batch_norm()),
    "layer_norm": (lambda: L.layer_norm(eps=1e-3), lambda: L.layer_norm()),
    "dropout": (lambda: L.dropout(0.5), lambda: L.dropout(0.25)),
    "reshape": (lambda: L.reshape((2, 3)), lambda: L.reshape((3, 2))),
    "rnn": (lambda: L.rnn(3, L.relu), lambda: L.rnn(3)),
    "lstm": (lambda: L.lstm(3, return_sequences=True), lambda: L.lstm(3)),
    "gru": (lambda: L.gru(3), lambda: L.gru(4)),
    "serial": (lambda: L.serial(L.dense(3), L.relu), lambda: L.serial(L.dense(3), L.tanh)),
    "parallel": (lambda: L.parallel(L.dense(3), L.relu), lambda: L.parallel(L.relu, L.dense(3))),
    "residual": (lambda: L.residual(L.dense(3)), lambda: L.residual(L.dense(3), L.dense(3))),
    "fan_out": (lambda: L.fan_out(2), lambda: L.fan_out(3)),
    "fan_in_concat": (lambda: L.fan_in_concat(1), lambda: L.fan_in_concat(-1)),
    "conv": (lambda: L.conv(4, (3, 3), dilation=2), lambda: L.conv(4, (3, 3))),
    "conv1d": (lambda: L.conv1d(4, 3, groups=2), lambda: L.conv1d(4, 3)),
    "conv2d": (lambda: L.conv2d(4, 3, padding="same"), lambda: L.conv2d(4, 3)),
    "conv3d": (lambda: L.conv3d(4, 3), lambda: L.conv3d(4, 2)),
    "conv_transpose": (lambda: L.conv_transpose(4, (3, 3), stride=2), lambda: L.conv_transpose(4, (3, 3))),
    "max_pool": (lambda: L.max_pool(2), lambda: L.max_pool(3)),
    "avg_pool": (lambda: L.avg_pool((2, 2), padding="same"), lambda: L.avg_pool((2, 2))),
    "multi_head_attention": (lambda: L.multi_head_attention(4), lambda: L.multi_head_attention(4, causal=True)),
    "transformer_block": (lambda: L.transformer_block(2, 16), lambda: L.transformer_block(2, 32)),
    "mlp": (lambda: models.mlp((8, 4)), lambda: models.mlp((8, 5))),
    "lenet5": (lambda: models.lenet5(), lambda: models.lenet5(num_classes=3)),
    "resnet": (lambda: models.resnet(), lambda: models.resnet(num_classes=3)),
    "transformer": (lambda: models.transformer(11, num_layers=1, num_heads=2, features=8, mlp_features=16),
                    lambda: models.transformer(11, num_layers=1, num_heads=2, features=8, mlp_features=16, pool="last")),
    "last_position": (lambda: models.last_position(), lambda: models.last_position(name="last")),
    "manual_vjp": (lambda: fnn.manual_vjp(L.dense(3)), lambda: fnn.manual_vjp(L.dense(4))),
    "policy": (lambda: fnn.precision.policy(L.dense(3)), lambda: fnn.precision.policy(L.dense(3), compute="float16")),
    # sequence layers
    "embedding": (lambda: L.embedding(10, 4), lambda: L.embedding(10, 5)),
    "embedding init": (lambda: L.embedding(10, 4, w_init=I.normal(0.5)), lambda: L.embedding(10, 4)),
    "rms_norm": (lambda: L.rms_norm(eps=1e-5), lambda: L.rms_norm()),
    "group_norm": (lambda: L.group_norm(2), lambda: L.group_norm(4)),
    "bidirectional": (lambda: L.bidirectional(L.lstm(3)), lambda: L.bidirectional(L.gru(3))),
    "sinusoidal_positions": (lambda: L.sinusoidal_positions(), lambda: L.sinusoidal_positions(max_wavelength=100.0)),
}


@pytest.mark.parametrize("case", sorted(FACTORIES))
def test_equal_arguments_give_equal_layers_and_others_do_not(case):
    build, other = FACTORIES[case]
    a, b, c = build(), build(), other()
    assert a is not b and a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2
    assert repr(a) == repr(b) != repr(c)


def test_config_holds_every_hyper_parameter_and_repr_reads_like_the_call():
    layer = L.dense(64)
    assert layer.config == {"features": 64, "w_init": I.lecun_normal(), "b_init": I.zeros, "use_bias": True}
    assert repr(layer) == "dense(features=64, w_init=lecun_normal(), b_init=zeros, use_bias=True)"
    assert repr(L.dense(2, name="head")).endswith("use_bias=True, name='head')")
    assert repr(L.relu) == "relu" and L.relu.config == {}
    assert repr(L.serial(L.relu, L.flatten)) == "serial(relu, flatten)"
    assert L.serial(L.relu, L.flatten).config == {}
    assert L.residual(L.relu).config == {"layer": L.relu, "shortcut": None}
    assert repr(I.normal(0.5)) == "normal(stddev=0.5, mean=0.0)" and I.he_normal() == I.he_normal()
    assert eval(repr(L.lstm(3)), {**vars(L), **vars(I)}) == L.lstm(3)  # the repr rebuilds the layer


def test_the_name_is_part_of_the_value():
    assert L.dense(3, name="a") != L.dense(3, name="b")
    assert L.dense(3) != L.dense(3).replace(bwd=L.dense(3).bwd)  # other functions: another layer
    assert L.dense(3).replace(name="x") == L.dense(3, name="x")


def test_layers_are_immutable():
    layer = L.dense(3)
    with pytest.raises(AttributeError, match=r"immutable; use layer.replace\(name=...\)"):
        layer.name = "other"
    with pytest.raises(TypeError, match=r"unknown fields \['fn'\]"):
        layer.replace(fn=None)


def test_a_rebuilt_model_hits_the_jit_cache():
    traces = []

    @functools.partial(jax.jit, static_argnums=0)
    def run(model, params, state, x):
        traces.append(model)
        return model.apply(params, state, x)[0]

    params, state = models.mlp((8,), num_classes=3).init(jax.random.key(0), (None, 4))
    x = jnp.ones((2, 4))
    first = run(models.mlp((8,), num_classes=3), params, state, x)
    second = run(models.mlp((8,), num_classes=3), params, state, x)
    assert len(traces) == 1
    np.testing.assert_array_equal(first, second)
    run(models.mlp((8,), num_classes=3, name="other"), params, state, x)  # another model: traced again
    assert len(traces) == 2


def test_layer_constructor_takes_the_documented_names():
    layer = fnn.Layer(
        "twice",
        init=fnn.core.no_params,
        out_shape=lambda shape: shape,
        fwd=lambda params, state, x, key, train: (2 * x, state, None),
        bwd=lambda params, residuals, dy: ({}, 2 * dy),
    )
    y, _ = layer.apply({}, {}, np.ones(3))
    np.testing.assert_array_equal(y, 2 * np.ones(3))
    assert repr(layer) == "twice" and layer == layer and layer != layer.replace(name="twice")
    with pytest.raises(TypeError, match=r"Layer 'x': bwd must be a function; got int"):
        fnn.Layer("x", init=fnn.core.no_params, out_shape=lambda s: s, fwd=lambda *a: a, bwd=3)


def test_fit_with_a_rebuilt_model_compiles_nothing_new():
    from fnn.train import epoch

    x = np.random.default_rng(0).standard_normal((12, 4)).astype(np.float32)
    y = np.arange(12) % 3
    opt, loss = fnn.optim.sgd(0.1), fnn.losses.softmax_cross_entropy

    def run():
        model = models.mlp((5,), num_classes=3)  # built afresh each time
        ts = fnn.train.init_state(model, opt, fnn.key(0), (None, 4))
        return fnn.train.fit(model, loss, opt, ts, (x, y), epochs=1, batch_size=4, progress=False)[0]

    first = run()
    misses = epoch._cached_epoch.cache_info().misses
    second = run()
    assert epoch._cached_epoch.cache_info().misses == misses  # the rebuilt model found its compiled epoch
    np.testing.assert_array_equal(first.params["dense"]["w"], second.params["dense"]["w"])
