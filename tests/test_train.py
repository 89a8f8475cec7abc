"""fnn.train: the step, the scan-fused fit loop, evaluation, history."""

import jax
import numpy as np
import pytest

import fnn
from fnn import data, losses, models, optim, train
from fnn import layers as L

CE = losses.softmax_cross_entropy


def jax_state(model, opt, input_shape, seed=0):
    """``init_state`` on NumPy, moved to JAX with a JAX key: the same kind of state as
    ``init_state(..., fnn.key(seed))`` without compiling every initializer eagerly."""
    ts = train.init_state(model, opt, fnn.key(seed, backend="numpy"), input_shape)
    return jax.device_put(ts._replace(key=None))._replace(key=fnn.key(seed))


@pytest.fixture(scope="module")
def digits():
    x, y = data.load_digits()
    x_train, y_train, x_test, y_test = data.train_val_split(x, y, 0.2, seed=0)
    return x_train[:1408], y_train[:1408], x_test, y_test  # 1408 = 22 batches of 64: no partial batch


# one model for the tests that compile it, so that they share the compiled evaluation
MLP = models.mlp((128,))


@pytest.mark.parametrize("method", ["manual", "autodiff"])
def test_fit_reaches_97_percent_on_digits(digits, method):
    x_train, y_train, x_test, y_test = digits
    model, opt = MLP, optim.adam(3e-3)
    ts0 = jax_state(model, opt, (None, 8, 8, 1))
    ts, history = train.fit(model, CE, opt, ts0, (x_train, y_train), epochs=12, batch_size=64,
                            validation_data=(x_test, y_test), method=method, grad_stats=method == "autodiff",
                            progress=False)
    assert history["epoch"] == list(range(1, 13)) and history.stopped is None
    assert len(history.grad_stats) == (12 if method == "autodiff" else 0)  # computed inside the compiled step
    assert history["step"][-1] == int(ts.step) == 12 * 22
    assert history["train_loss"][-1] < history["train_loss"][0] / 5
    assert history["val_accuracy"][-1] >= 0.97, history.last
    scores = train.evaluate(model, ts.params, ts.state, x_test, y_test, loss=CE)
    assert scores["accuracy"] == pytest.approx(history["val_accuracy"][-1], abs=1e-6)
    assert not ts0.params["dense"]["w"].is_deleted()  # fit never invalidates the caller's state


def test_fit_runs_eagerly_on_numpy(digits):
    x_train, y_train, x_test, y_test = digits
    model, opt = models.mlp((32,), normalize=True, dropout_rate=0.1), optim.adam(1e-2)
    ts0 = train.init_state(model, opt, fnn.key(0, backend="numpy"), (None, 8, 8, 1))
    ts, history = train.fit(model, CE, opt, ts0, (x_train[:640], y_train[:640]), epochs=3, batch_size=64,
                            validation_data=(x_test, y_test), progress=False)
    assert isinstance(ts.params["dense"]["w"], np.ndarray) and isinstance(ts.key, np.random.Generator)
    assert history["val_accuracy"][-1] > 0.85, history.last
    # train=True threaded the batch-norm statistics; dropout got keys (it would raise without one)
    assert np.abs(ts.state["batch_norm"]["mean"]).max() > 0
    assert ts0.state["batch_norm"]["mean"].max() == 0


