"""Lazy re-exports for package faces (`diffattn`, `diffattn.pipelines`, `diffattn.processors`).

A face names where each public object lives; the module is imported on first access, so importing the package
stays cheap and free of heavy dependencies until a name is used.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


Exports = Mapping[str, str]


def lazy_exports(package: str, exports: Exports | Callable[[], Exports]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level `__getattr__` and `__dir__` of `package`, resolving `name -> module` on first use (and
    caching it in the package's namespace). `exports` maps names to modules, or is a function returning that
    mapping when it is only known at run time (called on each lookup of a name not yet cached)."""

    def table() -> Exports:
        return exports() if callable(exports) else exports

    def __getattr__(name: str) -> Any:
        module = table().get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(table()))

    return __getattr__, __dir__
