"""The demo entry of a method that no hand-written entry shows, generated from its config.

It runs the method with its config's `tiny_settings` on its first tiny model (`tiny_models[0]`) the way
`diffattn generate` does (through the method's `runner` when it has one), between two stock runs, and checks that
the method's output is finite and that the stock output after it is bitwise the one before (removal restores).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any

from ...config import MethodConfig
from . import DemoEntry

__all__ = ["method_entry"]

FPS = 8


def method_entry(config_cls: type[MethodConfig]) -> DemoEntry:
    """The generated entry `method-<name>` of a registered method."""
    model = config_cls.tiny_models[0] if config_cls.tiny_models else "?"
    return DemoEntry(
        f"method-{config_cls.name}",
        f"{config_cls.name} on tiny {model} with its tiny settings, against stock (generated from its config)",
        functools.partial(run_method, config_cls),
        (config_cls.name,),
    )


def run_method(config_cls: type[MethodConfig], out_dir: Path) -> dict[str, Any]:
    """Stock, with the method, stock again on the method's first tiny model; the report of `method_entry`."""
    from ...errors import ConfigError
    from ...generation import GenerationSpec, generate
    from ...media.video import write_video
    from ...testing import tiny_pipeline
    from ...testing.recipe import PROMPT

    if not config_cls.tiny_models:
        raise ConfigError(f"{config_cls.__name__} names no tiny model (tiny_models) to run its demo on")
    model = config_cls.tiny_models[0]
    pipe = tiny_pipeline(model)
    stock_spec = GenerationSpec(model=f"tiny:{model}", prompt=PROMPT)
    config = config_cls.from_dict(dict(config_cls.tiny_settings))
    stock = generate(stock_spec, pipe).frames
    start = time.perf_counter()
    result = generate(dataclasses.replace(stock_spec, methods=[config]), pipe)
    seconds = time.perf_counter() - start
    again = generate(stock_spec, pipe).frames
    path = write_video(out_dir / f"method_{config_cls.name}.mp4", result.frames, fps=FPS)
    restored = bool(again.equal(stock))
    return {
        "ok": restored and bool(result.frames.isfinite().all()),
        "video": path.name,
        "settings": config.to_dict(),
        "max_abs_diff_vs_stock": float((result.frames - stock).abs().max()) if result.frames.shape == stock.shape else None,
        "stock_restored_bitwise": restored,
        "attention_calls": result.stats_summary.get("calls", 0),
        "method_seconds": round(seconds, 3),
    }
