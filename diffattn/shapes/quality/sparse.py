"""Quality group ``sparse``: every sparse-attention method on shapes-wan against dense sampling with the same seeds.

The trained clip (9 frames, 32x32) is 192 tokens, under every method's ``min_tokens`` (512): the methods would not
run. The rows therefore sample :data:`FRAMES` frames at the trained width and height (576 tokens, 5 blocks of 128 in
2x8x8 tiles): only the clip's length leaves the training distribution, each frame keeps the trained size. Dense
sampling at the same length is the baseline, so the comparison stays like for like. Steps given as absolute counts for a 50-step
schedule (Radial's and PSA's ``dense_steps``) are scaled to the run's step count, so each method keeps the share of
dense steps it has at its defaults; the row's ``setting`` says so.

A sparse method's clip is judged by how close it stays to the dense clip of the same seed, against how close dense
clips of other seeds come (``psnr_reseeded_dense_db``: same captions, so the same background colour): it keeps the
sample when its squared error against dense is at most half the re-seeded clips' (PSNR :data:`KEEP_MARGIN_DB`
higher); a method only as close as another seed has lost the sample, whatever the scorer says of it (at 33 frames
the dense clips themselves can score 0, which would make an accuracy criterion alone vacuous).
"""

from __future__ import annotations

import math
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

__all__ = ["FRAMES", "KEEP_MARGIN_DB", "METHODS", "RESEED", "rows"]

FRAMES = 33
"""Frames sampled per clip: 9 latent frames of 8x8 tokens, 576 tokens (the trained 9 frames give 192)."""
REFERENCE_STEPS = 50
"""The schedule length the methods' absolute step defaults are written for."""
RESEED = 100_000
"""Offset of the seeds of the re-seeded dense clips (the closeness a method must beat)."""
KEEP_MARGIN_DB = 10 * math.log10(2)
"""How much closer to dense (PSNR) than the re-seeded clips a method's clips must be: half their squared error."""


def _scaled(steps: int, default: int) -> int:
    return round(default * steps / REFERENCE_STEPS)


METHODS: dict[str, Callable[[int], tuple[diffattn.MethodConfig, str]]] = {
    "sparge": lambda steps: (diffattn.SpargeConfig(), "defaults (top-k 0.5)"),
    "sparge-topk-0.9": lambda steps: (diffattn.SpargeConfig(topk=0.9), "top-k 0.9 (keeps more tiles)"),
    "radial": lambda steps: (diffattn.RadialConfig(dense_steps=_scaled(steps, 12)),
                             f"defaults, dense_steps 12/{REFERENCE_STEPS} -> {_scaled(steps, 12)}/{steps}"),
    "psa": lambda steps: (diffattn.PSAConfig(dense_steps=_scaled(steps, 15)),
                          f"defaults, dense_steps 15/{REFERENCE_STEPS} -> {_scaled(steps, 15)}/{steps}"),
    "lite": lambda steps: (diffattn.LiteAttentionConfig(), "defaults (threshold -10)"),
    "lite-threshold-3": lambda steps: (diffattn.LiteAttentionConfig(threshold=-3.0),
                                       "threshold -3 (the original's examples use -3 to 0)"),
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


def _mean_psnr(videos: list[torch.Tensor], references: list[torch.Tensor]) -> float:
    return float(np.mean([psnr(video, reference) for video, reference in zip(videos, references)]))


def _accuracy(videos: list[torch.Tensor], texts: list[str]) -> float:
    return float(np.mean([score_video(video, text).correct for video, text in zip(videos, texts)]))


def rows(settings: QualitySettings, methods: tuple[str, ...] = tuple(METHODS)) -> list[QualityRow]:
    """One row per method of ``methods`` (names in :data:`METHODS`): PSNR/SSIM of its clips against dense clips of
    the same captions and seeds (and the PSNR of dense clips of other seeds, the bar to beat), the density it reached,
    the calls it reused, the scorer's accuracy of both, and per step the fraction of tiles skipped."""
    pipe = load_model("shapes-wan", settings)
    texts, seeds = captions(settings)
    call = sample_kwargs("shapes-wan", num_frames=FRAMES, num_inference_steps=settings.num_steps)
    dense = generate(pipe, texts, seeds, **call)
    dense_accuracy = _accuracy(dense, texts)
    reseeded = generate(pipe, texts, [seed + RESEED for seed in seeds], **call)
    reseeded_psnr = _mean_psnr(reseeded, dense)
    out = []
    for name in methods:
        config, setting = METHODS[name](settings.num_steps)
        with diffattn.apply(pipe, config) as handle:
            videos = generate(pipe, texts, seeds, **call)
        density, skipped, reused = _work_saved(handle.stats)
        accuracy = _accuracy(videos, texts)
        closeness = _mean_psnr(videos, dense)
        out.append(QualityRow(
            group="sparse", method=name, model="shapes-wan", baseline="dense (same captions and seeds)",
            criterion="PSNR against dense at least 3 dB above that of dense clips of other seeds (half their squared "
                      "error), and scorer accuracy not below dense's by more than one sample",
            metrics={
                "psnr_vs_dense_db": closeness,
                "psnr_reseeded_dense_db": reseeded_psnr,
                "ssim_vs_dense": float(np.mean([ssim(v, d) for v, d in zip(videos, dense)])),
                "density": density,
                "skipped_tiles": float(np.mean(skipped)) if skipped else 0.0,
                "reused_calls": reused,
                "accuracy": accuracy,
                "accuracy_dense": dense_accuracy,
                "samples": len(texts),
            },
            verdict=closeness >= reseeded_psnr + KEEP_MARGIN_DB and accuracy >= dense_accuracy - 1 / len(texts) - 1e-9,
            setting=f"{setting}; {FRAMES} frames, {settings.num_steps} steps",
            series={"skipped_tiles_per_step": skipped},
        ))
    return out
