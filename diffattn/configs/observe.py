"""`observe`: exact dense attention through diffattn's processors, recording statistics."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import AttentionConfig
from ..registry import register_method

__all__ = ["ObserveConfig"]


@register_method
@dataclass(frozen=True)
class ObserveConfig(AttentionConfig):
    """Dense attention routed through diffattn's processors, recording per-layer calls and time.

    The output equals the stock model's exactly; use it to see what diffattn sees (layers, grid, steps,
    attention time) before choosing a method. Takes the common selectors of `AttentionConfig`.
    """

    name = "observe"
    description = "exact dense attention through diffattn's processors; records per-layer stats (output unchanged)"
    category = "observe"
    implementation = "diffattn.processors.observe:ObserveMethod"
    tiny_models = (
        "wan", "cogvideox", "hunyuanvideo", "ltx", "mochi", "sd", "sd-controlnet", "animatediff", "flux", "sd3", "flux2",
        "qwenimage",
    )
    compiles = True
