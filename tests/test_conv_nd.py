"""The N-d convolution layers: conv, conv1d, conv2d, conv3d (stride, padding,
dilation, groups, depthwise) and conv_transpose. Forward against lax's
convolution, the hand-written backward against jax.grad and finite
differences in float64 on both backends, conv_transpose as the adjoint of a
strided convolution, and the errors. Shapes are asymmetric throughout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import layers as L
from fnn.kernels.conv import channels_last_dims
from tests.conv_support import check_gradients, on_backend

# (id, constructor, input shape (batch != channels != each spatial size))
CASES = [
    ("conv1d_stride_same", lambda: L.conv1d(4, 3, stride=2, padding="same"), (2, 9, 3)),
    ("conv1d_dilated_pairs", lambda: L.conv1d(3, 2, dilation=3, padding=((2, 1),)), (3, 8, 2)),
    ("conv1d_groups", lambda: L.conv1d(6, 3, groups=2, padding=1), (2, 7, 4)),
    ("conv2d_dilated_rect", lambda: L.conv2d(3, (3, 2), dilation=(2, 1), stride=(1, 2), padding="same"), (2, 7, 6, 2)),
    ("conv2d_groups_strided", lambda: L.conv2d(4, (2, 3), groups=2, stride=(2, 1), padding=((1, 0), (0, 2))), (3, 6, 5, 4)),
    ("conv2d_depthwise", lambda: L.conv2d(3, 3, groups=3, padding=(1, 0)), (2, 5, 6, 3)),
    ("conv2d_depthwise_multiplier", lambda: L.conv2d(6, (2, 2), groups=3, dilation=2), (2, 6, 5, 3)),
    ("conv3d_rect", lambda: L.conv3d(3, (2, 3, 2), stride=(1, 2, 1), padding=((1, 0), (0, 1), (1, 1))), (2, 3, 5, 4, 2)),
    ("conv3d_dilated_groups", lambda: L.conv3d(4, 2, dilation=(1, 2, 1), groups=2, padding="same"), (2, 4, 5, 3, 2)),
    ("conv_nd_tuple", lambda: L.conv(2, (3, 1), stride=(2, 1), use_bias=False), (3, 7, 4, 2)),
]
IDS = [c[0] for c in CASES]


def lax_reference(layer_args, x, params):
    """``y`` by ``lax.conv_general_dilated`` with the same arguments, plus bias."""
    strides, padding, dilation, groups = layer_args
    rank = x.ndim - 2
    y = jax.lax.conv_general_dilated(
        jnp.asarray(x), jnp.asarray(params["w"]), strides, padding, rhs_dilation=dilation,
        dimension_numbers=channels_last_dims(rank), feature_group_count=groups,
    )
    return y + jnp.asarray(params["b"]).reshape((1,) * (rank + 1) + (-1,)) if "b" in params else y


LAX_ARGS = {  # the same convolutions spelled for lax: strides, padding, dilation, groups
    "conv1d_stride_same": ((2,), "SAME", (1,), 1),
    "conv1d_dilated_pairs": ((1,), [(2, 1)], (3,), 1),
    "conv1d_groups": ((1,), [(1, 1)], (1,), 2),
    "conv2d_dilated_rect": ((1, 2), "SAME", (2, 1), 1),
    "conv2d_groups_strided": ((2, 1), [(1, 0), (0, 2)], (1, 1), 2),
    "conv2d_depthwise": ((1, 1), [(1, 1), (0, 0)], (1, 1), 3),
    "conv2d_depthwise_multiplier": ((1, 1), "VALID", (2, 2), 3),
    "conv3d_rect": ((1, 2, 1), [(1, 0), (0, 1), (1, 1)], (1, 1, 1), 1),
    "conv3d_dilated_groups": ((1, 1, 1), "SAME", (1, 2, 1), 2),
    "conv_nd_tuple": ((2, 1), "VALID", (1, 1), 1),
}


def make(case, seed=0):
    _, build, shape = case
    layer = build()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    params, state = layer.init(np.random.default_rng(seed), shape, dtype=np.float64)
    if "b" in params:
        params["b"] = rng.standard_normal(params["b"].shape)
    return layer, params, state, x


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_lax(case, backend_name):
    layer, params, state, x = make(case)
    y, _ = layer.apply(on_backend(params, backend_name), state, on_backend(x, backend_name))
    want = lax_reference(LAX_ARGS[case[0]], x, params)
    assert isinstance(y, jax.Array) == (backend_name == "jax")
    assert y.shape == layer.out_shape(x.shape) == want.shape
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradients_manual_autodiff_numeric_on_both_backends(case):
    layer, params, state, x = make(case)
    check_gradients(layer, params, state, x)


def test_kernel_shapes_and_fans():
    params, _ = L.conv3d(8, (1, 3, 5), groups=2).init(np.random.default_rng(0), (None, 4, 6, 9, 6))
    assert params["w"].shape == (1, 3, 5, 3, 8) and params["b"].shape == (8,)
    std = float(np.std(params["w"]))  # lecun normal: fan in = prod(kernel) * C / groups = 45
    assert 0.8 / np.sqrt(45) < std < 1.2 / np.sqrt(45)
    assert L.conv1d(5, 4, groups=5).init(np.random.default_rng(0), (2, 9, 5))[0]["w"].shape == (4, 1, 5)


def test_conv_is_the_function_and_ranks_are_fixed():
    assert L.conv is fnn.layers.conv and callable(L.conv) and L.conv.__module__ == "fnn.layers.convolution"
    assert L.conv(2, (3,)).out_shape((4, 9, 5)) == (4, 7, 2)
    assert L.conv(2, (3, 3, 3), padding="same", stride=2).out_shape((None, 5, 6, 7, 1)) == (None, 3, 3, 4, 2)
    assert L.conv1d(2, 3, dilation=2, padding="same", stride=3).out_shape((1, 10, 1)) == (1, 4, 2)  # ceil(n / s)


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(features=4, kernel_size=(3,), stride=(2,), dilation=(2,), groups=2, padding="same"), (2, 9, 6)),
        (dict(features=6, kernel_size=(2, 3), dilation=(2, 1), groups=3, padding=((1, 0), (0, 2))), (3, 6, 5, 3)),
        (dict(features=2, kernel_size=(2, 2, 3), stride=(1, 2, 1), padding=1), (2, 3, 5, 4, 3)),
    ],
)
def test_im2col_layers_match_xla_and_jax_grad(kwargs, shape):
    """The layer's JAX im2col forms (any rank, dilation, groups) give XLA's numbers, forward and backward."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape))
    cot = jnp.asarray(rng.standard_normal(L.conv(**kwargs).out_shape(shape)))
    results = []
    for implementation in ("xla", "im2col"):
        layer = L.conv(**kwargs, implementation=implementation)
        params, _ = layer.init(np.random.default_rng(0), shape, dtype=np.float64)
        params = on_backend(params, "jax")

        @jax.jit
        def run(params, x, cot, layer=layer):
            y, _, res = layer.fwd(params, {}, x)
            autodiff = jax.grad(lambda p, v: jnp.sum(layer.apply(p, {}, v)[0] * cot), argnums=(0, 1))(params, x)
            return y, layer.bwd(params, res, cot), autodiff

        results.append(run(params, x, cot))
        fnn.gradcheck.assert_close(results[-1][1], results[-1][2], tol=1e-12, names=("manual", "jax.grad"))
    fnn.gradcheck.assert_close(results[0], results[1], tol=1e-12, names=("xla", "im2col"))


