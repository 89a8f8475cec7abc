"""MkDocs hook: the curriculum section lists every page of docs/curriculum/.

The nav of mkdocs.yml names only ``curriculum/index.md``; this hook appends
the folder's other pages (sorted by file name) after it, and fills the
index's ``<!-- curriculum-pages -->`` marker with a link to each page and the
first sentence of its text, so that a new example's page needs no other edit.
"""

from __future__ import annotations

import pathlib
import re

INDEX = "curriculum/index.md"
MARKER = "<!-- curriculum-pages -->"


def _pages(docs_dir: str) -> list[pathlib.Path]:
    folder = pathlib.Path(docs_dir) / "curriculum"
    return sorted(p for p in folder.glob("*.md") if p.name != "index.md")


def _section(nav: list) -> list | None:
    """The nav list that holds the curriculum index, searched depth first."""
    for entry in nav:
        value = entry if not isinstance(entry, dict) else next(iter(entry.values()))
        if value == INDEX:
            return nav
        if isinstance(value, list) and (found := _section(value)) is not None:
            return found
    return None


def on_config(config):
    section = _section(config["nav"] or [])
    if section is None:
        raise ValueError(f"mkdocs.yml: the nav names no {INDEX} for the curriculum pages to follow")
    named = {next(iter(e.values())) if isinstance(e, dict) else e for e in section}
    section.extend(f"curriculum/{p.name}" for p in _pages(config["docs_dir"]) if f"curriculum/{p.name}" not in named)
    return config


def _summary(page: pathlib.Path) -> tuple[str, str]:
    """A page's title (its first heading) and the first sentence of its first paragraph."""
    text = page.read_text(encoding="utf-8")
    title = re.search(r"^# (.+)$", text, flags=re.M)
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip() and p.strip()[0] not in "#`!<|"]
    first = " ".join(paragraphs[0].split()) if paragraphs else ""
    sentence = re.match(r"(.+?[.!?])(\s|$)", first)
    return (title.group(1).strip() if title else page.stem), (sentence.group(1) if sentence else first)


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != INDEX or MARKER not in markdown:
        return markdown
    rows = []
    for path in _pages(config["docs_dir"]):
        title, sentence = _summary(path)
        rows.append(f"- [{title}]({path.name}): {sentence}")
    return markdown.replace(MARKER, "\n".join(rows))
