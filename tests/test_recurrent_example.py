"""examples/sequence.py's data (its --quick run and claim are checked in
tests/test_curriculum_depth.py; the full two-model run is marked slow)."""

import importlib.util
import pathlib

import jax
import numpy as np
import pytest

PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "sequence.py"


def _load():
    spec = importlib.util.spec_from_file_location("fnn_example_sequence", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_adding_problem():
    example = _load()
    x, y = example.adding_batch(jax.random.key(0), 16, 20)
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == (16, 20, 2) and y.shape == (16, 1)
    marked = x[..., 1] == 1  # one marker in the first tenth, one in the last
    assert np.all(marked.sum(1) == 2) and np.all(marked[:, :2].sum(1) == 1) and np.all(marked[:, -2:].sum(1) == 1)
    np.testing.assert_allclose(y[:, 0], (x[..., 0] * marked).sum(1), rtol=1e-6)


@pytest.mark.slow
def test_example_main_small(tmp_path, capsys):
    out = tmp_path / "grads.png"
    results = _load().main(["--time", "8", "--hidden", "3", "--steps", "2", "--batch", "4", "--out", str(out)])
    assert "lstm" in capsys.readouterr().out and out.stat().st_size > 1000
    assert sorted(results) == ["lstm", "rnn"]
