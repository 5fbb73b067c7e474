"""Entries of `diffattn demo`: each runs one thing on the built-in tiny models and reports what it measured.

An entry is a function `(out_dir: Path) -> dict` registered with `@demo_entry(name, description)`; it writes
its videos under `out_dir` and returns a small report (numbers, file names, and `ok`). Modules here are imported
by `load_entries()`; add a module and its import there to grow the demo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DemoEntry", "demo_entry", "load_entries"]


@dataclass(frozen=True)
class DemoEntry:
    name: str
    description: str
    run: Callable[[Path], dict[str, Any]]


_ENTRIES: dict[str, DemoEntry] = {}


def demo_entry(name: str, description: str) -> Callable[[Callable[[Path], dict[str, Any]]], Callable[[Path], dict[str, Any]]]:
    """Register a demo entry under `name`."""

    def register(fn: Callable[[Path], dict[str, Any]]) -> Callable[[Path], dict[str, Any]]:
        _ENTRIES[name] = DemoEntry(name, description, fn)
        return fn

    return register


def load_entries() -> dict[str, DemoEntry]:
    """All demo entries, in the order their modules register them."""
    from . import core  # noqa: F401
    from . import editing  # noqa: F401
    from . import freeswim  # noqa: F401
    from . import noise  # noqa: F401
    from . import sparse  # noqa: F401

    return dict(_ENTRIES)