# --------------------------------------------------------------------------- #
# conv_transpose
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "kernel, stride, padding, in_shape, out_shape",
    [
        (3, 2, 0, (2, 5, 3), (2, 11, 4)),  # (n - 1) * s - 2p + k
        (4, 2, 1, (2, 5, 6, 3), (2, 10, 12, 4)),
        ((4, 3), (2, 3), (1, 0), (2, 5, 6, 3), (2, 10, 18, 4)),  # per-axis ints
        ((2, 3), 1, ((1, 0), (0, 2)), (2, 5, 6, 3), (2, 5, 6, 4)),  # per-axis (lo, hi)
        ((2, 2, 3), (2, 1, 3), 0, (3, 2, 4, 3, 2), (3, 4, 5, 9, 4)),
    ],
)
def test_conv_transpose_output_sizes(kernel, stride, padding, in_shape, out_shape):
    layer = L.conv_transpose(4, kernel, stride=stride, padding=padding)
    assert layer.out_shape(in_shape) == out_shape
    params, _ = layer.init(np.random.default_rng(0), in_shape)
    y, _ = layer.apply(params, {}, np.ones(in_shape, np.float32))
    assert y.shape == out_shape and params["w"].shape[-2:] == (in_shape[-1], 4)


TRANSPOSE_CASES = [
    ("1d", lambda: L.conv_transpose(3, 3, stride=2, padding=1), (2, 5, 4)),
    ("2d_rect", lambda: L.conv_transpose(2, (3, 2), stride=(2, 3), padding=((1, 0), (0, 1))), (3, 4, 3, 2)),
    ("3d", lambda: L.conv_transpose(2, (2, 3, 2), stride=(1, 2, 2), use_bias=False), (2, 3, 2, 4, 3)),
]


