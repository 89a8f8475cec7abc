"""Schedules at their boundaries, on both backends and under jit, and in an optimizer."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import optim


def at(schedule, step, backend_name):
    """Evaluate at an int32 step of the backend (as the optimizers do)."""
    xp = jnp if backend_name == "jax" else np
    value = schedule(xp.asarray(step, dtype=xp.int32))
    assert value.shape == () and value.dtype == np.float64  # default float (x64 on in the tests)
    return float(value)


def check(schedule, expected: dict, backend_name):
    for step, value in expected.items():
        assert at(schedule, step, backend_name) == pytest.approx(value, rel=1e-12, abs=1e-15), step


def test_constant(backend_name):
    check(optim.constant_schedule(0.3), {0: 0.3, 1: 0.3, 10**6: 0.3}, backend_name)


def test_linear_warmup(backend_name):
    s = optim.linear_schedule(0.0, end_value=1e-3, transition_steps=10, transition_begin=5)
    check(s, {0: 0.0, 5: 0.0, 6: 1e-4, 10: 5e-4, 15: 1e-3, 16: 1e-3, 1000: 1e-3}, backend_name)


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_decay(backend_name, staircase):
    s = optim.exponential_decay(0.1, transition_steps=10, decay_rate=0.5, staircase=staircase)
    expected = {t: 0.1 * 0.5 ** ((t // 10) if staircase else (t / 10)) for t in (0, 1, 9, 10, 11, 19, 20, 95)}
    check(s, expected, backend_name)


def test_exponential_decay_end_value(backend_name):
    s = optim.exponential_decay(1.0, transition_steps=1, decay_rate=0.5, end_value=0.2)
    check(s, {0: 1.0, 2: 0.25, 3: 0.2, 50: 0.2}, backend_name)
    grow = optim.exponential_decay(1.0, transition_steps=1, decay_rate=2.0, end_value=3.0)
    check(grow, {1: 2.0, 2: 3.0}, backend_name)


def test_piecewise_constant_changes_at_the_boundary(backend_name):
    s = optim.piecewise_constant(0.1, boundaries_and_values={200: 0.001, 100: 0.01})
    check(s, {0: 0.1, 99: 0.1, 100: 0.01, 199: 0.01, 200: 0.001, 10**5: 0.001}, backend_name)


def test_cosine_decay(backend_name):
    s = optim.cosine_decay(1.0, decay_steps=100, end_value=0.1)
    expected = {t: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 100) / 100)) for t in (0, 1, 25, 50, 99, 100, 500)}
    check(s, expected, backend_name)


def test_warmup_cosine_decay(backend_name):
    s = optim.warmup_cosine_decay(0.1, peak_value=1.0, warmup_steps=10, decay_steps=110, end_value=0.01)

    def reference(t):
        if t < 10:
            return 0.1 + 0.9 * t / 10
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t - 10, 100) / 100))

    check(s, {t: reference(t) for t in (0, 1, 9, 10, 11, 60, 109, 110, 1000)}, backend_name)
    no_warmup = optim.warmup_cosine_decay(0.0, peak_value=1.0, warmup_steps=0, decay_steps=10)
    check(no_warmup, {0: 1.0, 10: 0.0}, backend_name)


def test_join_schedules_restarts_each_piece(backend_name):
    s = optim.join_schedules(
        [optim.constant_schedule(0.5), optim.linear_schedule(1.0, end_value=0.0, transition_steps=4)], boundaries=[3]
    )
    check(s, {0: 0.5, 2: 0.5, 3: 1.0, 4: 0.75, 7: 0.0, 100: 0.0}, backend_name)


def test_schedules_are_jittable_and_accept_python_ints():
    schedules = [
        optim.constant_schedule(0.3),
        optim.linear_schedule(0.0, end_value=1.0, transition_steps=7),
        optim.exponential_decay(1.0, transition_steps=3, decay_rate=0.7, staircase=True),
        optim.piecewise_constant(1.0, boundaries_and_values={4: 0.5}),
        optim.warmup_cosine_decay(0.0, peak_value=1.0, warmup_steps=3, decay_steps=12),
    ]
    steps = jnp.arange(15, dtype=jnp.int32)
    table = jax.jit(lambda t: jnp.stack([jax.vmap(s)(t) for s in schedules]))(steps)
    for row, s in zip(np.asarray(table), schedules):
        np.testing.assert_allclose(row, [float(s(int(t))) for t in range(15)], rtol=1e-12)
    assert isinstance(schedules[0](3), np.ndarray)


def test_optimizer_evaluates_schedule_at_updates_already_applied(backend_name):
    lr = optim.piecewise_constant(1.0, boundaries_and_values={1: 0.5, 3: 0.25})
    opt = optim.sgd(lr)
    xp = jnp if backend_name == "jax" else np
    params = {"w": xp.zeros(1)}
    state = opt.init(params)
    assert float(optim.get_learning_rate(state)) == 1.0  # the rate of the first update
    applied = []
    for _ in range(5):
        updates, state = opt.update({"w": xp.ones(1)}, state, params)
        applied.append(-float(updates["w"][0]))
    assert applied == [1.0, 0.5, 0.5, 0.25, 0.25]
    assert float(optim.get_learning_rate(state)) == 0.25 and int(state["scale_by_learning_rate"].count) == 5


def test_scale_by_schedule_does_not_flip_the_sign():
    opt = optim.chain(
        optim.scale_by_learning_rate(1.0),
        optim.scale_by_schedule(optim.linear_schedule(1.0, end_value=0.0, transition_steps=2)),
    )
    state = opt.init({"w": np.zeros(1)})
    out = []
    for _ in range(3):
        updates, state = opt.update({"w": np.ones(1)}, state)
        out.append(float(updates["w"][0]))
    assert out == [-1.0, -0.5, -0.0]


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: optim.exponential_decay(0.1, transition_steps=0, decay_rate=0.5), "transition_steps"),
        (lambda: optim.exponential_decay(0.1, transition_steps=10, decay_rate=0.0), "decay_rate"),
        (lambda: optim.exponential_decay(float("nan"), transition_steps=10, decay_rate=0.5), "init_value"),
        (lambda: optim.cosine_decay(0.1, decay_steps=0), "decay_steps"),
        (lambda: optim.warmup_cosine_decay(0.0, peak_value=1.0, warmup_steps=10, decay_steps=10), "decay_steps"),
        (lambda: optim.linear_schedule(0.0, end_value=1.0, transition_steps=-1), "transition_steps"),
        (lambda: optim.piecewise_constant(0.1, boundaries_and_values={-1: 0.01}), "boundary"),
        (lambda: optim.join_schedules([optim.constant_schedule(1.0)] * 2, boundaries=[]), "boundaries"),
        (lambda: optim.join_schedules([optim.constant_schedule(1.0)] * 3, boundaries=[5, 5]), "increasing"),
    ],
)
def test_bad_schedule_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_non_integer_steps_are_type_errors():
    with pytest.raises(TypeError, match="decay_steps"):
        optim.cosine_decay(0.1, decay_steps=10.5)


def test_positional_arguments_follow_optax():
    """The positional arguments mean what optax's do for the schedule of the same name."""
    optax = pytest.importorskip("optax")
    pairs = [
        (optim.cosine_decay(1e-3, 100), optax.cosine_decay_schedule(1e-3, 100)),
        (optim.linear_schedule(0.0, 1e-3, 10, 5), optax.linear_schedule(0.0, 1e-3, 10, 5)),
        (optim.exponential_decay(0.1, 10, 0.5, 7, True, 0.02), optax.exponential_decay(0.1, 10, 0.5, 7, True, 0.02)),
        (optim.exponential_decay(1.0, 3, 0.5, 4), optax.exponential_decay(1.0, 3, 0.5, 4)),
        (optim.warmup_cosine_decay(0.0, 1.0, 10, 110, 0.1), optax.warmup_cosine_decay_schedule(0.0, 1.0, 10, 110, 0.1)),
    ]
    steps = np.array([0, 3, 4, 5, 9, 10, 11, 15, 37, 50, 100, 110, 200], dtype=np.int32)
    for ours, theirs in pairs:
        np.testing.assert_allclose(ours(steps), jax.jit(theirs)(steps), rtol=1e-5, atol=1e-9, err_msg=repr(ours))


def test_cosine_decay_end_value_is_keyword_only():
    """optax's third argument is alpha (a fraction of init_value): a positional one is refused, not misread."""
    with pytest.raises(TypeError):
        optim.cosine_decay(1.0, 100, 0.1)
