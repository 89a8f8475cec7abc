"""The convolution and pooling kernels of ``fnn.kernels``: every form of every
kernel against the ``"xla"`` form on the CPU (so that the form a GPU runs is
the reference in CI), the NumPy form against JAX, and the window arithmetic
("same" with dilation against XLA's, each gatherer against its adjoint).
Shapes are asymmetric throughout: batch, channels and each spatial size differ."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn.kernels import conv as K
from fnn.kernels import plan
from fnn.kernels import pool as P
from fnn.kernels import windows as win

TIGHT = {"rtol": 1e-11, "atol": 1e-11}

# (id, spatial sizes, kernel, strides, padding, dilation, channels, features, groups)
CONV_CASES = [
    ("1d_stride2_pad", (9,), (3,), (2,), ((1, 2),), (1,), 3, 4, 1),
    ("1d_dilated_groups", (11,), (3,), (1,), ((2, 0),), (2,), 4, 6, 2),
    ("2d_plain", (6, 5), (3, 2), (1, 1), ((1, 0), (0, 1)), (1, 1), 2, 3, 1),
    ("2d_stride_rect", (7, 8), (2, 3), (2, 1), ((0, 1), (2, 1)), (1, 1), 3, 5, 1),
    ("2d_dilated", (8, 7), (3, 2), (1, 2), ((2, 1), (1, 1)), (2, 3), 2, 3, 1),
    ("2d_depthwise", (5, 6), (3, 3), (1, 2), ((1, 1), (0, 2)), (1, 1), 3, 6, 3),
    ("2d_groups_dilated_strided", (9, 7), (2, 3), (2, 3), ((1, 0), (3, 2)), (3, 1), 4, 2, 2),
    ("3d", (4, 5, 6), (2, 3, 2), (1, 2, 1), ((1, 0), (0, 1), (1, 1)), (1, 1, 2), 2, 3, 1),
    ("3d_groups_strided", (5, 4, 6), (3, 2, 2), (2, 1, 2), ((1, 1), (0, 0), (0, 1)), (1, 1, 1), 4, 4, 4),
]
CONV_IDS = [c[0] for c in CONV_CASES]


def conv_data(case, seed=0):
    _, sizes, kernel, strides, pads, dilation, c, f, g = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, *sizes, c))
    w = rng.standard_normal((*kernel, c // g, f))
    out = win.output_sizes("test", sizes, kernel, strides, pads, "kernel", dilation)
    dy = rng.standard_normal((2, *out, f))
    geo = {"strides": strides, "padding": pads, "dilation": dilation, "groups": g}
    return x, w, dy, geo


def reference(x, w, dy, geo):
    """lax's own convolution and jax.vjp of it: y, dw, dx."""
    xj, wj, dyj = map(jnp.asarray, (x, w, dy))
    rank = w.ndim - 2

    def f(x, w):
        return jax.lax.conv_general_dilated(
            x, w, geo["strides"], geo["padding"], rhs_dilation=geo["dilation"],
            dimension_numbers=K.channels_last_dims(rank), feature_group_count=geo["groups"],
        )

    y, vjp = jax.vjp(f, xj, wj)
    dx, dw = vjp(dyj)
    return y, dw, dx


def forms_that_apply(case, kernel):
    _, sizes, _, strides, _, dilation, _, _, g = case
    plain = len(sizes) == 2 and g == 1 and set(dilation) == {1}
    forms = {"y": ["xla", "matmul"], "dw": ["xla", "matmul"], "dx": ["xla", "col2im"]}[kernel]
    if plain and kernel == "y":
        forms.append("taps")
    if plain and kernel == "dw" and set(strides) == {1}:
        forms.append("blocks")
    return forms


