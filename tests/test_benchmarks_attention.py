"""The attention benchmark runs in quick mode and prints its table (no timing assertions)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_attention_benchmark_prints_its_table(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.attention", "--quick", "--out", str(tmp_path)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "| T | manual ms | autodiff ms | time ratio |" in done.stdout
    rows = json.loads((tmp_path / "attention.json").read_text())
    assert [r["T"] for r in rows] == [64, 128]
    for r in rows:
        assert r["manual_temp_bytes"] > 0 and r["autodiff_temp_bytes"] > 0
        assert r["max_abs_difference"] < 1e-3  # the two gradients agree (float32)
