"""The optimizer protocol: chain, apply_updates, bad input, NumPy without JAX,
interoperability with optax, and the example."""

import doctest
import importlib
import os
import pathlib
import subprocess
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest

from fnn import backend, optim

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_python(*args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, *args], check=False, capture_output=True, text=True, env=env, timeout=120, **kwargs
    )


# --------------------------------------------------------------------------- #
# chain and apply_updates
# --------------------------------------------------------------------------- #


def test_chain_state_is_keyed_by_name():
    opt = optim.chain(optim.clip(1.0), optim.clip(2.0), optim.adam(0.1), name="mine")
    state = opt.init({"w": np.zeros(2)})
    assert opt.name == "mine"
    assert sorted(state) == ["adam", "clip", "clip_1"]
    assert sorted(state["adam"]) == ["scale_by_adam", "scale_by_learning_rate"]
    init, update = opt  # unpacks like optax's (init, update)
    assert init is opt.init and update is opt.update


def test_chain_applies_left_to_right():
    g = {"w": np.array([4.0])}
    a = optim.chain(optim.clip(1.0), optim.scale(3.0))
    b = optim.chain(optim.scale(3.0), optim.clip(1.0))
    assert a.update(g, a.init(g))[0]["w"].tolist() == [3.0]
    assert b.update(g, b.init(g))[0]["w"].tolist() == [1.0]


def test_chain_accepts_any_object_with_init_and_update():
    """The protocol is only init / update: a foreign transform (optax's shape) chains in."""
    double = types.SimpleNamespace(
        init=lambda params: (),
        update=lambda updates, state, params=None: ({k: 2 * v for k, v in updates.items()}, state),
    )
    opt = optim.chain(double, optim.sgd(0.5))
    state = opt.init({"w": np.zeros(1)})
    assert "transform" in state
    updates, _ = opt.update({"w": np.ones(1)}, state)
    assert updates["w"].tolist() == [-1.0]


def test_chain_rejects_non_optimizers_and_foreign_states():
    with pytest.raises(TypeError, match="argument 1 must be an optimizer"):
        optim.chain(optim.clip(1.0), 0.1)
    opt = optim.chain(optim.clip(1.0))
    with pytest.raises(ValueError, match="keys"):
        opt.update({"w": np.ones(1)}, optim.adam(0.1).init({"w": np.ones(1)}))


def test_apply_updates_keeps_param_dtype_and_inputs(backend_name):
    xp = jnp if backend_name == "jax" else np
    params = {"a": xp.ones(2, dtype=xp.float32), "b": xp.ones(2, dtype=xp.float64)}
    updates = {"a": xp.full(2, 0.5, dtype=xp.float64), "b": xp.full(2, 0.25, dtype=xp.float32)}
    new = optim.apply_updates(params, updates)
    assert new["a"].dtype == np.float32 and new["b"].dtype == np.float64
    assert np.asarray(new["a"]).tolist() == [1.5, 1.5] and np.asarray(params["a"]).tolist() == [1.0, 1.0]


