"""Every page of docs/ runs: its Python blocks, in order, as one script."""

import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))


def python_blocks(text: str) -> list[str]:
    """The bodies of the page's ```python fenced blocks."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_page_runs_as_written(page, capsys):
    blocks = python_blocks(page.read_text())
    assert blocks, f"{page.name} has no python block"
    namespace = {"__name__": f"docs_{page.stem}"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{page.name} block {i + 1}", "exec"), namespace)


def test_the_custom_layer_page_prints_what_it_says(capsys):
    page = DOCS / "custom_layer.md"
    namespace = {"__name__": "docs_custom_layer"}
    for block in python_blocks(page.read_text()):
        exec(block, namespace)
    out = capsys.readouterr().out
    assert "channel_affine: expected (batch, ..., channels) with known channels; got (None,)" in out
    assert "channel_affine(scale_init=ones, shift_init=zeros)" in out
