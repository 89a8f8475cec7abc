"""The mutation table stays in step with the code: every mutant's snippet occurs exactly once
in its file and its tests exist (running the mutants is ``tests/mutation/run.py``, not CI)."""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "mutation"))

from mutants import MUTANTS  # noqa: E402
from run import mutate  # noqa: E402


def test_every_mutant_applies_to_its_file_and_names_existing_tests():
    assert len(MUTANTS) > 100
    for mutant in MUTANTS:
        source = (ROOT / mutant.file).read_text(encoding="utf-8")
        assert mutate(source, mutant) != source, mutant.name
        for test in mutant.tests:
            assert (ROOT / test.split("::")[0]).is_file(), f"{mutant.name}: no test file {test}"
