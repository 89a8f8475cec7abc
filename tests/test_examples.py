"""The examples run end to end and show what they claim."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str, timeout: int = 300) -> str:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_xor_needs_a_hidden_layer(tmp_path):
    png = tmp_path / "xor.png"
    stdout = run_example("xor.py", "--out", str(png))
    assert "XOR   [0 1 1 0]" in stdout
    rows = dict(re.findall(r"^(\w+ +\w+ / [\w ]+?) +(\d+)%", stdout, flags=re.M))
    assert len(rows) == 4, stdout
    for name, accuracy in rows.items():
        if name.startswith("logistic_regression"):
            assert int(accuracy) <= 75, stdout
        else:
            assert int(accuracy) == 100, stdout
    assert png.stat().st_size > 10_000
