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
