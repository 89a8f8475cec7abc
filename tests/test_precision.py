"""fnn.precision (a mixed-precision policy) and fnn.optim.dynamic_loss_scale."""

import jax
import numpy as np
import pytest

import fnn
import fnn.precision
from fnn import data, losses, models, optim, train
from fnn import layers as L

CE = losses.softmax_cross_entropy


def small_cnn():
    return L.serial(L.conv2d(4, 3, padding="same"), L.batch_norm(), L.relu, L.flatten, L.dense(10), name="cnn")


@pytest.mark.parametrize("backend_name, compute", [("numpy", "float16"), ("jax", "bfloat16"), ("jax", "float16")])
def test_policy_keeps_float32_params_and_output_and_computes_in_half(compute, backend_name):
    model = fnn.precision.policy(small_cnn(), compute=compute)
    params, state = model.init(fnn.key(0, backend=backend_name), (None, 8, 8, 1))
    x, y = data.load_digits()
    x, y = x[:16], y[:16]
    fwd = lambda p, s, x: model.fwd(p, s, x, train=True)
    out, new_state, residuals = (fwd if backend_name == "numpy" else jax.jit(fwd))(params, state, x)
    assert {leaf.dtype for leaf in fnn.backend.tree_leaves(params)} == {np.dtype("float32")}
    assert out.dtype == np.float32
    assert {leaf.dtype for leaf in fnn.backend.tree_leaves(new_state)} == {np.dtype("float32")}
    computed = {str(leaf.dtype) for leaf in fnn.backend.tree_leaves(residuals) if hasattr(leaf, "dtype") and leaf.size}
    assert compute in computed, computed
    grad_fn = fnn.value_and_grad(model, CE, "manual")
    (value, _), grads = (grad_fn if backend_name == "numpy" else jax.jit(grad_fn))(params, state, x, y)
    assert {leaf.dtype for leaf in fnn.backend.tree_leaves(grads)} == {np.dtype("float32")}
    assert np.isfinite(float(value))


@pytest.mark.parametrize("compute, tol", [("bfloat16", 3e-2), ("float16", 3e-3)])
def test_policy_manual_backward_matches_autodiff(compute, tol):
    # no batch norm here: the bias before it has a zero gradient, pure round-off in 16 bits
    model = fnn.precision.policy(L.serial(L.conv2d(4, 3), L.relu, L.flatten, L.dense(10)), compute=compute)
    params, state = model.init(fnn.key(0), (None, 8, 8, 1))
    x, y = data.load_digits()
    manual = jax.jit(fnn.value_and_grad(model, CE, "manual"))(params, state, x[:32], y[:32])[1]
    auto = jax.jit(fnn.value_and_grad(model, CE, "autodiff"))(params, state, x[:32], y[:32])[1]
    # relative to the largest gradient (16-bit sums over the batch are coarse for small leaves)
    scale = max(float(np.abs(b).max()) for b in jax.tree.leaves(auto))
    for (path, a), b in zip(fnn.backend.tree_leaves_with_path(manual), jax.tree.leaves(auto)):
        assert a.dtype == b.dtype == np.float32, path
        assert float(np.abs(np.asarray(a) - np.asarray(b)).max()) / scale < tol, path


def test_policy_bad_dtype_is_named():
    with pytest.raises(TypeError, match="compute must be .*int32"):
        fnn.precision.policy(L.dense(2), compute="int32")
    with pytest.raises(TypeError, match="fnn Layer"):
        fnn.precision.policy(lambda x: x)


# --------------------------------------------------------------------------- #
# Dynamic loss scaling
# --------------------------------------------------------------------------- #


def test_loss_scale_grows_after_interval_and_shrinks_on_overflow(backend_name):
    xp = np if backend_name == "numpy" else jax.numpy
    opt = optim.dynamic_loss_scale(optim.sgd(1.0), init_scale=4.0, growth_interval=2)
    state = opt.init({"w": xp.zeros(1, np.float32)})
    scales, skipped = [], []
    for g in (4.0, 4.0, np.inf, 2.0, np.nan, 1.0):  # scaled gradients
        updates, state = opt.update({"w": xp.asarray([g], np.float32)}, state)
        scales.append(float(state.scale))
        skipped.append(int(state.skipped))
    assert scales == [4.0, 8.0, 4.0, 4.0, 2.0, 2.0]
    assert skipped == [0, 0, 1, 1, 2, 2]
    assert float(updates["w"][0]) == -0.5  # 1.0 / scale 2


def test_loss_scale_bounds_and_arguments():
    opt = optim.dynamic_loss_scale(optim.sgd(1.0), init_scale=2.0, min_scale=1.0, max_scale=4.0, growth_interval=1)
    state = opt.init({"w": np.zeros(1, np.float32)})
    for g in (np.inf, np.inf, np.inf):
        _, state = opt.update({"w": np.array([g], np.float32)}, state)
    assert float(state.scale) == 1.0
    for g in (1.0, 1.0, 1.0, 1.0):
        _, state = opt.update({"w": np.array([g], np.float32)}, state)
    assert float(state.scale) == 4.0
    with pytest.raises(ValueError, match="factor must be > 1; got 1"):
        optim.dynamic_loss_scale(optim.sgd(1.0), factor=1)
    with pytest.raises(ValueError, match="min_scale <= init_scale"):
        optim.dynamic_loss_scale(optim.sgd(1.0), init_scale=0.5)


