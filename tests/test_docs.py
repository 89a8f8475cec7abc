"""Every code block of README.md and of docs/ runs as written.

How each fenced block is treated (docs/index.md says the same for readers):

- ```python blocks run, page by page, in the page's order; the blocks of one
  page share one namespace (a page is one script, so a later block may use
  the names of an earlier one, never those of another page). Each page runs in
  an empty temporary directory, with JAX's default float32 (as a new user has
  it: a page that needs float64 turns it on itself). A block made of ``>>>``
  examples runs as a doctest: the printed output must match.
- ```bash blocks are checked, not run (a full training run is too slow for
  the suite; the examples' ``--quick`` runs are tested in test_examples.py).
  Each command must be one of: ``fnn ...`` (or ``python -m fnn.cli ...``),
  which must parse with the command's own parser; ``python examples/NAME.py
  ...``, an existing example whose parser accepts the flags (spelt in full:
  no abbreviations);
  ``python FILE.py``, where FILE.py is a python block of the same page marked
  ``<!-- file: FILE.py -->``; ``python -c CODE``, whose code must compile. Installing (``python3 -m venv``, ``pip``),
  the test suite (``python -m pytest``) and the site (``mkdocs``) are run by
  CI (``.ci/run``) and skipped here. Any other command fails the check, so a
  new kind of command needs a rule here.
- Blocks without a language, or ```text, are output or synopses: not run.

A failure names the file and the line where the block starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import doctest
import importlib.util
import pathlib
import re
import runpy
import shlex
import sys
import types

import jax
import pytest

from fnn import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
FILE_MARK = re.compile(r"^\s*<!--\s*file:\s*(?P<name>[\w./-]+)\s*-->\s*$")


@dataclasses.dataclass(frozen=True)
class Block:
    """A fenced code block: its language, its text (dedented), the line of its
    opening fence (1-based) and the file name it is marked as, if any."""

    lang: str
    code: str
    line: int
    file: str | None = None


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown page, in order."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, start = len(opening["indent"]), i
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:])
            i += 1
        mark = FILE_MARK.match(lines[start - 1]) if start else None
        found.append(Block(opening["lang"], "\n".join(body) + "\n", start + 1, mark["name"] if mark else None))
        i += 1
    return found


def page_id(page: pathlib.Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.fixture
def user_defaults(tmp_path, monkeypatch):
    """A fresh directory and JAX's default float32, as a user running a page has;
    the suite's float64 setting is restored afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    yield
    jax.config.update("jax_enable_x64", before)


def run_python(page: pathlib.Path, block: Block, namespace: dict) -> None:
    """Run one ```python block in the page's namespace; a failure names the page and line."""
    where = f"{page_id(page)}, the python block at line {block.line}"
    if block.code.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(block.code, namespace, where, str(page), block.line)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        report: list[str] = []
        runner.run(test, out=report.append, clear_globs=False)
        if runner.failures:
            pytest.fail(f"{where} (a doctest) failed:\n{''.join(report)}", pytrace=False)
        return
    # pad with blank lines so that a traceback's line numbers are the file's
    code = compile("\n" * block.line + block.code, str(page), "exec")
    try:
        exec(code, namespace)
    except Exception as err:
        raise AssertionError(f"{where} failed: {type(err).__name__}: {err}") from err


# what some pages say (in a comment beside a print) that their blocks print
PRINTS = {
    "docs/custom_layer.md": ["channel_affine: expected (batch, ..., channels) with known channels; got (None,)",
                             "channel_affine(scale_init=ones, shift_init=zeros)"],
    "docs/layer_contract.md": ["dropout: train mode needs a random key", "leaky_relu(k=0.1)",
                               "head: params['w'] has shape (5, 3); expected (16, 3) for this input"],
    "docs/checkpoints.md": ["w: shape (2, 3) in the file, (2, 4) expected"],
    "docs/training.md": ["epoch,step,train_loss,train_accuracy,val_accuracy,val_loss,seconds"],
}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_python_blocks_run_as_written(page, user_defaults, capsys):
    namespace = {"__name__": "__main__"}
    for block in blocks(page.read_text(encoding="utf-8")):
        if block.lang == "python":
            run_python(page, block, namespace)
    out = capsys.readouterr().out
    for line in PRINTS.get(page_id(page), []):
        assert line in out, f"{page_id(page)} does not print {line!r}:\n{out}"


