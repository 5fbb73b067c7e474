"""Which registered methods each tab offers.

The Generate tab lists every registered method except those that own a tab (the video editors and FreeSwim):
noise initialisation (category `"noise"`) in one chooser, the attention methods (every other category) in another.
"""

from __future__ import annotations

from diffattn.config import MethodConfig
from diffattn.registry import methods

__all__ = ["EDITORS", "EDITOR_TINY_MODELS", "HIGH_RESOLUTION", "FILE_SETTINGS", "generation_methods", "editor_configs"]

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

FILE_SETTINGS: dict[str, dict[str, tuple[str, ...]]] = {"sparge": {"tuned": (".json", ".pt")}}
"""Method settings that name a file -> accepted suffixes. The app shows them as uploads and accepts only files it
received (or from its allowed folders): a method field that opens a path must be listed here."""

def generation_methods() -> tuple[dict[str, type[MethodConfig]], dict[str, type[MethodConfig]]]:
    """(attention methods, noise initialisation methods) offered by the Generate tab."""
    dedicated = {*EDITORS, HIGH_RESOLUTION}
    offered = {name: cls for name, cls in methods().items() if name not in dedicated}
    attention = {name: cls for name, cls in offered.items() if cls.category != "noise"}
    noise = {name: cls for name, cls in offered.items() if cls.category == "noise"}
    return attention, noise


def editor_configs() -> dict[str, type[MethodConfig]]:
    """The registered editing methods, in `EDITORS` order."""
    registry = methods()
    return {name: registry[name] for name in EDITORS if name in registry}
