"""Optimizers and schedules are readable values: their repr reads like the call
that built them, and two built by the same call compare and hash equal (so a
rebuilt optimizer does not make fit recompile)."""

import dataclasses
import logging

import jax
import numpy as np
import pytest

import fnn
from fnn import losses, models, optim, train

OPTIMIZERS = {  # name -> a constructor called twice by the tests
    "sgd": lambda: optim.sgd(0.1, momentum=0.9, nesterov=True),
    "adagrad": lambda: optim.adagrad(0.01),
    "rmsprop": lambda: optim.rmsprop(0.01, decay=0.99),
    "adam": lambda: optim.adam(1e-3),
    "adamw": lambda: optim.adamw(1e-3, weight_decay=0.01, mask=optim.decay_mask),
    "adamw dict mask": lambda: optim.adamw(1e-3, mask={"w": True, "b": False}),
    "scale": lambda: optim.scale(-0.5),
    "trace": lambda: optim.trace(0.9),
    "scale_by_adagrad": lambda: optim.scale_by_adagrad(),
    "scale_by_rms": lambda: optim.scale_by_rms(),
    "scale_by_adam": lambda: optim.scale_by_adam(b1=0.8),
    "scale_by_learning_rate": lambda: optim.scale_by_learning_rate(0.1),
    "scale_by_schedule": lambda: optim.scale_by_schedule(optim.cosine_decay(1.0, decay_steps=10)),
    "add_decayed_weights": lambda: optim.add_decayed_weights(1e-4, np.array([True, False])),
    "add_l1": lambda: optim.add_l1(1e-4, mask=optim.decay_mask),
    "clip": lambda: optim.clip(1.0),
    "clip_by_global_norm": lambda: optim.clip_by_global_norm(1.0),
    "chain": lambda: optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-3)),
    "named chain": lambda: optim.chain(optim.clip(1.0), optim.sgd(0.1), name="clipped"),
    "masked": lambda: optim.masked(optim.scale(10.0), {"w": True, "b": False}),
    "freeze": lambda: optim.freeze(optim.decay_mask),
    "freeze with optimizer": lambda: optim.freeze(optim.decay_mask, optim.adam(0.1)),
    "partition": lambda: optim.partition({"a": optim.sgd(0.1), "b": optim.adam(0.01)}, {"w": "a", "b": "b"}),
    "skip_not_finite": lambda: optim.skip_not_finite(optim.sgd(0.1)),
    "dynamic_loss_scale": lambda: optim.dynamic_loss_scale(optim.sgd(0.1), init_scale=8.0),
    "schedule": lambda: optim.adam(optim.warmup_cosine_decay(0.0, peak_value=1e-3, warmup_steps=10, decay_steps=100)),
}


def test_repr_reads_like_the_call():
    assert repr(optim.adam(1e-3)) == "adam(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-08)"
    assert repr(optim.sgd(0.1)) == "sgd(learning_rate=0.1, momentum=0.0, nesterov=False)"
    assert repr(optim.chain(optim.clip(1.0), optim.scale_by_learning_rate(0.1))) == (
        "chain(clip(max_delta=1.0), scale_by_learning_rate(learning_rate=0.1))"
    )
    assert repr(optim.adamw(0.1, mask=optim.decay_mask)).endswith("weight_decay=0.0001, mask=decay_mask)")
    assert repr(optim.exponential_decay(0.1, transition_steps=5, decay_rate=0.5)) == (
        "exponential_decay(init_value=0.1, transition_steps=5, decay_rate=0.5, transition_begin=0, staircase=False, end_value=None)"
    )


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_the_same_call_builds_equal_values(name):
    a, b = OPTIMIZERS[name](), OPTIMIZERS[name]()
    assert a is not b and a.update is not b.update
    assert a == b and hash(a) == hash(b) and repr(a) == repr(b)
    assert {a: 1}[b] == 1
    assert a.name == b.name and repr(a).startswith(repr(a).split("(")[0] + "(")


@pytest.mark.parametrize("name", ["adam", "sgd", "chain", "named chain", "clip", "scale_by_adam", "schedule"])
def test_the_repr_rebuilds_an_equal_value(name):
    opt = OPTIMIZERS[name]()
    assert eval(repr(opt), dict(vars(optim))) == opt


