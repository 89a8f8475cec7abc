"""Bad input gets a clear error naming the layer by its path in the model, what
was expected and what was given; nothing is silently broadcast."""

import numpy as np
import pytest

import fnn
from fnn import layers as L

RNG = np.random.default_rng(0)


def _model():
    return L.serial(L.dense(4), L.relu, L.serial(L.dense(3), L.tanh, name="block"), L.serial(L.dense(2), name="block"))


def test_dense_input_rank_and_feature_size():
    layer = L.dense(3)
    params, state = layer.init(RNG, (None, 4))
    with pytest.raises(fnn.LayerError, match=r"^dense: expected input of shape \(batch, ..., in_features\), got \(4,\); layers work on batches.*x\[None\]"):
        layer.apply(params, state, np.ones(4))
    with pytest.raises(fnn.LayerError, match=r"params\['w'\] has shape \(4, 3\); expected \(2, 3\)"):
        layer.apply(params, state, np.ones((2, 4, 2)))  # the last axis is the features
    with pytest.raises(fnn.LayerError, match=r"dense: params\['w'\] has shape \(4, 3\); expected \(5, 3\) for this input"):
        layer.apply(params, state, np.ones((2, 5)))
    with pytest.raises(fnn.LayerError, match=r"dense: the input feature size must be known and positive; got shape \(None, 0\)"):
        layer.init(RNG, (None, 0))


def test_errors_carry_the_path_in_the_model():
    model = _model()
    params, state = model.init(RNG, (None, 5))
    with pytest.raises(fnn.LayerError, match=r"^dense: params\['w'\] has shape \(5, 4\); expected \(6, 4\)"):
        model.apply(params, state, np.ones((2, 6)))
    bad = {**params, "block_1": {"dense": {"w": np.ones((9, 2)), "b": np.ones(2)}}}
    with pytest.raises(fnn.LayerError, match=r"^block_1/dense: params\['w'\] has shape \(9, 2\); expected \(3, 2\)"):
        model.apply(bad, state, np.ones((2, 5)))
    outer = L.serial(L.dense(2), L.serial(model, name="net"))
    p2, s2 = outer.init(RNG, (None, 5))
    p2["net"]["serial"]["block"]["dense"]["b"] = np.ones(7)
    with pytest.raises(fnn.LayerError, match=r"^net/serial/block/dense: params\['b'\] has shape \(7,\); expected \(3,\)"):
        outer.apply(p2, s2, np.ones((1, 5)))


def test_params_tree_that_does_not_match_the_model():
    model = _model()
    params, state = model.init(RNG, (None, 5))
    missing = {k: v for k, v in params.items() if k != "block"}
    with pytest.raises(fnn.LayerError, match=r"serial: params does not match the model: missing \['block'\]"):
        model.apply(missing, state, np.ones((1, 5)))
    extra = {**params, "dense_9": {}}
    with pytest.raises(fnn.LayerError, match=r"unexpected \['dense_9'\]"):
        model.apply(extra, state, np.ones((1, 5)))
    with pytest.raises(fnn.LayerError, match=r"serial: state does not match the model"):
        model.apply(params, {}, np.ones((1, 5)))
    with pytest.raises(fnn.LayerError, match=r"^block/dense: params does not match the model: missing \['b'\]"):
        model.apply({**params, "block": {"dense": {"w": params["block"]["dense"]["w"]}, "tanh": {}}}, state, np.ones((1, 5)))
    with pytest.raises(fnn.LayerError, match=r"^relu: has no params; expected \{\}"):
        model.apply({**params, "relu": {"w": np.ones(1)}}, state, np.ones((1, 5)))


