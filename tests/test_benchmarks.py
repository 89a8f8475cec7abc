"""The benchmark suite runs end to end (``python -m benchmarks --quick``) and
its hand-written references compute what fnn computes. No timing assertions:
timings depend on the machine and its load."""

import copy
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fnn
from benchmarks import numpy_reference, scaling
from benchmarks.suite import fnn_step, numpy_init
from benchmarks.workloads import resized, workloads

ROOT = Path(__file__).resolve().parents[1]


def test_quick_suite_and_scaling_run_and_write_their_files(tmp_path):
    out = tmp_path / "results"
    done = subprocess.run(
        # the JAX library contenders are checked in tests/test_benchmarks_libraries.py (their compiles take long)
        [sys.executable, "-m", "benchmarks", "--quick", "--no-libraries", "--out", str(out)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "targets" in done.stdout
    for name in ("results.json", "results.md", "results.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["optimizer"] == "adam" and "optimizer (every contender): Adam" in done.stdout
    assert set(results["times"]) == {"W1", "W2", "W3", "W4", "W5", "W6"}
    has_torch = importlib.util.find_spec("torch") is not None  # the PyTorch contender is optional
    contenders = {"fnn manual", "fnn autodiff", "plain JAX", "fnn fit"} | ({"PyTorch eager"} if has_torch else set())
    assert contenders <= set(results["times"]["W6"])
    assert set(results["memory"]["W6"]) == {"fnn manual", "fnn autodiff"}
    w6_targets = {t["what"] for t in results["targets"] if t["workload"] == "W6"}
    w6_all = {"fnn manual / fastest", "fnn manual / plain JAX", "fnn manual / PyTorch eager"}
    assert {"fnn manual / fastest", "fnn manual / plain JAX"} <= w6_targets <= w6_all
    # the contenders started from the same parameters: their first losses agree to 5 decimals
    (first,) = [n for n in results["notes"]["W6"] if n.startswith("first losses")]
    losses = [float(part.rsplit(" ", 1)[1]) for part in first[len("first losses ") :].split(", ")]
    assert len(losses) == 3 + has_torch and max(losses) - min(losses) < 2e-5, first
    assert {"plain JAX loop", "fnn manual loop", "bare scan"} <= set(results["times"]["W3"])
    overhead = [t for t in results["targets"] if t["kind"] == "overhead"]
    assert [t["what"] for t in overhead] == ["fnn fit - bare scan (ms)"] and math.isfinite(overhead[0]["ratio"])
    roofline = results["roofline"]
    assert roofline["peak_flops"] > 0 and set(roofline["fractions"]) >= {"fnn manual", "plain JAX"}
    assert "roofline: float32 matmul peak" in done.stdout
    for row in results["times"].values():
        assert {"fnn manual", "fnn autodiff"} <= set(row)
        for seconds in row.values():
            assert math.isfinite(seconds) and seconds > 0
    for mem in results["memory"].values():
        assert all(v is None or v >= 0 for v in mem.values())
    assert all("MISMATCH" not in note for notes in results["notes"].values() for note in notes)

    # the scaling benchmark ran after the suite, in the same process
    assert "manual never behind" in done.stdout
    assert done.stdout.index("targets") < done.stdout.index("scaling: train step time vs size")
    for name in ("scaling.json", "scaling.md", "scaling.png"):
        assert (out / name).stat().st_size > 0, name
    scaled = json.loads((out / "scaling.json").read_text())
    assert set(scaled["series"]) == {"W1", "W4"}
    for s in scaled["series"].values():
        assert len(s["sizes"]) == 4 and s["sizes"] == sorted(s["sizes"])
        assert set(s["times"]) == {"fnn manual", "fnn autodiff"}
        for seconds in (t for ts in s["times"].values() for t in ts):
            assert math.isfinite(seconds) and seconds > 0
        assert all(len(ts) == 4 for ts in s["times"].values())
        assert all(math.isfinite(f["r2"]) for f in s["fit"].values())
        assert s["max_ratio"] == max(s["ratios"])
        assert not s["notes"], s["notes"]  # no first-loss mismatch between manual and autodiff


def test_linear_fit_recovers_an_exact_line():
    sizes = [32, 128, 512, 2048]
    fit = scaling.linear_fit(sizes, [0.5 + 0.25 * n for n in sizes])
    assert fit["r2"] == pytest.approx(1.0, abs=1e-12)
    assert fit["slope"] == pytest.approx(0.25) and fit["intercept"] == pytest.approx(0.5)
    noisy = scaling.linear_fit(sizes, [1.0, 3.0, 2.0, 9.0])
    assert 0 < noisy["r2"] < 1
    assert scaling.linear_fit([1, 2, 3], [2.0, 2.0, 2.0]) == {
        "intercept": pytest.approx(2.0),
        "slope": pytest.approx(0.0),
        "r2": 1.0,
    }
    # per-unit cost at the largest size over that at the second: 1 for a line through 0, below 1 with a fixed cost
    assert scaling.per_unit_ratio(sizes, [3.0 * n for n in sizes]) == pytest.approx(1.0)
    assert scaling.per_unit_ratio(sizes, [10.0 + n for n in sizes]) < 1.0


def test_resized_workloads_keep_the_model_and_change_one_size():
    w1, w4 = workloads()["W1"], workloads()["W4"]
    big = resized(w1, batch=2048)
    assert (big.batch, big.model, big.input_shape) == (2048, w1.model, (784,)) and "batch 2048" in big.title
    long = resized(w4, time_steps=200)
    assert (long.batch, long.input_shape) == (64, (200, 32)) and "T=200" in long.title
    assert resized(w1).title == w1.title and resized(w4).title == w4.title  # same size, same title as the suite's
    with pytest.raises(ValueError, match="only W1 and W4"):
        resized(workloads()["W2"], batch=8)
    sizes = {key: [size for size, _ in s.cases] for key, s in scaling.series().items()}
    assert sizes == {"W1": [32, 128, 512, 2048], "W4": [25, 50, 100, 200]}


def fnn_gradients(workload, params, state, x, y):
    """fnn's manual ``(loss, new state, grads)`` of the workload's loss (jitted for JAX arrays)."""
    grad_fn = fnn.value_and_grad(workload.model, workload.loss, method="manual")
    if not isinstance(x, np.ndarray):
        import jax

        grad_fn = jax.jit(grad_fn)
    (loss, new_state), grads = grad_fn(params, state, x, y)
    return float(loss), new_state, grads


def assert_same_gradients(got, want):
    """Leaf by leaf, the reference's gradients are fnn's (float32: relative 1e-4, and an
    absolute floor of 1e-5 of the largest entry for entries that are round-off around 0,
    such as the attention's key bias, whose exact gradient is zero). Gradients, not the
    params after an Adam step, whose first move is about ``-lr * sign(g)`` whatever ``|g|``."""
    got, want = dict(fnn.backend.tree_leaves_with_path(got)), dict(fnn.backend.tree_leaves_with_path(want))
    assert set(got) == set(want)
    scale = max(float(np.max(np.abs(np.asarray(v)))) for v in want.values())
    for path, value in want.items():
        np.testing.assert_allclose(np.asarray(got[path]), np.asarray(value), rtol=1e-4, atol=1e-5 * scale, err_msg=path)


class RecordGradients:
    """Stands in for the NumPy reference's optimizer: keeps the gradients it is given."""

    def update(self, params, grads):
        self.grads = copy.deepcopy(grads)


@pytest.mark.parametrize("key", ["W1", "W2"])
def test_numpy_reference_computes_fnns_gradients(key):
    workload = workloads(quick=True)[key]
    params, state = numpy_init(workload)
    x, y = workload.data()
    loss, _, grads = fnn_gradients(workload, params, state, x, y)
    if key == "W1":
        net = numpy_reference.mlp(copy.deepcopy(params), 2)
    else:
        net = numpy_reference.lenet(copy.deepcopy(params))
    net.optimizer = RecordGradients()
    assert np.isclose(net.train_step(x, y), loss, rtol=1e-5)
    assert_same_gradients(net.optimizer.grads, grads)


@pytest.mark.parametrize("key", ["W1", "W2", "W3", "W4", "W6"])
def test_plain_jax_reference_computes_fnns_gradients(key):
    import jax
    import jax.numpy as jnp

    from benchmarks import references

    workload = workloads(quick=True)[key]
    params, state = jax.tree.map(jnp.asarray, numpy_init(workload))
    x, y = (jnp.asarray(a) for a in workload.data())
    loss_fnn, _, grads_fnn = fnn_gradients(workload, params, state, x, y)
    loss_ref, grads_ref = jax.jit(jax.value_and_grad(references.loss_function(workload)))(params, x, y)
    assert np.isclose(float(loss_ref), loss_fnn, rtol=1e-5)
    assert_same_gradients(grads_ref, grads_fnn)


def torch_sgd_moves(workload, params, state, x, y, steps: int, lr: float):
    """PyTorch's loss and parameter moves over ``steps`` SGD steps from fnn's params, in fnn's layout."""
    import torch

    from benchmarks import torch_reference

    step = torch_reference.TorchStep(workload, params, state, x, y)
    step.optimizer = torch.optim.SGD(step.optimizer.param_groups[0]["params"], lr=lr)
    first = float(step().item())
    for _ in range(steps - 1):
        step()
    return first, _moves(params, step.export()[0])


def _moves(before, after) -> dict:
    """``{path: after - before}`` for every array of ``after`` (layers without params have none)."""
    start = dict(fnn.backend.tree_leaves_with_path(before))
    return {path: np.asarray(a, np.float64) - start[path] for path, a in fnn.backend.tree_leaves_with_path(after)}


def fnn_sgd_moves(workload, params, state, x, y, steps: int, lr: float):
    """fnn's loss and parameter moves over ``steps`` SGD steps (manual gradients, NumPy)."""
    opt = fnn.optim.sgd(lr)
    opt_state, now, first = opt.init(params), params, None
    for _ in range(steps):
        loss, state, grads = fnn_gradients(workload, now, state, x, y)
        first = loss if first is None else first
        updates, opt_state = opt.update(grads, opt_state, now)
        now = fnn.optim.apply_updates(now, updates)
    return first, _moves(params, now)


def test_pytorch_transformer_block_takes_fnns_sgd_steps():
    """Three SGD steps (whose moves are the gradients times the learning rate, unlike
    Adam's first step) from the same params: the same moves."""
    pytest.importorskip("torch")
    workload = workloads(quick=True)["W6"]
    params, state = numpy_init(workload)
    x, y = workload.data()
    loss_fnn, want = fnn_sgd_moves(workload, params, state, x, y, steps=3, lr=0.1)
    loss_torch, got = torch_sgd_moves(workload, params, state, x, y, steps=3, lr=0.1)
    assert np.isclose(loss_torch, loss_fnn, rtol=1e-5)
    assert_same_gradients(got, want)


def test_plain_jax_resnet_computes_fnns_gradients_and_state():
    import jax
    import jax.numpy as jnp

    from benchmarks import references, resnet_reference

    workload = workloads(quick=True)["W5"]
    params, state = jax.tree.map(jnp.asarray, numpy_init(workload))
    x, y = (jnp.asarray(a) for a in workload.data())
    loss_fnn, state_fnn, grads_fnn = fnn_gradients(workload, params, state, x, y)

    def loss(p):
        logits, new_state = resnet_reference.resnet_forward(p, state, x)
        return references.softmax_cross_entropy(logits, y), new_state

    (loss_ref, state_ref), grads_ref = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    assert np.isclose(float(loss_ref), loss_fnn, rtol=1e-5)
    assert_same_gradients(grads_ref, grads_fnn)
    for a, b in zip(fnn.backend.tree_leaves(state_ref), fnn.backend.tree_leaves(state_fnn)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_profile_lists_the_step_operations_with_their_times():
    from benchmarks import profile

    printed = []
    assert profile.main(["W2", "--quick", "--steps", "2", "--top", "50"], print_=printed.append) == 0
    assert printed[0] == "W2 manual step, 2 steps"
    rows = [line.split() for line in printed[2:-2]]
    assert rows, printed
    for row in rows:
        assert math.isfinite(float(row[1])) and float(row[1]) >= 0
    shapes = " ".join(printed)
    assert "f32[" in shapes and "dot_general" in shapes  # result shapes and source ops from the HLO
    wall = float(printed[-1].split()[-1])
    assert printed[-1].startswith("wall time per step") and math.isfinite(wall) and wall > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["W9"], "workload must be one of W1, W2, W3, W4, W5, W6; got 'W9'"),
        (["W1", "--method", "jvp"], "invalid choice"),
    ],
)
def test_profile_rejects_an_unknown_workload_or_method(argv, message, capsys):
    from benchmarks import profile

    with pytest.raises(SystemExit):
        profile.main(argv)
    assert message in capsys.readouterr().err
