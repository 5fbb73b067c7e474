"""The built-in model the command line, the demo and the app start with, and the shapes-world examples they show.

When the trained shapes-world weights are installed (`diffattn/shapes/weights/<name>/`, see docs/shapes-models.md),
`default_model()` is `tiny:shapes-wan`: a user sees recognisable clips (coloured shapes moving on a background)
instead of the random tiny models' coloured noise. On a checkout without the weights it is `tiny:wan`, as before,
and nothing else changes. The random tiny models stay what the structural tests run on.
"""

from __future__ import annotations

from dataclasses import dataclass

from .loading import TINY_PREFIX
from .shapes.world import Clip, Scene, ShapeSpec, parse_caption, render

__all__ = [
    "RANDOM_MODEL",
    "TRAINED_VIDEO_MODEL",
    "TRAINED_IMAGE_MODEL",
    "ShapesExample",
    "VIDEO_EXAMPLE",
    "EDIT_EXAMPLE",
    "installed",
    "default_model",
]

RANDOM_MODEL = "tiny:wan"
"""The default without trained weights: the random-weight tiny Wan (no download)."""
TRAINED_VIDEO_MODEL = "tiny:shapes-wan"
"""The default when its weights are installed: Wan trained on the shapes world (9 frames of 32 x 32)."""
TRAINED_IMAGE_MODEL = "tiny:shapes-sd"
"""Stable Diffusion trained on the shapes world (64 x 64): what the editors run on when installed."""


@dataclass(frozen=True)
class ShapesExample:
    """A shapes-world example: the prompt (for an edit, the source prompt) and, for an edit, the target prompt.

    The captions use the world's vocabulary only (its tokenizers know no other words). An edit's source clip is the
    prompt's first object rendered moving right across the middle of the frame (`source_clip`).
    """

    prompt: str
    target_prompt: str = ""

    def source_clip(self, frames: int = 8, height: int = 64, width: int = 64) -> Clip:
        """The prompt's scene rendered by the shapes world (`diffattn.shapes.world.render`), the object moving right."""
        description = parse_caption(self.prompt)
        first = description.objects[0]
        spec = ShapeSpec(first.shape, first.colour, "right", size=0.36, start=(0.3, 0.5), speed=0.4)
        return render(Scene((spec,), description.background or "white"), frames=frames, height=height, width=width)

    @property
    def target_colour(self) -> str:
        """The colour the target prompt gives the first object."""
        return parse_caption(self.target_prompt).objects[0].colour


VIDEO_EXAMPLE = ShapesExample("a red circle moving left on a blue background")
"""What `tiny:shapes-wan` is asked for by default (a combination of the training split)."""
EDIT_EXAMPLE = ShapesExample("a red circle on a white background", "a green circle on a white background")
"""The built-in edit on `tiny:shapes-sd`: recolour the circle of a rendered clip, keep its place and the background."""


def installed(model: str) -> bool:
    """Whether `model` (`tiny:shapes-wan` or `tiny:shapes-sd`) has its trained weights in the package folder
    (`diffattn.shapes.models.WEIGHTS`, read at call time so tests can point it elsewhere)."""
    from .shapes import models

    name = model.removeprefix(TINY_PREFIX)
    return name in models.MODELS and (models.WEIGHTS / name / "model_index.json").is_file()


def default_model() -> str:
    """`tiny:shapes-wan` when its trained weights are installed, else `tiny:wan`: the one place that decides the
    model `diffattn app` starts with (the app's other tabs follow from it)."""
    return TRAINED_VIDEO_MODEL if installed(TRAINED_VIDEO_MODEL) else RANDOM_MODEL
