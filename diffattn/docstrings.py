"""Field documentation read from the `Args:` sections of Hugging Face-style class docstrings.

Config classes document each field once, in their docstring; the command line's `--help` (and any other
front end) shows that text next to the field's flag instead of keeping a second copy.
"""

from __future__ import annotations

import functools
import inspect
import re

__all__ = ["field_docs"]

_ENTRY = re.compile(r"^(?P<names>\w+(?:\s*[/,]\s*\w+)*)(?:\s*\((?P<type>.*?)\))?:(?:\s+(?P<text>.*))?$")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each documented field's text (one line, whitespace collapsed), from the class's and its bases' `Args:`
    sections; a subclass's entry replaces its base's. Entries may name several fields (`a / b (...)`)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if "__doc__" in vars(klass):
            docs.update(_args_section(inspect.cleandoc(klass.__doc__ or "")))
    return docs


def _args_section(doc: str) -> dict[str, str]:
    """The entries of the first `Args:` section of a cleaned docstring."""
    lines = doc.splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.strip() == "Args:"), len(lines))
    body = lines[start:]
    indent = next((len(line) - len(line.lstrip()) for line in body if line.strip()), 0)
    entries: dict[str, list[str]] = {}
    names: list[str] = []
    for line in body:
        depth = len(line) - len(line.lstrip())
        if line.strip() and depth < indent:
            break
        match = _ENTRY.match(line.strip()) if depth == indent and line.strip() else None
        if match:
            names = [name.strip() for name in re.split(r"[/,]", match["names"])]
            for name in names:
                entries[name] = [match["text"] or ""]
        elif line.strip():
            for name in names:
                entries[name].append(line.strip())
    return {name: " ".join(part for part in parts if part) for name, parts in entries.items()}
