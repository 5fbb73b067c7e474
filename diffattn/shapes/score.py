"""Scoring a video against a caption of the shapes world, by geometry rather than a learned judge.

Each frame is segmented by colour: every pixel takes the nearest named colour (:data:`~diffattn.shapes.world.COLOURS`)
or none when it is far from all of them; the most common colour is the background; connected regions of any other
colour that are large enough are objects. An object's shape is the one whose ideal outline, drawn in the object's
bounding box (full box, inscribed disc, upright triangle), overlaps the region best (IoU). A caption's object is
present in a frame when a region of its colour has its shape; the video is correct when every object the caption
names is present in most frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from diffattn.media.metrics import mask_iou
from diffattn.shapes.world import COLOURS, SHAPES, parse_caption

__all__ = ["MAX_COLOUR_DISTANCE", "DetectedObject", "ObjectScore", "VideoScore", "as_frames", "detect", "score_video"]

MAX_COLOUR_DISTANCE = 100.0
"""A pixel farther than this (Euclidean, 8-bit RGB) from every named colour has no colour (blurred edges, noise)."""
_MIN_AREA = 0.012  # smallest object region, as a fraction of the frame (about 12 pixels at 32x32)
_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)
_NAMES = tuple(COLOURS)


@dataclass(frozen=True, eq=False)
class DetectedObject:
    """One coloured region: its colour and shape names, bool ``mask`` ``[H, W]``, ``centre`` ``(x, y)`` in pixels (of
    its bounding box, as the world places shapes),
    ``area`` in pixels and ``fit``: the IoU of the region with its shape's ideal outline (1 for a perfect shape)."""

    colour: str
    shape: str
    mask: np.ndarray
    centre: tuple[float, float]
    area: int
    fit: float


@dataclass(frozen=True)
class ObjectScore:
    """How one named object fared: fractions of frames with a region of its colour (``colour_frames``) and with one
    of its colour and shape (``found_frames``); ``motion_ok`` compares the found regions' path with the named motion
    (``None`` when the caption names no motion or the object was found in fewer than two frames)."""

    shape: str
    colour: str
    motion: str | None
    colour_frames: float
    found_frames: float
    motion_ok: bool | None

    @property
    def correct(self) -> bool:
        return self.found_frames > 0.5


@dataclass(frozen=True)
class VideoScore:
    """The result of :func:`score_video`.

    ``correct``: every named object (colour and shape) is present in more than half of the frames; ``colour_ok``:
    every named colour is; ``shape_ok``: every named object's colour is present, and in most frames where it is,
    with the named shape;
    ``background_ok``: the detected background is the named one (``None`` if the caption names none);
    ``objects_per_frame``: the number of regions found in each frame (duplicated objects show up here).
    """

    correct: bool
    colour_ok: bool
    shape_ok: bool
    background_ok: bool | None
    objects: tuple[ObjectScore, ...]
    objects_per_frame: tuple[int, ...]
    backgrounds: tuple[str, ...]


