"""Demo entries of the foundation: the sample clip, and every tiny pipeline run stock and through `observe`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import demo_entry

FPS = 8


@demo_entry("sample-clip", "the generated sample clip that the editing demos use")
def sample(out_dir: Path) -> dict[str, Any]:
    from ...media.video import write_video
    from ...testing import sample_clip

    clip = sample_clip()
    path = write_video(out_dir / "sample_clip.mp4", clip, fps=FPS)
    return {"ok": True, "video": path.name, "frames": clip.shape[0], "size": list(clip.shape[-2:])}


def _observe_family(family: str, out_dir: Path) -> dict[str, Any]:
    """Run a tiny pipeline stock and with `observe`; the outputs must be identical."""
    from ...api import apply
    from ...configs import ObserveConfig
    from ...generation import pipeline_frames
    from ...media.video import write_video
    from ...testing import tiny_call_kwargs, tiny_pipeline

    pipe = tiny_pipeline(family)
    start = time.perf_counter()
    stock = pipeline_frames(pipe(**tiny_call_kwargs(family)))
    stock_seconds = time.perf_counter() - start
    with apply(pipe, ObserveConfig()) as handle:
        start = time.perf_counter()
        observed = pipeline_frames(pipe(**tiny_call_kwargs(family)))
        seconds = time.perf_counter() - start
        summary = handle.stats.summary()
    path = write_video(out_dir / f"observe_{family}.mp4", observed, fps=FPS)
    max_diff = float((observed - stock).abs().max())
    return {
        "ok": max_diff <= 1e-6,
        "video": path.name,
        "max_abs_diff_vs_stock": max_diff,
        "stock_seconds": round(stock_seconds, 3),
        "observe_seconds": round(seconds, 3),
        "attention_calls": summary["calls"],
        "layers": summary["layers"],
        "steps": summary["steps"],
    }


def _register_families() -> None:
    from ...testing import FAMILIES

    for family in FAMILIES:
        demo_entry(f"observe-{family}", f"tiny {family} pipeline, stock vs observe (must be identical)", ("observe",))(
            lambda out_dir, family=family: _observe_family(family, out_dir)
        )


_register_families()