@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_every_conv_form_matches_xla_and_numpy_matches_jax(case):
    x, w, dy, geo = conv_data(case)
    y_ref, dw_ref, dx_ref = reference(x, w, dy, geo)
    window = w.shape[:-2]
    for how in forms_that_apply(case, "y"):
        y, _ = jax.jit(lambda x, w, how=how: K.conv_forward(x, w, implementation=how, **geo))(x, w)
        np.testing.assert_allclose(y, y_ref, err_msg=how, **TIGHT)
    for how in forms_that_apply(case, "dw"):
        dw = jax.jit(lambda x, dy, how=how: K.conv_dw(x, dy, window, implementation=how, **geo))(x, dy)
        np.testing.assert_allclose(dw, dw_ref, err_msg=how, **TIGHT)
    for how in forms_that_apply(case, "dx"):
        dx = jax.jit(lambda dy, w, how=how: K.conv_dx(dy, w, x.shape, implementation=how, **geo))(dy, w)
        np.testing.assert_allclose(dx, dx_ref, err_msg=how, **TIGHT)
    # NumPy arrays take the NumPy im2col form, whatever the implementation says
    y_np, cols = K.conv_forward(x, w, implementation="xla", **geo)
    assert isinstance(y_np, np.ndarray) and isinstance(cols, np.ndarray)
    np.testing.assert_allclose(y_np, y_ref, **TIGHT)
    for saved in (cols, None):
        np.testing.assert_allclose(K.conv_dw(x, dy, window, cols=saved, **geo), dw_ref, **TIGHT)
    dx_np = K.conv_dx(dy, w, x.shape, **geo)
    assert isinstance(dx_np, np.ndarray) and dx_np.shape == x.shape
    np.testing.assert_allclose(dx_np, dx_ref, **TIGHT)


def test_forms_refuse_what_they_do_not_compute():
    x, w, _, geo = conv_data(CONV_CASES[1])  # 1-D, dilated, groups
    with pytest.raises(ValueError, match="'taps' form computes 2-D stride-1 convolutions without dilation or groups"):
        K.conv_forward(jnp.asarray(x), jnp.asarray(w), implementation="taps", **geo)
    with pytest.raises(ValueError, match="implementation must be one of"):
        K.conv_forward(jnp.asarray(x), jnp.asarray(w), implementation="fft", **geo)
    with pytest.raises(ValueError, match="'tiles' form needs windows that tile"):
        P.pool_forward(jnp.ones((2, 5, 3)), "max", (2,), strides=(1,), padding=((0, 0),), implementation="tiles")
    with pytest.raises(ValueError, match="implementation must be 'auto' or one of"):
        P.max_pool_dx(jnp.ones((2, 4, 3)), jnp.ones((2, 2, 3)), jnp.ones((2, 2, 3)), (2,), strides=(2,),
                      padding=((0, 0),), implementation="xla")


def test_auto_is_xla_for_what_was_not_measured():
    """Dilation, groups or a rank other than 2 run XLA's convolution on a CPU too."""
    for w_shape, dilation, groups in [((3, 3, 2, 4), (2, 1), 1), ((3, 3, 1, 4), (1, 1), 2), ((3, 1, 4), (1,), 1),
                                      ((2, 3, 3, 1, 4), (1, 1, 1), 1)]:
        forms = plan.lowering_plan("auto", "cpu", w_shape, (1,) * (len(w_shape) - 2), 64 * 28 * 28,
                                   dilation=dilation, groups=groups)
        assert forms == ("xla", "xla", "xla")
        im2col = plan.lowering_plan("im2col", "cpu", w_shape, (1,) * (len(w_shape) - 2), 100, dilation=dilation,
                                    groups=groups)
        assert im2col == ("matmul", "matmul", "col2im")


