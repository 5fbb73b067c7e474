"""Quality group ``editing``: zero-shot recolouring of rendered shapes-world clips with FateZero, RealCraft and FRESCO
on the trained shapes-sd model, against plain re-generation.

Each source is a rendered clip of one held-out scene (the scenes of :func:`~diffattn.shapes.quality.common.captions`
with ``image=True``, drawn on a plain background) and the edit changes the object's colour word to another colour
(neither its own nor the background's, drawn from the seed). Three numbers per method, each the mean over the clips:

- ``hue_changed``: the fraction of frames where the scorer finds an object of the target colour and the source
  shape;
- ``mask_iou``: IoU over the whole clip of the largest target-coloured region per frame with the source object's
  exact mask (the edited object stays where the source object was);
- ``psnr_outside``: PSNR to the source outside the source object's exact mask (the background is kept).

The baseline of FateZero and RealCraft is DDIM inversion with the source prompt followed by sampling with the target
prompt and no attention control: ``FateZeroPipeline`` with cross- and self-attention fusion off and per-frame
attention (:func:`regeneration_config`; RealCraft with its fusion off computes the same, up to float rounding, so
the baseline is run once). FRESCO's baseline is SDEdit of each frame on its own (``FrescoPipeline`` on one frame at a
time, guided attention and feature optimisation off). The shapes world has no ControlNet, so FRESCO runs with
``control="none"`` and no ControlNet, and without the SD 1.5 prompt additions (words outside the vocabulary).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffattn.errors import ConfigError
from diffattn.media.metrics import mask_iou, psnr_outside
from diffattn.notices import quiet_library_notices
from diffattn.shapes.models import GEOMETRY, sample_kwargs
from diffattn.shapes.quality.common import QualityRow, QualitySettings, load_model
from diffattn.shapes.score import detect, score_video
from diffattn.shapes.world import COLOURS, Clip, render, sample_scene

__all__ = [
    "FRAMES",
    "HUE_CHANGED",
    "EditCase",
    "edit_cases",
    "edit_scores",
    "editor_configs",
    "regeneration_config",
    "rows",
]

MODEL = "shapes-sd"
FRAMES: dict[str, int] = {"cpu": 3, "gpu": 8}
"""Frames per source clip at each scale."""
HUE_CHANGED = 0.5
"""``hue_changed`` a method needs for its verdict: the target object found in more than half the frames on average."""
_METRICS = ("hue_changed", "mask_iou", "psnr_outside")
_CRITERION = (
    f"hue_changed > {HUE_CHANGED} (target colour + shape found in most frames, mean over clips), and mask_iou >= the "
    "baseline's and psnr_outside >= the baseline's (means over the same clips)"
)


@dataclass(frozen=True, eq=False)
class EditCase:
    """One edit: the rendered source ``clip``, its caption, the caption with the object's colour replaced by
    ``target_colour``, and the ``seed`` of any noise the editor draws."""

    clip: Clip
    source_prompt: str
    target_prompt: str
    target_colour: str
    seed: int

    @property
    def frames(self) -> torch.Tensor:
        """The source frames ``[F, 3, H, W]`` in [0, 1]."""
        return self.clip.frames

    @property
    def mask(self) -> torch.Tensor:
        """The source object's exact mask ``[F, H, W]``."""
        return torch.from_numpy(self.clip.masks[0])


def edit_cases(settings: QualitySettings) -> list[EditCase]:
    """``settings.n`` one-object held-out scenes (clip ``i`` from ``(settings.seed, i)``, as the group's captions),
    on a plain background, rendered at shapes-sd's size with :data:`FRAMES` frames, each with its target colour."""
    cases = []
    for index in range(settings.n):
        scene = sample_scene(np.random.default_rng([settings.seed, index]), max_objects=1, split="heldout")
        scene = dataclasses.replace(scene, texture="plain")
        spec = scene.objects[0]
        others = [c for c in COLOURS if c not in (spec.colour, scene.background)]
        colour = others[int(np.random.default_rng([settings.seed, index, 1]).integers(len(others)))]
        target = dataclasses.replace(scene, objects=(dataclasses.replace(spec, colour=colour),))
        clip = render(scene, frames=FRAMES[settings.scale], **GEOMETRY[MODEL])
        cases.append(EditCase(clip, scene.image_caption, target.image_caption, colour, settings.seed + index))
    return cases


def edit_scores(edited: torch.Tensor, case: EditCase) -> dict[str, float]:
    """``hue_changed``, ``mask_iou`` and ``psnr_outside`` (see the module docstring) of edited frames ``[F, 3, H, W]``."""
    found = score_video(edited, case.target_prompt).objects[0].found_frames
    masks = np.zeros_like(case.clip.masks[0])
    for index, frame in enumerate(edited):
        regions = [d for d in detect(frame) if d.colour == case.target_colour]
        if regions:
            masks[index] = max(regions, key=lambda d: d.area).mask
    iou = mask_iou(torch.from_numpy(masks), case.mask)
    outside = psnr_outside(edited, case.frames, case.mask)
    return {"hue_changed": found, "mask_iou": float(iou or 0.0), "psnr_outside": float(outside)}


def regeneration_config(steps: int) -> Any:
    """FateZero with no attention control: no cross/self fusion, each frame attending to itself (inversion +
    target-prompt sampling)."""
    from diffattn.configs.editing import FateZeroConfig

    return FateZeroConfig(num_inference_steps=steps, guidance_scale=_guidance(), cross_replace_steps=0.0,
                          self_replace_steps=0.0, kv_frames=("self",))


