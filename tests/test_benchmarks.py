"""The benchmark suite runs end to end (``python -m benchmarks --quick``) and
its hand-written references compute what fnn computes. No timing assertions:
timings depend on the machine and its load."""

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fnn
from benchmarks import numpy_reference
from benchmarks.suite import fnn_step, numpy_init
from benchmarks.workloads import workloads

ROOT = Path(__file__).resolve().parents[1]


def test_quick_suite_runs_and_writes_three_files(tmp_path):
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
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
    assert set(results["times"]) == {"W1", "W2", "W3", "W4", "W5"}
    for row in results["times"].values():
        assert {"fnn manual", "fnn autodiff"} <= set(row)
        for seconds in row.values():
            assert math.isfinite(seconds) and seconds > 0
    for mem in results["memory"].values():
        assert all(v is None or v >= 0 for v in mem.values())
    assert all("MISMATCH" not in note for notes in results["notes"].values() for note in notes)


@pytest.mark.parametrize("key", ["W1", "W2"])
def test_numpy_reference_takes_the_same_adam_step_as_fnn(key):
    workload = workloads(quick=True)[key]
    params, state = numpy_init(workload)
    x, y = workload.data()
    step, opt = fnn_step(workload, "manual")
    new_params, _, _, loss = step(params, state, opt.init(params), x, y)
    if key == "W1":
        net = numpy_reference.mlp(copy.deepcopy(params), 2)
    else:
        net = numpy_reference.lenet(copy.deepcopy(params))
    assert np.isclose(net.train_step(x, y), float(loss), rtol=1e-5)
    for name, leaves in net.params.items():
        for leaf, value in leaves.items():
            np.testing.assert_allclose(value, new_params[name][leaf], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("key", ["W1", "W2", "W3", "W4"])
def test_plain_jax_reference_takes_the_same_adam_step_as_fnn(key):
    import jax
    import jax.numpy as jnp

    from benchmarks import references

    workload = workloads(quick=True)[key]
    params, state = jax.tree.map(jnp.asarray, numpy_init(workload))
    x, y = (jnp.asarray(a) for a in workload.data())
    step, opt = fnn_step(workload, "manual")
    new_fnn, _, _, loss_fnn = jax.jit(step)(params, state, opt.init(params), x, y)
    new_ref, _, loss_ref = jax.jit(references.train_step(workload))(params, references.adam_init(params), x, y)
    assert np.isclose(float(loss_ref), float(loss_fnn), rtol=1e-5)
    for a, b in zip(fnn.backend.tree_leaves(new_ref), fnn.backend.tree_leaves(new_fnn)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_plain_jax_resnet_takes_the_same_adam_step_as_fnn():
    import jax
    import jax.numpy as jnp

    from benchmarks import references, resnet_reference

    workload = workloads(quick=True)["W5"]
    params, state = jax.tree.map(jnp.asarray, numpy_init(workload))
    x, y = (jnp.asarray(a) for a in workload.data())
    step, opt = fnn_step(workload, "manual")
    new_fnn, state_fnn, _, loss_fnn = jax.jit(step)(params, state, opt.init(params), x, y)
    ref = jax.jit(resnet_reference.train_step())
    new_ref, state_ref, _, loss_ref = ref(params, state, references.adam_init(params), x, y)
    assert np.isclose(float(loss_ref), float(loss_fnn), rtol=1e-5)
    for a, b in zip(fnn.backend.tree_leaves((new_ref, state_ref)), fnn.backend.tree_leaves((new_fnn, state_fnn))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
