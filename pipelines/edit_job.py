"""Zero-shot video editing as one function: `edit_video(EditSpec(...))`, shared by `diffattn edit`, the demo and the app.

An `EditSpec` says which editor (FateZero, RealCraft, FRESCO), which model and video, and which settings; the
editor's pipeline is built from the model's components, the frames are read and prepared, and the result carries
the edited frames, the source frames and the edit mask. Without a model the built-in tiny Stable Diffusion runs;
without a video the generated sample clip is edited.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffattn.config import MethodConfig, check, read_settings, write_settings
from diffattn.errors import (
    ConfigError,
    DiffAttnError,
    UnsupportedModelError,
    VideoReadError,
)
from diffattn.generation import check_at_least, check_sampling_settings, conform_fields
from diffattn.method import load
from diffattn.notices import quiet_library_notices

__all__ = [
    "EDITORS",
    "EXAMPLE_CONFIGS",
    "EditResult",
    "EditSpec",
    "build_edit_pipeline",
    "edit_metrics",
    "edit_video",
    "load_edit_spec",
    "save_edit_spec",
    "source_frames",
]

EDITORS: dict[str, str] = {
    "fatezero": "diffattn.pipelines.fatezero:FateZeroPipeline",
    "realcraft": "diffattn.pipelines.realcraft:RealCraftPipeline",
    "fresco": "diffattn.pipelines.fresco:FrescoPipeline",
}
"""Editor name -> its pipeline class; the default model is the first of its config's `tiny_models`."""

SAMPLE_SOURCE_PROMPT = "a red sun moving over colorful waves"
SAMPLE_TARGET_PROMPT = "a blue moon moving over colorful waves"
"""Prompts for the built-in sample clip (a disc crossing a striped background)."""

EXAMPLE_CONFIGS = Path(importlib.import_module("diffattn.configs").__file__).resolve().parent / "edit"
"""Example YAML configs installed with the package."""

SPEC_KEYS = ("editor", "model", "controlnet", "video", "source_prompt", "target_prompt", "negative_prompt", "frames",
              "max_frames", "stride", "start", "height", "width", "steps", "guidance", "seed", "device", "dtype", "fps")


