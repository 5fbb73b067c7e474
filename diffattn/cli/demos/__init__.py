"""Entries of `diffattn demo`: each runs one thing on the built-in tiny models and reports what it measured.

An entry is a function `(out_dir: Path) -> dict` registered with `@demo_entry(name, description, methods)`, in any
module of this package (all are imported by `load_entries()`); it writes its videos under `out_dir` and returns a
small report (numbers, file names, and `ok`). `methods` names the registered methods the entry shows; every method
that no entry names gets a generated one (`generated.method_entry`), so each method has a demo. `needs` names the
trained built-in models (`tiny:shapes-wan`, `tiny:shapes-sd`) an entry runs on: such entries come first when their
weights are installed, and are skipped (last, saying how to train them) when not.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["single_thread", "DemoEntry", "demo_entry", "load_entries"]


@dataclass(frozen=True)
class DemoEntry:
    name: str
    description: str
    run: Callable[[Path], dict[str, Any]]
    methods: tuple[str, ...] = ()
    """The registered methods this entry shows."""
    needs: tuple[str, ...] = ()
    """The trained built-in models (`tiny:shapes-*`) this entry runs on."""

    def missing(self) -> str | None:
        """Why the entry cannot run here (a needed model's weights are not installed, and how to train them), or None."""
        from ...defaults import installed
        from ...shapes.models import train_command

        absent = [model for model in self.needs if not installed(model)]
        if not absent:
            return None
        commands = "; ".join(f"`{train_command(model.removeprefix('tiny:'))}`" for model in absent)
        return f"the trained weights of {', '.join(absent)} are not installed; train them with {commands}"


_ENTRIES: dict[str, DemoEntry] = {}


def demo_entry(
    name: str, description: str, methods: tuple[str, ...] = (), needs: tuple[str, ...] = ()
) -> Callable[[Callable[[Path], dict[str, Any]]], Callable[[Path], dict[str, Any]]]:
    """Register a demo entry under `name`, showing the registered `methods`, running on the trained models `needs`."""

    def register(fn: Callable[[Path], dict[str, Any]]) -> Callable[[Path], dict[str, Any]]:
        _ENTRIES[name] = DemoEntry(name, description, fn, methods, needs)
        return fn

    return register


def load_entries() -> dict[str, DemoEntry]:
    """All demo entries: those on trained models that are installed first, then the hand-written ones in the order
    their modules (by name) register them, a generated one for each registered method that none of them shows, and
    last those on trained models that are not installed (they are skipped)."""
    from ...registry import methods
    from .generated import method_entry

    for module in pkgutil.iter_modules(__path__, f"{__name__}."):
        importlib.import_module(module.name)
    entries = dict(_ENTRIES)
    shown = {method for entry in entries.values() for method in entry.methods}
    for name, config_cls in methods().items():
        if name not in shown:
            entry = method_entry(config_cls)
            entries[entry.name] = entry
    ready = {name: entry.missing() is None for name, entry in entries.items() if entry.needs}
    order = sorted(entries, key=lambda name: 0 if ready.get(name) else 2 if name in ready else 1)  # stable sort
    return {name: entries[name] for name in order}


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run tiny models on one CPU thread (they gain nothing from threads and lose a lot to contention on a busy
    CPU), restoring torch's thread count afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
