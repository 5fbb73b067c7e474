"""The project's docs stand on their own: the paths they name exist, and they cite nothing outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCE_FOLDERS = ("diffattn", "processors", "kernels", "pipelines", "app", "benchmarks")
SOURCES = [*ROOT.glob("*.py"), *(p for folder in SOURCE_FOLDERS for p in (ROOT / folder).rglob("*.py"))]
_PATH = re.compile(r"`((?:diffattn|processors|kernels|pipelines|app|tests|benchmarks|docs)/[\w./-]*)`")


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_paths_named_in_the_docs_exist(doc):
    missing = [path for path in _PATH.findall(doc.read_text()) if not any(ROOT.glob(path.rstrip("/")))]
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def test_docs_and_code_cite_nothing_outside_the_repository():
    outside = re.compile(r"DESIGN\.md|research/|\b(?:sparse|editing|freeswim_noise|ecosystem|fp8)\.md\b")
    cited = [str(p.relative_to(ROOT)) for p in [*DOCS, *SOURCES] if outside.search(p.read_text())]
    assert not cited, f"cite the project brief's notes: {cited}"