@pytest.mark.parametrize("backend_name", ["numpy", "jax"])
def test_the_last_partial_batch_is_one_extra_step(backend_name):
    """Example i is a one-hot row, so only example i moves row i of a bias-free
    linear model: from w = 0, one SGD step on a batch of B examples under mse
    sets w[i] = 2 lr y_i / B. Every row ends at that value for B = 4 or B = 2
    exactly once: each example contributes once, in a batch of 4 or in the
    final batch of 2."""
    n, lr = 10, 0.1
    x, y = np.eye(n, dtype=np.float32), np.arange(1, n + 1, dtype=np.float32)[:, None]
    model, opt = L.serial(L.dense(1, use_bias=False)), optim.sgd(lr)
    ts = train.init_state(model, opt, fnn.key(0, backend="numpy"), (None, n))
    ts = ts._replace(params=fnn.backend.tree_map(lambda p: p * 0, ts.params))
    if backend_name == "jax":
        ts = jax.device_put(ts._replace(key=None))._replace(key=fnn.key(0))
    ts, history = train.fit(model, losses.mse, opt, ts, (x, y), epochs=1, batch_size=4, progress=False)
    sizes = np.round(2 * lr * y[:, 0] / np.asarray(ts.params["dense"]["w"])[:, 0]).astype(int)  # B_i
    assert sorted(sizes.tolist()) == [2, 2] + [4] * 8
    assert int(ts.step) == 3 and history.last["step"] == 3


@pytest.mark.parametrize("backend_name", ["numpy", "jax"])
def test_a_non_finite_loss_stops_with_epoch_and_batch_named(backend_name):
    x, y = data.load_digits(images=False)
    x, y = x[:320], y[:320]  # 5 batches of 64 per epoch
    # a fine learning rate for 7 updates, then 1e30: the 8th update (epoch 2, batch 3) blows up
    # the weights, so the loss of the 9th (epoch 2, batch 4) is not finite
    opt = optim.sgd(optim.piecewise_constant(0.01, boundaries_and_values={7: 1e30}))
    model = L.serial(L.dense(32), L.relu, L.dense(10))
    ts0 = train.init_state(model, opt, fnn.key(0, backend="numpy"), (None, 64))
    ts0 = jax_state(model, opt, (None, 64)) if backend_name == "jax" else ts0
    ts, history = train.fit(model, CE, opt, ts0, (x, y), epochs=5, batch_size=64, progress=False)
    stop = history.stopped
    assert stop is not None and (stop["epoch"], stop["batch"], stop["step"]) == (2, 4, 9)
    assert "epoch 2, batch 4 of 5" in stop["message"]
    assert len(history) == 1  # epoch 1 finished; epoch 2 did not
    assert int(ts.step) == 8  # the state after the last good update (the 8th), returned, not raised
    params = fnn.backend.to_numpy(ts.params)
    with np.errstate(over="ignore", invalid="ignore"):
        loss_after = CE(model.apply(params, {"dense": {}, "relu": {}, "dense_1": {}}, x)[0], y)
    assert not np.isfinite(float(loss_after))  # ...which is the one that produced the non-finite loss


def test_gradient_statistics_show_vanishing_gradients():
    x, y = data.load_digits(images=False)
    sigmoid_net = [layer for _ in range(5) for layer in (L.dense(32, w_init=fnn.initializers.normal(0.1)), L.sigmoid)]
    model, opt = L.serial(*sigmoid_net, L.dense(10, name="out")), optim.sgd(0.1)
    ts = train.init_state(model, opt, fnn.key(0, backend="numpy"), (None, 64))
    ts, history = train.fit(model, CE, opt, ts, (x[:512], y[:512]), epochs=1, batch_size=128, grad_stats=True,
                            progress=False)
    stats = history.grad_stats[0]
    assert set(stats) == {path for path, _ in fnn.backend.tree_leaves_with_path(ts.params)}
    assert set(stats["dense/w"]) == {"grad_norm", "grad_max", "nonfinite", "update_ratio"}
    assert all(s["nonfinite"] == 0 and s["update_ratio"] > 0 for s in stats.values())
    # saturated sigmoids: the gradient shrinks layer after layer on the way back to the input
    assert stats["dense/w"]["grad_norm"] < stats["dense_4/w"]["grad_norm"] / 10
    assert stats["dense/w"]["grad_max"] <= stats["dense/w"]["grad_norm"]


