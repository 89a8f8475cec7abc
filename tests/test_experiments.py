"""The curriculum's experiments (examples/*.py) run end to end, in small
versions, and show what they claim."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def example(name: str):
    """Import examples/<name>.py as a module (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_precision_float64_float32_bfloat16_float16(tmp_path):
    png = tmp_path / "precision.png"
    results = example("precision").main(["--out", str(png), "--epochs", "2", "--hidden", "32"])
    assert list(results) == ["float64", "float32", "bfloat16", "mixed-bfloat16", "mixed-float16"]
    assert [r["param_dtype"] for r in results.values()] == ["float64", "float32", "bfloat16", "float32", "float32"]
    assert results["bfloat16"]["eps"] == 2**-7 and results["float32"]["eps"] == 2**-23
    f64, f32 = results["float64"]["train_loss"], results["float32"]["train_loss"]
    assert f64 == pytest.approx(f32, rel=1e-3)  # float32 trains as float64 does
    assert all(r["train_loss"][-1] < r["train_loss"][0] for r in results.values())
    assert png.stat().st_size > 10_000
