"""``fnn gradcheck`` runs every case on NumPy arrays and on JAX arrays, so that
the JAX backend's own rules (XLA and CPU convolution forms, JAX col2im, the
tiled max-pool) are proven as well as the NumPy ones."""

import numpy as np
import pytest

from fnn import backend, cli, gradcheck_suite
from fnn import layers as L

JAX_RULES = ["conv2d same stride 2", "conv_transpose stride 2", "max_pool 2", "avg_pool 2 same"]


@pytest.mark.parametrize("name", JAX_RULES)
def test_cases_pass_on_both_backends_against_autodiff(name):
    result = gradcheck_suite.run_case(gradcheck_suite.find(name), methods=("autodiff",))
    assert result.backends == ("numpy", "jax")
    assert result.passed, gradcheck_suite.format_table([result])
    assert result.autodiff < 1e-10


def _wrong_on_jax_only():
    """tanh whose backward doubles dx on JAX arrays only."""
    good = L.tanh

    def bwd(params, residuals, dy):
        grads, dx = good.bwd(params, residuals, dy)
        return grads, 2 * dx if backend.is_jax_array(dx) else dx

    return good.replace(name="tanh_wrong_on_jax", bwd=bwd)


def test_a_rule_wrong_on_jax_arrays_only_fails_and_says_where():
    case = gradcheck_suite.Case("tanh wrong on jax", _wrong_on_jax_only, (3, 4))
    assert gradcheck_suite.run_case(case, backends=("numpy",)).passed  # NumPy alone would not notice
    result = gradcheck_suite.run_case(case)
    assert not result.passed and result.failed_on == ("jax",)
    assert result.autodiff > 0.1 and result.numeric > 0.1
    assert gradcheck_suite.format_table([result]).splitlines()[2].endswith("FAIL on jax")


def test_fnn_gradcheck_runs_both_backends(capsys, monkeypatch):
    seen = []
    real = gradcheck_suite.run_case

    def spy(case, **kwargs):
        result = real(case, **kwargs)
        seen.append(result.backends)
        return result

    monkeypatch.setattr(gradcheck_suite, "run_case", spy)
    assert cli.main(["gradcheck", "max_pool 2", "--quiet"]) == 0
    assert seen == [("numpy", "jax")]
    assert capsys.readouterr().out.splitlines()[-1] == "1 of 1 passed"
