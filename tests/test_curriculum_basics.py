"""The curriculum's basic experiments (computational graph, optimizers on the
digits, batch norm over weight scales, activations compared) reproduce the
notes' claims: each test runs an example's quick size in-process with fixed
seeds and asserts the claim, not only that it ran."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(stem: str):
    spec = importlib.util.spec_from_file_location(f"examples_{stem}", EXAMPLES / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_computational_graph_gives_the_books_derivatives(tmp_path, capsys):
    example = load_example("computational_graph")
    result = example.main(["--out", str(tmp_path / "graph.png")])
    assert result["total"] == pytest.approx(715.0, rel=1e-12)
    expected = {"apple price": 2.2, "apples": 110.0, "orange price": 3.3, "oranges": 165.0, "tax": 650.0}
    for name, value in expected.items():
        assert result["grads"][name] == pytest.approx(value, rel=1e-12), name
        assert result["backward"][name] == pytest.approx(value, rel=1e-12), name  # the node-by-node walk
        assert result["numeric"][name] == pytest.approx(value, rel=1e-7), name
    # the add node passes the cotangent through, the multiply nodes swap their inputs
    assert result["backward"]["apples cost"] == result["backward"]["subtotal"] == pytest.approx(1.1)
    assert "d price / d tax: 650 (book 650" in capsys.readouterr().out
    assert (tmp_path / "graph.png").stat().st_size > 10_000


def test_every_optimizer_learns_faster_than_plain_sgd_on_the_digits(tmp_path, capsys):
    example = load_example("optimizers_digits")
    result = example.main(["--quick", "--out", str(tmp_path / "opt.png")])
    final = result["final"]
    assert set(final) == {"SGD", "Momentum", "Nesterov", "AdaGrad", "RMSProp", "Adam"}
    others = [v for name, v in final.items() if name != "SGD"]
    assert final["SGD"] > 1.5 and max(others) < 0.5, final  # SGD has barely started; the others have learnt
    assert all(np.isfinite(c).all() and c[-15:].mean() < c[:15].mean() for c in result["losses"].values())
    assert "slowest to learn: SGD" in capsys.readouterr().out
    assert (tmp_path / "opt.png").stat().st_size > 10_000


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_optimizers_read_mnist_idx_files_from_data_dir(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (200, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte", rng.integers(0, 10, 200))
    result = load_example("optimizers_digits").run(steps=3, width=8, data_dir=str(tmp_path), backend="numpy",
                                                   names=["SGD", "Adam"])
    assert result["data"] == f"MNIST from {tmp_path} (200 28x28 images)"
    assert [len(c) for c in result["losses"].values()] == [3, 3]


def test_batch_norm_learns_at_weight_scales_where_the_plain_network_does_not(tmp_path, capsys):
    example = load_example("batch_norm_scales")
    result = example.main(["--quick", "--out", str(tmp_path / "bn.png")])
    np.testing.assert_allclose(result["scales"], [0.3, 0.05, 0.01, 0.002])
    with_bn = np.array([example.final_accuracy(c) for c in result["with_bn"]])
    without = np.array([example.final_accuracy(c) for c in result["without_bn"]])
    assert without[0] > 0.7, without  # near He's scale the plain network learns
    assert np.all(without[1:] < 0.2), without  # below it the signal vanishes: chance level
    assert np.all(with_bn > 0.55) and np.all(with_bn[1:] - without[1:] > 0.4), (with_bn, without)
    assert "reaching 90% training accuracy" in capsys.readouterr().out
    assert (tmp_path / "bn.png").stat().st_size > 10_000


def test_activations_sigmoid_is_slow_relus_die_at_high_lr_sigmoid_inputs_zig_zag(tmp_path, capsys):
    example = load_example("activations_compared")
    result = example.main(["--quick", "--out", str(tmp_path / "act.png")])
    final = {name: curve[-1] for name, curve in result["speed"].items()}
    assert final["sigmoid"] > 2.0 and max(final["tanh"], final["relu"], final["rrelu"]) < 1.0, final
    assert final["rrelu"] < 1.5 * final["relu"], final  # rrelu keeps pace with relu
    high, low = result["dead"][1.0], result["dead"][0.01]
    assert np.nanmax(high) > 0.5 and np.nanmax(low) < 0.1, (high, low)
    assert result["one_sign"]["sigmoid"] == 1.0 and result["one_sign"]["tanh"] < 0.1, result["one_sign"]
    sig, tanh = result["path_stats"]["sigmoid"], result["path_stats"]["tanh"]
    assert sig["same_sign"] == 1.0 and tanh["same_sign"] < 0.8, (sig, tanh)
    assert sig["distance"] > 0.3 and tanh["distance"] < 0.01, (sig, tanh)
    out = capsys.readouterr().out
    assert f"dead ReLU fraction: {np.nanmax(high):.2f} (lr 1) vs {np.nanmax(low):.2f} (lr 0.01)" in out
    assert (tmp_path / "act.png").stat().st_size > 10_000
