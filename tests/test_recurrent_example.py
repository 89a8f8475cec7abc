"""examples/sequence.py with a tiny budget: the data, the training core, the
gradient-norm table and the PNG (the full two-model run is marked slow)."""

import importlib.util
import pathlib

import jax
import numpy as np
import pytest

from fnn import layers as L

PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "sequence.py"


def _load():
    spec = importlib.util.spec_from_file_location("fnn_example_sequence", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_adding_problem_and_training_core(tmp_path):
    example = _load()
    x, y = example.adding_batch(jax.random.key(0), 16, 20)
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == (16, 20, 2) and y.shape == (16, 1)
    marked = x[..., 1] == 1  # one marker in the first tenth, one in the last
    assert np.all(marked.sum(1) == 2) and np.all(marked[:, :2].sum(1) == 1) and np.all(marked[:, -2:].sum(1) == 1)
    np.testing.assert_allclose(y[:, 0], (x[..., 0] * marked).sum(1), rtol=1e-6)

    r = example.train(L.lstm(3), time_steps=8, steps=2, batch=4, lr=1e-3, clip=1.0, seed=0)
    assert r["norms"].shape == r["norms_init"].shape == (8,)
    assert np.all(np.isfinite(r["norms"])) and np.all(r["norms"] > 0) and np.isfinite(r["mse"])
    table = example.report({"rnn": r, "lstm": r}, 8)
    assert "rnn trained" in table and "eval mse" in table
    out = tmp_path / "grads.png"
    example.plot({"rnn": r, "lstm": r}, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_example_main_small(tmp_path, capsys):
    out = tmp_path / "grads.png"
    results = _load().main(["--time", "8", "--hidden", "3", "--steps", "2", "--batch", "4", "--out", str(out)])
    assert "lstm" in capsys.readouterr().out and out.stat().st_size > 1000
    assert sorted(results) == ["lstm", "rnn"]
