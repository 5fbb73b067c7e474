"""Which registered methods each tab offers, read from their configs' `category`.

The Edit video tab offers the editing methods (category `"editing"`), the High resolution tab FreeSwim, and the
Generate tab every other registered method: noise initialisation (category `"noise"`) in one chooser, the
attention methods (every other category) in another. A setting that names a file is the field annotated with
`diffattn.config.FileSetting` (`MethodConfig.file_settings()`).
"""

from __future__ import annotations

from diffattn.config import MethodConfig
from diffattn.registry import methods

__all__ = ["EDITORS", "EDITOR_TINY_MODELS", "HIGH_RESOLUTION", "generation_methods", "editor_configs"]

EDITORS: dict[str, str] = {
    "fatezero": "FateZero",
    "realcraft": "RealCraft",
    "fresco": "FRESCO",
}
"""Display names of the editing methods (the Edit video tab lists them in this order, then any others by name)."""

HIGH_RESOLUTION = "freeswim"
"""The method of the High resolution tab."""


def generation_methods() -> tuple[dict[str, type[MethodConfig]], dict[str, type[MethodConfig]]]:
    """(attention methods, noise initialisation methods) offered by the Generate tab."""
    dedicated = {*editor_configs(), HIGH_RESOLUTION}
    offered = {name: cls for name, cls in methods().items() if name not in dedicated}
    attention = {name: cls for name, cls in offered.items() if cls.category != "noise"}
    noise = {name: cls for name, cls in offered.items() if cls.category == "noise"}
    return attention, noise


def editor_configs() -> dict[str, type[MethodConfig]]:
    """The registered editing methods, those of `EDITORS` first in its order."""
    editing = {name: cls for name, cls in methods().items() if cls.category == "editing"}
    order = list(EDITORS)
    return dict(sorted(editing.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))


EDITOR_TINY_MODELS: dict[str, str] = {name: f"tiny:{cls.tiny_models[0]}" for name, cls in editor_configs().items()}
"""The built-in model each editor runs on (its config's first tiny model: FRESCO needs a ControlNet)."""