def test_different_arguments_or_constructors_are_different():
    assert optim.adam(1e-3) != optim.adam(2e-3)
    assert optim.adam(1e-3) != optim.adam(1e-3, b1=0.8)
    assert optim.adam(1e-3) != optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(1e-3))
    assert optim.adam(1e-3) != optim.adamw(1e-3)
    assert optim.sgd(0.1) != optim.sgd(0.1, momentum=0.9)
    assert optim.masked(optim.scale(2.0), {"w": True}) != optim.masked(optim.scale(2.0), {"w": False})
    mask = np.array([True, False])
    assert optim.add_decayed_weights(0.1, mask) != optim.add_decayed_weights(0.1, ~mask)
    opt = optim.adam(1e-3)
    assert dataclasses.replace(opt, name="other") != opt  # another key in a chain's state
    assert optim.adam(1e-3) != "adam(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-08)"


def test_plain_functions_compare_by_identity():
    def schedule(step):
        return 0.1

    assert optim.adam(schedule) == optim.adam(schedule)
    assert optim.adam(lambda step: 0.1) != optim.adam(lambda step: 0.1)
    predicate = lambda path, leaf: path == "w"  # noqa: E731
    assert optim.masked(optim.scale(2.0), predicate) == optim.masked(optim.scale(2.0), predicate)
    assert optim.masked(optim.scale(2.0), predicate) != optim.masked(optim.scale(2.0), lambda path, leaf: path == "w")


def test_fnn_schedules_are_values():
    a = optim.piecewise_constant(0.1, boundaries_and_values={100: 0.01})
    b = optim.piecewise_constant(0.1, boundaries_and_values={100: 0.01})
    assert a == b and hash(a) == hash(b) and a != optim.piecewise_constant(0.1, boundaries_and_values={100: 0.02})
    assert float(a(150)) == 0.01 and float(jax.jit(a)(50)) == pytest.approx(0.1)
    joined = lambda: optim.join_schedules([optim.constant_schedule(0.01), a], boundaries=[5])  # noqa: E731
    assert joined() == joined()
    assert repr(joined()).startswith("join_schedules(schedules=[constant_schedule(value=0.01), ")
    assert optim.adam(a) == optim.adam(b)
    warmup = optim.warmup_cosine_decay(0.0, peak_value=1.0, warmup_steps=10, decay_steps=110)
    assert [round(float(warmup(s)), 6) for s in (0, 5, 10, 60, 110)] == [0.0, 0.5, 1.0, 0.5, 0.0]


def test_hand_built_transforms_compare_by_their_functions():
    def init(params):
        return optim.EmptyState()

    def update(g, s, p=None):
        return g, s

    a = optim.GradientTransformation(init, update, "identity")
    assert a == optim.GradientTransformation(init, update, "identity")
    assert a != optim.GradientTransformation(init, lambda g, s, p=None: (g, s), "identity")
    assert repr(a).startswith("GradientTransformation(init=<function") and "name='identity'" in repr(a)
    init_fn, update_fn = a  # still unpacks like optax's NamedTuple
    assert init_fn is init and update_fn is update


def test_a_rebuilt_optimizer_does_not_recompile_fit():
    model = models.mlp((8,))
    x = np.random.default_rng(0).normal(size=(64, 8, 8, 1)).astype(np.float32)
    y = np.arange(64) % 10
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())

    def run(opt):
        ts = train.init_state(model, opt, fnn.key(0, backend="numpy"), (None, 8, 8, 1))
        ts = jax.device_put(ts._replace(key=None))._replace(key=fnn.key(0))
        messages.clear()
        with jax.log_compiles():
            train.fit(model, losses.softmax_cross_entropy, opt, ts, (x, y), epochs=1, batch_size=32, progress=False)
        return [m for m in messages if m.startswith("Compiling")]

    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        run(optim.adam(1e-3))
        assert run(optim.adam(1e-3)) == []  # equal optimizer: the cached epoch
        assert any("_jax_epoch" in m for m in run(optim.adam(1e-3, b1=0.5)))  # another optimizer compiles
    finally:
        logger.removeHandler(handler)
