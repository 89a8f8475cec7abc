"""Losses: values against formulas written here, hand-written backward against
jax.grad and finite differences, target handling and numerical stability."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import losses
from tests.helpers import TOL, on_backend

RNG = np.random.default_rng(0)
LOGITS = RNG.standard_normal((4, 3))
LABELS = np.array([0, 2, 1, 2])
SOFT = np.abs(RNG.standard_normal((4, 3)))
SOFT = SOFT / SOFT.sum(-1, keepdims=True)
PROBS = np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True)
BINARY = (RNG.random((4, 3)) > 0.5).astype(np.float64)
REGRESSION = RNG.standard_normal((4, 3))


def _log_softmax(z):
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


# (id, loss, pred, target, reference value)
CASES = [
    ("mse", losses.mse, REGRESSION, LOGITS, np.mean((REGRESSION - LOGITS) ** 2)),
    ("huber", losses.huber.replace(delta=0.5), 2 * REGRESSION, LOGITS, None),
    ("softmax_ce_labels", losses.softmax_cross_entropy, LOGITS, LABELS, -np.mean(_log_softmax(LOGITS)[np.arange(4), LABELS])),
    ("softmax_ce_soft", losses.softmax_cross_entropy, LOGITS, SOFT, -np.sum(SOFT * _log_softmax(LOGITS)) / 4),
    ("sigmoid_bce", losses.sigmoid_binary_cross_entropy, LOGITS, BINARY,
     -np.mean(BINARY * np.log(1 / (1 + np.exp(-LOGITS))) + (1 - BINARY) * np.log(1 - 1 / (1 + np.exp(-LOGITS))))),
    ("cross_entropy", losses.cross_entropy, PROBS, LABELS, -np.mean(np.log(PROBS[np.arange(4), LABELS] + 1e-7))),
    ("binary_cross_entropy", losses.binary_cross_entropy, 1 / (1 + np.exp(-LOGITS)), BINARY,
     -np.mean(BINARY * np.log(1 / (1 + np.exp(-LOGITS)) + 1e-7) + (1 - BINARY) * np.log(1 - 1 / (1 + np.exp(-LOGITS)) + 1e-7))),
]


def _huber_ref(r, d):
    a = np.abs(r)
    return np.mean(np.where(a <= d, 0.5 * r * r, d * (a - 0.5 * d)))


CASES[1] = CASES[1][:4] + (_huber_ref(2 * REGRESSION - LOGITS, 0.5),)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_value_matches_formula(case, backend_name):
    _, loss, pred, target, reference = case
    value = loss(on_backend(pred, backend_name), on_backend(target, backend_name))
    assert np.ndim(value) == 0
    np.testing.assert_allclose(float(value), reference, rtol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_backward_matches_autodiff_and_finite_differences(case, backend_name):
    _, loss, pred, target, _ = case
    p, t = on_backend(pred, backend_name), on_backend(target, backend_name)
    _, res = loss.fwd(p, t)
    manual = loss.bwd(res, 1.0)
    auto = jax.grad(lambda q: loss(q, jnp.asarray(target)))(jnp.asarray(pred))
    numeric = fnn.gradcheck.numerical_grad(lambda q: loss(q, target), pred)
    assert fnn.gradcheck.relative_error(manual, auto) < TOL
    assert fnn.gradcheck.relative_error(manual, numeric) < TOL
    scaled = loss.bwd(res, 2.5)  # the cotangent of the value scales the gradient
    np.testing.assert_allclose(np.asarray(scaled), 2.5 * np.asarray(manual), rtol=1e-12)


def test_softmax_cross_entropy_backward_is_softmax_minus_target_over_n():
    _, res = losses.softmax_cross_entropy.fwd(LOGITS, LABELS)
    expected = (PROBS - np.eye(3)[LABELS]) / 4
    np.testing.assert_allclose(losses.softmax_cross_entropy.bwd(res, 1.0), expected, rtol=1e-12)


def test_one_hot_and_integer_labels_agree():
    a = losses.softmax_cross_entropy(LOGITS, LABELS)
    b = losses.softmax_cross_entropy(LOGITS, np.eye(3)[LABELS])
    assert a == pytest.approx(b, rel=1e-14)


@pytest.mark.parametrize("backend_name", ["numpy", "jax"])
def test_cross_entropies_are_finite_for_extreme_logits(backend_name):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e30, -1e30, 0.0]], dtype=np.float32)
    labels = np.array([1, 0, 1])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value, res = losses.softmax_cross_entropy.fwd(on_backend(logits, backend_name), on_backend(labels, backend_name))
        grad = losses.softmax_cross_entropy.bwd(res, 1.0)
        bce = losses.sigmoid_binary_cross_entropy(on_backend(logits, backend_name), on_backend((logits > 0).astype(np.float32), backend_name))
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    assert np.isfinite(float(bce))
    auto = jax.grad(lambda z: losses.softmax_cross_entropy(z, jnp.asarray(labels)))(jnp.asarray(logits))
    assert np.all(np.isfinite(np.asarray(auto)))


def test_softmax_cross_entropy_over_sequences():
    """Leading axes beyond the batch are averaged over too (e.g. (batch, time, classes))."""
    logits = RNG.standard_normal((2, 5, 3))
    labels = RNG.integers(0, 3, (2, 5))
    flat = losses.softmax_cross_entropy(logits.reshape(10, 3), labels.reshape(10))
    assert losses.softmax_cross_entropy(logits, labels) == pytest.approx(flat, rel=1e-14)


def test_bad_targets_get_clear_errors():
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: labels must be in \[0, 3\); got values from 0 to 3"):
        losses.softmax_cross_entropy(LOGITS, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"integer labels must have shape \(4,\).*got \(4, 1\)"):
        losses.softmax_cross_entropy(LOGITS, LABELS[:, None])
    with pytest.raises(ValueError, match=r"targets must be integer labels of shape \(4,\) or probabilities of shape \(4, 3\)"):
        losses.softmax_cross_entropy(LOGITS, SOFT[:, :2])
    with pytest.raises(ValueError, match=r"mse: pred has shape \(4, 3\) but target has shape \(4,\)"):
        losses.mse(REGRESSION, REGRESSION[:, 0])
    with pytest.raises(ValueError, match=r"sigmoid_binary_cross_entropy: pred has shape \(4, 3\) but target has shape \(4, 1\)"):
        losses.sigmoid_binary_cross_entropy(LOGITS, BINARY[:, :1])


def test_label_range_is_not_checked_on_tracers_but_works_under_jit():
    f = jax.jit(losses.softmax_cross_entropy)
    assert float(f(jnp.asarray(LOGITS), jnp.asarray(LABELS))) == pytest.approx(float(losses.softmax_cross_entropy(LOGITS, LABELS)))


def test_binary_targets_outside_0_1_and_bad_deltas_are_refused():
    logits = np.zeros((3, 1))
    with pytest.raises(fnn.LayerError, match=r"sigmoid_binary_cross_entropy: targets must be probabilities or labels "
                                             r"in \[0, 1\]; got values from 0.0 to 2.0"):
        losses.sigmoid_binary_cross_entropy(logits, np.array([[0.0], [1.0], [2.0]]))
    with pytest.raises(fnn.LayerError, match=r"binary_cross_entropy: targets must be"):
        losses.binary_cross_entropy(np.full((2, 1), 0.5), np.array([[0.0], [-1.0]]))
    for loss in (losses.cross_entropy, losses.binary_cross_entropy):
        with pytest.raises(ValueError, match=r"delta must be a finite number >= 0; got -1"):
            loss.replace(delta=-1)
    with pytest.raises(ValueError, match=r"huber: delta must be a finite number > 0; got nan"):
        losses.huber.replace(delta=float("nan"))


def test_every_loss_is_a_value_with_defaults():
    """One convention: each loss is passed as is; hyper-parameters have defaults, a call keyword, or replace()."""
    pred, target = np.array([[0.0, 3.0]]), np.array([[0.0, 0.0]])
    assert losses.huber.config == {"delta": 1.0} and losses.mse.config == {}
    assert float(losses.huber(pred, target)) == pytest.approx((0 + 1.0 * (3 - 0.5)) / 2)
    assert float(losses.huber(pred, target, delta=2.0)) == pytest.approx((0 + 2.0 * (3 - 1.0)) / 2)
    halved = losses.huber.replace(delta=2.0)
    assert float(halved(pred, target)) == pytest.approx(2.0) and halved.config == {"delta": 2.0}
    assert halved == losses.huber.replace(delta=2.0) and hash(halved) == hash(losses.huber.replace(delta=2.0))
    assert halved != losses.huber and repr(halved) == "huber(delta=2.0)"
    assert float(halved.bwd(halved.fwd(pred, target)[1])[0, 1]) == pytest.approx(2.0 / 2)
    with pytest.raises(TypeError, match=r"huber: unknown hyper-parameter\(s\) \['beta'\]; its hyper-parameters are"):
        losses.huber.replace(beta=1.0)


def test_the_factory_spelling_warns_or_says_the_fix():
    with pytest.warns(DeprecationWarning, match=r"use fnn.losses.huber.replace\(delta=0.5\)"):
        old = losses.huber(delta=0.5)
    assert old == losses.huber.replace(delta=0.5)
    with pytest.warns(DeprecationWarning, match=r"use fnn.losses.cross_entropy$"):
        assert losses.cross_entropy() == losses.cross_entropy
    with pytest.raises(TypeError, match=r"huber is a loss value: call it as huber\(pred, target\).*"
                                        r"fnn.losses.huber.replace\(delta=1.0\)"):
        losses.huber(0.5)
    with pytest.raises(TypeError, match=r"mse is a loss value: call it as mse\(pred, target\), or pass fnn.losses.mse"):
        losses.mse()
