"""Every loss's hand-written backward against jax.grad in float64, on targets
that break the easy cases: soft targets whose rows do not sum to 1, and
logits with several leading axes ``(batch, time, classes)``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import losses

RNG = np.random.default_rng(7)
LOGITS_3D = RNG.standard_normal((3, 5, 4))  # batch 3, time 5, classes 4: N = 15
LABELS_3D = RNG.integers(0, 4, size=(3, 5))
UNNORMALISED = RNG.uniform(0.0, 0.9, size=(3, 5, 4))  # soft targets, rows summing to anything in (0, 3.6)
UNIT = RNG.uniform(0.05, 0.95, size=(3, 5, 4))

CASES = [
    ("softmax_ce labels (batch, time, classes)", losses.softmax_cross_entropy, LOGITS_3D, LABELS_3D),
    ("softmax_ce soft rows not summing to 1", losses.softmax_cross_entropy, LOGITS_3D, UNNORMALISED),
    ("softmax_ce one-hot", losses.softmax_cross_entropy, LOGITS_3D, np.eye(4)[LABELS_3D]),
    ("cross_entropy soft rows not summing to 1", losses.cross_entropy, UNIT / UNIT.sum(-1, keepdims=True), UNNORMALISED),
    ("cross_entropy labels (batch, time, classes)", losses.cross_entropy, UNIT / UNIT.sum(-1, keepdims=True), LABELS_3D),
    ("mse", losses.mse, LOGITS_3D, UNNORMALISED),
    ("huber (both sides of delta)", losses.huber.replace(delta=0.7), 2 * LOGITS_3D, UNNORMALISED),
    ("sigmoid_bce", losses.sigmoid_binary_cross_entropy, LOGITS_3D, UNNORMALISED),
    ("binary_cross_entropy", losses.binary_cross_entropy, UNIT, UNNORMALISED),
]


@pytest.mark.parametrize("name, loss, pred, target", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("on", ["numpy", "jax"])
def test_backward_equals_autodiff(name, loss, pred, target, on):
    dvalue = 1.7  # not 1, so a rule that drops dvalue fails
    expected = jax.grad(lambda p: dvalue * loss(p, jnp.asarray(target)))(jnp.asarray(pred))
    as_array = np.asarray if on == "numpy" else jnp.asarray
    _, residuals = loss.fwd(as_array(pred), as_array(target))
    got = loss.bwd(residuals, dvalue)
    assert type(got) is type(as_array(pred))
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-10, atol=1e-14)


def test_soft_target_gradient_matches_finite_differences():
    """The case where (softmax - t) / N is wrong: rows of t summing to 0.3 and 2.4."""
    logits = np.array([[0.3, -1.2, 0.8], [1.5, 0.1, -0.4]])
    target = np.array([[0.1, 0.1, 0.1], [0.8, 0.8, 0.8]])
    _, residuals = losses.softmax_cross_entropy.fwd(logits, target)
    got = losses.softmax_cross_entropy.bwd(residuals, 1.0)
    eps = 1e-6
    numeric = np.zeros_like(logits)
    for idx in np.ndindex(*logits.shape):
        up, down = logits.copy(), logits.copy()
        up[idx] += eps
        down[idx] -= eps
        numeric[idx] = (losses.softmax_cross_entropy(up, target) - losses.softmax_cross_entropy(down, target)) / (2 * eps)
    np.testing.assert_allclose(got, numeric, rtol=1e-7, atol=1e-10)
