"""Scripts run as `python benchmarks/<name>.py` put their folder first on sys.path, so a script named like a package
(`kernels.py` shadowed Hugging Face's `kernels`, which transformers imports) breaks every import after it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_benchmark_script_names_shadow_no_importable_module(script):
    assert importlib.util.find_spec(script.stem) is None, f"benchmarks/{script.name} shadows the module {script.stem!r}"


def test_the_benchmark_folder_holds_scripts():
    assert len(SCRIPTS) >= 5
