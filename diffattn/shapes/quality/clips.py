"""What the video groups (``freeswim``, ``noise``) measure on a set of generated clips, from the world's scorer.

:func:`clip_metrics` scores clips against their captions: accuracy, objects per frame against the caption's count
(duplicated objects), the captioned objects' presence frame by frame, how steady the main object's colour and
shape stay from frame to frame, and the frame-to-frame warp error. :func:`timed_generate` samples and times them
(after :func:`warm_up`); :func:`side_by_side` lays a method's and its baseline's metrics out in one row.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from diffattn.media.flow import video_flow
from diffattn.media.metrics import warp_error
from diffattn.shapes.evaluate import generate
from diffattn.shapes.score import DetectedObject, detect, score_video

__all__ = ["clip_metrics", "side_by_side", "timed_generate", "warm_up"]


def warm_up(pipe: Any, text: str, **kwargs: Any) -> None:
    """One single-step sample of ``text`` with the call ``kwargs``, so that the first timed call does not also pay
    for one-time setup (lazy initialisation, the first use of each tensor shape)."""
    generate(pipe, [text], [0], **{**kwargs, "num_inference_steps": 1})


def timed_generate(pipe: Any, texts: Sequence[str], seeds: Sequence[int], **kwargs: Any) -> tuple[list[torch.Tensor], float]:
    """:func:`~diffattn.shapes.evaluate.generate`'s clips and the wall seconds they took (frames end on the CPU, so
    device work is finished when the clock stops)."""
    start = time.perf_counter()
    videos = generate(pipe, texts, seeds, **kwargs)
    return videos, time.perf_counter() - start


def _main_object(found: list[DetectedObject]) -> tuple[str, str] | None:
    """(colour, shape) of a frame's largest region, or ``None`` when the frame has none."""
    if not found:
        return None
    largest = max(found, key=lambda d: d.area)
    return largest.colour, largest.shape


def _steadiness(identities: list[tuple[str, str] | None], part: int) -> float | None:
    """Fraction of consecutive frame pairs, both with a region, whose largest regions agree on colour (``part`` 0)
    or shape (1); ``None`` without such a pair."""
    pairs = [(a[part], b[part]) for a, b in zip(identities, identities[1:]) if a is not None and b is not None]
    return float(np.mean([a == b for a, b in pairs])) if pairs else None


def _self_warp_error(video: torch.Tensor) -> float:
    """:func:`~diffattn.media.metrics.warp_error` of a clip under its own optical flow, with occlusions from the
    flow's forward-backward inconsistency only: the photometric occlusion test would exclude exactly the pixels
    whose colour changes between frames (an object flickering to another colour), which is what this should see."""
    return warp_error(video, video_flow(video, photometric_threshold=None))


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def clip_metrics(videos: Sequence[torch.Tensor], texts: Sequence[str]) -> dict[str, float | None]:
    """Score clips ``[F, 3, H, W]`` (all of one length) against their captions.

    Values: ``accuracy`` (scorer's verdict), ``objects_per_frame`` (regions found, mean over frames and clips),
    ``objects_expected`` (the captions' object counts, mean), ``count_error`` (mean ``|found - expected|`` per frame),
    ``extra_objects`` (mean regions beyond the caption's count per frame: duplicates), ``exact_count_frames``
    (fraction of frames with exactly the caption's count), ``exact_count_samples`` (fraction of clips with the
    exact count in more than half of their frames), ``found_frames`` (fraction of frames in which each captioned
    object is found with its colour and shape, mean over objects and clips), ``detected_frames`` (fraction of frames
    with any region), ``colour_stability`` / ``shape_stability`` (fraction of consecutive frame pairs whose largest
    regions keep their colour / shape, over the pairs with a region in both frames; ``None`` without one) and
    ``warp_error`` (:func:`_self_warp_error`, 0-255, mean over clips).
    """
    counts, expected, found, identities, correct = [], [], [], [], []
    for video, text in zip(videos, texts):
        score = score_video(video, text)
        detections = [detect(frame, background=bg) for frame, bg in zip(video, score.backgrounds)]
        counts.append(score.objects_per_frame)
        expected.append(len(score.objects))
        found.append(np.mean([named_object.found_frames for named_object in score.objects]))
        identities.append([_main_object(frame) for frame in detections])
        correct.append(score.correct)
    counts_array = np.array(counts, dtype=np.float64)  # [clips, frames]
    wanted = np.array(expected, dtype=np.float64)[:, None]
    exact = counts_array == wanted
    return {
        "accuracy": float(np.mean(correct)),
        "objects_per_frame": float(counts_array.mean()),
        "objects_expected": float(wanted.mean()),
        "count_error": float(np.abs(counts_array - wanted).mean()),
        "extra_objects": float(np.clip(counts_array - wanted, 0, None).mean()),
        "exact_count_frames": float(exact.mean()),
        "exact_count_samples": float((exact.mean(1) > 0.5).mean()),
        "found_frames": float(np.mean(found)),
        "detected_frames": float((counts_array > 0).mean()),
        "colour_stability": _mean([_steadiness(ids, 0) for ids in identities]),
        "shape_stability": _mean([_steadiness(ids, 1) for ids in identities]),
        "warp_error": float(np.mean([_self_warp_error(video) for video in videos])),
    }


def side_by_side(method: dict[str, float | None], baseline: dict[str, float | None], names: Sequence[str], *,
                 suffix: str = "baseline") -> dict[str, float | None]:
    """``names`` of ``method``'s metrics as they are, then the same of ``baseline``'s as ``<name>_<suffix>``."""
    return {**{name: method[name] for name in names}, **{f"{name}_{suffix}": baseline[name] for name in names}}
