"""`diffattn demo window-tiny-flux`: the image `window` on tiny Flux at four times its (made-up) training size.

The tiny Flux pipeline renders 256x512 px (16x32 tokens) with a training size of 128x256 px (8x16 tokens: windows of
9x17 tokens), alone and with Sparge inside the window. The check it rests on: a window covering the whole image at
temperature 1 gives the stock image (the exact log-sum-exp merge of image and text keys).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import demo_entry, single_thread

FPS = 8
HEIGHT, WIDTH, STEPS = 256, 512, 4
BASE = {"base_height": 128, "base_width": 256, "min_tokens": 1}


@demo_entry("window-tiny-flux", "inward windows on tiny Flux at 2x its training side (256x512 px over a 128x256 base)", ("window",))
def window_tiny_flux(out_dir: Path) -> dict[str, Any]:
    with single_thread():
        return _run(out_dir)


def _run(out_dir: Path) -> dict[str, Any]:
    from ... import configs
    from ...api import apply
    from ...generation import pipeline_frames
    from ...media.video import write_video
    from ...testing import tiny_call_kwargs, tiny_pipeline

    pipe = tiny_pipeline("flux")

    def run() -> Any:
        start = time.perf_counter()
        frames = pipeline_frames(pipe(**tiny_call_kwargs("flux", height=HEIGHT, width=WIDTH, num_inference_steps=STEPS)))
        return frames, time.perf_counter() - start

    stock, stock_seconds = run()
    write_video(out_dir / "window_stock.mp4", stock, fps=FPS)
    variants = {
        "window": (configs.WindowConfig(**BASE),),
        "window+sparge": (configs.WindowConfig(**BASE), configs.SpargeConfig(min_tokens=1)),
        "covering-window-temperature-1": (configs.WindowConfig(**BASE, window_radius=(16, 32), scale_factor=1.0),),
    }
    report: dict[str, Any] = {"stock_seconds": round(stock_seconds, 2), "methods": {}}
    for name, method_configs in variants.items():
        with apply(pipe, *method_configs) as handle:
            frames, seconds = run()
            summary = handle.stats.summary()
        path = write_video(out_dir / f"window_{name}.mp4", frames, fps=FPS)
        report["methods"][name] = {
            "video": path.name,
            "seconds": round(seconds, 2),
            "mean_density": summary["mean_density"],
            "max_abs_diff_vs_stock": float((frames - stock).abs().max()),
        }
    restored = bool(run()[0].equal(stock))
    report["stock_restored_bitwise"] = restored
    report["ok"] = restored and report["methods"]["covering-window-temperature-1"]["max_abs_diff_vs_stock"] <= 1e-4
    return report