def editor_configs(case: EditCase, settings: QualitySettings) -> dict[str, Any]:
    """The method configs of one edit: FateZero as for its attribute edits (replace controller, the object's words
    as blend words), RealCraft's defaults (parameter-free), FRESCO's defaults without ControlNet or prompt additions;
    all at ``settings.num_steps`` and shapes-sd's guidance."""
    from diffattn.configs.editing import FateZeroConfig, FrescoConfig, RealCraftConfig

    spec = case.clip.scene.objects[0]
    common = {"num_inference_steps": settings.num_steps, "guidance_scale": _guidance()}
    return {
        "fatezero": FateZeroConfig(**common, is_replace_controller=True, blend_words=(spec.colour, spec.shape)),
        "realcraft": RealCraftConfig(**common),
        "fresco": FrescoConfig(**common, control="none", added_prompt="", negative_prompt=""),
    }


def _guidance() -> float:
    return float(sample_kwargs(MODEL)["guidance_scale"])


def _sdedit_per_frame(fresco: Any, case: EditCase, config: Any) -> torch.Tensor:
    """FRESCO's baseline: every frame translated alone (no cross-frame attention), guidance and optimisation off."""
    plain = dataclasses.replace(config, num_intraattn_steps=0, end_opt_step=0)
    frames = case.frames
    return torch.cat([
        fresco(frames[i : i + 1], case.target_prompt, plain, generator=torch.Generator().manual_seed(case.seed)).frames[0]
        for i in range(frames.shape[0])
    ])


def _mean(scores: list[dict[str, float]]) -> dict[str, float]:
    return {name: float(np.mean([s[name] for s in scores])) for name in _METRICS}


def _row(method: str, baseline: str, setting: str, note: str, scores: list[dict[str, float]],
         baseline_scores: list[dict[str, float]], frames: int) -> QualityRow:
    ours, theirs = _mean(scores), _mean(baseline_scores)
    verdict = (ours["hue_changed"] > HUE_CHANGED and ours["mask_iou"] >= theirs["mask_iou"]
               and ours["psnr_outside"] >= theirs["psnr_outside"])
    metrics: dict[str, float | int | None] = {**ours, **{f"baseline_{k}": v for k, v in theirs.items()},
                                              "clips": len(scores), "frames": frames}
    return QualityRow(group="editing", method=method, model=MODEL, baseline=baseline, criterion=_CRITERION,
                      metrics=metrics, verdict=bool(verdict), setting=setting, note=note)


@torch.no_grad()
def rows(settings: QualitySettings) -> list[QualityRow]:
    """One row per editor (FateZero, RealCraft, FRESCO) on :func:`edit_cases`, each against its baseline."""
    from diffattn.configs.editing import FrescoConfig
    from diffattn.pipelines.fatezero import FateZeroPipeline
    from diffattn.pipelines.fresco import FrescoPipeline
    from diffattn.pipelines.realcraft import RealCraftPipeline

    strength = FrescoConfig.strength
    if int(settings.num_steps * strength) < 1:
        raise ConfigError(f"the editing group needs at least one FRESCO step: steps x strength ({settings.num_steps} x "
                          f"{strength}) rounds down to 0; use steps >= {math.ceil(1 / strength)}")
    base = load_model(MODEL, settings)
    with quiet_library_notices():  # from_pipe casts every model to the pipeline's dtype: an empty notice each
        pipes = {"fatezero": FateZeroPipeline.from_pipe(base), "realcraft": RealCraftPipeline.from_pipe(base),
                 "fresco": FrescoPipeline.from_pipe(base, controlnet=None)}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    runs: dict[str, Callable[[EditCase, Any], torch.Tensor]] = {
        "fatezero": lambda case, config: pipes["fatezero"](case.frames, case.source_prompt, case.target_prompt, config).frames[0],
        "realcraft": lambda case, config: pipes["realcraft"](case.frames, case.source_prompt, case.target_prompt, config).frames[0],
        "fresco": lambda case, config: pipes["fresco"](case.frames, case.target_prompt, config,
                                                       generator=torch.Generator().manual_seed(case.seed)).frames[0],
    }
    scores: dict[str, list[dict[str, float]]] = {name: [] for name in (*runs, "regeneration", "sdedit")}
    for case in edit_cases(settings):
        configs = editor_configs(case, settings)
        for name, run in runs.items():
            scores[name].append(edit_scores(run(case, configs[name]), case))
        regenerated = runs["fatezero"](case, regeneration_config(settings.num_steps))
        scores["regeneration"].append(edit_scores(regenerated, case))
        scores["sdedit"].append(edit_scores(_sdedit_per_frame(pipes["fresco"], case, configs["fresco"]), case))
    frames = FRAMES[settings.scale]
    setting = f"{frames} frames 64x64, {settings.num_steps} steps, guidance {_guidance():g}"
    regeneration = ("DDIM inversion + target-prompt sampling without attention control (FateZeroPipeline, "
                    "cross_replace_steps=0, self_replace_steps=0, kv_frames=('self',))")
    return [
        _row("fatezero", regeneration, f"{setting}, replace controller, blend_words=object", "",
             scores["fatezero"], scores["regeneration"], frames),
        _row("realcraft", regeneration, f"{setting}, defaults",
             "baseline shared with fatezero: RealCraft with its fusion off computes the same (equal up to float rounding)",
             scores["realcraft"], scores["regeneration"], frames),
        _row("fresco", "SDEdit of each frame alone (FrescoPipeline one frame per call, num_intraattn_steps=0, end_opt_step=0)",
             f"{setting}, strength {strength:g}, control='none'",
             "no ControlNet: the shapes world has none trained, so FRESCO runs without one (control='none'); "
             "its flow-guided attention and feature optimisation are what is measured",
             scores["fresco"], scores["sdedit"], frames),
    ]