# --------------------------------------------------------------------------- #
# Window arithmetic
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("n, k, s, d", [(7, 3, 2, 2), (6, 2, 1, 3), (5, 4, 3, 1), (9, 3, 4, 2), (1, 5, 1, 2)])
def test_same_padding_with_dilation_matches_xla(n, k, s, d):
    lo, hi = win.same_padding(n, k, s, d)
    assert -(-n // s) == win.output_sizes("t", (n,), (k,), (s,), ((lo, hi),), "kernel", (d,))[0]
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, n, 3)))
    w = jnp.asarray(np.random.default_rng(1).standard_normal((k, 3, 2)))
    dims = ("NWC", "WIO", "NWC")
    want = jax.lax.conv_general_dilated(x, w, (s,), "SAME", rhs_dilation=(d,), dimension_numbers=dims)
    got = jax.lax.conv_general_dilated(x, w, (s,), [(lo, hi)], rhs_dilation=(d,), dimension_numbers=dims)
    np.testing.assert_allclose(got, want, **TIGHT)


@pytest.mark.parametrize("backend_name", ["numpy", "jax"])
@pytest.mark.parametrize("sizes, window, strides, dilation", [((7,), (3,), (2,), (2,)), ((6, 5), (2, 3), (1, 2), (2, 1)),
                                                              ((4, 5, 6), (2, 1, 3), (2, 1, 1), (1, 3, 2))])
def test_gatherers_and_their_adjoints(sizes, window, strides, dilation, backend_name):
    """<patches(x), c> == <x, patches_to_image(c)>, and the same for im2col / col2im and tiles / untile."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *sizes, 3))
    out = win.output_sizes("t", sizes, window, strides, ((0, 0),) * len(sizes), "window", dilation)
    arr = jnp.asarray if backend_name == "jax" else np.asarray
    cols = rng.standard_normal((2, *out, *window, 3))
    p = win.patches(arr(x), window, strides, out, dilation)
    back = win.patches_to_image(arr(cols), strides, sizes, dilation)
    assert p.shape == cols.shape and back.shape == x.shape
    np.testing.assert_allclose(np.sum(np.asarray(p) * cols), np.sum(x * np.asarray(back)), rtol=1e-12)
    matrix = win.im2col(x, window, strides, out, dilation)
    dcols = rng.standard_normal(matrix.shape)
    np.testing.assert_allclose(np.sum(matrix * dcols), np.sum(x * win.col2im(dcols, x.shape, window, strides, dilation)),
                               rtol=1e-12)
    t = win.tiles(arr(x), window, [n // k for n, k in zip(sizes, window)])
    dt = rng.standard_normal(t.shape)
    np.testing.assert_allclose(np.sum(np.asarray(t) * dt), np.sum(x * np.asarray(win.untile(arr(dt), sizes))), rtol=1e-12)


def test_im2col_layout_is_the_kernel_layout():
    """cols.T @ w.reshape(-1, F) is the convolution: the rows follow w's (taps, channel) order."""
    x, w, _, geo = conv_data(CONV_CASES[7])  # 3-D
    pads = geo["padding"]
    out = win.output_sizes("t", x.shape[1:-1], w.shape[:-2], geo["strides"], pads, "kernel", geo["dilation"])
    cols = win.im2col(win.pad(x, pads), w.shape[:-2], geo["strides"], out, geo["dilation"])
    y = (cols.T @ w.reshape(-1, w.shape[-1])).reshape(2, *out, w.shape[-1])
    np.testing.assert_allclose(y, reference(x, w, np.zeros((2, *out, w.shape[-1])), geo)[0], **TIGHT)


# --------------------------------------------------------------------------- #
# Pooling
# --------------------------------------------------------------------------- #

# (id, spatial sizes, window, strides, padding)
POOL_CASES = [
    ("1d_tiles", (9,), (2,), (2,), ((0, 1),)),
    ("1d_overlap", (8,), (3,), (2,), ((1, 1),)),
    ("2d_tiles_rect", (6, 7), (2, 3), (2, 3), ((0, 0), (1, 1))),
    ("2d_overlap_rect", (7, 6), (3, 2), (2, 1), ((1, 0), (1, 1))),
    ("3d_tiles", (4, 6, 5), (2, 3, 1), (2, 3, 1), ((0, 0), (0, 0), (0, 0))),
    ("3d_overlap", (5, 4, 6), (2, 2, 3), (1, 2, 2), ((1, 0), (0, 1), (1, 1))),
]
POOL_IDS = [c[0] for c in POOL_CASES]