@pytest.mark.parametrize("method", ["manual", "autodiff"])
def test_injected_overflow_halves_the_scale_and_skips_the_step(method):
    # float16's largest value is 65504: a loss scale of 2**24 makes the scaled
    # output cotangent (softmax - onehot) / 32 * 2**24 overflow to inf
    model = fnn.precision.policy(models.mlp((16,), num_classes=10), compute="float16")
    opt = optim.dynamic_loss_scale(optim.adam(1e-2), init_scale=2.0**24, growth_interval=1000)
    ts = train.init_state(model, opt, fnn.key(0), (None, 8, 8, 1))
    step = jax.jit(train.train_step(model, CE, opt, method))
    x, y = data.load_digits()
    new, out = step(ts, x[:32], y[:32])
    assert bool(out["finite"]) and np.isfinite(float(out["loss"]))  # the loss is fine: fit goes on
    assert float(new.opt_state.scale) == 2.0**23 and int(new.opt_state.skipped) == 1
    assert not bool(new.opt_state.last_finite)
    for a, b in zip(jax.tree.leaves((ts.params, ts.opt_state.inner_state)),
                    jax.tree.leaves((new.params, new.opt_state.inner_state))):
        np.testing.assert_array_equal(a, b)  # skipped: params and Adam's moments untouched
    while not bool(new.opt_state.last_finite):  # halves until the gradients fit in float16
        new, out = step(new, x[:32], y[:32])
    skipped = int(new.opt_state.skipped)
    assert skipped >= 2 and float(new.opt_state.scale) == 2.0 ** (24 - skipped)
    assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(ts.params), jax.tree.leaves(new.params)))


def test_loss_scaled_step_reports_the_unscaled_loss(backend_name):
    model = models.mlp((8,), num_classes=10)
    x, y = data.load_digits()
    losses_ = []
    for opt in (optim.sgd(0.1), optim.dynamic_loss_scale(optim.sgd(0.1), init_scale=1024.0)):
        ts = train.init_state(model, opt, fnn.key(0, backend=backend_name), (None, 8, 8, 1))
        step = train.train_step(model, CE, opt)
        new, out = (step if backend_name == "numpy" else jax.jit(step))(ts, x[:16], y[:16])
        losses_.append((float(out["loss"]), jax.tree.leaves(jax.tree.map(np.asarray, new.params))))
    (l1, p1), (l2, p2) = losses_
    assert l1 == pytest.approx(l2, rel=1e-6)
    for a, b in zip(p1, p2):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)  # float32: scaling by 2**10 is exact up to round-off


@pytest.mark.parametrize("compute, method", [("float16", "manual"), ("bfloat16", "autodiff")])
def test_half_precision_training_reaches_95_percent_on_digits(compute, method):
    x, y = data.load_digits()
    x_train, y_train, x_test, y_test = data.train_val_split(x, y, 0.2, seed=0)
    model = fnn.precision.policy(models.mlp((64,), num_classes=10), compute=compute)
    # the scale starts too high on purpose: the first steps overflow and are skipped
    opt = optim.dynamic_loss_scale(optim.adam(3e-3), init_scale=2.0**24, growth_interval=50)
    ts = train.init_state(model, opt, fnn.key(0), (None, 8, 8, 1))
    ts, history = train.fit(model, CE, opt, ts, (x_train, y_train), epochs=8, batch_size=64,
                            validation_data=(x_test, y_test), method=method, progress=False)
    assert history.stopped is None
    assert history["val_accuracy"][-1] >= 0.95, history["val_accuracy"]
    assert jax.tree.leaves(ts.params)[0].dtype == np.float32
    if compute == "float16":
        assert int(ts.opt_state.skipped) >= 1  # 2**24 overflowed at first ...
        assert 2.0**10 <= float(ts.opt_state.scale) < 2.0**24  # ... and settled lower


def test_example_mixed_float16_with_loss_scaling(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "precision.py"
    spec = importlib.util.spec_from_file_location("precision_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    results = example.main(["--out", str(tmp_path / "p.png"), "--epochs", "2", "--hidden", "32",
                            "--dtypes", "mixed-float16", "--growth-interval", "20"])
    f16 = results["mixed-float16"]
    assert f16["param_dtype"] == "float32" and f16["eps"] == 2**-10 and f16["bytes"] == 2
    assert f16["skipped_steps"] >= 1 and f16["loss_scale"] < 2**24
    assert all(r["train_loss"][-1] < r["train_loss"][0] for r in results.values())
    assert "dynamic loss scale" in capsys.readouterr().out


@pytest.mark.parametrize("module", ["fnn.optim.loss_scale", "fnn.precision", "fnn.parallel"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    failed, attempted = doctest.testmod(importlib.import_module(module), optionflags=doctest.NORMALIZE_WHITESPACE,
                                        report=False)
    assert attempted > 0 and failed == 0, f"{failed} of {attempted} doctest examples failed in {module}"