def as_frames(video: Any) -> np.ndarray:
    """Frames as uint8 ``[F, H, W, 3]`` from an image or video: numpy or torch, uint8 or float in [0, 1],
    channels last (``[..., H, W, 3]``) or first (``[..., 3, H, W]``), with or without a frame axis, or a PIL image /
    list of PIL images."""
    if isinstance(video, (list, tuple)):
        video = np.stack([np.asarray(frame) for frame in video])
    array = video.detach().cpu().float().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or 3 not in (array.shape[1], array.shape[-1]):
        raise ValueError(f"expected frames [F, H, W, 3] or [F, 3, H, W]; got shape {array.shape}")
    if array.shape[-1] != 3:
        array = array.transpose(0, 2, 3, 1)
    if array.dtype != np.uint8:
        array = np.round(np.clip(array.astype(np.float32), 0, 1) * 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def _labels(frame: np.ndarray) -> np.ndarray:
    """Index of each pixel's nearest named colour, or -1 when none is within :data:`MAX_COLOUR_DISTANCE`."""
    distance = ((frame.astype(np.float32)[:, :, None, :] - _PALETTE) ** 2).sum(-1)
    labels = distance.argmin(-1)
    labels[distance.min(-1) > MAX_COLOUR_DISTANCE**2] = -1
    return labels


def _outline(shape: str, height: int, width: int) -> np.ndarray:
    """The ideal shape filling a ``height x width`` bounding box (pixel centres inside it)."""
    y = (np.arange(height)[:, None] + 0.5) / height  # 0 at the top edge, 1 at the bottom
    x = (np.arange(width)[None, :] + 0.5) / width - 0.5
    if shape == "square":
        return np.ones((height, width), dtype=bool)
    if shape == "circle":
        return x**2 + (y - 0.5) ** 2 <= 0.25
    return np.abs(x) <= y / 2


def _classify(region: np.ndarray) -> tuple[str, float]:
    """The shape whose outline in the region's bounding box has the highest IoU with it, and that IoU."""
    fits = {shape: mask_iou(torch.from_numpy(region), torch.from_numpy(_outline(shape, *region.shape))) for shape in SHAPES}
    best = max(fits, key=fits.get)
    return best, fits[best]


def detect(frame: Any, *, background: str | None = None) -> list[DetectedObject]:
    """Objects in one frame (any layout :func:`as_frames` takes): regions of one named colour other than the
    ``background`` (default: the most common colour), 8-connected, of at least 1.2% of the frame."""
    frame = as_frames(frame)[0]
    labels = _labels(frame)
    if background is None:
        counts = np.bincount(labels[labels >= 0], minlength=len(_NAMES))
        background = _NAMES[int(counts.argmax())]
    height, width = labels.shape
    min_area = max(4, int(_MIN_AREA * height * width))
    found = []
    for index, colour in enumerate(_NAMES):
        if colour == background:
            continue
        count, components, stats, _ = cv2.connectedComponentsWithStats((labels == index).astype(np.uint8), connectivity=8)
        for component in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[component])
            if area < min_area:
                continue
            mask = components == component
            shape, fit = _classify(mask[y : y + h, x : x + w])
            found.append(DetectedObject(colour, shape, mask, (x + w / 2, y + h / 2), area, fit))
    return found


def _background_of(frame: np.ndarray) -> str:
    labels = _labels(frame)
    return _NAMES[int(np.bincount(labels[labels >= 0], minlength=len(_NAMES)).argmax())]


def _motion_ok(motion: str, centres: list[tuple[float, float]], size: int) -> bool:
    """Axis motions: the net displacement points the named way by at least 5% of the frame; bouncing: the object
    moved at least that far in total."""
    path = np.array(centres)
    threshold = 0.05 * size
    if motion == "bouncing":
        return bool(np.linalg.norm(np.diff(path, axis=0), axis=1).sum() >= threshold)
    dx, dy = path[-1] - path[0]
    along, across = {"left": (-dx, dy), "right": (dx, dy), "up": (-dy, dx), "down": (dy, dx)}[motion]
    return bool(along >= threshold and along > abs(across))


def score_video(video: Any, caption: str) -> VideoScore:
    """Check ``video`` (any layout :func:`as_frames` takes; an image is a one-frame video) against ``caption``."""
    description = parse_caption(caption)
    if not description.objects:
        raise ValueError(f"the caption names no '<colour> <shape>' of the shapes world: {caption!r}")
    frames = as_frames(video)
    backgrounds = tuple(_background_of(frame) for frame in frames)
    detections = [detect(frame, background=bg) for frame, bg in zip(frames, backgrounds)]
    scores = []
    for named in description.objects:
        colour_frames = [any(d.colour == named.colour for d in found) for found in detections]
        matches = [[d for d in found if d.colour == named.colour and d.shape == named.shape] for found in detections]
        centres = [max(match, key=lambda d: d.area).centre for match in matches if match]
        motion_ok = None if named.motion is None or len(centres) < 2 else _motion_ok(named.motion, centres, min(frames.shape[1:3]))
        scores.append(ObjectScore(named.shape, named.colour, named.motion, float(np.mean(colour_frames)),
                                  float(np.mean([bool(m) for m in matches])), motion_ok))
    majority_background = max(set(backgrounds), key=backgrounds.count)
    return VideoScore(
        correct=all(score.correct for score in scores),
        colour_ok=all(score.colour_frames > 0.5 for score in scores),
        shape_ok=all(score.colour_frames > 0 and score.found_frames > score.colour_frames / 2 for score in scores),
        background_ok=None if description.background is None else majority_background == description.background,
        objects=tuple(scores),
        objects_per_frame=tuple(len(found) for found in detections),
        backgrounds=backgrounds,
    )