# --------------------------------------------------------------------------- #
# Bad input: clear errors naming the argument, the value or the first differing path
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "build, error, message",
    [
        (
            lambda: optim.adam(-1.0),
            ValueError,
            "adam: learning_rate must be a finite number >= 0 or a schedule; got -1.0",
        ),
        (lambda: optim.sgd(float("nan")), ValueError, "sgd: learning_rate .* got nan"),
        (lambda: optim.rmsprop(float("inf")), ValueError, "rmsprop: learning_rate .* got inf"),
        (lambda: optim.adamw("0.1"), TypeError, "adamw: learning_rate"),
        (lambda: optim.sgd(0.1, momentum=-0.5), ValueError, "sgd: momentum must be a finite number in \\[0, 1\\); got -0.5"),
        (
            lambda: optim.rmsprop(0.1, decay=1.0),
            ValueError,
            r"rmsprop: decay must be a finite number in \[0, 1\); got 1.0",
        ),
        (lambda: optim.rmsprop(0.1, decay=-0.1), ValueError, "rmsprop: decay"),
        (lambda: optim.adam(0.1, b1=1.5), ValueError, "adam: b1"),
        (lambda: optim.adam(0.1, b2=-0.1), ValueError, "adam: b2"),
        (lambda: optim.adam(0.1, eps=0.0), ValueError, "adam: eps must be a finite number > 0; got 0.0"),
        (lambda: optim.adagrad(0.1, eps=-1e-7), ValueError, "adagrad: eps"),
        (lambda: optim.adagrad(0.1, initial_accumulator_value=-1.0), ValueError, "initial_accumulator_value"),
        (lambda: optim.adamw(0.1, weight_decay=-1e-4), ValueError, "adamw: weight_decay"),
        (lambda: optim.clip_by_global_norm(0.0), ValueError, "clip_by_global_norm: max_norm"),
        (lambda: optim.clip(-1.0), ValueError, "clip: max_delta"),
        (lambda: optim.trace(-0.9), ValueError, "trace: decay"),
        (lambda: optim.scale(float("nan")), ValueError, "scale: step_size"),
        (lambda: optim.freeze(lambda p, l: True, optimizer="adam"), TypeError, "freeze: optimizer"),
        (lambda: optim.partition({}, {}), TypeError, "partition: transforms"),
    ],
)
def test_bad_hyperparameters(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_grads_tree_differing_from_state(backend_name):
    xp = jnp if backend_name == "jax" else np
    params = {"dense": {"w": xp.ones((2, 3)), "b": xp.ones(3)}, "dense_1": {"w": xp.ones((3, 1))}}
    for opt in (optim.adam(0.1), optim.sgd(0.1, momentum=0.9), optim.rmsprop(0.1), optim.adagrad(0.1)):
        state = opt.init(params)
        missing = {"dense": {"w": xp.ones((2, 3))}, "dense_1": {"w": xp.ones((3, 1))}}
        with pytest.raises(ValueError, match="grads has no leaf at 'dense/b'"):
            opt.update(missing, state, params)
        extra = {**params, "dense_2": {"w": xp.ones(1)}}
        with pytest.raises(ValueError, match="'dense_2/w'"):
            opt.update(extra, state)
        wrong_shape = {**params, "dense_1": {"w": xp.ones((1, 3))}}
        with pytest.raises(ValueError, match=r"'dense_1/w' has shape \(1, 3\)"):
            opt.update(wrong_shape, state)
    with pytest.raises(ValueError, match="updates has no leaf at 'dense/b'"):
        optim.apply_updates(params, missing)


# --------------------------------------------------------------------------- #
# NumPy alone, and optax
# --------------------------------------------------------------------------- #


def test_import_and_train_without_jax():
    code = (
        "import sys; sys.modules['jax'] = None\n"
        "import numpy as np\n"
        "import fnn.optim as optim\n"
        "from fnn import backend\n"
        "assert not backend.HAS_JAX\n"
        "opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(optim.cosine_decay(0.1, decay_steps=5), mask=optim.decay_mask))\n"
        "params = {'w': np.ones((2, 2), np.float32), 'b': np.zeros(2, np.float32)}\n"
        "state = opt.init(params)\n"
        "for _ in range(3):\n"
        "    updates, state = opt.update(params, state, params)\n"
        "    params = optim.apply_updates(params, updates)\n"
        "assert params['w'].dtype == np.float32 and isinstance(params['b'], np.ndarray)\n"
        "assert 'jax' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok', float(optim.get_learning_rate(state)))\n"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_interoperates_with_optax():
    optax = pytest.importorskip("optax")
    params = {"w": jnp.asarray([1.0, -2.0, 3.0]), "b": jnp.asarray([0.5])}
    grads_seq = [{"w": jnp.asarray([0.1 * k, -1.0, 2.0]), "b": jnp.asarray([k - 1.5])} for k in range(4)]

    def run(opt):
        p, s = params, opt.init(params)
        for g in grads_seq:
            u, s = opt.update(g, s, p)
            p = optax.apply_updates(p, u)
        return p

    reference = run(optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1)))
    mixed = [
        optim.chain(optax.clip_by_global_norm(1.0), optim.adam(0.1)),  # optax inside fnn
        optax.chain(optim.clip_by_global_norm(1.0), optax.adam(0.1)),  # fnn inside optax
        optax.chain(optax.clip_by_global_norm(1.0), optim.scale_by_adam(), optax.scale(-0.1)),
    ]
    for opt in mixed:
        got = run(opt)
        for a, b in zip(backend.tree_leaves(got), backend.tree_leaves(reference)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


@pytest.mark.parametrize(
    "module",
    [
        "base",
        "calls",
        "schedules",
        "learning_rate",
        "transforms",
        "masking",
        "weight_decay",
        "clipping",
        "wrappers",
        "aliases",
    ],
)
def test_docstring_examples_run(module):
    mod = importlib.import_module(f"fnn.optim.{module}")
    failed, attempted = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE, report=False)
    assert attempted > 0 and failed == 0, f"{failed} of {attempted} doctest examples failed in fnn.optim.{module}"


# --------------------------------------------------------------------------- #
# The example
# --------------------------------------------------------------------------- #


def test_example_runs_and_its_claims_hold(tmp_path):
    out = tmp_path / "paths.png"
    example = ROOT / "examples" / "optimizers.py"
    # run as a script, with JAX blocked: the example needs NumPy only
    code = (
        "import runpy, sys; sys.modules['jax'] = None; "
        f"sys.argv = [{str(example)!r}, '--out', {str(out)!r}]; "
        f"runpy.run_path({str(example)!r}, run_name='__main__')"
    )
    result = run_python("-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = {}
    for line in result.stdout.splitlines():
        words = line.split()
        if words and words[0] in {"SGD", "Momentum", "AdaGrad", "RMSProp", "Adam"}:
            table[words[0]] = (float(words[-2]), float(words[-1]))  # distance, path length
    assert set(table) == {"SGD", "Momentum", "AdaGrad", "RMSProp", "Adam"}
    sgd_distance, sgd_length = table["SGD"]
    for name in ("Momentum", "AdaGrad", "RMSProp"):
        assert table[name][0] < sgd_distance, name  # closer after the same number of steps
    for name in ("Momentum", "AdaGrad", "RMSProp", "Adam"):
        assert table[name][1] < sgd_length / 2, name  # no zig-zag: a path less than half as long
    assert table["Adam"][0] <= 1.1 * sgd_distance  # "about as close as SGD", along a shorter path
