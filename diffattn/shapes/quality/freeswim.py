"""Quality group ``freeswim``: FreeSwim on shapes-wan at twice its trained side (64x64, 9 frames).

A model sampled above its training size tends to draw the captioned objects more than once; FreeSwim's window
attention is meant to stop that. The scorer counts the objects in every frame (:func:`~.clips.clip_metrics`), so the
rows compare those counts with the caption's: FreeSwim's two stages (:class:`~diffattn.FreeSwimPipeline`: sample at
32x32, upscale, SDEdit at 64x64 with the window) against

- plain sampling at 64x64 with the same captions and seeds (what FreeSwim replaces), and
- the same two stages with the model's own attention in stage 2 (upscale + SDEdit alone), which separates what the
  window adds from what the coarse-to-fine schedule does.

Both rows also carry the counts of stage 1's 32x32 clips (``*_native``: the same seeds at the trained size, what the
model draws where it was trained). Captions name one or two objects (:data:`MAX_OBJECTS`).
"""

from __future__ import annotations

from typing import Any

import torch

from diffattn.configs.freeswim import FreeSwimConfig
from diffattn.pipelines.freeswim import FreeSwimPipeline
from diffattn.shapes.models import FLOW_SHIFT, GEOMETRY, sample_kwargs
from diffattn.shapes.quality.clips import clip_metrics, side_by_side, timed_generate, warm_up
from diffattn.shapes.quality.common import QualityRow, QualitySettings, captions, load_model

__all__ = ["SCALE", "MAX_OBJECTS", "STAGE2_FLOW_SHIFT", "METRICS", "freeswim_config", "rows"]

SCALE = 2
"""Target side over the trained side: 64x64 clips from the 32x32 model (4x the tokens per frame)."""
MAX_OBJECTS = 2
"""Objects per caption (1 or 2), so that a count of two is sometimes right and sometimes a duplicate."""
STAGE2_FLOW_SHIFT = 2 * FLOW_SHIFT
"""Flow shift of the 64x64 stage: the model's shift times the square root of the token ratio (4x), the usual
resolution rule (FreeSwim's default of 9 is for Wan's 480p -> 1080p)."""
METRICS = ("objects_per_frame", "count_error", "extra_objects", "exact_count_frames", "exact_count_samples",
           "found_frames", "accuracy")
"""The :func:`~.clips.clip_metrics` values each row carries for FreeSwim, its baseline and the native clips."""


def freeswim_config() -> FreeSwimConfig:
    """FreeSwim for shapes-wan: base 32x32 (8x8 tokens: window radius 4x4 tokens, temperature of a 64-token grid),
    the stage-2 shift :data:`STAGE2_FLOW_SHIFT`, the rest at its defaults (cache every 2 steps, strength 0.7, the
    kernel backend picked for the device: the PyTorch reference on the CPU)."""
    base = GEOMETRY["shapes-wan"]
    return FreeSwimConfig(base_height=base["height"], base_width=base["width"], flow_shift=STAGE2_FLOW_SHIFT)


class _NativeFramesKept(FreeSwimPipeline):
    """A :class:`~diffattn.FreeSwimPipeline` that keeps every call's stage-1 clips (the trained-size samples of the
    same seeds) in ``native``, so the native reference costs no extra sampling."""

    native: list[torch.Tensor]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        output = super().__call__(*args, **kwargs)
        self.native.extend(output.base_frames.float().cpu().clamp(0, 1))
        return output


def rows(settings: QualitySettings) -> list[QualityRow]:
    """FreeSwim against plain sampling at the target size, and against its two stages without the window (see the
    module)."""
    pipe = load_model("shapes-wan", settings)
    texts, seeds = captions(settings, max_objects=MAX_OBJECTS)
    base = GEOMETRY["shapes-wan"]
    call = sample_kwargs("shapes-wan", height=SCALE * base["height"], width=SCALE * base["width"],
                         num_inference_steps=settings.num_steps)
    config = freeswim_config()
    two_stage = _NativeFramesKept.from_wan_pipeline(pipe)
    two_stage.native = []

    warm_up(pipe, texts[0], **call)
    plain, plain_seconds = timed_generate(pipe, texts, seeds, **call)
    method, method_seconds = timed_generate(two_stage, texts, seeds, freeswim=config, **call)
    native = clip_metrics(two_stage.native, texts)
    without, without_seconds = timed_generate(two_stage, texts, seeds, freeswim=config, use_freeswim=False, **call)
    scores = clip_metrics(method, texts)
    setting = (f"base {base['height']}x{base['width']}, strength {config.strength}, stage-2 flow shift "
               f"{config.flow_shift:g}, cache every {config.cache_steps} steps; {call['height']}x{call['width']}, "
               f"{call['num_frames']} frames, {settings.num_steps} steps, 1-{MAX_OBJECTS} objects per caption")
    note = ("the window runs on the PyTorch reference kernel on the CPU: the time ratio says nothing about the GPU kernels"
            if settings.device == "cpu" else "")
    out = []
    for baseline, clips, seconds in (
        (f"plain sampling at {call['height']}x{call['width']} (same captions and seeds)", plain, plain_seconds),
        ("the same two stages without FreeSwim's attention (upscale + SDEdit)", without, without_seconds),
    ):
        reference = clip_metrics(clips, texts)
        out.append(QualityRow(
            group="freeswim", method="freeswim", model="shapes-wan", baseline=baseline,
            criterion="count error (mean |objects found - objects named| per frame) no higher than the baseline's",
            metrics={
                **side_by_side(scores, reference, METRICS),
                **{f"{name}_native": native[name] for name in METRICS},
                "objects_expected": scores["objects_expected"],
                "seconds": method_seconds,
                "seconds_baseline": seconds,
                "time_ratio": method_seconds / seconds,
                "samples": len(texts),
            },
            verdict=scores["count_error"] <= reference["count_error"],
            setting=setting,
            note=note,
        ))
    return out
