"""Which registered methods each tab offers, and whether the entry points behind the dedicated tabs exist.

The Generate tab lists every registered method except those that own a tab (the video editors and FreeSwim):
attention methods (`kind == "attention"`) and noise initialisation (pipeline-level methods). The Edit video and
High resolution tabs call their methods' public entry points; when one is missing from this build, the tab says
so instead of pretending to work.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diffattn.config import MethodConfig
from diffattn.registry import methods

__all__ = ["EDITORS", "EDITOR_TINY_MODELS", "HIGH_RESOLUTION", "EntryPoint", "generation_methods", "editor_configs",
           "edit_entry_point", "high_resolution_entry_point"]

EDITORS: dict[str, str] = {
    "fatezero": "FateZero",
    "realcraft": "RealCraft",
    "fresco": "FRESCO",
}
"""Editing method name -> display name (the Edit video tab)."""

EDITOR_TINY_MODELS: dict[str, str] = {"fatezero": "tiny:sd", "realcraft": "tiny:sd", "fresco": "tiny:sd-controlnet"}
"""The built-in model each editor runs on (FRESCO needs a ControlNet)."""

HIGH_RESOLUTION = "freeswim"
"""The method of the High resolution tab."""

_EDIT_FUNCTION = "diffattn.pipelines.editing:edit_video"
"""Public entry point of zero-shot video editing: `edit_video(EditSpec, pipe=None)`, the run `diffattn edit` makes."""


@dataclass(frozen=True)
class EntryPoint:
    """A `module:function` target and, once resolved, the function or the reason it is not in this build."""

    target: str
    function: Callable[..., Any] | None
    missing: str | None

    @classmethod
    def resolve(cls, target: str) -> EntryPoint:
        module_name, _, name = target.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), name)
        except ModuleNotFoundError as exc:
            return cls(target, None, f"`{target}` is not available in this build (module `{exc.name}` is missing)")
        except AttributeError:
            return cls(target, None, f"`{target}` is not available in this build (`{module_name}` has no `{name}`)")
        return cls(target, function, None)


def generation_methods() -> tuple[dict[str, type[MethodConfig]], dict[str, type[MethodConfig]]]:
    """(attention methods, noise initialisation methods) offered by the Generate tab."""
    dedicated = {*EDITORS, HIGH_RESOLUTION}
    offered = {name: cls for name, cls in methods().items() if name not in dedicated}
    attention = {name: cls for name, cls in offered.items() if cls.kind == "attention"}
    noise = {name: cls for name, cls in offered.items() if cls.kind != "attention"}
    return attention, noise


def editor_configs() -> dict[str, type[MethodConfig]]:
    """The registered editing methods, in `EDITORS` order."""
    registry = methods()
    return {name: registry[name] for name in EDITORS if name in registry}


def edit_entry_point() -> EntryPoint:
    return EntryPoint.resolve(_EDIT_FUNCTION)


def high_resolution_entry_point() -> EntryPoint:
    """FreeSwim's sampling routine (its config's `runner`), which `generate()` calls for FreeSwim runs."""
    config = methods().get(HIGH_RESOLUTION)
    if config is None:
        return EntryPoint(HIGH_RESOLUTION, None, "the FreeSwim method is not registered in this build")
    return EntryPoint.resolve(config.runner)
