"""The shapes world: short videos of 1-3 coloured shapes moving over a plain or textured background, with captions.

Everything is deterministic (numpy only) and resolution independent: a :class:`Scene` stores positions, sizes and
speeds as fractions of the frame, so one scene renders at 32x32 or 64x64 with the same layout, and its trajectory
is a function of clip time ``t`` in [0, 1], so 9 or 17 frames sample the same motion. Rendering returns the ground
truth the scorer and the quality suite need: one exact visible-pixel mask and one centre per object and frame.

>>> scene = sample_scene(0)
>>> clip = render(scene, frames=9, height=32, width=32)
>>> clip.video.shape, clip.masks.shape, scene.caption
((9, 32, 32, 3), (1, 9, 32, 32), 'a ...')
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

__all__ = [
    "SHAPES",
    "COLOURS",
    "MOTIONS",
    "TEXTURES",
    "VOCABULARY",
    "HELDOUT_TRIPLES",
    "ShapeSpec",
    "Scene",
    "ObjectDescription",
    "Description",
    "Clip",
    "split_of",
    "sample_scene",
    "parse_caption",
    "render",
    "dataset",
]

SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 60),
    "blue": (40, 70, 230),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
"""Named colours (8-bit RGB), far apart so that the nearest named colour of a pixel is unambiguous."""
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "bouncing")
TEXTURES: tuple[str, ...] = ("plain", "striped", "checkered")

_FUNCTION_WORDS = ("a", "moving", "on", "background", "and")
VOCABULARY: tuple[str, ...] = tuple(
    dict.fromkeys(_FUNCTION_WORDS + SHAPES + tuple(COLOURS) + MOTIONS + tuple(t for t in TEXTURES if t != "plain"))
)
"""Every word a caption can contain."""

Split = Literal["train", "heldout"]


def _heldout_triples() -> frozenset[tuple[str, str, str]]:
    """One motion per (shape, colour) pair, rotating so every motion is held out for some pairs and every pair and
    every motion still occurs in training (18 of the 90 triples)."""
    return frozenset(
        (shape, colour, MOTIONS[(2 * s + c) % len(MOTIONS)])
        for s, shape in enumerate(SHAPES)
        for c, colour in enumerate(COLOURS)
    )


HELDOUT_TRIPLES: frozenset[tuple[str, str, str]] = _heldout_triples()
"""(shape, colour, motion) combinations that training scenes never contain: a scene with any of them is held out."""

_TEXTURE_BLEND = 0.25  # stripes and checks move the background colour this far towards mid grey
_TIMES = np.linspace(0.0, 1.0, 17)  # clip times at which sampling checks that objects stay apart


@dataclass(frozen=True)
class ShapeSpec:
    """One moving object.

    Args:
        shape: one of :data:`SHAPES`.
        colour: a key of :data:`COLOURS`.
        motion: one of :data:`MOTIONS`.
        size: side of the shape's bounding box, as a fraction of the frame's shorter side.
        start: centre ``(x, y)`` at clip time 0, as fractions of width and height.
        speed: distance travelled over the whole clip, as a fraction of the frame side.
        heading: direction of travel in radians, used by ``bouncing`` only (the others move along an axis).
    """

    shape: str
    colour: str
    motion: str
    size: float
    start: tuple[float, float]
    speed: float
    heading: float = 0.0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES or self.colour not in COLOURS or self.motion not in MOTIONS:
            raise ValueError(f"unknown shape, colour or motion in {self}")
        if not 0 < self.size < 1:
            raise ValueError(f"size must be in (0, 1), got {self.size}")

    @property
    def words(self) -> str:
        """``"red circle moving left"`` / ``"red circle bouncing"``."""
        motion = "bouncing" if self.motion == "bouncing" else f"moving {self.motion}"
        return f"{self.colour} {self.shape} {motion}"

    def centres(self, times: np.ndarray) -> np.ndarray:
        """Centre ``(x, y)`` in frame fractions at clip times ``times`` (``[T]`` in [0, 1]): ``[T, 2]``.

        Axis motions move in a straight line (sampling keeps them inside the frame); ``bouncing`` reflects off the
        borders so the whole shape always stays inside.
        """
        half = self.size / 2
        if self.motion == "bouncing":
            direction = np.array([math.cos(self.heading), math.sin(self.heading)])
        else:
            direction = np.array({"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}[self.motion])
        free = np.array(self.start) + self.speed * times[:, None] * direction
        if self.motion != "bouncing":
            return free
        span = 1 - 2 * half  # the centre moves in [half, 1 - half]; unfold the reflections as a triangle wave
        folded = np.mod(free - half, 2 * span)
        return half + np.where(folded > span, 2 * span - folded, folded)


@dataclass(frozen=True)
class ObjectDescription:
    """What a caption says about one object; ``motion`` is ``None`` in image captions."""

    shape: str
    colour: str
    motion: str | None = None


@dataclass(frozen=True)
class Description:
    """What a caption says: its objects, the background colour and texture (``None`` where a caption is silent)."""

    objects: tuple[ObjectDescription, ...]
    background: str | None
    texture: str | None


@dataclass(frozen=True)
class Scene:
    """Objects (drawn in order, later ones in front) over a background of one named colour and a texture."""

    objects: tuple[ShapeSpec, ...]
    background: str
    texture: str = "plain"

    def __post_init__(self) -> None:
        if not self.objects:
            raise ValueError("a scene needs at least one object")
        if self.background not in COLOURS or self.texture not in TEXTURES:
            raise ValueError(f"unknown background colour or texture: {self.background!r}, {self.texture!r}")
        if any(spec.colour == self.background for spec in self.objects):
            raise ValueError("an object's colour must differ from the background's")

    @property
    def _background_words(self) -> str:
        texture = "" if self.texture == "plain" else f"{self.texture} "
        return f"on a {texture}{self.background} background"

    @property
    def caption(self) -> str:
        """``"a red circle moving left and a green square bouncing on a striped blue background"``."""
        return " and ".join(f"a {spec.words}" for spec in self.objects) + " " + self._background_words

    @property
    def image_caption(self) -> str:
        """The caption without motions, for image models: ``"a red circle on a blue background"``."""
        return " and ".join(f"a {spec.colour} {spec.shape}" for spec in self.objects) + " " + self._background_words

    @property
    def description(self) -> Description:
        """What :attr:`caption` says (``parse_caption(scene.caption) == scene.description``)."""
        objects = tuple(ObjectDescription(spec.shape, spec.colour, spec.motion) for spec in self.objects)
        return Description(objects, self.background, self.texture)


@dataclass(frozen=True, eq=False)
class Clip:
    """A rendered scene: ``video`` uint8 ``[F, H, W, 3]``, ``masks`` bool ``[objects, F, H, W]`` (the pixels that show
    each object, after occlusion), ``centres`` float ``[objects, F, 2]`` (``(x, y)`` in pixels) and the ``scene``."""

    video: np.ndarray
    masks: np.ndarray
    centres: np.ndarray
    scene: Scene

    @property
    def frames(self) -> torch.Tensor:
        """``video`` as the pipelines take and return frames: float ``[F, 3, H, W]`` in [0, 1]."""
        return torch.from_numpy(self.video).permute(0, 3, 1, 2).float().div(255)


def split_of(scene: Scene | Description) -> Split:
    """``"heldout"`` when any object's (shape, colour, motion) is in :data:`HELDOUT_TRIPLES`, else ``"train"``."""
    held = any((obj.shape, obj.colour, obj.motion) in HELDOUT_TRIPLES for obj in scene.objects)
    return "heldout" if held else "train"