# --- bash blocks: each command names a real command, script and flags --------------------------------------------


class _Parsed(Exception):
    """Raised in place of running a command once its arguments are parsed."""


def parses(run, argv: list[str], monkeypatch) -> str | None:
    """Parse ``argv`` with the parser that ``run()`` builds, stopping before it runs.
    Returns None when the arguments are accepted, else argparse's message."""
    real_parse = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        real_parse(self, argv, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    # no abbreviated flags (--resum for --resume): a page shows the full name
    monkeypatch.setattr(argparse.ArgumentParser, "_get_option_tuples", lambda self, option_string: [])
    try:
        run()
    except _Parsed:
        return None
    except SystemExit as stop:
        return f"the arguments are refused (exit status {stop.code})"
    finally:
        monkeypatch.undo()
    return "the command ran without parsing its arguments"


def commands(code: str) -> list[list[str]]:
    """The simple commands of a bash block: comments and line continuations
    removed, ``&&`` / ``;`` / ``&`` split, leading ``VAR=value`` dropped."""
    found = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        command: list[str] = []
        for word in [*words, "&&"]:
            if word in ("&&", ";", "&", "||"):
                while command and re.match(r"^[A-Z_][A-Z0-9_]*=", command[0]):
                    command.pop(0)
                if command:
                    found.append(command)
                command = []
            else:
                command.append(word)
    return found


def check_command(words: list[str], files: set[str], monkeypatch) -> str | None:
    """None if the command is sound (or run by CI), else what is wrong with it."""
    program = pathlib.Path(words[0]).name
    if program == "fnn":
        return parses(cli.main, words[1:], monkeypatch)
    if program in ("pip", "mkdocs"):
        return None
    if program not in ("python", "python3"):
        return f"{words[0]!r} is no command the docs' checker knows (add a rule to tests/test_docs.py)"
    if words[1:3] == ["-m", "fnn.cli"]:
        return parses(cli.main, words[3:], monkeypatch)
    if words[1] == "-m" and words[2] in ("venv", "pip", "pytest"):
        return None
    if words[1:3] == ["-m", "benchmarks"]:  # the suite in the source checkout
        from benchmarks.__main__ import main as benchmarks_main

        return parses(lambda: benchmarks_main(words[3:]), words[3:], monkeypatch)
    if words[1] == "-c":  # a one-line program: compiled, not run (it may need a GPU or a fresh process)
        try:
            compile(words[2], "-c", "exec")
        except SyntaxError as err:
            return f"the -c program does not compile: {err}"
        return None
    script = words[1]
    if script in files:
        return None
    path = ROOT / script
    if not (script.startswith("examples/") and path.is_file()):
        return f"{script} is neither an example of examples/ nor a file this page defines (<!-- file: ... -->)"
    monkeypatch.setattr(sys, "argv", [str(path), *words[2:]])
    sys.path.insert(0, str(path.parent))
    try:
        return parses(lambda: runpy.run_path(str(path), run_name="__main__"), words[2:], monkeypatch)
    finally:
        sys.path.remove(str(path.parent))


BASH_PAGES = [p for p in PAGES if any(b.lang == "bash" for b in blocks(p.read_text(encoding="utf-8")))]


@pytest.mark.parametrize("page", BASH_PAGES, ids=page_id)
def test_bash_blocks_name_real_commands_and_flags(page, monkeypatch, capsys):
    page_blocks = blocks(page.read_text(encoding="utf-8"))
    files = {b.file for b in page_blocks if b.file}
    problems = []
    for block in page_blocks:
        if block.lang != "bash":
            continue
        for words in commands(block.code):
            problem = check_command(words, files, monkeypatch)
            if problem:
                err = capsys.readouterr().err.strip()
                problems.append(f"{page_id(page)}, the bash block at line {block.line}: `{shlex.join(words)}`: "
                                f"{problem}{': ' + err if err else ''}")
    assert not problems, "\n".join(problems)


# --- the checker itself ----------------------------------------------------------------------------------------------


def test_blocks_are_found_with_their_lines_and_file_marks():
    text = "# t\n\n<!-- file: train.py -->\n```python\nx = 1\n```\n\n  ```bash\n  fnn train\n  ```\n```\nplain\n```\n"
    assert blocks(text) == [Block("python", "x = 1\n", 4, "train.py"), Block("bash", "fnn train\n", 8),
                            Block("", "plain\n", 11)]


def test_commands_split_chains_comments_and_variables():
    code = "A=1 B=2 fnn train --epochs 3 &&  python x.py  # why\\\n   more\n# only a comment\nfnn bench &\n"
    assert commands(code) == [["fnn", "train", "--epochs", "3"], ["python", "x.py"], ["fnn", "bench"]]


def test_a_failing_python_block_names_the_file_and_line(tmp_path):
    page = ROOT / "README.md"
    with pytest.raises(AssertionError, match=r"README.md, the python block at line 7 failed: NameError: .*undefined"):
        run_python(page, Block("python", "y = 1\nundefined + 1\n", 7), {})
    with pytest.raises(pytest.fail.Exception, match=r"README.md, the python block at line 3 \(a doctest\) failed"):
        run_python(page, Block("python", ">>> 1 + 1\n3\n", 3), {})


@pytest.mark.parametrize("command, problem", [
    ("fnn train --epochs 3 --model mlp", None),
    ("fnn train --epochs 0", "refused"),
    ("fnn trian", "refused"),
    ("python examples/xor.py --steps 10", None),
    ("python examples/xor.py --stepz 10", "refused"),
    ("python examples/xor.py --step 10", "refused"),
    ("fnn train --epoch 3", "refused"),
    ("python examples/no_such_example.py", "neither an example"),
    ("python train.py", None),
    ("python other.py", "neither an example"),
    ("python -c 'import jax; print(jax.devices())'", None),
    ("python -c 'print(('", "does not compile"),
    ("wget http://example.org", "no command"),
])
def test_bash_commands_are_checked_without_running(command, problem, monkeypatch, capsys):
    found = check_command(shlex.split(command), {"train.py"}, monkeypatch)
    assert (found is None) if problem is None else (problem in found), found


# --- the site's curriculum section lists every page of docs/curriculum/ -----------------------------------------------


def load_hook():
    spec = importlib.util.spec_from_file_location("curriculum_nav", DOCS / "hooks" / "curriculum_nav.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_curriculum_nav_and_index_name_every_page_of_the_folder(tmp_path):
    hook = load_hook()
    (tmp_path / "curriculum").mkdir()
    (tmp_path / "curriculum" / "index.md").write_text("# Curriculum\n\n<!-- curriculum-pages -->\n")
    (tmp_path / "curriculum" / "xor.md").write_text("# XOR\n\nOne neuron fails. A hidden layer works.\n")
    (tmp_path / "curriculum" / "new_one.md").write_text("# New\n\n```bash\nx\n```\n\nIt shows a thing.\n")
    nav = [{"Home": "index.md"}, {"Curriculum": ["curriculum/index.md", "curriculum/xor.md"]}]
    config = hook.on_config({"nav": nav, "docs_dir": str(tmp_path)})
    assert config["nav"][1]["Curriculum"] == ["curriculum/index.md", "curriculum/xor.md", "curriculum/new_one.md"]

    page = types.SimpleNamespace(file=types.SimpleNamespace(src_uri="curriculum/index.md"))
    index = hook.on_page_markdown((tmp_path / "curriculum" / "index.md").read_text(), page, config, None)
    assert index == "# Curriculum\n\n- [New](new_one.md): It shows a thing.\n- [XOR](xor.md): One neuron fails.\n"

    with pytest.raises(ValueError, match="names no curriculum/index.md"):
        hook.on_config({"nav": [{"Home": "index.md"}], "docs_dir": str(tmp_path)})


def test_the_site_nav_holds_every_curriculum_page():
    hook = load_hook()
    nav = [{"Curriculum": ["curriculum/index.md"]}]
    hook.on_config({"nav": nav, "docs_dir": str(DOCS)})
    pages = {p.relative_to(DOCS).as_posix() for p in (DOCS / "curriculum").glob("*.md")}
    assert set(nav[0]["Curriculum"]) == pages and len(pages) >= 11