def test_train_step_is_pure_and_the_same_on_numpy_and_under_jit():
    model, opt = L.serial(L.dense(8), L.tanh, L.dense(3)), optim.adam(0.1)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 4)).astype(np.float32), rng.integers(0, 3, 6).astype(np.int32)
    ts = train.init_state(model, opt, fnn.key(0, backend="numpy"), (None, 4))
    step = train.train_step(model, CE, opt, "manual")
    a, out_a = step(ts, x, y)
    b, _ = step(ts, x, y)
    np.testing.assert_array_equal(a.params["dense"]["w"], b.params["dense"]["w"])  # same input, same output
    assert set(out_a) == {"loss", "finite", "accuracy"} and int(a.step) == 1
    jax_ts = ts._replace(**{f: fnn.backend.tree_map(jax.numpy.asarray, getattr(ts, f))
                            for f in ("params", "state", "opt_state", "step")}, key=fnn.key(0))
    jitted = jax.jit(step, donate_argnums=0)
    c, out_c = jitted(jax_ts, x, y)
    np.testing.assert_allclose(np.asarray(c.params["dense"]["w"]), a.params["dense"]["w"], rtol=1e-5, atol=1e-6)
    assert float(out_c["loss"]) == pytest.approx(float(out_a["loss"]), rel=1e-6)


def test_evaluate_and_predict_do_not_depend_on_the_batch_size(digits):
    _, _, x, y = digits  # 360 examples
    params, state = jax.device_put(MLP.init(fnn.key(0, backend="numpy"), (None, 8, 8, 1)))
    whole = train.evaluate(MLP, params, state, x, y, loss=CE, batch_size=1000)
    pieces = train.evaluate(MLP, params, state, x, y, loss=CE, batch_size=256)  # 256 + 104, as in fit
    assert whole == pytest.approx(pieces, rel=1e-5)
    numpy_params, numpy_state = fnn.backend.to_numpy(params), fnn.backend.to_numpy(state)
    on_numpy = train.evaluate(MLP, numpy_params, numpy_state, x, y, loss=CE, batch_size=32)
    assert on_numpy == pytest.approx(whole, rel=1e-5)
    logits = train.predict(MLP, params, state, x, batch_size=256)
    assert logits.shape == (len(x), 10)
    np.testing.assert_allclose(logits, MLP.apply(numpy_params, numpy_state, x)[0], rtol=1e-5, atol=1e-5)
    expected = float(np.mean(np.argmax(np.asarray(logits), -1) == y))
    assert whole["accuracy"] == pytest.approx(expected)


@pytest.fixture(scope="module")
def small():
    model, opt = L.serial(L.flatten, L.dense(10)), optim.sgd(0.1)
    ts = train.init_state(model, opt, fnn.key(0, backend="numpy"), (None, 8, 8, 1))
    x, y = data.load_digits()
    return model, opt, ts, x[:50], y[:50]


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(y=np.full(50, 10)), ValueError, r"labels must be in \[0, 10\).*from 10 to 10"),
        (dict(y=np.arange(50) - 1), ValueError, r"labels must be in \[0, 10\).*-1"),
        (dict(y=np.zeros(49, np.int32)), ValueError, "x has 50 .* y has 49"),
        (dict(batch_size=0), ValueError, "positive int; got 0"),
        (dict(batch_size=51), ValueError, "batch_size 51 is larger than the dataset \\(50 examples\\)"),
        (dict(epochs=-1), ValueError, "epochs must be a non-negative int"),
        (dict(state="params"), TypeError, "TrainState"),
        (dict(resume=True), ValueError, "needs checkpoint_dir"),
        (dict(method="backprop"), ValueError, "method must be one of"),
        (dict(method="autodiff"), TypeError, r"method='autodiff'\) needs a JAX train state.*use method='manual' on NumPy"),
        (dict(val=(np.zeros((0, 8, 8, 1)), np.zeros(0, int))), ValueError, "validation_data is empty"),
    ],
)
def test_bad_input_is_named(small, change, error, message):
    model, opt, ts, x, y = small
    args = dict(state=ts, y=y, batch_size=10, epochs=1, resume=False, method="manual", val=None) | change
    with pytest.raises(error, match=message):
        train.fit(model, CE, opt, args["state"], (x, args["y"]), epochs=args["epochs"], batch_size=args["batch_size"],
                  resume=args["resume"], method=args["method"], validation_data=args["val"], progress=False)