@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=[c[0] for c in TRANSPOSE_CASES])
def test_conv_transpose_gradients_on_both_backends(case):
    layer, params, state, x = make(case)
    check_gradients(layer, params, state, x)


@pytest.mark.parametrize("backend_name", ["numpy", "jax"])
@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=[c[0] for c in TRANSPOSE_CASES])
def test_conv_transpose_is_the_adjoint_of_a_strided_conv(case, backend_name):
    """<conv(x), y> == <x, conv_transpose(y)> with the same kernel (in / out swapped), and
    conv_transpose(y) is jax.vjp's dx of that convolution."""
    layer, params, _, y = make(case)
    params = {"w": params["w"]}
    t = L.conv_transpose(params["w"].shape[-1], params["w"].shape[:-2], stride=layer_stride(case), padding=layer_pad(case),
                         use_bias=False)
    out, _ = t.apply(on_backend(params, backend_name), {}, on_backend(y, backend_name))
    w_conv = np.swapaxes(params["w"], -1, -2)  # (*k, features, C): the convolution out -> in
    conv = L.conv(y.shape[-1], tuple(params["w"].shape[:-2]), stride=layer_stride(case), padding=layer_pad(case),
                  use_bias=False)
    x = np.random.default_rng(5).standard_normal(out.shape)
    cx, _ = conv.apply(on_backend({"w": w_conv}, backend_name), {}, on_backend(x, backend_name))
    assert cx.shape == y.shape
    np.testing.assert_allclose(float(np.sum(np.asarray(cx) * y)), float(np.sum(x * np.asarray(out))), rtol=1e-11)
    _, vjp = jax.vjp(lambda v: conv.apply({"w": jnp.asarray(w_conv)}, {}, v)[0], jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(out), vjp(jnp.asarray(y))[0], rtol=1e-11, atol=1e-11)


def layer_stride(case):
    return {"1d": 2, "2d_rect": (2, 3), "3d": (1, 2, 2)}[case[0]]


def layer_pad(case):
    return {"1d": 1, "2d_rect": ((1, 0), (0, 1)), "3d": 0}[case[0]]


