"""examples/cnn.py: the LeNet-style network reaches at least 98% on the
held-out digits with hand-written gradients, and runs on NumPy alone."""

import importlib.util
import re
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cnn.py"


@pytest.fixture(scope="module")
def cnn():
    spec = importlib.util.spec_from_file_location("cnn_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manual_gradients_reach_98_percent_on_held_out_digits(cnn):
    result = cnn.train(grad="manual", seed=0)  # the example's defaults: 15 epochs, jitted on JAX
    assert result["test_accuracy"] >= 0.98, result["test_accuracy"]


def test_command_line_on_numpy_alone(cnn, capsys):
    cnn.main(["--backend", "numpy", "--epochs", "1", "--quiet"])
    out = capsys.readouterr().out
    assert "training on numpy with manual gradients for 1 epochs" in out
    assert float(re.search(r"test accuracy\s+([\d.]+)%", out).group(1)) > 50
    with pytest.raises(ValueError, match="autodiff needs JAX"):
        cnn.train(grad="autodiff", backend="numpy")