def test_history_round_trips_and_plots(small, tmp_path):
    model, opt, ts, x, y = small
    ts, history = train.fit(model, CE, opt, ts, (x, y), epochs=2, batch_size=25, validation_data=(x, y),
                            progress=True)
    assert set(history.last) == {"epoch", "step", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"}
    again = train.History.from_dict(history.to_dict())
    assert again.records == history.records and again.stopped is None
    with pytest.raises(KeyError, match="no column 'accuracy'"):
        history["accuracy"]
    path = train.plot_history(history, tmp_path / "curves.png", title="test")
    assert path.stat().st_size > 5_000


def test_evaluate_checks_labels_and_lengths(small):
    model, _, ts, x, y = small
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        train.evaluate(model, ts.params, ts.state, x, y + 5, loss=CE)
    with pytest.raises(ValueError, match="x has 50 .* y has 10"):
        train.evaluate(model, ts.params, ts.state, x, y[:10], loss=CE)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        train.evaluate(model, ts.params, ts.state, x, y, loss=CE, batch_size=0)
    assert train.predict(model, ts.params, ts.state, x, batch_size=1000).shape == (50, 10)


@pytest.mark.parametrize("backend_name", ["numpy", "jax"])
def test_the_train_state_carries_the_data_key_forward(backend_name):
    """fit for 1 epoch twice equals fit for 2 epochs, bit for bit: each epoch shuffles
    with ts.key and advances it (dropout keys come from it too)."""
    from tests.test_checkpoint import leaves_equal

    x, y = data.load_digits(images=False)
    x, y = x[:40], y[:40]  # batches of 16: two full ones and a tail of 8
    model, opt = L.serial(L.dense(8), L.dropout(0.2), L.dense(10)), optim.sgd(0.1)
    ts0 = train.init_state(model, opt, fnn.key(0, backend="numpy"), (None, 64))
    if backend_name == "jax":
        ts0 = jax.device_put(ts0._replace(key=None))._replace(key=fnn.key(0))

    def run(ts, epochs):
        return train.fit(model, CE, opt, ts, (x, y), epochs=epochs, batch_size=16, progress=False)[0]

    once, twice = run(ts0, 2), run(run(ts0, 1), 1)
    assert leaves_equal(once, twice)
    assert not leaves_equal(run(ts0, 1).key, ts0.key)  # the key moved on...
    assert leaves_equal(run(ts0, 1).key, run(ts0, 1).key)  # ...deterministically
    if backend_name == "jax":  # past the shuffles computed ahead (64 epochs), in two different places
        assert leaves_equal(run(ts0, 70), run(run(ts0, 1), 69))


def test_a_non_finite_update_stops_before_it_and_nothing_non_finite_is_kept_or_saved(backend_name, tmp_path):
    """A transform (or schedule, or set_learning_rate) that makes the params NaN from
    finite gradients stops the run before that update; no NaN checkpoint is written."""

    def poison(after):  # updates times NaN from the `after`-th update on; the loss and gradients stay finite
        def update(grads, state, params=None):
            xp = fnn.backend.namespace(grads, state)
            factor = xp.where(state >= after, np.nan, 1.0)
            return fnn.backend.tree_map(lambda g: g * factor.astype(g.dtype), grads), state + 1

        return optim.GradientTransformation(lambda p: fnn.backend.namespace(p).zeros((), np.int32), update, "poison")

    x, y = data.load_digits(images=False)
    x, y = x[:256], y[:256]  # 4 batches of 64 per epoch
    opt = optim.chain(poison(6), optim.sgd(0.01))  # updates 1-6 fine, the 7th (epoch 2, batch 3) NaN
    model = L.serial(L.dense(16), L.relu, L.dense(10))
    ts0 = train.init_state(model, opt, fnn.key(0, backend="numpy"), (None, 64))
    ts0 = jax_state(model, opt, (None, 64)) if backend_name == "jax" else ts0
    ts, history = train.fit(model, CE, opt, ts0, (x, y), epochs=4, batch_size=64, progress=False,
                            checkpoint_dir=tmp_path, keep_checkpoints=1)
    stop = history.stopped
    assert stop is not None and (stop["epoch"], stop["batch"], stop["step"]) == (2, 3, 7), stop
    assert "params or optimizer state after the update" in stop["message"]
    assert int(ts.step) == 6 and optim.all_finite((ts.params, ts.opt_state))
    saved = fnn.checkpoint.list_checkpoints(tmp_path)
    assert [p.name for p in saved] == ["checkpoint_000001.safetensors"]
    assert optim.all_finite(fnn.checkpoint.load(saved[0], like=ts0).params)


def test_a_fresh_run_never_prunes_another_runs_checkpoints(small, tmp_path):
    model, opt, ts, x, y = small
    train.fit(model, CE, opt, ts, (x, y), epochs=4, batch_size=10, checkpoint_dir=tmp_path, progress=False)
    before = [p.name for p in fnn.checkpoint.list_checkpoints(tmp_path)]
    assert before == [f"checkpoint_00000{e}.safetensors" for e in (2, 3, 4)]
    with pytest.raises(ValueError, match=r"already holds checkpoints of another run \(newest checkpoint_000004.*"
                                         r"resume=True.*overwrite=True"):
        train.fit(model, CE, opt, ts, (x, y), epochs=2, batch_size=10, checkpoint_dir=tmp_path, progress=False)
    assert [p.name for p in fnn.checkpoint.list_checkpoints(tmp_path)] == before  # nothing deleted
    cb = train.Checkpoint(tmp_path, keep=3, overwrite=True)  # told to: the old run's files go first
    train.fit(model, CE, opt, ts, (x, y), epochs=2, batch_size=10, callbacks=[cb], progress=False)
    assert [p.name for p in fnn.checkpoint.list_checkpoints(tmp_path)] == [
        "checkpoint_000001.safetensors", "checkpoint_000002.safetensors"]


def test_resume_names_another_architecture_a_changed_rate_and_an_empty_directory(tmp_path, capsys):
    x, y = data.load_digits()
    x, y = x[:40], y[:40]
    tanh_model, relu_model = L.serial(L.flatten, L.dense(8), L.tanh, L.dense(10)), \
        L.serial(L.flatten, L.dense(8), L.relu, L.dense(10))
    opt = optim.sgd(0.1)
    ts = train.init_state(tanh_model, opt, fnn.key(0, backend="numpy"), (None, 8, 8, 1))
    _, history = train.fit(tanh_model, CE, opt, ts, (x, y), epochs=1, batch_size=10, checkpoint_dir=tmp_path / "a",
                           resume=True, progress=True)
    assert f"fnn.train.fit: no checkpoint in {tmp_path / 'a'}: starting fresh" in capsys.readouterr().out
    with pytest.raises(fnn.checkpoint.CheckpointError, match=r"(?s)written for another model:.*checkpoint: .*tanh.*this run: +serial\(.*relu"):
        train.fit(relu_model, CE, opt, ts, (x, y), epochs=2, batch_size=10, checkpoint_dir=tmp_path / "a",
                  resume=True, progress=False)
    faster = optim.sgd(0.5)
    with pytest.warns(UserWarning, match=r"checkpoint's learning rate 0.1, not the optimizer's 0.5"):
        train.fit(tanh_model, CE, faster, ts, (x, y), epochs=2, batch_size=10, checkpoint_dir=tmp_path / "a",
                  resume=True, progress=False)
