"""Importing `benchmarks/*.py` scripts as modules in tests, without leaving their names importable afterwards
(`tests/test_script_names.py` checks that no script shadows an installed module)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def benchmark_scripts(*names: str) -> Iterator[tuple[ModuleType, ...]]:
    """The scripts `names` imported from `benchmarks/`; removed from `sys.modules` and `sys.path` on exit."""
    assert not any(name in sys.modules for name in names)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        try:
            yield tuple(importlib.import_module(name) for name in names)
        finally:
            for name in names:
                sys.modules.pop(name, None)
