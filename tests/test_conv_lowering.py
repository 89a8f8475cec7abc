"""conv2d's JAX implementations ("xla", "im2col", "auto"): every way of computing
the forward, dw and dx (column blocks too) agrees with the XLA convolution and with jax.grad
(float64), the plan "auto" picks per platform and shape, forward-mode and
16-bit inputs, and the error for a bad ``lowering``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import layers as L
from fnn.kernels.conv import conv_dw
from fnn.kernels.plan import CONV_IMPLEMENTATIONS as LOWERINGS, lowering_plan
from tests.conv_support import check_gradients, on_backend

# (id, kernel_size, stride, padding, input (H, W), channels, features)
CASES = [
    ("valid_c1", 3, 1, "valid", (6, 5), 1, 3),
    ("same_c2_stride2", 3, 2, "same", (7, 6), 2, 3),
    ("explicit_c3_pair_stride", (2, 3), (1, 2), ((1, 0), (2, 1)), (5, 6), 3, 2),
    ("same_c5_stride1", 3, 1, "same", (5, 5), 5, 2),
    ("valid_c4_stride2", 3, 2, "valid", (7, 8), 4, 3),
    ("int_padding_big_kernel", 5, 1, 2, (6, 6), 4, 9),
    ("padding_wider_than_kernel", 2, 2, ((3, 0), (0, 2)), (5, 5), 2, 2),
    ("one_by_one_stride2", 1, 2, "valid", (5, 5), 3, 2),
    ("same_c8_stride1", 3, 1, "same", (4, 5), 8, 4),
    # kernels with more taps than the image has pixels (XLA would swap the operands)
    ("kernel_over_tiny_image", 3, 1, "same", (2, 2), 6, 5),
    ("kernel_over_tiny_dy_stride2", 3, 2, "same", (4, 3), 5, 6),
]
IDS = [c[0] for c in CASES]


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def make(case, lowering, seed=0):
    _, kernel, stride, padding, hw, channels, features = case
    layer = L.conv2d(features, kernel, stride=stride, padding=padding, implementation=lowering)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, *hw, channels))
    params, _ = layer.init(np.random.default_rng(seed), x.shape, dtype=np.float64)
    params = {"w": params["w"], "b": rng.standard_normal(features)}
    return layer, on_backend(params, "jax"), jnp.asarray(x)


def manual_and_grad(layer, params, x, cot):
    """Forward, the hand-written backward and jax.grad of ``sum(y * cot)``, in one jit."""

    @jax.jit
    def run(params, x, cot):
        y, _, residuals = layer.fwd(params, {}, x)
        dparams, dx = layer.bwd(params, residuals, cot)
        autodiff = jax.grad(lambda p, x: jnp.sum(layer.apply(p, {}, x)[0] * cot), argnums=(0, 1))(params, x)
        return y, (dparams, dx), autodiff

    return run(params, x, cot)


def test_plans_cover_every_piece_on_cpu():
    pieces = set()
    for case in CASES:
        layer, params, x = make(case, "xla")
        _, oh, ow, _ = layer.out_shape(x.shape)
        for lowering in LOWERINGS:
            plan = lowering_plan(lowering, "cpu", params["w"].shape, pair(case[2]), x.shape[0] * oh * ow)
            pieces |= {("y", plan[0]), ("dw", plan[1]), ("dx", plan[2])}
    pieces.add(("dw", lowering_plan("auto", "cpu", LENET_1, (1, 1), 64 * 28 * 28)[1]))  # many pixels
    expected = {
        ("y", "xla"),
        ("y", "taps"),
        ("y", "matmul"),
        ("dw", "xla"),
        ("dw", "matmul"),
        ("dw", "blocks"),
        ("dx", "xla"),
        ("dx", "col2im"),
    }
    assert pieces == expected


LENET_1, LENET_2 = (5, 5, 1, 6), (5, 5, 6, 16)


@pytest.mark.parametrize(
    "lowering, platform, w_shape, stride, pixels, plan",
    [
        ("xla", "cpu", LENET_1, (1, 1), 64 * 28 * 28, ("xla", "xla", "xla")),
        ("im2col", "cpu", LENET_1, (1, 1), 64 * 28 * 28, ("taps", "matmul", "col2im")),
        ("im2col", "cpu", LENET_2, (1, 1), 64 * 10 * 10, ("matmul", "matmul", "col2im")),
        ("im2col", "gpu", LENET_2, (2, 2), 64 * 5 * 5, ("matmul", "matmul", "col2im")),
        # LeNet's two convolutions on a CPU: the first as a tap sum and its dw in column blocks,
        # the second's dx as col2im
        ("auto", "cpu", LENET_1, (1, 1), 64 * 28 * 28, ("taps", "blocks", "col2im")),
        ("auto", "cpu", LENET_1, (1, 1), 19_999, ("taps", "xla", "col2im")),  # too few pixels for blocks
        ("auto", "cpu", (3, 3, 4, 8), (1, 1), 20_000, ("taps", "blocks", "col2im")),
        ("auto", "cpu", (3, 3, 5, 8), (1, 1), 20_000, ("xla", "xla", "col2im")),  # 5 channels
        ("auto", "cpu", LENET_2, (1, 1), 64 * 10 * 10, ("xla", "xla", "col2im")),
        ("auto", "cpu", (5, 5, 4, 8), (1, 1), 100, ("taps", "xla", "col2im")),  # 800 weights
        ("auto", "cpu", (5, 5, 4, 9), (1, 1), 100, ("xla", "xla", "col2im")),
        ("auto", "cpu", (3, 3, 8, 16), (1, 1), 100, ("xla", "xla", "col2im")),
        ("auto", "cpu", LENET_1, (2, 1), 64 * 14 * 28, ("taps", "xla", "xla")),  # strided: XLA's dw, dx
        ("auto", "cpu", (3, 3, 16, 16), (1, 1), 100, ("xla", "xla", "xla")),  # 16 channels
        ("auto", "cpu", (3, 3, 6, 32), (1, 1), 100, ("xla", "xla", "xla")),  # 32 features
        ("auto", "cpu", (5, 5, 6, 16), (1, 1), 64 * 28 * 28, ("xla", "xla", "xla")),  # dy @ w^T: 7.5M entries
        # anywhere but on a CPU, "auto" is XLA (cuDNN on a GPU)
        ("auto", "gpu", LENET_1, (1, 1), 64 * 28 * 28, ("xla", "xla", "xla")),
        ("auto", "tpu", LENET_2, (1, 1), 64 * 10 * 10, ("xla", "xla", "xla")),
    ],
)
def test_lowering_plan(lowering, platform, w_shape, stride, pixels, plan):
    assert lowering_plan(lowering, platform, w_shape, stride, pixels) == plan


@pytest.mark.parametrize(
    "platform, w_shape, stride, in_hw, out_hw, plan",
    [
        # the small ResNet's last stage: 3x3 kernels on 2x2 images, and the stride-2 step into it
        ("cpu", (3, 3, 64, 64), (1, 1), (2, 2), (2, 2), ("matmul", "xla", "col2im")),
        ("cpu", (3, 3, 32, 64), (2, 2), (4, 4), (2, 2), ("xla", "xla", "col2im")),
        ("cpu", (3, 3, 32, 32), (1, 1), (3, 3), (3, 3), ("xla", "xla", "xla")),  # 9 taps, 9 pixels
        ("cpu", (1, 1, 32, 64), (2, 2), (2, 2), (1, 1), ("xla", "xla", "xla")),
        ("cpu", (2, 2, 3, 4), (1, 1), (1, 1), (2, 2), ("taps", "xla", "col2im")),  # few channels: taps anyway
        ("gpu", (3, 3, 64, 64), (1, 1), (2, 2), (2, 2), ("xla", "xla", "xla")),
    ],
)
def test_a_kernel_larger_than_its_image_runs_as_im2col_on_cpu(platform, w_shape, stride, in_hw, out_hw, plan):
    pixels = 64 * out_hw[0] * out_hw[1]
    assert lowering_plan("auto", platform, w_shape, stride, pixels, in_hw=in_hw, out_hw=out_hw) == plan
    # the shapes are optional: without them the plan is the one the other rules give
    assert lowering_plan("auto", platform, w_shape, stride, pixels)[0] == ("taps" if plan[0] == "taps" else "xla")


def test_a_kernel_larger_than_its_image_traces_no_convolution_but_dw():
    layer, params, x = make(CASES[-2], "auto")  # 3x3 on 2x2 images, 6 channels

    def manual(params, x):
        y, _, residuals = layer.fwd(params, {}, x)
        return layer.bwd(params, residuals, y)

    assert str(jax.make_jaxpr(manual)(params, x)).count("conv_general_dilated") == 1


@pytest.mark.parametrize("lowering", ["im2col", "auto"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_lowering_matches_xla_and_jax_grad(case, lowering):
    layer, params, x = make(case, lowering)
    reference, _, _ = make(case, "xla")
    cot = jnp.asarray(np.random.default_rng(1).standard_normal(reference.out_shape(x.shape)))
    y_ref, (manual_ref, dx_ref), (autodiff_p, autodiff_x) = manual_and_grad(reference, params, x, cot)
    y, (manual, dx), (grad_p, grad_x) = manual_and_grad(layer, params, x, cot)
    tight = {"rtol": 1e-12, "atol": 1e-12}
    np.testing.assert_allclose(y, y_ref, **tight)
    for got, want in [(manual["w"], manual_ref["w"]), (manual["b"], manual_ref["b"]), (dx, dx_ref)]:
        np.testing.assert_allclose(got, want, **tight)
    # against jax.grad of the plain XLA convolution, and jax.grad of this lowering's forward
    for got, want in [(manual["w"], autodiff_p["w"]), (manual["b"], autodiff_p["b"]), (dx, autodiff_x)]:
        np.testing.assert_allclose(got, want, **tight)
    for got, want in [(grad_p["w"], autodiff_p["w"]), (grad_p["b"], autodiff_p["b"]), (grad_x, autodiff_x)]:
        np.testing.assert_allclose(got, want, **tight)


# (kernel, padding, input (H, W), channels, features): the block widths 4, 3, 2 and 1
# (features 6, 8, 12 and 25), output widths that are and are not a multiple of the
# block, rectangular kernels, asymmetric padding, padding wider than the kernel
BLOCK_CASES = [
    ((5, 5), ((2, 2), (2, 2)), (7, 8), 1, 6),
    ((3, 3), ((1, 1), (1, 1)), (6, 5), 2, 6),
    ((2, 3), ((1, 0), (2, 1)), (5, 6), 3, 8),
    ((3, 3), ((0, 0), (0, 0)), (7, 9), 4, 12),
    ((1, 1), ((0, 0), (0, 0)), (4, 5), 3, 25),
    ((5, 5), ((3, 0), (0, 2)), (5, 5), 2, 1),
    ((3, 2), ((0, 1), (3, 3)), (4, 3), 5, 7),
]


@pytest.mark.parametrize("case", BLOCK_CASES, ids=[f"blocks{i}" for i in range(len(BLOCK_CASES))])
def test_column_block_dw_matches_xla(case):
    window, pads, hw, channels, features = case
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, *hw, channels)))
    out_hw = [hw[a] + sum(pads[a]) - window[a] + 1 for a in (0, 1)]
    dy = jnp.asarray(rng.standard_normal((2, *out_hw, features)))
    got = conv_dw(x, dy, window, strides=(1, 1), padding=pads, implementation="blocks")
    want = conv_dw(x, dy, window, strides=(1, 1), padding=pads, implementation="xla")
    assert got.shape == want.shape == (*window, channels, features) and got.dtype == x.dtype
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_auto_runs_a_many_pixel_dw_in_column_blocks():
    """At 20000 output pixels "auto" on a CPU traces no convolution for a 3x3 kernel on one
    channel (tap sum, column blocks, col2im) and agrees with XLA and jax.grad."""
    case = ("many_pixels", 3, 1, "same", (100, 100), 1, 3)
    layer, params, x = make(case, "auto")
    reference, _, _ = make(case, "xla")

    def manual(params, x, cot):
        _, _, residuals = layer.fwd(params, {}, x)
        return layer.bwd(params, residuals, cot)

    cot = jnp.asarray(np.random.default_rng(1).standard_normal(layer.out_shape(x.shape)))
    assert "conv_general_dilated" not in str(jax.make_jaxpr(manual)(params, x, cot))
    _, (got, got_dx), _ = manual_and_grad(layer, params, x, cot)
    _, (want, want_dx), (autodiff, autodiff_dx) = manual_and_grad(reference, params, x, cot)
    for a, b in [(got, want), (got, autodiff), (got_dx, want_dx), (got_dx, autodiff_dx)]:
        fnn.gradcheck.assert_close(a, b, tol=1e-12)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[3]], ids=[IDS[0], IDS[2], IDS[3]])
def test_im2col_gradients_against_finite_differences(case):
    layer, params, x = make(case, "im2col")
    check_gradients(layer, params, {}, x)


def test_jax_grad_of_a_tap_sum_is_the_xla_convolution_derivative():
    layer, params, x = make(CASES[0], "auto")  # one input channel: the forward is a tap sum

    def loss(p, x):
        return jnp.sum(jnp.sin(layer.apply(p, {}, x)[0]))

    assert "conv_general_dilated" not in str(jax.make_jaxpr(lambda p, x: layer.apply(p, {}, x)[0])(params, x))
    grads = str(jax.make_jaxpr(jax.grad(loss))(params, x))
    assert grads.count("conv_general_dilated") == 1  # dw only: x is not differentiated
    reference, _, _ = make(CASES[0], "xla")
    for argnums in (0, 1, (0, 1)):
        got = jax.jit(jax.grad(loss, argnums=argnums))(params, x)
        want = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(reference.apply(p, {}, x)[0])), argnums=argnums))(
            params, x
        )
        fnn.gradcheck.assert_close(got, want, tol=1e-12)


@pytest.mark.parametrize("case", [CASES[0], CASES[4]], ids=[IDS[0], IDS[4]])
def test_forward_mode_through_every_lowering(case):
    _, params, x = make(case, "xla")
    rng = np.random.default_rng(2)
    tangents = (
        jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape)), params),
        jnp.asarray(rng.standard_normal(x.shape)),
    )
    results = []
    for lowering in ("xla", "im2col", "auto"):
        layer, _, _ = make(case, lowering)
        results.append(jax.jvp(lambda p, x, layer=layer: layer.apply(p, {}, x)[0], (params, x), tangents))
    for y, dy in results[1:]:
        np.testing.assert_allclose(y, results[0][0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dy, results[0][1], rtol=1e-12, atol=1e-12)


def test_second_order_and_vmap_through_a_tap_sum():
    results = []
    for lowering in ("xla", "auto"):  # one input channel: "auto" is a tap sum
        layer, params, x = make(CASES[0], lowering)

        def f(p, x, layer=layer):
            return jnp.sum(jnp.tanh(layer.apply(p, {}, x)[0]))

        hessian = jax.hessian(f)(params, x)["w"]["w"]
        mixed = jax.jacfwd(jax.grad(f, argnums=1), argnums=0)(params, x)["w"]
        per_example = jax.vmap(lambda xi, f=f, p=params: f(p, xi[None]))(x)
        results.append((hessian, mixed, per_example))
    for got, want in zip(results[1], results[0]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("case", [CASES[0], CASES[3]], ids=[IDS[0], IDS[3]])
def test_low_precision_sums_in_float32_like_xla(case, dtype):
    ref_layer, params64, x64 = make(case, "xla")
    layer, _, _ = make(case, "im2col")
    params, x = jax.tree.map(lambda a: a.astype(dtype), (params64, x64))
    y_ref, (g_ref, dx_ref), _ = manual_and_grad(ref_layer, params, x, jnp.ones(ref_layer.out_shape(x.shape), dtype))
    y, (g, dx), _ = manual_and_grad(layer, params, x, jnp.ones(layer.out_shape(x.shape), dtype))
    assert y.dtype == dx.dtype == g["w"].dtype == g["b"].dtype == dtype
    # each result rounded once from float32 sums: at most a unit in the last place apart
    ulp = float(jnp.finfo(dtype).eps)
    for got, want in [(y, y_ref), (g["w"], g_ref["w"]), (dx, dx_ref)]:
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        np.testing.assert_allclose(got, want, rtol=2 * ulp, atol=2 * ulp * np.abs(want).max())


def test_auto_traces_xla_convolutions_only_off_cpu(monkeypatch):
    layer, params, x = make(CASES[0], "auto")

    def primitives(platform):
        monkeypatch.setattr(fnn.backend, "default_platform", lambda: platform)

        def run(params, x):
            y, _, residuals = layer.fwd(params, {}, x)
            return layer.bwd(params, residuals, y)

        jaxpr = jax.make_jaxpr(run)(params, x)
        return [eqn.primitive.name for eqn in jaxpr.jaxpr.eqns]

    gpu = primitives("gpu")
    assert gpu.count("conv_general_dilated") == 3 and "custom_jvp_call" not in gpu and "pad" not in gpu
    cpu = primitives("cpu")
    assert cpu.count("conv_general_dilated") == 1 and "custom_jvp_call" in cpu  # dw only; a tap sum; col2im


@pytest.mark.parametrize("bad", ["fft", "XLA", None, 1])
def test_bad_implementation_names_the_layer_and_the_choices(bad):
    message = r"implementation must be one of 'auto', 'xla', 'im2col'; got "
    with pytest.raises(fnn.LayerError, match=r"^conv2d: " + message):
        L.conv2d(2, 3, implementation=bad)
    with pytest.raises(fnn.LayerError, match=r"^first: " + message + repr(bad)):
        L.conv2d(2, 3, implementation=bad, name="first")


def test_lowering_is_a_deprecated_spelling_of_implementation():
    _, params, x = make(CASES[0], "xla")
    with pytest.warns(DeprecationWarning, match=r"conv2d: lowering= is deprecated; pass implementation='im2col'"):
        old = L.conv2d(3, 3, lowering="im2col")
    new = L.conv2d(3, 3, implementation="im2col")
    assert str(jax.make_jaxpr(lambda p, x: old.apply(p, {}, x)[0])(params, x)) == str(
        jax.make_jaxpr(lambda p, x: new.apply(p, {}, x)[0])(params, x)
    )
    with pytest.warns(DeprecationWarning), pytest.raises(fnn.LayerError, match=r"^conv2d: implementation must be"):
        L.conv2d(2, 3, lowering="fft")


def test_backward_convolutions_stay_canonical_inside_a_scan():
    """dw and dx are NHWC x HWIO convolutions even inside lax.scan (fit's epoch), where
    XLA's CPU backend does not rewrite other dimension orders and would run a naive loop."""
    model = L.serial(L.conv2d(4, 3, padding="same", implementation="xla"), L.relu, L.conv2d(2, 3, stride=2, implementation="xla"))
    x = jnp.ones((2, 9, 9, 3), jnp.float32)
    params, state = model.init(fnn.key(0), x.shape, dtype=jnp.float32)
    grad_fn = fnn.value_and_grad(model, fnn.losses.mse, method="manual")
    target = jnp.zeros((2, 4, 4, 2), jnp.float32)

    def epoch(params):
        def body(p, _):
            _, g = grad_fn(p, state, x, target)
            return jax.tree.map(lambda a, b: a - 0.1 * b, p, g), None

        return jax.lax.scan(body, params, None, length=2)[0]

    hlo = jax.jit(epoch).lower(params).compile().as_text()
    labels = [line.split("dim_labels=")[1].split(",")[0] for line in hlo.splitlines() if " convolution(" in line]
    assert len(labels) >= 3  # two forwards, dw of both, dx of the second (the first's is dead)
    assert set(labels) == {"b01f_01io->b01f"}, labels
