"""Demo entry of the sparse methods: tiny Wan at a size long enough to sparsify, dense against sparse runs.

The video has 8x8x8 = 512 tokens, so the methods really skip blocks; the entry reports, per method, the plans'
mean density and skipped-tile fraction from `handle.stats` (PAB: how many attention calls reused an earlier
output), the time, and how far the video moved from the dense one. Its `ok` checks the equivalence the methods
rest on: Sparge keeping every block (top-k 1) reproduces the dense video. `quantized` runs every block in 8 bits
(on the CPU: the PyTorch reference of the 8-bit arithmetic).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import demo_entry, single_thread

FPS = 8
SIZE, FRAMES, STEPS = 128, 29, 4  # latent 8 x 16 x 16 -> 8 x 8 x 8 tokens with Wan's 2x2 patches
MIN_TOKENS = 256


@demo_entry("sparse-tiny-wan",
            "sparse attention on tiny Wan (512 tokens): Radial+Lite, Sparge, PSA, PAB, 8-bit attention and their stats",
            ("radial", "lite", "sparge", "psa", "pab", "quantized"))
def sparse_tiny_wan(out_dir: Path) -> dict[str, Any]:
    with single_thread():
        return _run(out_dir)


def _run(out_dir: Path) -> dict[str, Any]:
    from ... import configs
    from ...api import apply
    from ...generation import pipeline_frames
    from ...media.video import write_video
    from ...testing import tiny_call_kwargs, tiny_pipeline

    pipe = tiny_pipeline("wan")
    common = {"min_tokens": MIN_TOKENS}

    def run() -> Any:
        call = tiny_call_kwargs("wan", height=SIZE, width=SIZE, num_frames=FRAMES, num_inference_steps=STEPS)
        start = time.perf_counter()
        frames = pipeline_frames(pipe(**call))
        return frames, time.perf_counter() - start

    dense, dense_seconds = run()
    write_video(out_dir / "sparse_dense.mp4", dense, fps=FPS)
    variants = {
        "radial+lite": (configs.RadialConfig(dense_steps=1, **common), configs.LiteAttentionConfig(threshold=-3.0, **common)),
        "sparge": (configs.SpargeConfig(**common),),
        "psa": (configs.PSAConfig(dense_steps=1, mode="topk", cutoffs=(0.25, 0.5, 0.5, 0.75), **common),),
        "pab": (configs.PABConfig(),),
        "quantized": (configs.QuantizedConfig(**common),),
        "sparge-topk-1": (configs.SpargeConfig(topk=1.0, **common),),
    }
    report: dict[str, Any] = {"dense_seconds": round(dense_seconds, 2), "methods": {}}
    for name, method_configs in variants.items():
        with apply(pipe, *method_configs) as handle:
            frames, seconds = run()
            summary = handle.stats.summary()
            records = [r for steps in handle.stats.to_dict().values() for r in steps.values()]
        path = write_video(out_dir / f"sparse_{name}.mp4", frames, fps=FPS)
        report["methods"][name] = {
            "video": path.name,
            "seconds": round(seconds, 2),
            "mean_density": summary["mean_density"],
            "skipped_tile_fraction": summary["skipped_tile_fraction"],
            "reused_calls": int(sum(r.get("reused", 0) for r in records)),  # PAB broadcasts
            "quantized_calls": int(sum(r.get("quantized_calls", 0) for r in records)),  # calls run in 8 bits
            "max_abs_diff_vs_dense": float((frames - dense).abs().max()),
        }
    report["ok"] = report["methods"]["sparge-topk-1"]["max_abs_diff_vs_dense"] <= 1e-4
    return report