def test_jitted_manual_step_of_a_1d_and_3d_model_equals_autodiff():
    for model, shape in [
        (L.serial(L.conv1d(4, 3, padding="same", groups=2), L.relu, L.max_pool(2), L.conv_transpose(3, 2, stride=2),
                  L.flatten, L.dense(3)), (3, 8, 2)),
        (L.serial(L.conv3d(3, 2, dilation=(1, 2, 1)), L.tanh, L.avg_pool((1, 2, 2), padding="same"), L.flatten,
                  L.dense(3)), (2, 3, 6, 5, 1)),
    ]:
        params, state = model.init(np.random.default_rng(0), shape, dtype=np.float64)
        params = on_backend(params, "jax")
        x = jnp.asarray(np.random.default_rng(1).standard_normal(shape))
        y = jnp.asarray(np.arange(shape[0]) % 3)
        loss = fnn.losses.softmax_cross_entropy
        (v1, _), g1 = jax.jit(fnn.value_and_grad(model, loss, "manual"))(params, state, x, y)
        (v2, _), g2 = jax.jit(fnn.value_and_grad(model, loss, "autodiff"))(params, state, x, y)
        assert abs(float(v1) - float(v2)) < 1e-12
        fnn.gradcheck.assert_close(g1, g2, tol=1e-10, names=("manual", "autodiff"))


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #


def test_conv_refuses_an_int_kernel_size():
    with pytest.raises(fnn.LayerError, match=r"^conv: kernel_size must be a tuple .* got 3 \(for an int size use conv1d, conv2d or conv3d\)"):
        L.conv(2, 3)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: L.conv2d(5, 3, groups=2), r"^conv2d: features must be divisible by groups: got features=5, groups=2"),
        (lambda: L.conv1d(4, 3, groups=0), r"^conv1d: groups must be a positive int; got 0"),
        (lambda: L.conv3d(4, (3, 3), name="c3"), r"^c3: kernel_size must be an int >= 1 or a tuple of 3 of them; got \(3, 3\)"),
        (lambda: L.conv1d(4, 3, dilation=0), r"^conv1d: dilation must be an int >= 1"),
        (lambda: L.conv1d(4, 3, padding=(1, 2)), r"^conv1d: padding must be .*\(\(1, 2\),\) for one axis"),
        (lambda: L.conv(4, (3, 3), implementation="taps"), r"^conv: implementation must be one of 'auto', 'xla', 'im2col'"),
        (lambda: L.conv_transpose(4, 3, padding="same"), r"^conv_transpose: padding must be 'valid', an int"),
    ],
)
def test_bad_constructor_arguments(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_inputs_name_the_layer_and_say_what_was_expected():
    layer = L.serial(L.relu, L.conv2d(4, 3, groups=2, name="dw"))
    with pytest.raises(fnn.LayerError, match=r"^dw: the input's 3 channels \(shape \(1, 5, 5, 3\)\) must be divisible by groups=2"):
        layer.init(np.random.default_rng(0), (1, 5, 5, 3))
    conv1d = L.conv1d(2, 3)
    with pytest.raises(fnn.LayerError, match=r"^conv1d: expected a 3-D NWC input \(batch, width, channels\), got shape \(2, 5\); add a channel"):
        conv1d.out_shape((2, 5))
    with pytest.raises(fnn.LayerError, match=r"^conv3d: expected a 5-D NDHWC input \(batch, depth, height, width, channels\)"):
        L.conv3d(2, 3).out_shape((2, 5, 5, 1))
    with pytest.raises(fnn.LayerError, match=r"^conv1d: the kernel \(3,\) \(dilated by 2: 5 wide\) is larger than the padded input: input \(4,\)"):
        L.conv1d(2, 3, dilation=2).out_shape((1, 4, 1))
    params, _ = L.conv2d(4, 3, groups=2).init(np.random.default_rng(0), (1, 5, 5, 4))
    with pytest.raises(fnn.LayerError, match=r"the input has 6 channels .* kernel w of shape \(3, 3, 2, 4\) expects 4"):
        L.conv2d(4, 3, groups=2).apply(params, {}, np.ones((1, 5, 5, 6)))
    with pytest.raises(fnn.LayerError, match=r"^conv_transpose: padding \(\(3, 3\),\) leaves no output"):
        L.conv_transpose(2, 3, padding=3).out_shape((1, 2, 1))
