"""The JAX library contenders of the benchmark suite (flax.linen, Equinox, Haiku)
start from fnn's parameters and take fnn's steps: on every workload at its quick
size, two SGD steps of each library land on the losses and parameters of two
SGD steps of fnn's manual step. Each library's tests are skipped when it is not
installed (``pip install -e ".[bench]"``)."""

import importlib.util

import numpy as np
import pytest

from benchmarks import libraries
from benchmarks.suite import numpy_init
from benchmarks.workloads import workloads

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")

import fnn  # noqa: E402
import fnn.optim  # noqa: E402

LEARNING_RATE = 0.1  # large, so that a wrong gradient moves the parameters visibly
STEPS = 2
INSTALLED = {
    name: importlib.util.find_spec(package.split(".")[0]) is not None
    for name, (package, _) in libraries.LIBRARIES.items()
}


# The default run checks the layouts that take more than renaming, within the test-time
# budget: Haiku's LSTM (gates reordered, its forget bias), Flax's LSTM (a kernel per gate),
# Equinox's transposed weights on the smallest model. The rest, whose compiles take most
# of the time (convolutions and attention above all), runs with -m slow.
DEFAULT = {("Haiku", "W4"), ("Flax linen", "W4"), ("Equinox", "W3")}
CASES = [
    pytest.param(name, key, marks=() if (name, key) in DEFAULT else pytest.mark.slow)
    for name in libraries.LIBRARIES
    for key in ("W1", "W2", "W3", "W4", "W5", "W6")
]


def run_steps(step, carry, x, y):
    """``STEPS`` calls of the jitted ``step(*carry, x, y) -> (*carry, loss)``: the losses and the last carry."""
    step, losses = jax.jit(step), []
    for _ in range(STEPS):
        *carry, loss = step(*carry, x, y)
        losses.append(float(loss))
    return np.asarray(losses), carry


@pytest.fixture(scope="module")
def fnn_runs():
    """Per workload (computed when first asked for): fnn's initial params and state, its
    losses of two SGD steps and its params after them."""
    cache = {}

    def run(key):
        if key not in cache:
            workload = workloads(quick=True)[key]
            params, state = numpy_init(workload)
            grad_fn = fnn.value_and_grad(workload.model, workload.loss, method="manual")
            opt = fnn.optim.sgd(LEARNING_RATE)

            def step(p, s, o, x, y):
                (loss, s), g = grad_fn(p, s, x, y)
                u, o = opt.update(g, o, p)
                return fnn.optim.apply_updates(p, u), s, o, loss

            carry = jax.tree.map(jax.numpy.asarray, (params, state))
            losses, (after, _, _) = run_steps(step, (*carry, opt.init(carry[0])), *workload.data())
            cache[key] = (params, state, losses, libraries.fnn_leaves(jax.device_get(after)))
        return cache[key]

    return run


def library_steps(name, workload, params, state):
    """Library ``name``'s losses of two optax SGD steps from fnn's params, and its params after them in fnn's layout."""
    built = libraries.build(name, workload, params, state)
    optimizer = optax.sgd(LEARNING_RATE)
    step = libraries.train_step(built.loss, optimizer)
    carry = (built.params, built.state, optimizer.init(built.params))
    losses, (after, _, _) = run_steps(step, carry, *built.inputs(*workload.data()))
    return losses, libraries.export(after, built.bindings)


@pytest.mark.parametrize(("name", "key"), CASES)
def test_library_takes_fnns_first_sgd_steps(name, key, fnn_runs):
    if not INSTALLED[name]:
        pytest.skip(f"{name} is not installed")
    assert libraries.library_note(name) is None
    params, state, want_losses, want = fnn_runs(key)
    losses, got = library_steps(name, workloads(quick=True)[key], params, state)
    np.testing.assert_allclose(losses, want_losses, rtol=2e-5, err_msg=f"{name} {key} losses")
    assert set(got) == set(want), (name, key)
    for path, value in want.items():
        np.testing.assert_allclose(got[path], value, rtol=1e-4, atol=2e-6, err_msg=f"{name} {key} {path}")
    moved = max(float(np.max(np.abs(want[p] - np.asarray(libraries.get(params, p))))) for p in want)
    assert moved > 1e-2, (name, key, moved)  # the steps moved the parameters: the comparison means something


def test_the_suite_times_an_installed_library_from_fnns_first_loss(monkeypatch):
    if not INSTALLED["Haiku"]:
        pytest.skip("Haiku is not installed")
    from benchmarks import suite

    monkeypatch.setattr(libraries, "available", lambda: {"Haiku": None, "Equinox": "Equinox not installed"})
    workload = workloads(quick=True)["W3"]
    params, state = numpy_init(workload)
    notes = []
    ((name, call, loss),) = suite.library_contenders(workload, params, state, notes)
    assert name == "Haiku" and notes == ["Equinox not installed"]
    first = fnn.value_and_grad(workload.model, workload.loss)(params, state, *workload.data())[0][0]
    assert loss == pytest.approx(float(first), rel=1e-5)
    assert np.isfinite(float(call()[3]))


def test_a_missing_library_is_skipped_with_a_note(monkeypatch):
    monkeypatch.setitem(libraries.LIBRARIES, "Absent", ("no_such_package_for_fnn", "benchmarks.flax_reference"))
    note = libraries.library_note("Absent")
    assert note is not None and "Absent not installed" in note and "skipped" in note


def test_loading_refuses_a_parameter_that_does_not_fit():
    name = next((n for n, ok in INSTALLED.items() if ok), None)
    if name is None:
        pytest.skip("no JAX library installed")
    workload = workloads(quick=True)["W3"]
    params, state = numpy_init(workload)
    params["dense_2"]["b"] = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="dense_2"):
        libraries.build(name, workload, params, state)

