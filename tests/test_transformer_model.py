"""fnn.models.transformer: shapes, manual = autodiff gradients, equal rebuilt
models, and a few training steps that lower the loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
import fnn.optim
from fnn import models

TINY = dict(num_layers=2, num_heads=2, features=8, mlp_features=12)
LOSS = fnn.losses.softmax_cross_entropy


@pytest.mark.parametrize("pool, out", [(None, (3, 5, 11)), ("last", (3, 11))])
def test_transformer_shapes_and_param_layout(pool, out):
    model = models.transformer(11, pool=pool, **TINY)
    params, state = model.init(jax.random.key(0), (None, 5))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 11, (3, 5)))
    logits, _ = model.apply(params, state, ids)
    assert logits.shape == out == (3,) + model.out_shape((None, 5))[1:]
    expected = ["dense", "embedding", "layer_norm", "sinusoidal_positions", "transformer_block", "transformer_block_1"]
    assert sorted(params) == sorted(expected + (["last_position"] if pool else []))
    assert params["embedding"]["w"].shape == (11, 8) and params["dense"]["w"].shape == (8, 11)


def test_causal_model_logits_do_not_depend_on_later_tokens():
    model = models.transformer(11, **TINY)
    params, state = model.init(jax.random.key(1), (None, 6))
    ids = np.random.default_rng(1).integers(0, 11, (2, 6))
    changed = ids.copy()
    changed[:, 4:] = (changed[:, 4:] + 3) % 11
    a, _ = model.apply(params, state, jnp.asarray(ids))
    b, _ = model.apply(params, state, jnp.asarray(changed))
    np.testing.assert_allclose(a[:, :4], b[:, :4], rtol=1e-6, atol=1e-6)
    assert not np.allclose(a[:, 4:], b[:, 4:])
    # not causal: every position sees the change
    encoder = models.transformer(11, causal=False, **TINY)
    a, _ = encoder.apply(params, state, jnp.asarray(ids))
    b, _ = encoder.apply(params, state, jnp.asarray(changed))
    assert not np.allclose(a[:, 0], b[:, 0])


@pytest.mark.parametrize("pool", [None, "last"])
def test_transformer_manual_gradient_equals_autodiff_under_jit(pool):
    model = models.transformer(7, pool=pool, **TINY)
    params, state = model.init(jax.random.key(2), (None, 4), dtype=jnp.float64)
    rng = np.random.default_rng(2)
    ids = jnp.asarray(rng.integers(0, 7, (3, 4)))
    labels = jnp.asarray(rng.integers(0, 7, (3,) if pool else (3, 4)))
    (lm, _), manual = jax.jit(fnn.value_and_grad(model, LOSS, method="manual"))(params, state, ids, labels)
    (la, _), auto = jax.jit(fnn.value_and_grad(model, LOSS, method="autodiff"))(params, state, ids, labels)
    assert lm.dtype == jnp.float64
    np.testing.assert_allclose(lm, la, rtol=1e-12)
    # the key projection's bias has an exactly zero gradient (softmax ignores a score shift shared by
    # every key), so both methods give round-off there: compare it in absolute terms, the rest relatively
    for grads in (manual, auto):
        for block in ("transformer_block", "transformer_block_1"):
            bias = grads[block]["attention"]["key"].pop("b")
            assert np.max(np.abs(np.asarray(bias))) < 1e-12
    fnn.gradcheck.assert_close(manual, auto, tol=1e-10)
    # the embedding rows of unused ids get exactly zero
    unused = sorted(set(range(7)) - set(np.asarray(ids).ravel().tolist()))
    assert np.all(np.asarray(manual["embedding"]["w"])[unused] == 0)


def test_last_position_backward_against_autodiff_and_finite_differences():
    layer = models.last_position()
    x = np.random.default_rng(3).standard_normal((2, 4, 3))
    report = fnn.gradcheck.check_layer(layer, {}, {}, x)
    assert report.max_error("manual", "autodiff") < 1e-12, report
    assert report.max_error("manual", "numeric") < 1e-8, report


def test_rebuilt_models_are_equal_and_print_their_config():
    assert models.transformer(11, **TINY) == models.transformer(11, **TINY)
    assert hash(models.transformer(11, **TINY)) == hash(models.transformer(11, **TINY))
    assert models.transformer(11, **TINY) != models.transformer(11, pool="last", **TINY)
    assert models.transformer(11, **TINY) != models.transformer(11, **{**TINY, "num_layers": 1})
    config = models.transformer(11, **TINY).config
    assert config["vocab_size"] == 11 and config["num_layers"] == 2 and config["causal"] is True
    assert repr(models.transformer(11, **TINY)).startswith("transformer(vocab_size=11, num_layers=2, ")


def test_transformer_refuses_bad_sizes():
    with pytest.raises(ValueError, match="features must be even"):
        models.transformer(11, num_layers=1, num_heads=1, features=7, mlp_features=8)
    with pytest.raises(ValueError, match=r"features \(8\) must be divisible by num_heads \(3\)"):
        models.transformer(11, num_layers=1, num_heads=3, features=8, mlp_features=8)
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        models.transformer(11, num_layers=0, num_heads=2, features=8, mlp_features=8)
    with pytest.raises(ValueError, match="pool must be None or 'last'"):
        models.transformer(11, pool="mean", **TINY)


def test_transformer_learns_a_repeating_sequence_in_a_few_steps():
    # next-token prediction on 0 1 2 3 0 1 2 3 ...: the loss falls well below log(vocab)
    model = models.transformer(4, **TINY)
    opt = fnn.optim.adamw(1e-2, weight_decay=0.01)
    ts = fnn.train.init_state(model, opt, jax.random.key(4), (None, 8))
    stream = np.arange(4 * 20 + 1) % 4
    x = np.stack([stream[i:i + 8] for i in range(16)])
    y = np.stack([stream[i + 1:i + 9] for i in range(16)])
    grad_fn = fnn.value_and_grad(model, LOSS, method="manual")

    @jax.jit
    def step(params, opt_state):
        (loss, _), grads = grad_fn(params, ts.state, jnp.asarray(x), jnp.asarray(y))
        updates, opt_state = opt.update(grads, opt_state, params)
        return fnn.optim.apply_updates(params, updates), opt_state, loss

    params, opt_state = ts.params, ts.opt_state
    losses = []
    for _ in range(30):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[-1] < 0.2 * losses[0] and losses[-1] < 0.3, losses
