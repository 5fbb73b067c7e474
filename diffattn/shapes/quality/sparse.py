"""Quality group ``sparse``: every sparse-attention method on shapes-wan against dense sampling with the same seeds.

The trained clip (9 frames, 32x32) is 192 tokens, under every method's ``min_tokens`` (512): the methods would not
run. The rows therefore sample :data:`FRAMES` frames at the trained width and height (576 tokens, 5 blocks of 128 in
2x8x8 tiles): only the clip's length leaves the training distribution, each frame keeps the trained size. Dense
sampling at the same length is the baseline, so the comparison stays like for like. Steps given as absolute counts for a 50-step
schedule (Radial's and PSA's ``dense_steps``) are scaled to the run's step count, so each method keeps the share of
dense steps it has at its defaults; the row's ``setting`` says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import diffattn
from diffattn.media.metrics import psnr, ssim
from diffattn.shapes.evaluate import generate
from diffattn.shapes.models import sample_kwargs
from diffattn.shapes.quality.common import QualityRow, QualitySettings, captions, load_model
from diffattn.shapes.score import score_video

__all__ = ["FRAMES", "METHODS", "rows"]

FRAMES = 33
"""Frames sampled per clip: 9 latent frames of 8x8 tokens, 576 tokens (the trained 9 frames give 192)."""
REFERENCE_STEPS = 50
"""The schedule length the methods' absolute step defaults are written for."""


def _scaled(steps: int, default: int) -> int:
    return round(default * steps / REFERENCE_STEPS)


METHODS: dict[str, Callable[[int], tuple[diffattn.MethodConfig, str]]] = {
    "sparge": lambda steps: (diffattn.SpargeConfig(), "defaults (top-k 0.5)"),
    "radial": lambda steps: (diffattn.RadialConfig(dense_steps=_scaled(steps, 12)),
                             f"defaults, dense_steps 12/{REFERENCE_STEPS} -> {_scaled(steps, 12)}/{steps}"),
    "psa": lambda steps: (diffattn.PSAConfig(dense_steps=_scaled(steps, 15)),
                          f"defaults, dense_steps 15/{REFERENCE_STEPS} -> {_scaled(steps, 15)}/{steps}"),
    "lite": lambda steps: (diffattn.LiteAttentionConfig(), "defaults (threshold -10)"),
    "pab": lambda steps: (diffattn.PABConfig(), "defaults"),
    "quantized": lambda steps: (diffattn.QuantizedConfig(), "defaults (int8-fp8; the CPU runs the reference arithmetic)"),
}
"""Method name -> its configuration for a run of ``steps`` steps and the setting as the table states it."""


def _work_saved(stats: Any) -> tuple[float | None, list[float], float]:
    """Mean density over the calls that ran a sparse plan, per step the fraction of tiles skipped, and the fraction
    of calls that reused an earlier output (PAB)."""
    densities, skipped, tiles, reused, calls = [], {}, {}, 0, 0
    for per_step in stats.to_dict().values():
        for step, record in per_step.items():
            if record.get("density") is not None:
                densities.append(record["density"])
            skipped[step] = skipped.get(step, 0) + record.get("skipped_tiles", 0)
            tiles[step] = tiles.get(step, 0) + record.get("tiles", 0)
            reused, calls = reused + record.get("reused", 0), calls + record.get("calls", 0)
    per_step = [skipped[step] / tiles[step] if tiles[step] else 0.0 for step in sorted(tiles)]
    return (float(np.mean(densities)) if densities else None), per_step, reused / max(calls, 1)


def _accuracy(videos: list[torch.Tensor], texts: list[str]) -> float:
    return float(np.mean([score_video(video, text).correct for video, text in zip(videos, texts)]))


def rows(settings: QualitySettings, methods: tuple[str, ...] = tuple(METHODS)) -> list[QualityRow]:
    """One row per method of ``methods`` (names in :data:`METHODS`): PSNR/SSIM of its clips against dense clips of the same captions and
    seeds, the density it reached, the calls it reused, the scorer's accuracy of both, and per step the fraction of
    tiles skipped."""
    pipe = load_model("shapes-wan", settings)
    texts, seeds = captions(settings)
    call = sample_kwargs("shapes-wan", num_frames=FRAMES, num_inference_steps=settings.num_steps)
    dense = generate(pipe, texts, seeds, **call)
    dense_accuracy = _accuracy(dense, texts)
    out = []
    for name in methods:
        config, setting = METHODS[name](settings.num_steps)
        with diffattn.apply(pipe, config) as handle:
            videos = generate(pipe, texts, seeds, **call)
        density, skipped, reused = _work_saved(handle.stats)
        accuracy = _accuracy(videos, texts)
        out.append(QualityRow(
            group="sparse", method=name, model="shapes-wan", baseline="dense (same captions and seeds)",
            criterion="scorer accuracy not below dense's by more than one sample",
            metrics={
                "psnr_vs_dense_db": float(np.mean([psnr(v, d) for v, d in zip(videos, dense)])),
                "ssim_vs_dense": float(np.mean([ssim(v, d) for v, d in zip(videos, dense)])),
                "density": density,
                "skipped_tiles": float(np.mean(skipped)) if skipped else 0.0,
                "reused_calls": reused,
                "accuracy": accuracy,
                "accuracy_dense": dense_accuracy,
                "samples": len(texts),
            },
            verdict=accuracy >= dense_accuracy - 1 / len(texts) - 1e-9,
            setting=f"{setting}; {FRAMES} frames, {settings.num_steps} steps",
            series={"skipped_tiles_per_step": skipped},
        ))
    return out