def pool_input(sizes, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    shape = (2, *sizes, 3)
    if ties:
        return rng.integers(0, 3, shape).astype(np.float64)
    size = int(np.prod(shape))
    return (rng.permutation(size) * 0.01).reshape(shape)


@pytest.mark.parametrize("reducer", ["max", "sum"])
@pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
def test_every_pool_form_matches_xla_and_jax_grad(case, reducer):
    _, sizes, window, strides, pads = case
    tiled = window == strides
    geo = {"strides": strides, "padding": pads}
    for ties in (False, True):
        x = pool_input(sizes, ties=ties)
        y_ref, vjp = jax.vjp(lambda v: P.xla_reduce_window(v, reducer, window, strides, pads), jnp.asarray(x))
        dy = np.random.default_rng(1).standard_normal(y_ref.shape)
        (dx_ref,) = vjp(jnp.asarray(dy))  # jax.grad of reduce_window: XLA's tie rule
        forms = ["xla", "patches"] + (["tiles"] if tiled else [])
        for how in forms:
            y, _ = P.pool_forward(jnp.asarray(x), reducer, window, implementation=how, **geo)
            np.testing.assert_allclose(y, y_ref, err_msg=how, **TIGHT)
        for how in ["auto", "xla", "patches"] + (["tiles"] if tiled else []):  # NumPy forms ("xla": "auto")
            y, first = P.pool_forward(x, reducer, window, implementation=how, **geo)
            assert isinstance(y, np.ndarray)
            np.testing.assert_allclose(y, y_ref, err_msg=how, **TIGHT)
            if reducer == "max":
                for saved in (first, None):
                    dx = P.max_pool_dx(x, y, dy, window, first=saved, implementation=how, **geo)
                    np.testing.assert_allclose(dx, dx_ref, err_msg=f"numpy {how}", **TIGHT)
        backward = ["patches", "auto"] + (["tiles"] if tiled else []) + ([] if reducer == "max" else ["xla"])
        for how in backward:
            if reducer == "max":
                fn = jax.jit(lambda x, y, dy, how=how: P.max_pool_dx(x, y, dy, window, implementation=how, **geo))
                dx = fn(jnp.asarray(x), y_ref, jnp.asarray(dy))
            else:
                dx = jax.jit(lambda dy, how=how: P.sum_pool_dx(dy, x.shape, window, implementation=how, **geo))(dy)
                dx_np = P.sum_pool_dx(dy, x.shape, window, implementation="auto", **geo)
                np.testing.assert_allclose(dx_np, dx_ref, err_msg="numpy", **TIGHT)
            np.testing.assert_allclose(dx, dx_ref, err_msg=how, **TIGHT)


def test_sum_pool_xla_backward_with_padding_wider_than_the_reach():
    """The "xla" sum backward crops when the padding exceeds what a window reaches."""
    for sizes, window, strides, pads in [((5,), (2,), (3,), ((1, 1),)), ((6, 4), (3, 2), (3, 2), ((2, 0), (1, 1)))]:
        x = pool_input(sizes)
        y, vjp = jax.vjp(lambda v: P.xla_reduce_window(v, "sum", window, strides, pads), jnp.asarray(x))
        dy = np.random.default_rng(2).standard_normal(y.shape)
        got = P.sum_pool_dx(jnp.asarray(dy), x.shape, window, strides=strides, padding=pads, implementation="xla")
        np.testing.assert_allclose(got, vjp(jnp.asarray(dy))[0], **TIGHT)


def test_offsets_cover_the_window_in_row_major_order():
    assert list(itertools.product(range(2), range(3))) == win._offsets((2, 3))