def test_negative_and_invalid_sizes():
    with pytest.raises(ValueError, match=r"dense: features must be a positive int; got -3"):
        L.dense(-3)
    with pytest.raises(ValueError, match=r"dense: features must be a positive int; got 2.5"):
        L.dense(2.5)
    with pytest.raises(ValueError, match=r"reshape: shape must be non-negative ints with at most one -1; got \(-2, 3\)"):
        L.reshape((-2, 3))
    with pytest.raises(fnn.LayerError, match=r"input_shape entries must be non-negative ints, None or -1; got \(None, -5\)"):
        L.dense(2).init(RNG, (None, -5))
    with pytest.raises(fnn.LayerError, match=r"reshape: cannot reshape examples of shape \(5,\) \(5 entries\) to \(2, 3\)"):
        L.reshape((2, 3)).out_shape((None, 5))
    with pytest.raises(ValueError, match=r"fan_out: n must be a positive int; got 0"):
        L.fan_out(0)


def test_no_silent_broadcasting_in_combinators():
    with pytest.raises(fnn.LayerError, match=r"fan_in_sum: all inputs must have the same shape \(no broadcasting\); got \[\(2, 3\), \(1, 3\)\]"):
        L.fan_in_sum.apply({}, {}, (np.ones((2, 3)), np.ones((1, 3))))
    with pytest.raises(fnn.LayerError, match=r"parallel: expected a tuple of 2 inputs, got 3"):
        L.parallel(L.relu, L.relu).apply({"relu": {}, "relu_1": {}}, {"relu": {}, "relu_1": {}}, (np.ones(1),) * 3)
    with pytest.raises(fnn.LayerError, match=r"fan_in_concat: inputs must agree on every axis but -1"):
        L.fan_in_concat().out_shape(((None, 2, 3), (None, 3, 3)))


def test_bad_call_arguments():
    layer = L.dense(2)
    params, state = layer.init(RNG, (None, 3))
    with pytest.raises(TypeError, match=r"dense: train must be a Python bool"):
        layer.apply(params, state, np.ones((1, 3)), train="yes")
    with pytest.raises(TypeError, match=r"dense: key must be None, a JAX PRNG key or a numpy.random.Generator; got int"):
        layer.apply(params, state, np.ones((1, 3)), key=3)
    with pytest.raises(TypeError):
        layer.apply(params, state, np.ones((1, 3)), trian=True)  # a misspelt keyword is never swallowed
    with pytest.raises(TypeError, match=r"serial: argument 1 must be an fnn Layer; got function \(a layer factory such as dense must be called"):
        L.serial(L.relu, L.dense)


def test_batch_norm_refuses_an_empty_batch_in_train_mode_and_keeps_its_statistics():
    bn = L.batch_norm()
    params, state = bn.init(RNG, (None, 3))
    with pytest.raises(fnn.LayerError, match=r"batch_norm: train mode needs at least one example .* got shape \(0, 3\)"):
        bn.apply(params, state, np.zeros((0, 3), np.float32), train=True)
    np.testing.assert_array_equal(state["mean"], 0.0)
    y, same = bn.apply(params, state, np.zeros((0, 3), np.float32))  # eval mode: nothing to compute, nothing changes
    assert y.shape == (0, 3) and same is state


def test_a_list_param_a_wrong_dy_and_foreign_residuals_are_named():
    layer = L.dense(2)
    params, state = layer.init(RNG, (None, 3))
    with pytest.raises(fnn.LayerError, match=r"dense: params\['w'\] is a list; expected an array of shape \(3, 2\)"):
        layer.apply({"w": [[1.0, 2.0]] * 3, "b": params["b"]}, state, np.ones((4, 3), np.float32))
    _, _, res = layer.fwd(params, state, np.ones((4, 3), np.float32))
    with pytest.raises(fnn.LayerError, match=r"dense: dy has shape \(4, 3\); expected the output's shape \(4, 2\)"):
        layer.bwd(params, res, np.ones((4, 3), np.float32))
    model, other = _model(), L.serial(L.dense(4), L.tanh)
    p, s = model.init(RNG, (None, 5))
    _, _, foreign = other.fwd(*other.init(RNG, (None, 5)), np.ones((2, 5), np.float32))
    with pytest.raises(fnn.LayerError, match=r"serial: residuals does not match the model: missing \[.*'relu'"):
        model.bwd(p, foreign, np.ones((2, 2), np.float32))
