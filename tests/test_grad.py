"""value_and_grad (manual vs autodiff, NumPy and jit) and the custom_vjp bridge."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import layers as L
from fnn import losses
from tests.helpers import TOL, on_backend

MODEL = L.serial(L.dense(6), L.relu, L.dense(5), L.sigmoid, L.dense(3))


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    params, state = MODEL.init(np.random.default_rng(1), (None, 4), dtype=np.float64)
    x = rng.standard_normal((8, 4))
    y = rng.integers(0, 3, 8)
    return params, state, x, y


def test_manual_on_numpy_equals_autodiff_under_jit(problem):
    params, state, x, y = problem
    (loss_np, state_np), g_np = fnn.value_and_grad(MODEL, losses.softmax_cross_entropy, "manual")(params, state, x, y)
    assert type(g_np["dense"]["w"]) is np.ndarray
    auto = jax.jit(fnn.value_and_grad(MODEL, losses.softmax_cross_entropy, "autodiff"))
    manual = jax.jit(fnn.value_and_grad(MODEL, losses.softmax_cross_entropy, "manual"))
    jp, jx, jy = on_backend(params, "jax"), jnp.asarray(x), jnp.asarray(y)
    (loss_a, _), g_a = auto(jp, state, jx, jy)
    (loss_m, _), g_m = manual(jp, state, jx, jy)
    assert float(loss_np) == pytest.approx(float(loss_a), rel=1e-13) == pytest.approx(float(loss_m), rel=1e-13)
    fnn.gradcheck.assert_close(g_np, g_a, tol=1e-12, names=("manual numpy", "autodiff jit"))
    fnn.gradcheck.assert_close(g_m, g_a, tol=1e-12, names=("manual jit", "autodiff jit"))
    assert state_np == state


def test_manual_matches_finite_differences(problem):
    params, state, x, _ = problem
    (_, _), grads = fnn.value_and_grad(MODEL, losses.mse, "manual")(params, state, x, np.ones((8, 3)))
    numeric = fnn.gradcheck.numerical_grad(lambda p: losses.mse(MODEL.apply(p, state, x)[0], np.ones((8, 3))), params)
    fnn.gradcheck.assert_close(grads, numeric, tol=TOL)


def test_grads_keep_param_dtypes():
    params, state = MODEL.init(jax.random.key(0), (None, 4))  # float32
    x = jnp.ones((2, 4), jnp.float64)  # a float64 input must not turn the grads into float64
    for method in ("manual", "autodiff"):
        f = jax.jit(fnn.value_and_grad(MODEL, losses.softmax_cross_entropy, method))
        (_, _), grads = f(params, state, x, jnp.array([0, 1]))
        assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


def test_value_and_grad_argument_errors():
    with pytest.raises(ValueError, match=r"method must be one of \('manual', 'autodiff'\); got 'numeric'"):
        fnn.value_and_grad(MODEL, losses.mse, "numeric")
    with pytest.raises(TypeError, match=r"loss must be an fnn.losses.Loss"):
        fnn.value_and_grad(MODEL, lambda p, t: ((p - t) ** 2).mean(), "manual")
    with pytest.raises(TypeError, match=r"model must be an fnn Layer"):
        fnn.value_and_grad(lambda x: x, losses.mse)


# --------------------------------------------------------------------------- #
# manual_vjp: the hand-written rules inside jax.grad
# --------------------------------------------------------------------------- #


def _user_loss(model, params, state, x):
    """A loss written by a user in plain JAX around the model."""
    y, _ = model.apply(params, state, x)
    return jnp.sum(jnp.sin(y) ** 2) + 0.1 * jnp.sum(params["dense"]["w"] ** 2)


def test_manual_vjp_gives_jax_grad_answer_and_uses_the_custom_rule(problem):
    params, state, x, _ = problem
    jp, jx = on_backend(params, "jax"), jnp.asarray(x)
    bridged = fnn.manual_vjp(MODEL)
    expected = jax.grad(_user_loss, argnums=(1, 3))(MODEL, jp, state, jx)
    got = jax.jit(jax.grad(_user_loss, argnums=(1, 3)), static_argnums=0)(bridged, jp, state, jx)
    fnn.gradcheck.assert_close(got, expected, tol=1e-12)
    jaxpr = str(jax.make_jaxpr(lambda p: _user_loss(bridged, p, state, jx))(jp))
    assert "custom_vjp_call" in jaxpr
    assert "custom_vjp_call" not in str(jax.make_jaxpr(lambda p: _user_loss(MODEL, p, state, jx))(jp))


def _doubled(layer):
    """The same layer with a deliberately wrong backward rule (twice the gradient)."""

    def bwd(params, res, dy):
        grads, dx = layer.bwd(params, res, dy)
        return jax.tree.map(lambda g: 2 * g, grads), 2 * dx

    return layer.replace(bwd=bwd)


def test_a_wrong_rule_changes_jax_grad_under_jit_and_vmap(problem):
    """Proves the hand-written rule is what jax.grad runs, not a re-derivation."""
    params, state, x, _ = problem
    jp, jx = on_backend(params, "jax"), jnp.asarray(x)
    right, wrong = fnn.manual_vjp(MODEL), fnn.manual_vjp(_doubled(MODEL))

    def per_example(model, p, xi):
        return jnp.sum(model.apply(p, state, xi[None])[0] ** 2)

    grad = jax.jit(jax.grad(per_example, argnums=1), static_argnums=0)
    fnn.gradcheck.assert_close(jax.tree.map(lambda g: 2 * g, grad(right, jp, jx[0])), grad(wrong, jp, jx[0]), tol=1e-12)
    batched = jax.vmap(jax.grad(per_example, argnums=2), in_axes=(None, None, 0))
    np.testing.assert_allclose(2 * batched(right, jp, jx), batched(wrong, jp, jx), rtol=1e-12)


def test_manual_vjp_through_autodiff_value_and_grad(problem):
    params, state, x, y = problem
    jp, jx, jy = on_backend(params, "jax"), jnp.asarray(x), jnp.asarray(y)
    f = fnn.value_and_grad(fnn.manual_vjp(MODEL), losses.softmax_cross_entropy, "autodiff")
    g = fnn.value_and_grad(MODEL, losses.softmax_cross_entropy, "autodiff")
    fnn.gradcheck.assert_close(jax.jit(f)(jp, state, jx, jy)[1], g(jp, state, jx, jy)[1], tol=1e-12)


# --------------------------------------------------------------------------- #
# NumPy alone
# --------------------------------------------------------------------------- #

NUMPY_ONLY = textwrap.dedent(
    """
    import sys

    class BlockJax:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("jax", "jaxlib"):
                raise ImportError("JAX is blocked in this test")

    sys.meta_path.insert(0, BlockJax())
    import numpy as np
    import fnn
    from fnn import layers as L

    assert not fnn.backend.HAS_JAX and "jax" not in sys.modules
    model = L.serial(L.dense(16), L.tanh, L.dense(2), name="mlp")
    params, state = model.init(fnn.key(0, backend="numpy"), (None, 2), dtype=np.float64)
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    y = np.array([0, 1, 1, 0])
    step = fnn.value_and_grad(model, fnn.losses.softmax_cross_entropy, "manual")
    (_, _), grads = step(params, state, x, y)
    numeric = fnn.gradcheck.numerical_grad(
        lambda p: fnn.losses.softmax_cross_entropy(model.apply(p, state, x)[0], y), params)
    fnn.gradcheck.assert_close(grads, numeric, tol=1e-7)
    for _ in range(500):
        (loss, state), grads = step(params, state, x, y)
        params = fnn.backend.tree_map(lambda p, g: p - 0.5 * g, params, grads)
    logits, _ = model.apply(params, state, x)
    assert type(logits) is np.ndarray
    assert (logits.argmax(1) == y).all(), logits
    fnn.summary(model, (None, 2))
    try:
        fnn.value_and_grad(model, fnn.losses.mse, "autodiff")
    except ImportError as err:
        assert "needs JAX" in str(err)
    else:
        raise AssertionError("autodiff without JAX must raise")
    print("numpy-only ok", float(loss))
    """
)


def test_end_to_end_without_jax():
    out = subprocess.run([sys.executable, "-c", NUMPY_ONLY], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "numpy-only ok" in out.stdout


# --------------------------------------------------------------------------- #
# The model input's cotangent is not computed (its gradient is dropped)
# --------------------------------------------------------------------------- #

INPUT_FED_MODELS = {
    "mlp": L.serial(L.dense(6), L.relu, L.dense(3)),
    "residual_first": L.serial(L.residual(L.serial(L.dense(4), L.tanh)), L.dense(3)),
    "fan_out": L.serial(L.fan_out(2), L.parallel(L.dense(5), L.dense(5)), L.fan_in_sum, L.relu, L.dense(3)),
    "identity_first": L.serial(L.identity, L.dense(5), L.sigmoid, L.dense(3)),
}


@pytest.mark.parametrize("name", list(INPUT_FED_MODELS))
def test_manual_grads_with_dense_fed_by_the_model_input(name):
    model = INPUT_FED_MODELS[name]
    params, state = model.init(np.random.default_rng(1), (None, 4), dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((8, 4))
    y = np.random.default_rng(2).integers(0, 3, 8)
    (loss, _), grads = fnn.value_and_grad(model, losses.softmax_cross_entropy, "manual")(params, state, x, y)
    jp = on_backend(params, "jax")
    (loss_a, _), auto = jax.jit(fnn.value_and_grad(model, losses.softmax_cross_entropy, "autodiff"))(
        jp, state, jnp.asarray(x), jnp.asarray(y)
    )
    assert float(loss) == pytest.approx(float(loss_a), rel=1e-13)
    fnn.gradcheck.assert_close(grads, auto, tol=1e-12, names=("manual numpy", "autodiff jit"))
    _, _, res = model.fwd(params, state, x, train=True)  # model.bwd itself still returns the input's cotangent
    _, dx = model.bwd(params, res, np.ones((8, 3)))
    expected = jax.grad(lambda v: model.apply(jp, state, v)[0].sum())(jnp.asarray(x))
    np.testing.assert_allclose(dx, np.asarray(expected), rtol=1e-12, atol=1e-14)


def test_a_wrapped_rule_stays_in_force_inside_combinators_and_policies(problem):
    """A deliberately wrong rule wrapped by manual_vjp and nested in serial (and
    under a precision policy) is the one jax.grad uses: its gradients double."""
    params, state, x, _ = problem
    inner = L.serial(L.dense(6), L.relu, L.dense(5))
    plain = L.serial(inner, L.sigmoid, L.dense(3))
    wrapped = L.serial(fnn.manual_vjp(_doubled(inner)), L.sigmoid, L.dense(3))
    policed = L.serial(fnn.precision.policy(fnn.manual_vjp(_doubled(inner)), compute="float64", output="float64"),
                       L.sigmoid, L.dense(3))
    p, s = plain.init(jax.random.key(0), (None, 4), dtype=np.float64)
    jx = jnp.asarray(x)

    def loss(model, p):
        return jnp.sum(jnp.sin(model.apply(p, s, jx)[0]) ** 2)

    want = jax.grad(loss, argnums=1)(plain, p)
    for model in (wrapped, policed):
        got = jax.jit(jax.grad(loss, argnums=1), static_argnums=0)(model, p)
        assert sorted(got) == ["dense", "serial", "sigmoid"]
        fnn.gradcheck.assert_close(got["dense"], want["dense"], tol=1e-12)  # outside the wrapper: exact
        doubled = jax.tree.map(lambda g: 2 * g, want["serial"])  # inside: the wrong rule, doubled
        fnn.gradcheck.assert_close(got["serial"], doubled, tol=1e-12)


def test_a_backward_rule_returning_a_wrong_gradient_shape_is_named(problem):
    params, state, x, y = problem
    good = L.dense(5)

    def bad_bwd(p, res, dy):
        grads, dx = good.bwd(p, res, dy)
        return {"w": grads["w"], "b": grads["b"][:1]}, dx  # (1,) broadcasts into (5,): must not pass

    model = L.serial(L.dense(6), L.relu, good.replace(bwd=bad_bwd), L.sigmoid, L.dense(3))
    p, s = model.init(np.random.default_rng(0), (None, 4), dtype=np.float64)
    with pytest.raises(fnn.LayerError, match=r"serial/dense_1: its backward rule returned a gradient of shape \(1,\) "
                                             r"for params\['b'\] of shape \(5,\)"):
        fnn.value_and_grad(model, losses.softmax_cross_entropy, "manual")(p, s, x, y)


def test_a_loss_with_hyper_parameters_is_passed_as_a_value(problem):
    params, state, x, labels = problem
    y = np.eye(3)[labels] * 3.0  # residuals on both sides of delta
    pred = MODEL.apply(params, state, x)[0]
    for loss, delta in ((losses.huber, 1.0), (losses.huber.replace(delta=0.5), 0.5)):
        (value, _), grads = fnn.value_and_grad(MODEL, loss, "manual")(params, state, x, y)
        assert float(value) == pytest.approx(float(losses.huber(pred, y, delta=delta)))
        numeric = fnn.gradcheck.numerical_grad(lambda p: losses.huber(MODEL.apply(p, state, x)[0], y, delta=delta),
                                               params)
        fnn.gradcheck.assert_close(grads, numeric, tol=1e-6)
    for method in ("manual", "autodiff"):
        with pytest.raises(TypeError, match=r"value_and_grad: loss must be a loss such as"):
            fnn.value_and_grad(MODEL, "mse", method)