@dataclass
class EditSpec:
    """Everything that determines an edit.

    Args:
        editor: `"fatezero"`, `"realcraft"` or `"fresco"`.
        model: `tiny:<family>` or a hub id / local folder of a Stable Diffusion pipeline (the editor's tiny model when
            `None`); controlnet: a ControlNet to add for FRESCO when the model has none.
        video: a video file / frame folder, or `None` for the built-in sample clip.
        source_prompt / target_prompt / negative_prompt: text (FRESCO uses the target prompt, and its config's
            negative prompt when this one is empty).
        frames / stride / start: which frames to read; max_frames: refuse longer inputs instead of running out of
            memory (pick frames with `frames`/`stride` or raise the limit).
        height / width: resize (cover + centre crop); otherwise the size is cropped to multiples of 8.
        steps / guidance: override the method's `num_inference_steps` / `guidance_scale`.
        settings: the method's settings (fields of its config).
        seed, device, dtype, fps: as for `diffattn generate`.
    """

    editor: str = "fatezero"
    model: str | None = None
    controlnet: str | None = None
    video: str | None = None
    source_prompt: str = SAMPLE_SOURCE_PROMPT
    target_prompt: str = SAMPLE_TARGET_PROMPT
    negative_prompt: str = ""
    frames: int | None = None
    max_frames: int = 64
    stride: int = 1
    start: int = 0
    height: int | None = None
    width: int | None = None
    steps: int | None = None
    guidance: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    fps: int = 8

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` for a setting of the wrong type or out of range (before any video is read or
        model loaded); the method's own settings are checked by `config()`."""
        conform_fields(self)
        if self.editor not in EDITORS:
            raise ConfigError(f"unknown editor {self.editor!r}; choose one of {', '.join(EDITORS)}")
        check_sampling_settings(frames=self.frames, height=self.height, width=self.width, steps=self.steps,
                                seed=self.seed, fps=self.fps)
        check_at_least("max_frames", self.max_frames, 1)
        check_at_least("stride", self.stride, 1)
        check_at_least("start", self.start, 0)
        check(isinstance(self.settings, dict), f"the {self.editor} settings must be a mapping; got {self.settings!r}")

    @property
    def model_spec(self) -> str:
        from diffattn.registry import get_method

        return self.model or f"tiny:{get_method(self.editor).tiny_models[0]}"

    def config(self) -> MethodConfig:
        """The method's config with `settings` (and `steps` / `guidance`) applied."""
        from diffattn.registry import get_method

        settings = dict(self.settings)
        if self.steps is not None:
            settings["num_inference_steps"] = self.steps
        if self.guidance is not None:
            settings["guidance_scale"] = self.guidance
        return get_method(self.editor).from_dict(settings)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data[self.editor] = data.pop("settings")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EditSpec:
        """From a mapping such as a YAML config: spec keys plus the method's settings under its name."""
        data = dict(data)
        editor = str(data.get("editor", "fatezero"))
        settings = data.pop(editor, None) or {}
        if not isinstance(settings, dict):
            raise ConfigError(f"the {editor!r} section of an edit config must be a mapping of settings")
        unknown = sorted(set(data) - set(SPEC_KEYS) - set(EDITORS))
        if unknown:
            raise ConfigError(f"unknown edit setting(s) {unknown}; valid: {sorted(SPEC_KEYS)} and a {editor!r} section")
        stray = sorted(set(data) & set(EDITORS))
        if stray:
            raise ConfigError(f"the config is for {editor!r} but has a section for {stray}")
        spec = cls(settings=dict(settings), **data)
        spec.config()  # validate the settings now, before anything is loaded
        return spec


@dataclass
class EditResult:
    """Edited frames `[F, 3, H, W]` in [0, 1], the source frames, the edit mask, the pipeline's info, the wall time."""

    frames: torch.Tensor
    source: torch.Tensor
    masks: torch.Tensor | None
    info: dict[str, Any]
    seconds: float
    spec: EditSpec


def load_edit_spec(path: str | Path) -> EditSpec:
    """Read an edit config (YAML or JSON); relative video paths are resolved against the config's folder."""
    path = Path(path)
    if not path.exists() and (EXAMPLE_CONFIGS / path.name).exists():
        path = EXAMPLE_CONFIGS / path.name
    if not path.exists():
        examples = ", ".join(sorted(p.name for p in EXAMPLE_CONFIGS.glob("*.yaml")))
        raise ConfigError(f"edit config {path} does not exist (examples: {examples})")
    data = read_settings(path, "an edit config")
    video = data.get("video")
    if isinstance(video, str) and not Path(video).is_absolute() and (path.parent / video).exists():
        data["video"] = str(path.parent / video)
    try:
        return EditSpec.from_dict(data)
    except DiffAttnError as exc:
        raise type(exc)(f"{path}: {exc}") from None


@quiet_library_notices()  # from_pipe casts every model to the pipeline's dtype: diffusers' empty float32 notice
def build_edit_pipeline(spec: EditSpec) -> Any:
    """The editor's pipeline, built from the components of `spec.model_spec` on `spec.device` / `spec.dtype`."""
    from diffattn.loading import load_pipeline, parse_dtype, pick_device

    device = pick_device(spec.device)
    dtype = parse_dtype(spec.dtype, device)
    base = load_pipeline(spec.model_spec, device=device, dtype=dtype)
    components = getattr(base, "components", {})
    extra = {}
    if spec.editor == "fresco" and components.get("controlnet") is None:
        if spec.controlnet is None:
            raise UnsupportedModelError(
                f"fresco needs Stable Diffusion with a ControlNet; {spec.model_spec} has none: pass --controlnet "
                "(a ControlNet folder or hub id) or use a StableDiffusionControlNetPipeline (tiny:sd-controlnet)"
            )
        from diffusers import ControlNetModel

        extra["controlnet"] = ControlNetModel.from_pretrained(spec.controlnet, torch_dtype=dtype, use_safetensors=True).to(device)
    if components.get("unet") is None:
        raise UnsupportedModelError(f"{spec.editor} edits with a Stable Diffusion UNet; {spec.model_spec} has none")
    pipe = load(EDITORS[spec.editor]).from_pipe(base, **extra)
    pipe.set_progress_bar_config(leave=False)
    return pipe


def source_frames(spec: EditSpec) -> torch.Tensor:
    """The frames to edit, prepared (sampled, resized, multiples of 8), refusing videos over `max_frames`."""
    from diffattn.media.video import prepare_video

    if spec.video is None:
        from diffattn.testing import sample_clip

        video: Any = sample_clip(spec.frames or 8, spec.height or 64, spec.width or 64)
    else:
        video = spec.video
        if spec.frames is None:
            from diffattn.media.video import read_video

            video = read_video(spec.video, max_frames=spec.start + spec.stride * spec.max_frames + 1)
            available = len(range(spec.start, video.shape[0], spec.stride))
            if available > spec.max_frames:
                raise VideoReadError(
                    f"{spec.video} has more than {spec.max_frames} frames to edit, the limit for one run (GPU memory); "
                    "choose frames with --frames / --stride / --start, raise --max-frames, or for FateZero edit in "
                    "chunks with --fatezero-frames-per-chunk"
                )
    frames = prepare_video(video, num_frames=spec.frames, stride=spec.stride, start=spec.start, height=spec.height, width=spec.width)
    if frames.shape[0] > spec.max_frames:
        raise VideoReadError(f"{frames.shape[0]} frames requested; at most {spec.max_frames} per run (--max-frames)")
    return frames


def edit_video(spec: EditSpec, pipe: Any | None = None) -> EditResult:
    """Run one edit; `pipe` reuses an already built editing pipeline of `spec.editor`."""
    from diffattn.generation import pipeline_frames

    config = spec.config()
    frames = source_frames(spec)
    if pipe is None:
        pipe = build_edit_pipeline(spec)
    start = time.perf_counter()
    if spec.editor == "fresco":
        generator = torch.Generator("cpu").manual_seed(spec.seed)
        output = pipe(frames, spec.target_prompt, config, negative_prompt=spec.negative_prompt or None, generator=generator)
    else:
        output = pipe(frames, spec.source_prompt, spec.target_prompt, config, negative_prompt=spec.negative_prompt)
    seconds = time.perf_counter() - start
    return EditResult(pipeline_frames(output), frames, output.masks, output.info, seconds, spec)


def edit_metrics(result: EditResult) -> dict[str, float]:
    """Warp error (0-255, under the source's flow) of the source and of the edit, and PSNR outside the edit mask
    (capped at `PSNR_CAP_DB` for identical pixels; left out when the mask covers every pixel)."""
    from diffattn.media.flow import video_flow
    from diffattn.media.metrics import psnr_outside, warp_error

    metrics: dict[str, float] = {}
    if result.source.shape[0] > 1:
        flow = video_flow(result.source)
        metrics["warp_error_source"] = round(warp_error(result.source, flow), 4)
        metrics["warp_error_edit"] = round(warp_error(result.frames, flow), 4)
    preserved = psnr_outside(result.frames, result.source, result.masks) if result.masks is not None else None
    if preserved is not None:
        metrics["psnr_outside_mask"] = round(preserved, 3)
    return metrics


def save_edit_spec(spec: EditSpec, path: str | Path) -> Path:
    """Write the spec as YAML (by suffix) or JSON; `diffattn edit EDITOR --config PATH` reproduces the edit."""
    return write_settings(spec.to_dict(), path)
