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
            assert int(accuracy) == 50, stdout  # output 0.5 everywhere: a coin flip
        else:
            assert int(accuracy) == 100, stdout
    assert png.stat().st_size > 10_000


def test_grokking_quick_memorises_the_training_pairs(tmp_path):
    # the quick run is far too small to grok: it only shows memorisation (train accuracy 100%)
    png = tmp_path / "grokking.png"
    stdout = run_example("grokking.py", "--quick", "--out", str(png))
    final = re.search(r"final: train acc ([\d.]+)  val acc ([\d.]+)  after (\d+) steps", stdout)
    assert final, stdout
    assert float(final.group(1)) == 1.0 and int(final.group(3)) == 200, stdout
    assert re.search(r"train accuracy passed 99% at step \d+$", stdout, flags=re.M), stdout
    assert re.search(r"validation accuracy passed 90% at step (\d+|never)$", stdout, flags=re.M), stdout
    assert png.stat().st_size > 10_000


def test_char_lm_quick_lowers_the_loss_and_prints_samples(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    png = tmp_path / "char_lm.png"
    stdout = run_example("char_lm.py", "--text", str(text), "--quick", "--out", str(png))
    losses = re.search(r"train loss ([\d.]+) \(first 10 steps\) -> ([\d.]+) \(last 10\); held-out ([\d.]+)", stdout)
    assert losses, stdout
    first, last, held_out = map(float, losses.groups())
    assert first > 2.5 and last < 0.5 and held_out < 0.5, stdout  # log(28 characters) = 3.33
    samples = re.findall(r"^sample: '(.*)'$", stdout, flags=re.M)
    assert len(samples) == 3 and all(len(s) > 50 for s in samples), stdout
    assert "fox" in samples[-1], stdout  # the pattern is learnt
    assert png.stat().st_size > 10_000


def test_char_lm_refuses_a_missing_empty_or_too_short_text(tmp_path):
    empty, short = tmp_path / "empty.txt", tmp_path / "short.txt"
    empty.write_text("", encoding="utf-8")
    short.write_text("abc", encoding="utf-8")
    for path, message in ((tmp_path / "missing.txt", "no such file"), (empty, "is empty"),
                          (short, "has 3 characters")):
        out = subprocess.run([sys.executable, str(ROOT / "examples" / "char_lm.py"), "--text", str(path), "--quick"],
                             capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert out.returncode != 0 and out.stdout == "", out
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("char_lm: error: --text") and message in lines[0], out.stderr
