"""The curriculum's experiments on gradients through depth and time, depth
itself, decision boundaries and what a CNN learns: each example's ``--quick``
run, with fixed seeds, shows its claim (not only that it ran)."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from fnn import initializers

ROOT = Path(__file__).resolve().parents[1]


def example(name: str):
    """Import examples/<name>.py as a module (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"curriculum_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def number(pattern: str, text: str) -> tuple[float, ...]:
    found = re.search(pattern, text, flags=re.M)
    assert found, (pattern, text)
    return tuple(float(g) for g in found.groups())


def test_vanishing_and_exploding_gradients(tmp_path, capsys):
    png = tmp_path / "vanishing_exploding.png"
    r = example("vanishing_exploding").main(["--quick", "--out", str(png)])
    out = capsys.readouterr().out
    # vanishing: the first sigmoid layer's gradient is < 1% of the last hidden layer's, every epoch;
    # with relu the same depth keeps them within a factor of 10
    sigmoid, relu = r["sigmoid_norms"], r["relu_norms"]
    assert sigmoid.shape == (2, 7) and np.all(sigmoid[:, 0] < 1e-2 * sigmoid[:, -2])
    assert np.all(np.diff(np.log(sigmoid.mean(0))[:-1]) > 0)  # growing layer after layer towards the output
    assert np.all(relu[:, 0] > 0.1 * relu[:, -2])
    ratio, relu_ratio = number(r"first / last hidden layer gradient norm (\S+) \(relu (\S+)\)", out)
    assert ratio < 1e-2 < relu_ratio
    # exploding: without clipping the gradient norm passes 1e3; with clipping the loss stays finite and falls
    assert np.nanmax(r["unclipped"]["grad_norm"]) > 1e3
    clipped = r["clipped"]["loss"]
    assert np.all(np.isfinite(clipped)) and np.mean(clipped[-60:]) < 0.1 * clipped[0]
    assert number(r"without clipping: max gradient norm (\S+),", out)[0] > 1e3
    # long memory: the identity start (IRNN) beats the plain orthogonal start
    irnn, plain = number(r"adding problem mse: irnn ([\d.]+) vs plain rnn ([\d.]+)", out)
    assert irnn < 0.6 * plain
    assert png.stat().st_size > 20_000


def test_sequence_rnn_gradient_vanishes_through_time_lstm_keeps_it(tmp_path, capsys):
    png = tmp_path / "sequence.png"
    results = example("sequence").main(["--quick", "--out", str(png)])
    out = capsys.readouterr().out
    # after training, the RNN's gradient reaching the first step is a vanishing fraction of the last step's;
    # the LSTM's cell carries it back at least 10 times better
    rnn, lstm = number(r"t=0 / t=29  rnn (\S+)   lstm (\S+)$", out)
    assert rnn < 1e-2 and lstm > 10 * rnn
    for r in results.values():
        assert r["norms"].shape == (30,) and np.all(np.isfinite(r["norms"])) and 0 < r["mse"] < 0.3
    assert png.stat().st_size > 10_000


def test_identity_initializer():
    w = initializers.identity(0.5)(np.random.default_rng(0), (3, 3), np.float64)
    np.testing.assert_array_equal(w, 0.5 * np.eye(3))
    assert w.dtype == np.float64 and repr(initializers.identity(0.5)) == "identity(scale=0.5)"
    with pytest.raises(ValueError, match=r"identity: needs a square \(n, n\) kernel; got shape \(3, 4\)"):
        initializers.identity()(np.random.default_rng(0), (3, 4))


def test_depth_residual_connections_train_the_deep_network(tmp_path, capsys):
    png = tmp_path / "depth.png"
    r = example("depth").main(["--quick", "--out", str(png)])
    out = capsys.readouterr().out
    res = r["results"]
    assert res["deep plain"]["params"] == res["deep residual"]["params"]  # only the shortcuts differ
    shallow, plain, residual = number(
        r"final training loss: shallow plain ([\d.]+), deep plain ([\d.]+), deep residual ([\d.]+)", out)
    # the same 17 convolutions train much better with identity shortcuts, and better than the shallow net
    assert residual < 0.8 * plain and residual < 0.8 * shallow
    assert png.stat().st_size > 15_000


@pytest.mark.slow
def test_depth_degradation_at_full_size(tmp_path):
    res = example("depth").run()["results"]
    mean = {name: float(np.mean(v["loss"])) for name, v in res.items()}  # over the epochs: the whole curve
    assert mean["deep residual"] < mean["shallow plain"] < mean["deep plain"], mean


def test_decision_boundaries_and_universal_approximation(tmp_path, capsys):
    png = tmp_path / "decision_boundaries.png"
    r = example("decision_boundaries").main(["--quick", "--out", str(png)])
    out = capsys.readouterr().out
    accuracy = [r["depth"][k]["accuracy"] for k in range(4)]
    # logistic regression draws one line through the spirals; one hidden layer bends it; two or more follow the arms
    assert accuracy[0] < 0.8 and accuracy[0] < accuracy[1] < accuracy[2] and min(accuracy[2:]) >= 0.98
    assert number(r"spirals training accuracy: 0 hidden ([\d.]+),", out)[0] == round(accuracy[0], 2)
    errors = [r["width"][n]["max_error"] for n in sorted(r["width"])]
    assert errors[-1] < 0.3 * errors[0] and errors[-1] < errors[1]  # the error falls with the width
    assert png.stat().st_size > 30_000


def test_cnn_insight_pooling_tolerates_a_shift(tmp_path, capsys):
    module = example("cnn_insight")
    image = np.arange(9.0).reshape(1, 3, 3, 1)
    np.testing.assert_array_equal(module.shift(image, 1, 0)[0, :, :, 0], [[0, 0, 0], [0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(module.shift(image, 0, -1)[0, :, :, 0], [[1, 2, 0], [4, 5, 0], [7, 8, 0]])
    png = tmp_path / "cnn_insight.png"
    r = module.main(["--quick", "--out", str(png)])
    out = capsys.readouterr().out
    pooled, flat = r["results"]["with pooling"], r["results"]["without pooling"]
    assert pooled["clean"] > 0.8 and flat["clean"] > 0.9
    lost_pooled, lost_flat = number(r"lost to a 1-pixel shift: with pooling ([\d.]+), without pooling ([\d.]+)", out)
    assert 0 < lost_pooled < lost_flat
    before, after = pooled["kernels_before"], pooled["kernels_after"]
    assert before.shape == after.shape == (3, 3, 1, 4)
    change = number(r"first-layer kernels: relative change ([\d.]+) in training", out)[0]
    assert 0.05 < change == round(module.kernel_change(pooled), 2)
    assert png.stat().st_size > 15_000
