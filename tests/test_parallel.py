"""fnn.parallel: data-parallel training over a 4-device CPU mesh equals one device.

The test process has already started JAX with one CPU device, so the
multi-device checks run in one subprocess (this file run as a script) with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``. The subprocess runs
every case and prints one JSON report; the tests below assert on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DEVICES = 4
STEPS = 20
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- #
# The subprocess
# --------------------------------------------------------------------------- #


def rel_diff(a, b, floor: float = 1e-3) -> float:
    """``max |a - b| / max(max |a|, max |b|, floor)`` over every leaf of two pytrees.

    The floor matters for the bias of a layer just before batch norm: its true
    gradient is zero, so both runs move it by round-off alone (~1e-8)."""
    import jax

    worst = 0.0
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
        scale = max(np.abs(u).max(), np.abs(v).max(), floor)
        worst = max(worst, float(np.abs(u - v).max() / scale))
    return worst


def models():
    import fnn
    from fnn import layers as L

    cnn_bn = L.serial(L.conv2d(8, 3, padding="same"), L.batch_norm(), L.relu, L.flatten, L.dense(10), name="cnn_bn")
    return {"mlp": fnn.models.mlp((32,), num_classes=10), "cnn_bn": cnn_bn}


def error_of(fn) -> str:
    try:
        fn()
    except (TypeError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    return "no error"


def worker() -> dict:
    import jax

    import fnn
    from fnn import parallel, train

    assert len(jax.devices()) == DEVICES, jax.devices()
    x, y = fnn.data.load_digits()
    batch = 32
    # SGD with momentum: Adam divides by sqrt(v) and so turns the round-off noise
    # in a zero gradient (the bias before batch norm) into full-size steps
    loss, opt = fnn.losses.softmax_cross_entropy, fnn.optim.sgd(0.1, momentum=0.9)
    mesh = parallel.data_mesh()
    report = {"devices": len(jax.devices()), "equivalence": {}, "fit": {}}
    for name, model in models().items():
        host = train.init_state(model, opt, fnn.key(0, backend="numpy"), (None, 8, 8, 1))
        for method in ("manual", "autodiff"):
            single = jax.jit(train.train_step(model, loss, opt, method))
            sharded = jax.jit(train.train_step(model, loss, opt, method, mesh=mesh))
            ts1 = jax.device_put(host._replace(key=None))._replace(key=fnn.key(0))
            tsn = parallel.replicate(ts1, mesh)
            shardings_ok = True
            for i in range(STEPS):
                xb, yb = x[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]
                ts1, _ = single(ts1, xb, yb)
                xs, ys = parallel.shard_batch((xb, yb), mesh)
                shardings_ok &= xs.sharding.spec == jax.sharding.PartitionSpec("data")
                shardings_ok &= len({s.device for s in xs.addressable_shards}) == DEVICES
                shardings_ok &= xs.addressable_shards[0].data.shape[0] == batch // DEVICES
                tsn, _ = sharded(tsn, xs, ys)
            leaves = jax.tree.leaves(tsn.params)
            shardings_ok &= all(leaf.sharding.is_fully_replicated for leaf in leaves)
            shardings_ok &= all(len(leaf.sharding.device_set) == DEVICES for leaf in leaves)
            report["equivalence"][f"{name}/{method}"] = {
                "params": rel_diff(ts1.params, tsn.params),
                "state": rel_diff(ts1.state, tsn.state) if jax.tree.leaves(ts1.state) else 0.0,
                "opt_state": rel_diff(ts1.opt_state, tsn.opt_state),
                "sharded": bool(shardings_ok),
                "leaves": {path: rel_diff(u, v) for (path, u), v in
                           zip(fnn.backend.tree_leaves_with_path(ts1.params), jax.tree.leaves(tsn.params))},
            }

    # fit(mesh=...) equals fit(): 203 examples = 6 batches of 32 + a tail of 11 (not divisible by 4)
    model = models()["cnn_bn"]
    host = train.init_state(model, opt, fnn.key(1, backend="numpy"), (None, 8, 8, 1))
    for n in (200, 203):
        runs = {}
        for use_mesh in (None, mesh):
            ts = jax.device_put(host._replace(key=None))._replace(key=fnn.key(1))
            runs[use_mesh is not None] = train.fit(model, loss, opt, ts, (x[:n], y[:n]), epochs=2, batch_size=batch,
                                                    validation_data=(x[-64:], y[-64:]), mesh=use_mesh, progress=False)
        (ts1, h1), (tsn, hn) = runs[False], runs[True]
        report["fit"][str(n)] = {
            "params": rel_diff(ts1.params, tsn.params),
            "loss": abs(h1["train_loss"][-1] - hn["train_loss"][-1]),
            "val_accuracy": abs(h1["val_accuracy"][-1] - hn["val_accuracy"][-1]),
            "replicated": all(leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == DEVICES
                              for leaf in jax.tree.leaves(tsn.params)),
        }

    # bad input
    model = models()["mlp"]
    ts = jax.device_put(host._replace(key=None))._replace(key=fnn.key(0))
    no_data = jax.sharding.Mesh(np.array(jax.devices()), ("model",))
    report["errors"] = {
        "mesh_axis_step": error_of(lambda: train.train_step(model, loss, opt, mesh=no_data)),
        "mesh_axis_fit": error_of(lambda: train.fit(model, loss, opt, ts, (x[:64], y[:64]), epochs=1, mesh=no_data,
                                                    progress=False)),
        "not_a_mesh": error_of(lambda: parallel.shard_batch(x[:8], "data")),
        "shard_batch": error_of(lambda: parallel.shard_batch(x[:30], mesh)),
        "fit_batch": error_of(lambda: train.fit(model, loss, opt, ts, (x[:64], y[:64]), epochs=1, batch_size=30,
                                                mesh=mesh, progress=False)),
        "step_batch": error_of(lambda: jax.jit(train.train_step(model, loss, opt, mesh=mesh))(
            parallel.replicate(ts, mesh), x[:30], y[:30])),
    }
    return report


# --------------------------------------------------------------------------- #
# The tests
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def report():
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, __file__], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_subprocess_sees_four_devices(report):
    assert report["devices"] == DEVICES


@pytest.mark.parametrize("case", ["mlp/manual", "mlp/autodiff", "cnn_bn/manual", "cnn_bn/autodiff"])
def test_sharded_steps_equal_one_device(report, case):
    result = report["equivalence"][case]
    assert result["sharded"], "the batch was not split over 4 devices, or the params were not replicated"
    for path, error in result["leaves"].items():
        # the conv bias just before batch norm has a zero gradient: both runs move it by
        # round-off alone, so only its absolute difference is small (< 1e-3 * floor 1e-3)
        assert error < (1e-3 if path == "conv2d/b" else 1e-5), (path, error)
    assert result["opt_state"] < 1e-3, result
    assert result["state"] < 1e-5, result  # batch-norm running statistics: over the global batch


@pytest.mark.parametrize("n", ["200", "203"])
def test_fit_with_mesh_equals_fit(report, n):
    result = report["fit"][n]
    assert result["replicated"]
    assert result["params"] < 1e-3, result  # its worst leaf is the zero-gradient bias before batch norm
    assert result["loss"] < 1e-5 and result["val_accuracy"] < 1e-6, result


def test_mesh_without_data_axis_is_refused(report):
    for case in ("mesh_axis_step", "mesh_axis_fit"):
        message = report["errors"][case]
        assert message.startswith("ValueError") and "'data'" in message and "('model',)" in message, message
    assert report["errors"]["not_a_mesh"].startswith("TypeError"), report["errors"]["not_a_mesh"]


@pytest.mark.parametrize("case", ["shard_batch", "fit_batch", "step_batch"])
def test_indivisible_batch_names_both_numbers(report, case):
    message = report["errors"][case]
    assert message.startswith("ValueError") and "30 examples" in message and "4 devices" in message, message


def test_parallel_needs_jax_only_when_called():
    code = (
        "import sys; sys.modules['jax'] = None\n"
        "import fnn, fnn.parallel\n"
        "try:\n    fnn.parallel.data_mesh()\nexcept ImportError as e:\n    print('ImportError', e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "ImportError fnn.parallel needs JAX" in done.stdout


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    print(json.dumps(worker()))
