"""The suite's optimizer choice (``benchmarks.optimizers``): every contender's form of
Adam and of SGD + momentum is fnn's update, and the suite's contenders, built with
``--optimizer momentum``, take fnn's first two momentum steps (two, because the first
step is ``-lr g`` whatever the momentum coefficient or a dampening: they show only in the
second). The models' gradients are checked in ``tests/test_benchmarks.py``,
``tests/test_torch_reference.py`` and ``tests/test_benchmarks_libraries.py``."""

import copy
import importlib.util

import numpy as np
import pytest

import fnn
import fnn.optim
from benchmarks import optimizers
from benchmarks.suite import fnn_step, numpy_init, numpy_network
from benchmarks.workloads import MOMENTUM, MOMENTUM_LEARNING_RATE, workloads

CHOICES = [optimizers.Adam(), optimizers.Momentum()]
FORMS = ["plain JAX", "NumPy", "optax", "PyTorch"]
NEEDS = {"plain JAX": "jax", "optax": "optax", "PyTorch": "torch"}


def two_gradients() -> tuple[dict, dict, dict]:
    """Small float32 params and two different gradients (the second not a multiple of the first)."""
    rng = np.random.default_rng(0)
    tree = lambda: {"dense": {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}}
    return tuple(fnn.backend.tree_map(lambda a: a.astype(np.float32), tree()) for _ in range(3))


def fnn_two_steps(opt, params, grads):
    state = opt.init(params)
    for g in grads:
        updates, state = opt.update(g, state, params)
        params = fnn.optim.apply_updates(params, updates)
    return params


def form_two_steps(form, choice, params, grads):
    """``params`` after two updates by ``choice``'s form ``form`` with ``grads``, as NumPy arrays."""
    if form == "plain JAX":
        state = choice.jax_init(params)
        for g in grads:
            params, state = choice.jax_update(params, g, state)
        return fnn.backend.tree_map(np.asarray, params)
    if form == "NumPy":
        params, opt = copy.deepcopy(params), choice.numpy()
        for g in grads:
            opt.update(params, g)  # in place
        return params
    if form == "optax":
        import optax

        opt = choice.optax()
        state = opt.init(params)
        for g in grads:
            updates, state = opt.update(g, state, params)
            params = optax.apply_updates(params, updates)
        return fnn.backend.tree_map(np.asarray, params)
    import torch

    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params["dense"].items()}
    opt = choice.torch(list(tensors.values()))
    for g in grads:
        for k, t in tensors.items():
            t.grad = torch.tensor(g["dense"][k])
        opt.step()
    return {"dense": {k: t.detach().numpy() for k, t in tensors.items()}}


def test_momentum_is_fnns_sgd_with_the_velocity_from_zero():
    params, g1, g2 = two_gradients()
    got = fnn_two_steps(optimizers.Momentum().fnn(), params, (g1, g2))
    lr = MOMENTUM_LEARNING_RATE
    for k, p in params["dense"].items():  # v1 = g1, v2 = 0.9 g1 + g2
        want = p - lr * g1["dense"][k] - lr * (MOMENTUM * g1["dense"][k] + g2["dense"][k])
        np.testing.assert_allclose(got["dense"][k], want, rtol=1e-6, err_msg=k)
    assert (MOMENTUM, MOMENTUM_LEARNING_RATE) == (0.9, 1e-2)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("choice", CHOICES, ids=lambda c: c.name)
def test_every_form_takes_fnns_two_steps(choice, form):
    if form in NEEDS and importlib.util.find_spec(NEEDS[form]) is None:
        pytest.skip(f"{NEEDS[form]} is not installed")
    params, g1, g2 = two_gradients()
    want = fnn_two_steps(choice.fnn(), params, (g1, g2))
    got = form_two_steps(form, choice, params, (g1, g2))
    for k, value in want["dense"].items():
        np.testing.assert_allclose(got["dense"][k], value, rtol=1e-6, atol=1e-7, err_msg=f"{form} {k}")


