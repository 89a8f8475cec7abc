"""The curriculum's training experiments (issue 18, items 9-12: numerical
gradients, layer-wise pre-training, regularisation, initialisation) show
their claims in their ``--quick`` sizes, with fixed seeds."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def example(name: str):
    """Import examples/<name>.py as a module (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"curriculum_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regularization_l1_zeroes_weights_and_l2_shrinks_them_all(tmp_path, capsys):
    png = tmp_path / "reg.png"
    results = example("regularization").main(["--quick", "--penalty-in-loss", "--backend", "numpy", "--out", str(png)])
    assert list(results) == ["plain", "L2 0.03", "L1 0.01", "dropout 0.15"]
    plain, l2, l1 = results["plain"], results["L2 0.03"], results["L1 0.01"]
    assert l1["near_zero"] > 0.25 and plain["near_zero"] < 0.02 and l2["near_zero"] < 0.02  # L1: sparse
    assert l2["mean_abs"] < 0.8 * plain["mean_abs"]  # L2: every weight smaller
    assert np.median(np.abs(l2["abs_weights"])) < 0.8 * np.median(np.abs(plain["abs_weights"]))
    for r in results.values():
        assert len(r["train"]) == len(r["test"]) == 150 and r["final_test"] > 0.6
        np.testing.assert_allclose(r["train_loss"], np.add(r["data_loss"], r["penalties"]))  # --penalty-in-loss
    assert plain["penalty"] == 0 and l2["penalty"] > 0.1 and l1["penalty"] > 0.1
    out = capsys.readouterr().out
    near_zero = r"weights near 0 \(\|w\| < 0\.001\): plain \d\.\d%, L2 0\.03 \d\.\d%, L1 0\.01 \d\d\.\d%"
    assert re.search(near_zero, out), out
    assert "train loss + penalty" in out and png.stat().st_size > 10_000


def test_regularization_penalty_is_the_loss_term():
    reg = example("regularization")
    params = {"dense": {"w": np.array([[1.0, -2.0]]), "b": np.array([5.0, 5.0])}}
    assert reg.penalty(params, l2=0.5) == pytest.approx(0.5 / 2 * 5.0)  # biases are not penalised
    assert reg.penalty(params, l1=0.1) == pytest.approx(0.1 * 3.0)


def test_initialization_notes_xavier_is_lecun_beside_glorot_and_he(tmp_path, capsys):
    png = tmp_path / "init.png"
    result = example("initialization").main(["--quick", "--out", str(png), "--backend", "numpy"])
    spread = result["spread"]
    assert spread["sigmoid", "std 0.01"][-1] < 0.05  # every unit near 0.5: no diversity
    assert spread["sigmoid", "std 1"][-1] > 0.4  # saturated at 0 and 1
    assert 0.1 < spread["sigmoid", "LeCun"][-1] < 0.3
    assert spread["relu", "std 0.01"][-1] < 1e-4  # vanishing activations
    assert spread["relu", "std 1"][-1] > 100  # exploding activations
    assert 0.5 < spread["relu", "He"][-1] < 1.5  # kept in scale through five layers
    assert spread["relu", "LeCun"][-1] < 0.5 * spread["relu", "LeCun"][0]  # 1/sqrt(n) halves ReLU's variance per layer
    # the notes' Xavier (1/sqrt(n_in)) is LeCun's rule; Glorot's differs except for square layers
    for name, rows in result["stds"].items():
        for n_in, measured, formula in rows:
            assert measured == pytest.approx(formula, rel=0.06), (name, n_in)
    stds = {name: {n_in: formula for n_in, _, formula in rows} for name, rows in result["stds"].items()}
    assert stds["LeCun"][1000] == pytest.approx(1 / np.sqrt(1000))
    assert stds["Glorot"][100] == pytest.approx(stds["LeCun"][100]) and stds["Glorot"][1000] > 1.3 * stds["LeCun"][1000]
    assert stds["He"][300] == pytest.approx(np.sqrt(2) * stds["LeCun"][300])
    curves = result["curves"]
    assert list(curves) == ["std 0.01", "LeCun", "Glorot", "He"]
    assert curves["He"][-1] < curves["LeCun"][-1] and curves["He"][-1] < curves["std 0.01"][-1] - 0.2
    out = capsys.readouterr().out
    assert "LeCun 1/√n_in (notes' Xavier)" in out and "saved" in out
    assert png.stat().st_size > 20_000


def test_hyperparameter_search_narrows_its_range_and_marks_diverged_trials(tmp_path, capsys):
    png = tmp_path / "hp.png"
    out = example("hyperparameter_search").main(["--quick", "--backend", "numpy", "--out", str(png)])
    results, best, ranges = out["results"], out["best"], out["ranges"]
    assert len(results) == 16 and [r["round"] for r in results] == [1] * 8 + [2] * 8
    assert ranges[0] == ((-4.0, 2.0), (-8.0, -2.0))
    for r in results:  # each trial drawn on a log scale inside its round's range
        (lr_low, lr_high), (wd_low, wd_high) = ranges[r["round"] - 1]
        assert lr_low <= np.log10(r["lr"]) <= lr_high and wd_low <= np.log10(r["weight_decay"]) <= wd_high
    (lr1, wd1), (lr2, wd2) = ranges
    assert lr1[0] <= lr2[0] < lr2[1] <= lr1[1] and lr2[1] - lr2[0] < 0.5 * (lr1[1] - lr1[0])  # narrowed
    assert wd1[0] <= wd2[0] < wd2[1] <= wd1[1]
    by_round = [[r for r in results if r["round"] == k] for k in (1, 2)]
    assert sum(r["diverged"] for r in by_round[0]) >= 1 and not any(r["diverged"] for r in by_round[1])
    assert np.median([r["val_accuracy"] for r in by_round[1]]) > np.median([r["val_accuracy"] for r in by_round[0]])
    assert not best["diverged"] and best["val_accuracy"] == max(r["val_accuracy"] for r in results)
    assert 0.3 < best["test_accuracy"] <= 1
    text = capsys.readouterr().out
    assert re.search(r"^diverged \(stopped at a non-finite loss\): [1-9]\d* of 16$", text, flags=re.M), text
    assert "measured once" in text and png.stat().st_size > 10_000


def test_pretraining_lifts_a_deep_sigmoid_network_off_its_plateau(tmp_path, capsys):
    png = tmp_path / "pretraining.png"
    result = example("pretraining").main(["--quick", "--backend", "numpy", "--out", str(png)])
    for curve in result["reconstruction"]:  # each autoencoder learns to reconstruct its input
        assert len(curve) == 15 and curve[-1] < 0.6 * curve[0]
    random, pretrained = result["random"], result["pre-trained"]
    assert random["train_loss"][-1] > 2.2 and random["test_accuracy"][-1] < 0.2  # stuck near log(10) = 2.30
    assert pretrained["train_loss"][-1] < 1.2 and pretrained["test_accuracy"][-1] > 0.4
    out = capsys.readouterr().out
    assert re.search(r"^pre-trained init: +train loss [\d.]+ -> [\d.]+, test accuracy [\d.]+% after 10 epochs", out,
                     flags=re.M), out
    assert png.stat().st_size > 10_000


def test_numerical_gradient_trains_like_backprop_at_2p_forward_passes(tmp_path, capsys):
    png = tmp_path / "numerical.png"
    result = example("numerical_gradient").main(["--quick", "--out", str(png)])
    numerical, backprop = result["curves"]["numerical"], result["curves"]["backprop"]
    assert len(numerical) == len(backprop) == 4 and backprop[-1] < backprop[0] - 0.1
    np.testing.assert_allclose(numerical, backprop, rtol=1e-7)  # the same training, step for step
    rows = result["timings"]
    assert [r["params"] for r in rows] == [85, 160, 310, 610]  # 64 h + h + 10 h + 10
    assert all(r["numerical_forwards"] == 2 * r["params"] for r in rows)
    # timings are noisy on a shared machine: only the gross, many-fold effects are asserted
    assert all(r["numerical"] > 20 * r["backprop"] for r in rows)
    assert rows[-1]["numerical"] > 2.5 * rows[0]["numerical"]  # 7x the parameters
    assert "largest difference between the two loss curves" in capsys.readouterr().out
    assert png.stat().st_size > 10_000
