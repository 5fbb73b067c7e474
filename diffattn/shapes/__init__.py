"""A synthetic shapes world and the tiny models trained on it (issue #18).

:mod:`~diffattn.shapes.world` generates captioned videos of coloured shapes with exact ground truth,
:mod:`~diffattn.shapes.score` checks a video against a caption without a learned judge. The models
(:mod:`~diffattn.shapes.models`), their training script (:mod:`~diffattn.shapes.train`) and evaluation
(:mod:`~diffattn.shapes.evaluate`) import diffusers and are imported on their own.
"""

from diffattn.shapes.world import (
    COLOURS,
    HELDOUT_TRIPLES,
    MOTIONS,
    SHAPES,
    TEXTURES,
    VOCABULARY,
    Clip,
    Description,
    ObjectDescription,
    Scene,
    ShapeSpec,
    dataset,
    parse_caption,
    render,
    sample_scene,
    split_of,
)

__all__ = [
    "COLOURS",
    "HELDOUT_TRIPLES",
    "MOTIONS",
    "SHAPES",
    "TEXTURES",
    "VOCABULARY",
    "Clip",
    "Description",
    "ObjectDescription",
    "Scene",
    "ShapeSpec",
    "dataset",
    "parse_caption",
    "render",
    "sample_scene",
    "split_of",
]