def test_output_names_keep_adams_and_tag_the_others():
    assert optimizers.Adam().file_name("results", ".json") == "results.json"
    assert optimizers.Momentum().file_name("scaling", ".png") == "scaling-momentum.png"
    assert optimizers.choose("momentum") == optimizers.Momentum()
    with pytest.raises(ValueError, match="optimizer must be one of adam, momentum; got 'sgd'"):
        optimizers.choose("sgd")


def test_the_command_line_names_every_optimizer_and_refuses_others(capsys):
    from benchmarks.__main__ import OPTIMIZER_CHOICES, main

    assert OPTIMIZER_CHOICES == tuple(optimizers.OPTIMIZERS)
    with pytest.raises(SystemExit) as exit_:
        main(["--optimizer", "sgd"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and err.endswith("(see python -m benchmarks --help)\n"), err
    assert err.startswith("python -m benchmarks: error: argument --optimizer: invalid choice: 'sgd'"), err
    assert "adam" in err and "momentum" in err and "Traceback" not in err


# --------------------------------------------------------------------------- #
# The suite's contenders with --optimizer momentum
# --------------------------------------------------------------------------- #

SGD_MOMENTUM = optimizers.Momentum()


def fnn_momentum_moves(workload):
    """fnn's manual step with ``fnn.optim.sgd(0.01, momentum=0.9)``, twice from fnn's initial params:
    ``(losses, {path: move})`` (JAX arrays for the JAX workloads, NumPy for the NumPy ones)."""
    params, state = numpy_init(workload)
    grad_fn = fnn.value_and_grad(workload.model, workload.loss, method="manual")
    opt = fnn.optim.sgd(MOMENTUM_LEARNING_RATE, momentum=MOMENTUM)
    now, opt_state, losses = params, opt.init(params), []
    for _ in range(2):
        (loss, state), grads = grad_fn(now, state, *workload.data())
        updates, opt_state = opt.update(grads, opt_state, now)
        now, losses = fnn.optim.apply_updates(now, updates), losses + [float(loss)]
    return losses, moves(params, now)


def moves(before, after) -> dict:
    """``{path: after - before}`` in float64, over ``after``'s arrays (fnn's layout)."""
    start = dict(fnn.backend.tree_leaves_with_path(before))
    return {path: np.asarray(a, np.float64) - start[path] for path, a in fnn.backend.tree_leaves_with_path(after)}


def assert_same_moves(got_losses, got, want_losses, want):
    """The same two losses, and every parameter moved as fnn's (relative 2e-4, with an absolute
    floor of 1e-5 of the largest move), which moved visibly."""
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-5)
    assert set(got) == set(want)
    scale = max(float(np.max(np.abs(v))) for v in want.values())
    assert scale > 1e-3
    for path, value in want.items():
        np.testing.assert_allclose(got[path], value, rtol=2e-4, atol=1e-5 * scale, err_msg=path)


def chained(step, carry, x, y):
    """Two calls of ``step(*carry, x, y) -> (*carry, loss)``: the two losses and the last carry."""
    losses = []
    for _ in range(2):
        *carry, loss = step(*carry, x, y)
        losses.append(float(loss))
    return losses, carry


@pytest.mark.parametrize("key", ["W3", pytest.param("W5", marks=pytest.mark.slow)])
def test_plain_jax_takes_fnns_momentum_steps(key):
    import jax
    import jax.numpy as jnp

    from benchmarks.suite import plain_jax_step

    workload = workloads(quick=True)[key]
    params, state = jax.tree.map(jnp.asarray, numpy_init(workload))
    step, carry = plain_jax_step(workload, params, state, SGD_MOMENTUM)
    losses, (after, *_) = chained(jax.jit(step), carry, *workload.data())
    assert_same_moves(losses, moves(params, after), *fnn_momentum_moves(workload))


@pytest.mark.parametrize("key", ["W1", pytest.param("W2", marks=pytest.mark.slow)])
def test_numpy_reference_and_fnn_numpy_take_fnns_momentum_steps(key):
    workload = workloads(quick=True)[key]
    params, state = numpy_init(workload)
    want = fnn_momentum_moves(workload)
    net = numpy_network(workload, copy.deepcopy(params), SGD_MOMENTUM)
    losses = [net.train_step(*workload.data()) for _ in range(2)]
    assert_same_moves(losses, moves(params, net.params), *want)
    step, opt = fnn_step(workload, "manual", SGD_MOMENTUM)  # the "fnn NumPy" contender
    losses, (after, *_) = chained(step, (params, state, opt.init(params)), *workload.data())
    assert_same_moves(losses, moves(params, after), *want)


def test_pytorch_takes_fnns_momentum_steps():
    pytest.importorskip("torch")
    from benchmarks import torch_reference

    workload = workloads(quick=True)["W3"]
    params, state = numpy_init(workload)
    step, first = torch_reference.train_step(workload, params, state, *workload.data(), SGD_MOMENTUM)
    losses = [first, float(step())]
    assert_same_moves(losses, moves(params, step.export()[0]), *fnn_momentum_moves(workload))


LIBRARY_CASES = [
    pytest.param(name, marks=() if name == "Haiku" else pytest.mark.slow) for name in ("Flax linen", "Equinox", "Haiku")
]


@pytest.mark.parametrize("name", LIBRARY_CASES)
def test_library_takes_fnns_momentum_steps(name):
    from benchmarks import libraries

    if libraries.library_note(name) is not None:
        pytest.skip(libraries.library_note(name))
    import jax

    from benchmarks.suite import library_step

    workload = workloads(quick=True)["W3"]
    params, state = numpy_init(workload)
    step, carry, batch, bindings = library_step(name, workload, params, state, SGD_MOMENTUM)
    losses, (after, *_) = chained(jax.jit(step), carry, *batch)
    got = {
        "/".join(path): np.asarray(value, np.float64) - np.asarray(libraries.get(params, path))
        for path, value in libraries.export(jax.device_get(after), bindings).items()
    }
    assert_same_moves(losses, got, *fnn_momentum_moves(workload))


def test_fnn_bench_full_passes_the_optimizer_on(tmp_path, monkeypatch, capfd):
    from fnn import cli, cli_bench

    fake = tmp_path / "checkout"  # a stand-in suite that prints its arguments
    (fake / "benchmarks").mkdir(parents=True)
    (fake / "benchmarks" / "__main__.py").write_text("import sys\nprint('suite args', sys.argv[1:])\n")
    monkeypatch.setattr(cli_bench, "_source_root", lambda: fake)
    assert cli.main(["bench", "--full", "--quick", "--optimizer", "momentum"]) == 0
    assert "suite args ['--quick', '--optimizer', 'momentum']" in capfd.readouterr().out
    assert cli.main(["bench", "--optimizer", "momentum"]) == 2  # without --full: the quick table has no such option
    assert "--optimizer go with --full" in capfd.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--full", "--optimizer", "sgd"])
    err = capfd.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "invalid choice: 'sgd'" in err, err


@pytest.mark.slow  # a subprocess that imports JAX and compiles W3's contenders
def test_a_momentum_run_says_so_and_keeps_an_adam_runs_files(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    adams = tmp_path / "results.json"
    adams.write_text("an Adam run's results\n")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-libraries", "--no-scaling", "--only", "W3"]
        + ["--optimizer", "momentum", "--out", str(tmp_path)],
        check=False,
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "optimizer (every contender): SGD + momentum 0.9 (learning rate 0.01, no Nesterov)" in done.stdout
    assert adams.read_text() == "an Adam run's results\n"
    results = json.loads((tmp_path / "results-momentum.json").read_text())
    assert results["settings"]["optimizer"] == "momentum"
    assert "SGD + momentum" in (tmp_path / "results-momentum.md").read_text()
    assert (tmp_path / "results-momentum.png").stat().st_size > 0
