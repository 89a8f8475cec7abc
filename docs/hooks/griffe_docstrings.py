"""Griffe extension: fnn's docstrings, written for ``help()`` and doctest, read well as Markdown.

- A run of ``>>>`` examples with their output becomes a ``pycon`` code block
  (as Markdown, ``>>>`` would start a block quote and ``x[0][1]`` a link).
- Sphinx roles (``:func:`fnn.train.fit```, ``:class:`~fnn.Layer```) become
  inline code (``~`` keeps the last name only, as in Sphinx).
- Special methods (``__eq__``, ``__repr__``, ...) are left out of the
  pages; ``__init__``'s signature is shown on its class (mkdocs.yml's
  ``merge_init_into_class``).
- A paragraph ending in ``::`` (reST's "a literal block follows") ends in
  ``:``; the indented block after it is already a Markdown code block.
"""

from __future__ import annotations

import re

import griffe

LITERAL = re.compile(r"(?<=\S)::$", flags=re.M)
ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc):`(~?)([^`]+)`")


def _role(match: re.Match) -> str:
    name = match.group(2)
    return f"`{name.rsplit('.', 1)[-1] if match.group(1) else name}`"


def fence_doctests(text: str) -> str:
    """Wrap each run of ``>>>`` lines (and the output up to a blank line) in a pycon fence."""
    out, in_example, indent = [], False, ""
    for line in text.splitlines():
        stripped = line.lstrip()
        if not in_example and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            in_example = True
        elif in_example and not stripped:
            out.append(f"{indent}```")
            in_example = False
        out.append(line)
    if in_example:
        out.append(f"{indent}```")
    return "\n".join(out)


class MarkdownDocstrings(griffe.Extension):
    def on_class_members(self, *, cls: griffe.Class, **kwargs) -> None:
        for name in [n for n in cls.members if n.startswith("__") and n.endswith("__") and n != "__init__"]:
            del cls.members[name]

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            text = LITERAL.sub(":", ROLE.sub(_role, obj.docstring.value))
            obj.docstring.value = fence_doctests(text)
