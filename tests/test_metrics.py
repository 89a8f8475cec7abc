"""Classification metrics: hand-computed cases, a brute-force reference on random
data, NaN where a score is undefined, NumPy and jit agreeing, and the plot."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import metrics


def to_backend(backend_name, *arrays):
    return tuple(jnp.asarray(a) if backend_name == "jax" else np.asarray(a) for a in arrays)


# --------------------------------------------------------------------------- #
# Brute-force references: loops over examples and classes, no vectorisation
# --------------------------------------------------------------------------- #


def reference_top_k(scores, labels, k):
    hits = 0
    for row, label in zip(scores, labels):
        order = sorted(range(len(row)), key=lambda c: (-row[c], c))  # argmax's tie rule: lower index first
        hits += label in order[:k]
    return hits / len(labels)


def reference_scores(predicted, labels, num_classes):
    """Per-class precision, recall, F1 by counting, NaN where a denominator is 0."""
    out = {"precision": [], "recall": [], "f1": []}
    for c in range(num_classes):
        tp = sum(p == c and t == c for p, t in zip(predicted, labels))
        n_pred = sum(p == c for p in predicted)
        n_true = sum(t == c for t in labels)
        p = tp / n_pred if n_pred else float("nan")
        r = tp / n_true if n_true else float("nan")
        f = 2 * p * r / (p + r) if (p == p and r == r and p + r > 0) else float("nan")
        out["precision"].append(p)
        out["recall"].append(r)
        out["f1"].append(f)
    return {k: np.array(v) for k, v in out.items()}


def macro(values):
    defined = [v for v in values if v == v]
    return sum(defined) / len(defined) if defined else float("nan")


# --------------------------------------------------------------------------- #
# Hand-computed cases
# --------------------------------------------------------------------------- #


def test_hand_computed_scores(backend_name="numpy"):
    # true:      0 0 0 1 1 2      (class 3 never occurs, class 2 never predicted)
    # predicted: 0 0 1 1 3 1
    scores = np.eye(4)[[0, 0, 1, 1, 3, 1]] * 3.0
    pred, target = to_backend(backend_name, scores, np.array([0, 0, 0, 1, 1, 2]))
    np.testing.assert_array_equal(metrics.confusion_matrix(pred, target),
                                  [[2, 1, 0, 0], [0, 1, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]])
    p = metrics.precision(pred, target, average=None)
    r = metrics.recall(pred, target, average=None)
    f = metrics.f1(pred, target, average=None)
    np.testing.assert_allclose(p, [1.0, 1 / 3, np.nan, 0.0])  # class 2 never predicted: NaN, not 0
    np.testing.assert_allclose(r, [2 / 3, 1 / 2, 0.0, np.nan])  # class 3 never occurs: NaN
    np.testing.assert_allclose(f, [0.8, 0.4, np.nan, np.nan])  # class 2: p undefined; class 3: r undefined
    assert float(metrics.precision(pred, target)) == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert float(metrics.recall(pred, target)) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert float(metrics.f1(pred, target)) == pytest.approx((0.8 + 0.4) / 2)


def test_hand_computed_top_k_with_ties(backend_name="numpy"):
    scores = np.array([[0.1, 0.5, 0.5, 0.2],   # label 2 ties class 1, which ranks first: top-1 miss, top-2 hit
                       [0.9, 0.0, 0.3, 0.3],   # label 3: ranks third (0.3 ties class 2, lower index first)
                       [0.2, 0.2, 0.2, 0.2]])  # label 0: first of the ties
    pred, target = to_backend(backend_name, scores, np.array([2, 3, 0]))
    assert [float(metrics.top_k_accuracy(pred, target, k)) for k in (1, 2, 3, 4)] == pytest.approx(
        [1 / 3, 2 / 3, 1.0, 1.0])
    assert float(metrics.top_k_accuracy(pred, target, 1)) == pytest.approx(float(metrics.accuracy(pred, target)))
    onehot = to_backend(backend_name, np.eye(4)[[2, 3, 0]])[0]
    assert float(metrics.top_k_accuracy(pred, onehot, k=2)) == pytest.approx(2 / 3)


def test_binary_logits_and_integer_predictions(backend_name="numpy"):
    logits, target = to_backend(backend_name, np.array([[2.0], [-1.0], [0.5], [-3.0]]), np.array([[1.0], [1.0], [0.0], [0.0]]))
    np.testing.assert_array_equal(metrics.confusion_matrix(logits, target), [[1, 1], [1, 1]])
    labels, truth = to_backend(backend_name, np.array([2, 2, 0]), np.array([2, 1, 0]))
    np.testing.assert_array_equal(metrics.confusion_matrix(labels, truth, num_classes=4),
                                  [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])


def test_macro_is_nan_only_when_no_class_is_defined():
    cm = np.zeros((3, 3), dtype=np.int32)
    assert all(np.isnan(float(v)) for v in metrics.precision_recall_f1(cm).values())
    per_class = metrics.precision_recall_f1(np.array([[0, 2], [0, 0]]), average=None)
    np.testing.assert_allclose(per_class["precision"], [np.nan, 0.0])
    np.testing.assert_allclose(per_class["f1"], [np.nan, np.nan])  # class 1: p = 0, r undefined


# --------------------------------------------------------------------------- #
# Against the brute-force reference, on both backends and under jit
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("seed, backend_name", [(0, "jax"), (1, "numpy"), (2, "numpy")])
def test_against_brute_force(seed, backend_name):
    rng = np.random.default_rng(seed)
    n, c = 40, 6
    scores = rng.integers(0, 4, (n, c)).astype(np.float64)  # small integers: many ties
    labels = rng.integers(0, c - 1, n)  # the last class never occurs
    pred, target = scores, labels  # eager on NumPy; JAX under jit below (eager JAX costs seconds in dispatch)
    predicted = scores.argmax(1)
    reference = reference_scores(predicted, labels, c)
    for name, fn in (("precision", metrics.precision), ("recall", metrics.recall), ("f1", metrics.f1)):
        np.testing.assert_allclose(fn(pred, target, average=None), reference[name], rtol=1e-12)
        assert float(fn(pred, target)) == pytest.approx(macro(reference[name]), rel=1e-12)
    for k in (1, 2, 3, 6):
        assert float(metrics.top_k_accuracy(pred, target, k)) == pytest.approx(reference_top_k(scores, labels, k))
    expected = np.zeros((c, c), dtype=int)
    for p, t in zip(predicted, labels):
        expected[t, p] += 1
    np.testing.assert_array_equal(metrics.confusion_matrix(pred, target), expected)
    if backend_name == "jax":  # the same under jit
        jitted = jax.jit(lambda p, t: (metrics.f1(p, t, average=None), metrics.top_k_accuracy(p, t, 2),
                                       metrics.precision(p, t), metrics.confusion_matrix(p, t)))
        f, top2, p, cm = jitted(*to_backend("jax", scores, labels))
        np.testing.assert_allclose(f, reference["f1"], rtol=1e-12)
        assert float(top2) == pytest.approx(reference_top_k(scores, labels, 2))
        assert float(p) == pytest.approx(macro(reference["precision"]), rel=1e-12)
        np.testing.assert_array_equal(cm, expected)
    halves = metrics.confusion_matrix(pred[:15], target[:15]) + metrics.confusion_matrix(pred[15:], target[15:])
    np.testing.assert_array_equal(halves, expected)  # batches add up to the whole set


def test_bad_arguments_say_what_was_expected():
    scores = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"top_k_accuracy: k must be a positive int; got 0"):
        metrics.top_k_accuracy(scores, np.array([0, 1, 2]), k=0)
    with pytest.raises(ValueError, match=r"confusion_matrix: targets must be labels of shape \(3,\) or one-hot"):
        metrics.confusion_matrix(scores, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"precision: average must be 'macro' or None; got 'micro'"):
        metrics.precision(scores, np.array([0, 1, 2]), average="micro")
    with pytest.raises(ValueError, match=r"num_classes=3 but the scores have 4 classes"):
        metrics.recall(scores, np.array([0, 1, 2]), num_classes=3)


def test_plot_confusion_matrix(tmp_path):
    import matplotlib.pyplot as plt

    from fnn.classification import _figure

    cm = np.array([[5, 1], [0, 4]])
    fig = _figure(plt, cm, ["cat", "dog"], normalize=False, title="pets")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["5", "1", "0", "4"] and [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["cat", "dog"]
    fig = _figure(plt, cm, None, normalize=True, title=None)
    assert [t.get_text() for t in fig.axes[0].texts] == ["0.83", "0.17", "0.00", "1.00"]
    plt.close("all")
    path = metrics.plot_confusion_matrix(cm, tmp_path / "cm.png", class_names=["cat", "dog"])
    image = plt.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.std() > 0.05
    with pytest.raises(ValueError, match=r"2 classes but 3 class_names"):
        metrics.plot_confusion_matrix(cm, tmp_path / "bad.png", class_names=["a", "b", "c"])
