"""The per-call profile of W3's jitted step (``python -m benchmarks.dispatch``) runs
and prints every variant (slow: it compiles seven steps; no timing assertions)."""

import pytest


@pytest.mark.slow
def test_dispatch_profile_prints_every_variant():
    from benchmarks import dispatch

    printed = []
    assert dispatch.main(["--quick"], print_=printed.append) == 0
    rows = {line[:26].strip(): line.split()[-2:] for line in printed[2:]}
    assert set(rows) == set(dispatch.variants(quick=True)) and rows["plain JAX"][1] == "1.000"
    assert all(float(us) > 0 for us, _ in rows.values())
