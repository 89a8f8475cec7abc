"""fnn.models' pre-activation residual blocks (``preactivation=True``):
layout, shapes, parameter counts, the identity path, and the hand-written
gradients against jax.grad and finite differences in float64."""

import jax
import numpy as np
import pytest

import fnn
import fnn.models as M
from fnn import gradcheck_suite
from tests.conv_support import on_backend


def count(params) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def test_block_layout_and_no_activation_after_the_sum():
    block = M.basic_block(4, preactivation=True)
    params, state = block.init(np.random.default_rng(0), (None, 5, 5, 4))
    assert list(params) == ["residual"] and "shortcut" not in params["residual"]
    assert list(params["residual"]["main"]) == ["batch_norm", "relu", "conv2d", "batch_norm_1", "relu_1", "conv2d_1"]
    # the first conv sees the normalised, rectified input: zeroing the main branch's last conv
    # leaves exactly the identity, negative values included (the original block would rectify them)
    params["residual"]["main"]["conv2d_1"]["w"] = np.zeros_like(params["residual"]["main"]["conv2d_1"]["w"])
    x = np.random.default_rng(1).standard_normal((2, 5, 5, 4)).astype(np.float32)
    y, _ = block.apply(params, state, x)
    np.testing.assert_array_equal(y, x)
    original = M.basic_block(4)
    p0, s0 = original.init(np.random.default_rng(0), (None, 5, 5, 4))
    assert np.all(np.asarray(original.apply(p0, s0, x)[0]) >= 0)  # relu after the sum


def test_projection_block_shapes():
    block = M.basic_block(8, stride=2, project=True, preactivation=True)
    assert block.out_shape((None, 7, 7, 3)) == (None, 4, 4, 8)
    params, _ = block.init(np.random.default_rng(0), (None, 7, 7, 3))
    assert list(params["residual"]["shortcut"]) == ["w"]  # a bare 1x1 convolution, no batch norm
    assert params["residual"]["shortcut"]["w"].shape == (1, 1, 3, 8)
    assert params["residual"]["main"]["conv2d"]["w"].shape == (3, 3, 3, 8)
    assert params["residual"]["main"]["batch_norm"]["scale"].shape == (3,)  # normalises the block's input


@pytest.mark.parametrize("shape", [(None, 8, 8, 1), (None, 28, 28, 1)])
def test_resnet_shapes_and_parameter_count(shape):
    stages = (8, 16)
    pre = M.resnet(stages=stages, blocks_per_stage=2, preactivation=True)
    post = M.resnet(stages=stages, blocks_per_stage=2)
    assert pre.out_shape(shape) == (None, 10)
    params_pre, state = pre.init(np.random.default_rng(0), shape)
    params_post, _ = post.init(np.random.default_rng(0), shape)
    # same convolutions; batch norms moved: - the stem's (2*8) - the projection's (2*16) + the final one (2*16),
    # and the projecting block's first batch norm sees its 8 input channels, not 16 (- 2*8)
    assert count(params_pre) == count(params_post) - 2 * 8 - 2 * 16 + 2 * 16 - 2 * 8
    assert [k for k in params_pre if k.startswith("block")] == ["block", "block_1", "block_2", "block_3"]
    assert list(params_pre)[-4:] == ["batch_norm", "relu", "global_avg_pool", "dense"]
    x = np.random.default_rng(1).standard_normal((2, *shape[1:])).astype(np.float32)
    y, new_state = pre.apply(params_pre, state, x)
    assert y.shape == (2, 10) and np.all(np.isfinite(y))
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_whole_preactivation_resnet_gradients(rng):
    # the block is checked against jax.grad and finite differences by the gradcheck suite below; here the
    # whole model's hand-written rules (NumPy, train mode) against finite differences at sampled entries
    model = M.resnet(3, stages=(2, 4), preactivation=True)
    x = rng.standard_normal((3, 4, 4, 1))
    params, state = model.init(np.random.default_rng(0), x.shape, dtype=np.float64)
    check = fnn.gradcheck.check_layer(model, params, state, x, train=True, methods=("numeric",), max_entries=4)
    assert check.max_error("manual", "numeric") < 1e-6, check
    assert set(check.errors("manual", "numeric")) >= {"params/block_1/residual/shortcut/w", "params/batch_norm/scale"}


def test_gradcheck_suite_has_the_block():
    # the registry's cases are run on both backends by tests/test_cli_gradcheck.py and
    # tests/test_gradcheck_backends.py; here only that the block is among them
    case = gradcheck_suite.find("pre-activation block (models.basic_block, train)")
    assert "preactivation=True" in repr(case.build())


def test_bad_preactivation_argument():
    with pytest.raises(TypeError, match="resnet: preactivation must be True or False; got 'yes'"):
        M.resnet(preactivation="yes")
    with pytest.raises(TypeError, match="block: preactivation must be True or False; got 1"):
        M.basic_block(4, preactivation=1)
