"""``fnn gradcheck`` and its registry of cases (fnn.gradcheck_suite)."""

import numpy as np
import pytest

from fnn import cli, gradcheck_suite
from fnn import layers as L


def test_every_layer_has_a_case():
    """Adding a layer to fnn.layers without a gradient-check case fails here."""
    names = " | ".join(case.name for case in gradcheck_suite.CASES)
    missing = [name for name in L.__all__ if name not in names]
    assert not missing, f"add a Case for {missing} to fnn/gradcheck_suite.py"


def test_every_case_passes_against_finite_differences():
    results = gradcheck_suite.run(methods=("numeric",), backends=("numpy",))  # JAX arrays: test_gradcheck_backends
    failed = [r for r in results if not r.passed]
    assert not failed, gradcheck_suite.format_table(failed)
    assert all(np.isnan(r.autodiff) and r.numeric < 1e-6 for r in results)


def test_fnn_gradcheck_prints_the_table(capsys):
    assert cli.main(["gradcheck", "dense", "tanh", "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["layer", "manual", "vs", "autodiff", "manual", "vs", "finite", "diff", "result"]
    rows = {line.split("  ")[0].strip(): line for line in out[2:-1]}
    assert set(rows) == {"dense", "dense (no bias)", "tanh"}
    assert all(line.endswith("pass") for line in rows.values())
    assert out[-1] == "3 of 3 passed"


def test_a_wrong_backward_rule_fails_and_is_reported(capsys):
    good = L.tanh
    wrong = good.replace(name="wrong_tanh", bwd=lambda params, res, dy: (lambda g: (g[0], 2 * g[1]))(good.bwd(params, res, dy)))
    broken = gradcheck_suite.Case("wrong tanh", lambda: wrong, (3, 4))
    crash = gradcheck_suite.Case("no such layer", lambda: L.dense(0), (3, 4))
    results = gradcheck_suite.run([broken, crash], methods=("numeric",))
    assert [r.passed for r in results] == [False, False]
    assert results[0].numeric > 0.1 and results[1].error.startswith("ValueError")
    table = gradcheck_suite.format_table(results)
    assert "FAIL" in table and "ERROR ValueError" in table and table.endswith("0 of 2 passed, 2 failed")
    assert cli.main(["gradcheck", "no-such-layer"]) == 2