def _rng(seed_or_rng: int | np.random.Generator) -> np.random.Generator:
    return seed_or_rng if isinstance(seed_or_rng, np.random.Generator) else np.random.default_rng(seed_or_rng)


def _sample_object(rng: np.random.Generator, shape: str, colour: str, motion: str, size: float) -> ShapeSpec:
    """Start and speed such that an axis motion keeps the whole shape inside the frame for the whole clip."""
    half = size / 2
    if motion == "bouncing":
        start = tuple(float(v) for v in rng.uniform(half, 1 - half, size=2))
        heading = float(rng.uniform(0, 2 * math.pi))
        return ShapeSpec(shape, colour, motion, size, start, float(rng.uniform(0.8, 1.6)), heading)
    room = 1 - size  # the centre's whole range along the axis
    speed = float(rng.uniform(0.5, 0.9)) * room
    forward = motion in ("right", "down")
    along = float(rng.uniform(half, 1 - half - speed)) if forward else float(rng.uniform(half + speed, 1 - half))
    across = float(rng.uniform(half, 1 - half))
    start = (along, across) if motion in ("left", "right") else (across, along)
    return ShapeSpec(shape, colour, motion, size, start, speed)


def _apart(objects: list[ShapeSpec]) -> bool:
    """No two objects come closer than 90% of the sum of their half sizes at any checked time."""
    paths = [spec.centres(_TIMES) for spec in objects]
    for i in range(len(objects)):
        for j in range(i):
            distance = np.linalg.norm(paths[i] - paths[j], axis=1).min()
            if distance < 0.9 * (objects[i].size + objects[j].size) / 2:
                return False
    return True


