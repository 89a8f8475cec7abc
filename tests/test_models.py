"""fnn.models: shapes (AlexNet's on its real 224x224 input, without running
it), residual blocks with identity and projection shortcuts, manual vs
autodiff gradients through whole models, and a ResNet that trains."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
import fnn.models as M
from fnn import layers as L
from tests.conv_support import check_gradients, on_backend


@pytest.mark.parametrize(
    "model, input_shape, classes",
    [
        (M.mlp((16, 8), 10), (None, 8, 8, 1), 10),
        (M.mlp((), 3), (None, 5), 3),
        (M.lenet5(), (None, 28, 28, 1), 10),
        (M.lenet5(7), (None, 8, 8, 1), 7),
        (M.lenet5(padding="valid"), (None, 28, 28, 1), 10),
        (M.resnet(), (None, 8, 8, 1), 10),
        (M.resnet(4, stages=(8, 16), blocks_per_stage=2), (None, 28, 28, 1), 4),
    ],
    ids=["mlp", "softmax_regression", "lenet5_28", "lenet5_8", "lenet5_classic", "resnet_8", "resnet_28"],
)
def test_output_and_param_shapes(model, input_shape, classes):
    assert model.out_shape(input_shape) == (None, classes)
    params, state = model.init(np.random.default_rng(0), input_shape)
    x = np.random.default_rng(1).standard_normal((2, *input_shape[1:])).astype(np.float32)
    y, new_state = model.apply(params, state, x)
    assert y.shape == (2, classes) and y.dtype == np.float32
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_lenet5_classic_layout():
    shapes = [s for _, _, s in M.lenet5(padding="valid").sublayers((None, 28, 28, 1))]
    assert M.lenet5(padding="valid").out_shape((None, 28, 28, 1)) == (None, 10)
    # input of each layer: conv same 28 -> pool 14 -> conv valid 10 -> pool 5 -> 400 features
    assert shapes[3] == (None, 14, 14, 6) and shapes[6] == (None, 5, 5, 16) and shapes[7] == (None, 400)
    assert [s for _, _, s in M.lenet5().sublayers((None, 8, 8, 1))][7] == (None, 64)


def test_alexnet_shapes_on_224x224_without_running_it(capsys):
    model = M.alexnet(1000)
    assert model.out_shape((1, 224, 224, 3)) == (1, 1000)
    inputs = [s for _, _, s in model.sublayers((1, 224, 224, 3))]
    outputs = [layer.out_shape(s) for _, layer, s in model.sublayers((1, 224, 224, 3))]
    maps = [s[1:] for s in outputs if len(s) == 4]
    assert maps[0] == (55, 55, 96) and (27, 27, 96) in maps and (13, 13, 384) in maps and maps[-1] == (6, 6, 256)
    assert inputs[14] == (1, 9216)
    # parameters and the forward pass as abstract shapes only: nothing is computed
    params, state = jax.eval_shape(lambda: model.init(jax.random.key(0), (1, 224, 224, 3)))
    assert sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params)) == 62_378_344
    assert params["conv2d"]["w"].shape == (11, 11, 3, 96) and params["dense_2"]["w"].shape == (4096, 1000)
    y = jax.eval_shape(lambda p, x: model.apply(p, state, x)[0], params, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
    assert y.shape == (1, 1000) and y.dtype == jnp.float32
    fnn.summary(model, (None, 224, 224, 3), print_=True)
    out = capsys.readouterr().out
    assert re.search(r"conv2d\s+conv2d\s+\(None, 55, 55, 96\)\s+34944", out) and "total params: 62,378,344" in out


def test_resnet_blocks_identity_and_projection_shortcuts():
    model = M.resnet(stages=(8, 16), blocks_per_stage=2)
    params, _ = model.init(np.random.default_rng(0), (None, 8, 8, 1))
    blocks = {k: v for k, v in params.items() if k.startswith("block")}
    assert list(blocks) == ["block", "block_1", "block_2", "block_3"]
    has_projection = {k: "shortcut" in v["residual"] for k, v in blocks.items()}
    # the first block of stage 2 halves the image and doubles the channels: a 1x1 projection
    assert has_projection == {"block": False, "block_1": False, "block_2": True, "block_3": False}
    assert blocks["block_2"]["residual"]["shortcut"]["conv2d"]["w"].shape == (1, 1, 8, 16)
    with pytest.raises(fnn.LayerError, match=r"residual: the main branch gives shape \(None, 4, 4, 16\) but the input"):
        L.residual(L.conv2d(16, 3, stride=2, padding="same")).out_shape((None, 8, 8, 8))


def test_basic_block_with_projection_gradients(rng):
    # (identity blocks are checked inside the whole ResNet below)
    block = M.basic_block(4, stride=2, project=True)
    x = rng.standard_normal((2, 5, 5, 3))
    params, state = block.init(np.random.default_rng(1), x.shape, dtype=np.float64)
    state = jax.tree.map(lambda s: s + rng.uniform(0.1, 0.5, s.shape), state)  # non-trivial running statistics
    check_gradients(block, params, state, x, train=True, max_entries=8)


@pytest.mark.parametrize(
    "build, shape",
    [(lambda: M.lenet5(kernel_size=3, dropout_rate=0.3), (3, 8, 8, 1)), (lambda: M.resnet(stages=(4, 8)), (3, 8, 8, 1))],
    ids=["lenet5_dropout", "resnet"],
)
def test_whole_model_manual_gradients_equal_autodiff(build, shape, rng):
    model = build()
    params, state = model.init(np.random.default_rng(0), shape, dtype=np.float64)
    x = rng.standard_normal(shape)
    labels = np.array([1, 0, 2])
    key = jax.random.key(3)
    manual = fnn.value_and_grad(model, fnn.losses.softmax_cross_entropy, "manual")
    p, s, xj, yj = on_backend((params, state, x, labels), "jax")
    (loss_m, state_m), grads_m = jax.jit(manual)(p, s, xj, yj, key=key)
    (loss_a, state_a), grads_a = jax.jit(fnn.value_and_grad(model, fnn.losses.softmax_cross_entropy, "autodiff"))(
        p, s, xj, yj, key=key
    )
    np.testing.assert_allclose(float(loss_m), float(loss_a), rtol=1e-12)
    fnn.gradcheck.assert_close(grads_m, grads_a, names=("manual (jax)", "autodiff"))
    fnn.gradcheck.assert_close(state_m, state_a, tol=1e-12)
    # the NumPy backend's hand-written rules (with a NumPy key: no eager JAX random draws)
    if model.name == "resnet":
        (loss_np, state_np), grads_np = manual(params, state, x, labels, key=np.random.default_rng(0))
        np.testing.assert_allclose(float(loss_np), float(loss_a), rtol=1e-12)
        fnn.gradcheck.assert_close(grads_np, fnn.backend.to_numpy(grads_a), names=("manual (numpy)", "autodiff"))
        fnn.gradcheck.assert_close(state_np, fnn.backend.to_numpy(state_a), tol=1e-12)


def test_resnet_trains_on_digits():
    x, y = fnn.data.load_digits()
    x, y = x[:64], y[:64]
    model = M.resnet(stages=(8, 16))
    params, state = model.init(np.random.default_rng(0), (None, 8, 8, 1))
    opt = fnn.optim.adam(1e-2)
    opt_state = opt.init(params)
    grad_fn = fnn.value_and_grad(model, fnn.losses.softmax_cross_entropy, "manual")
    losses = []
    for _ in range(20):  # NumPy backend, full batch
        (loss, state), grads = grad_fn(params, state, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = fnn.optim.apply_updates(params, updates)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses
    logits, _ = model.apply(params, state, x)  # eval mode: running statistics
    assert np.all(np.isfinite(logits))


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="lenet5: pool must be 'max' or 'avg'"):
        M.lenet5(pool="min")
    with pytest.raises(ValueError, match="resnet: stages must be a sequence of positive ints"):
        M.resnet(stages=())
    with pytest.raises(ValueError, match="mlp: features must be"):
        M.mlp((16, 0))


def test_lstm_classifier_shapes_and_masks():
    model = fnn.models.lstm_classifier(10, hidden=6, depth=2)
    params, state = model.init(np.random.default_rng(0), (None, 8, 8))
    assert list(params) == ["lstm", "lstm_1", "dense"]
    assert model.out_shape((None, 8, 8)) == (None, 10)
    x = np.random.default_rng(1).standard_normal((3, 8, 8)).astype(np.float32)
    logits, _ = model.apply(params, state, x)
    assert logits.shape == (3, 10)
    mask = np.ones((3, 8), bool)
    masked, _ = model.apply(params, state, {"x": x, "mask": mask})
    np.testing.assert_allclose(masked, logits, rtol=1e-6)
    with pytest.raises(ValueError, match="lstm_classifier: num_classes, hidden and depth must be a sequence of positive ints"):
        fnn.models.lstm_classifier(10, depth=0)
