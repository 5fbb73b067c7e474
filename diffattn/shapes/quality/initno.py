"""Quality group ``initno``: InitNO's initial-noise optimisation on the trained shapes-sd model with two-object
prompts, against stock sampling from the same seeds.

The prompts are the image captions of held-out two-object scenes (``"a red circle and a blue square on a white
background"``; prompt ``i`` from ``(settings.seed, i)``), sample ``i`` is seeded with ``settings.seed + i`` for both
samplers (InitNO's search starts from the stock sample's initial noise), and InitNO's subject tokens are the two
shape words. Measured: ``both_found``, the fraction of seeds whose image shows both named objects (colour and
shape, :func:`~diffattn.shapes.score.score_video`), ``objects_found``, the fraction of named objects shown, the
fraction of noise searches that met InitNO's targets, and ``time_ratio``, the mean over seeds of InitNO's sampling
time over stock sampling's.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from diffattn.notices import quiet_library_notices
from diffattn.shapes.models import sample_kwargs
from diffattn.shapes.quality.common import QualityRow, QualitySettings, load_model
from diffattn.shapes.score import score_video
from diffattn.shapes.world import Scene, sample_scene

__all__ = ["initno_config", "rows", "subject_indices", "two_object_scenes"]

MODEL = "shapes-sd"
_CRITERION = "both_found (fraction of seeds whose image shows both named objects, colour and shape) >= the baseline's"


def two_object_scenes(settings: QualitySettings) -> list[Scene]:
    """``settings.n`` held-out scenes of exactly two objects; scene ``i`` is the first two-object scene drawn from
    the generator seeded with ``(settings.seed, i)``."""
    scenes = []
    for index in range(settings.n):
        rng = np.random.default_rng([settings.seed, index])
        scene = sample_scene(rng, max_objects=2, split="heldout")
        while len(scene.objects) != 2:
            scene = sample_scene(rng, max_objects=2, split="heldout")
        scenes.append(scene)
    return scenes


def subject_indices(tokenizer: Any, scene: Scene) -> tuple[int, ...]:
    """Token positions (SOT = 0) of the scene's shape words in its image caption, both when the shapes are equal."""
    ids = tokenizer(scene.image_caption).input_ids
    shapes = {tokenizer(spec.shape, add_special_tokens=False).input_ids[0] for spec in scene.objects}
    return tuple(position for position, token in enumerate(ids) if token in shapes)


def initno_config(indices: tuple[int, ...], settings: QualitySettings) -> Any:
    """InitNO's settings for one prompt: latent updates in the first half of the steps with refinement at 20% and 40%
    of them (InitNO's 25 and 10, 20 of 50); on ``cpu`` a smaller search (2 rounds of 5 steps, 5 fallback steps,
    5 refinement iterations, at most 100 KL steps), on ``gpu`` InitNO's defaults."""
    from diffattn.configs.initno import InitNOConfig

    steps = settings.num_steps
    scaled = {"max_iter_to_alter": steps // 2, "refinement_steps": (steps // 5, 2 * steps // 5)}
    if settings.scale == "cpu":
        scaled |= {"max_rounds": 2, "steps_per_round": 5, "fallback_steps": 5, "max_refinement_steps": 5, "kl_max_steps": 100}
    return InitNOConfig(token_indices=indices, **scaled)


def _timed(pipe: Any, seed: int, **kwargs: Any) -> tuple[Any, float]:
    """``pipe(**kwargs)`` with a generator seeded ``seed`` on the pipeline's device, and its wall time."""
    generator = torch.Generator(pipe._execution_device).manual_seed(seed)
    start = time.perf_counter()
    output = pipe(generator=generator, **kwargs)
    return output, time.perf_counter() - start


@torch.no_grad()
def rows(settings: QualitySettings) -> list[QualityRow]:
    """One row: InitNO against stock sampling on :func:`two_object_scenes`, one seed each."""
    from diffattn.pipelines.initno import InitNOPipeline

    pipe = load_model(MODEL, settings)
    with quiet_library_notices():  # from_pipe casts every model to the pipeline's dtype: an empty notice each
        initno_pipe = InitNOPipeline.from_pipe(pipe)
    initno_pipe.set_progress_bar_config(disable=True)
    kwargs = sample_kwargs(MODEL, num_inference_steps=settings.num_steps)
    pipe(prompt="a", **{**kwargs, "num_inference_steps": 1})  # warm-up, so that the first timing is not inflated
    found: dict[str, list[list[bool]]] = {"stock": [], "initno": []}
    ratios, succeeded = [], []
    for index, scene in enumerate(two_object_scenes(settings)):
        prompt, seed = scene.image_caption, settings.seed + index
        config = initno_config(subject_indices(pipe.tokenizer, scene), settings)
        stock, stock_seconds = _timed(pipe, seed, prompt=prompt, **kwargs)
        ours, our_seconds = _timed(initno_pipe, seed, prompt=prompt, initno=config, **kwargs)
        for name, output in (("stock", stock), ("initno", ours)):
            found[name].append([obj.correct for obj in score_video(output.images[0], prompt).objects])
        ratios.append(our_seconds / stock_seconds)
        succeeded.append(bool(ours.initno["succeeded"]))
    both = {name: float(np.mean([all(objects) for objects in runs])) for name, runs in found.items()}
    shown = {name: float(np.mean([np.mean(objects) for objects in runs])) for name, runs in found.items()}
    metrics: dict[str, float | int | None] = {
        "both_found": both["initno"], "baseline_both_found": both["stock"],
        "objects_found": shown["initno"], "baseline_objects_found": shown["stock"],
        "search_succeeded": float(np.mean(succeeded)), "time_ratio": float(np.mean(ratios)), "samples": len(ratios),
    }
    search = "2 rounds x 5 steps, fallback 5, refinement 5" if settings.scale == "cpu" else "InitNO's defaults"
    return [QualityRow(
        group="initno", method="initno", model=MODEL,
        baseline="stock sampling (StableDiffusionPipeline) from the same seeds",
        criterion=_CRITERION, metrics=metrics, verdict=both["initno"] >= both["stock"],
        setting=f"{settings.num_steps} steps, guidance {kwargs['guidance_scale']:g}, subject tokens = the shape words, search {search}",
        note="time_ratio: wall time of one InitNO sample over one stock sample, mean over seeds (same device)",
    )]