def sample_scene(seed_or_rng: int | np.random.Generator, *, max_objects: int = 3, split: Split = "train") -> Scene:
    """A random scene of 1..``max_objects`` objects in distinct colours, none the background's, kept apart, whose
    :func:`split_of` is ``split``. The same seed (or generator state) always gives the same scene."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    if not 1 <= max_objects <= len(COLOURS) - 1:
        raise ValueError(f"max_objects must be in 1..{len(COLOURS) - 1}, got {max_objects}")
    rng = _rng(seed_or_rng)
    names = list(COLOURS)
    while True:
        count = int(rng.integers(1, max_objects + 1))
        colours = [names[i] for i in rng.permutation(len(names))[: count + 1]]
        background, colours = colours[0], colours[1:]
        size = 0.36 if count == 1 else 0.3 if count == 2 else 0.26
        objects = [
            _sample_object(rng, SHAPES[int(rng.integers(len(SHAPES)))], colour, MOTIONS[int(rng.integers(len(MOTIONS)))],
                           size * float(rng.uniform(0.85, 1.15)))
            for colour in colours
        ]
        texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
        scene = Scene(tuple(objects), background, texture)
        if split_of(scene) == split and _apart(objects):
            return scene


_OBJECT = re.compile(
    rf"\b({'|'.join(COLOURS)})\s+({'|'.join(SHAPES)})(?:\s+(?:moving\s+({'|'.join(m for m in MOTIONS if m != 'bouncing')})|(bouncing)))?"
)
_BACKGROUND = re.compile(rf"\bon\s+an?\s+(?:({'|'.join(TEXTURES)})\s+)?({'|'.join(COLOURS)})\s+background\b")


def parse_caption(text: str) -> Description:
    """What a caption names: each "<colour> <shape> [moving <direction> | bouncing]" and "on a [<texture>] <colour>
    background" (texture ``"plain"`` when the background is named without one). Other words are ignored, so prompts
    with extra words still parse; a caption naming no object gives an empty ``objects``."""
    text = text.lower()
    background = _BACKGROUND.search(text)
    head = text[: background.start()] if background else text
    objects = tuple(ObjectDescription(m[2], m[1], m[3] or m[4]) for m in _OBJECT.finditer(head))
    if background is None:
        return Description(objects, None, None)
    return Description(objects, background[2], background[1] or "plain")


def _background(scene: Scene, height: int, width: int) -> np.ndarray:
    """``[H, W, 3]`` uint8: the background colour, with stripes or checks of the colour blended towards grey."""
    base = np.array(COLOURS[scene.background], dtype=np.float64)
    image = np.broadcast_to(base, (height, width, 3)).copy()
    if scene.texture != "plain":
        period = max(2, min(height, width) // 8)
        y, x = np.mgrid[:height, :width]
        if scene.texture == "striped":
            marked = ((x + y) // period) % 2 == 1
        else:
            marked = (x // period + y // period) % 2 == 1
        image[marked] = (1 - _TEXTURE_BLEND) * base + _TEXTURE_BLEND * 128
    return np.round(image).astype(np.uint8)


def _silhouette(shape: str, centres: np.ndarray, side: float, height: int, width: int) -> np.ndarray:
    """Pixels whose centre lies inside the shape: bool ``[F, H, W]``; ``centres`` ``[F, 2]`` in pixels."""
    y = np.arange(height, dtype=np.float64)[None, :, None] + 0.5
    x = np.arange(width, dtype=np.float64)[None, None, :] + 0.5
    dx = x - centres[:, 0, None, None]
    dy = y - centres[:, 1, None, None]
    half = side / 2
    if shape == "square":
        return (np.abs(dx) < half) & (np.abs(dy) < half)
    if shape == "circle":
        return dx**2 + dy**2 < half**2
    # upright triangle: apex at the top centre, base along the bottom edge of the bounding box
    below_apex = dy + half
    return (below_apex > 0) & (dy < half) & (np.abs(dx) < below_apex / 2)


def render(scene: Scene, *, frames: int, height: int, width: int) -> Clip:
    """Draw ``scene`` as ``frames`` frames of ``height x width``: hard edges, so masks are exact and every object
    pixel has exactly its named colour. Frame ``f`` shows clip time ``f / (frames - 1)``."""
    if frames < 1 or height < 8 or width < 8:
        raise ValueError(f"need at least 1 frame of 8x8 pixels, got {frames}x{height}x{width}")
    times = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    video = np.broadcast_to(_background(scene, height, width), (frames, height, width, 3)).copy()
    masks = np.zeros((len(scene.objects), frames, height, width), dtype=bool)
    centres = np.zeros((len(scene.objects), frames, 2))
    for index, spec in enumerate(scene.objects):
        centres[index] = spec.centres(times) * np.array([width, height])
        shape = _silhouette(spec.shape, centres[index], spec.size * min(height, width), height, width)
        masks[:index] &= ~shape  # objects drawn later hide earlier ones
        masks[index] = shape
        video[shape] = COLOURS[spec.colour]
    return Clip(video, masks, centres, scene)


def dataset(
    n: int, seed: int, *, frames: int, height: int, width: int, split: Split = "train", max_objects: int = 3, start: int = 0
) -> Iterator[Clip]:
    """Clips ``start .. start + n - 1`` of scenes from ``split``; clip ``i`` depends only on ``(seed, i)``, so any
    slice is reproducible (and can be rendered in parallel)."""
    for index in range(start, start + n):
        scene = sample_scene(np.random.default_rng([seed, index]), max_objects=max_objects, split=split)
        yield render(scene, frames=frames, height=height, width=width)
