"""One generation run, shared by `diffattn generate`, the demo and the app.

A `GenerationSpec` says which pipeline, which methods and which sampling settings; `generate(spec)` loads the
pipeline, applies the methods (removing them afterwards), samples, and returns the frames with the stats and a
config dict that reproduces the run (`diffattn generate --config FILE`).
"""

from __future__ import annotations

import dataclasses
import math
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import MethodConfig, check, conform, read_settings, write_settings
from .errors import ConfigError, DiffAttnError
from .method import load
from .registry import get_method

__all__ = [
    "GenerationSpec",
    "GenerationResult",
    "generate",
    "pipeline_frames",
    "call_kwargs",
    "conform_fields",
    "check_at_least",
    "check_sampling_settings",
    "pixel_multiple",
    "load_spec",
    "save_spec",
]

PIXEL_MULTIPLE = 8
"""Height and width are multiples of this for every latent diffusion model (VAEs downscale by at least 8)."""


def conform_fields(spec: Any) -> None:
    """Check each field of the dataclass instance `spec` against its declared type, in place (ints widened to
    float where a float is declared; NaN and infinity refused): `ConfigError` names the field."""
    hints = typing.get_type_hints(type(spec))
    for item in dataclasses.fields(spec):
        setattr(spec, item.name, conform(item.name, getattr(spec, item.name), hints[item.name]))


def check_at_least(name: str, value: int | None, low: int) -> None:
    """Raise `ConfigError` unless `value` (an int, or `None` for the default) is at least `low`."""
    what = {0: "must not be negative", 1: "must be positive"}.get(low, f"must be at least {low}")
    check(value is None or value >= low, f"{name} {what}; got {value}")


def check_sampling_settings(*, frames: int | None, height: int | None, width: int | None, steps: int | None,
                            seed: int, fps: int) -> None:
    """Raise `ConfigError` for sampling settings (already of their declared types) that no pipeline can run,
    before anything is loaded or allocated: sizes, steps and fps positive, height and width multiples of 8,
    seed a 64-bit integer."""
    for name, value in (("frames", frames), ("height", height), ("width", width), ("steps", steps), ("fps", fps)):
        check_at_least(name, value, 1)
    for name, value in (("height", height), ("width", width)):
        check(value is None or value % PIXEL_MULTIPLE == 0,
              f"{name} must be a multiple of {PIXEL_MULTIPLE} (latent models downscale by 8 or more); got {value}")
    check(-(2**63) <= seed < 2**64, f"seed must lie between -2**63 and 2**64 - 1; got {seed}")


@dataclass
class GenerationSpec:
    """Everything that determines a generation run.

    Args:
        model: `tiny:<family>` or a hub id / local folder of a diffusers pipeline.
        methods: method configs applied with `diffattn.apply` (attention methods and noise initialisation).
        prompt / negative_prompt: text conditioning.
        frames / height / width / steps / guidance: sampling settings; `None` keeps the pipeline's default
            (for random tiny models, the small sizes of `diffattn.testing.tiny_call_kwargs`; for the trained
            `tiny:shapes-*`, `diffattn.shapes.models.sample_kwargs`).
        seed: generator seed.
        device / dtype: `auto` picks CUDA + bfloat16 when available, else CPU + float32.
        cpu_offload: model CPU offload (CUDA only).
        fps: frames per second of the written video.
        ulysses: Ulysses context-parallel degree (run under `torchrun --nproc_per_node N`); 1 = one device.
    """

    model: str = "tiny:wan"
    methods: list[MethodConfig] = field(default_factory=list)
    prompt: str = "a red fox running through fresh snow"
    negative_prompt: str | None = None
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    cpu_offload: bool = False
    fps: int = 8
    ulysses: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` for a setting of the wrong type or out of range (before any model is loaded)."""
        conform_fields(self)
        check(bool(self.model.strip()), "model is empty; give tiny:<family>, a hub id or a local folder")
        check(isinstance(self.methods, list) and all(isinstance(m, MethodConfig) for m in self.methods),
              f"methods must be a list of method configs; got {self.methods!r}")
        check_sampling_settings(frames=self.frames, height=self.height, width=self.width, steps=self.steps,
                                seed=self.seed, fps=self.fps)
        check_at_least("ulysses", self.ulysses, 1)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["methods"] = [m.to_dict() for m in self.methods]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationSpec:
        """From a mapping such as a config file: the spec's fields, `methods` a list of `{method: name, ...}`."""
        data = dict(data)
        methods = data.pop("methods", None)
        methods = [] if methods is None else methods
        if not isinstance(methods, list) or not all(isinstance(m, dict) for m in methods):
            raise ConfigError(f"methods must be a list of method settings such as [{{method: sparge, topk: 0.3}}]; "
                              f"got {methods!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown generation setting(s) {unknown}; valid: {sorted(names)}")
        return cls(methods=[get_method(str(m.get("method", ""))).from_dict(m) for m in methods], **data)


@dataclass
class GenerationResult:
    """Frames `[F, 3, H, W]` in [0, 1], the methods' statistics, the wall time and the reproducing spec."""

    frames: torch.Tensor
    stats: dict[str, Any]
    stats_summary: dict[str, Any]
    seconds: float
    spec: GenerationSpec


def pipeline_frames(output: Any) -> torch.Tensor:
    """The first video (or image) of a pipeline output (`output_type` "pt" or "np") as `[F, 3, H, W]` in [0, 1]."""
    frames = getattr(output, "frames", None)
    if frames is not None:
        frames = torch.as_tensor(frames[0])  # one video: [F, C, H, W] or [F, H, W, C]
    else:
        frames = torch.as_tensor(output.images[:1])  # one image as a single frame
    frames = frames.float()
    if frames.shape[-1] in (1, 3) and frames.shape[1] not in (1, 3):
        frames = frames.permute(0, 3, 1, 2)
    return frames.clamp(0, 1).contiguous()


def call_kwargs(pipe: Any, spec: GenerationSpec) -> dict[str, Any]:
    """Keyword arguments for `pipe(...)`: tiny-model defaults (for the trained shapes models their `sample_kwargs`:
    trained size, 20 steps), then the spec's explicit settings."""
    from .loading import is_tiny

    kwargs: dict[str, Any] = {}
    if is_tiny(spec.model):
        from .shapes.models import MODELS as SHAPES_MODELS
        from .shapes.models import sample_kwargs
        from .testing import tiny_call_kwargs

        family = spec.model.split(":", 1)[1]
        kwargs.update(sample_kwargs(family) if family in SHAPES_MODELS else tiny_call_kwargs(family))
    kwargs["prompt"] = spec.prompt
    if spec.negative_prompt is not None:
        kwargs["negative_prompt"] = spec.negative_prompt
    optional = {"num_frames": spec.frames, "height": spec.height, "width": spec.width,
                "num_inference_steps": spec.steps, "guidance_scale": spec.guidance}
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    device = getattr(pipe, "_execution_device", None) or pipe.device
    kwargs["generator"] = torch.Generator(device="cpu").manual_seed(spec.seed)
    if str(device).startswith("cuda"):
        kwargs["generator"] = torch.Generator(device=device).manual_seed(spec.seed)
    kwargs.setdefault("output_type", "pt")
    accepted = _call_parameters(pipe)
    if "num_frames" in kwargs and "num_frames" not in accepted:
        kwargs.pop("num_frames")
    return {k: v for k, v in kwargs.items() if k in accepted}


def _call_parameters(pipe: Any) -> set[str]:
    import inspect

    return set(inspect.signature(type(pipe).__call__).parameters)


def _runner(methods: list[MethodConfig]):
    """The custom sampling routine of a method that needs one (e.g. FreeSwim's two stages), if any."""
    runners = [m for m in methods if getattr(m, "runner", "")]
    if len(runners) > 1:
        raise ConfigError(f"methods {[m.name for m in runners]} each need their own sampling loop; use one of them")
    if not runners:
        return None
    return load(runners[0].runner)


_VAE_SCALES = ("vae_scale_factor_spatial", "vae_spatial_compression_ratio", "vae_spatial_scale_factor", "vae_scale_factor")
"""Attributes diffusers pipelines keep their VAE's spatial downscale in (the names differ per family)."""

_PIPELINE_MULTIPLES = {"HunyuanVideoPipeline": 16, "LTXPipeline": 32}
"""diffusers pipelines whose own input check asks for a fixed multiple beyond their VAE and patch size."""


def pixel_multiple(pipe: Any) -> int:
    """What height and width must be multiples of for `pipe`: its VAE's downscale times the denoiser's spatial
    patch, and any stricter multiple the pipeline checks itself (otherwise the run fails deep in the model)."""
    vae = next((value for name in _VAE_SCALES if isinstance(value := getattr(pipe, name, None), int)), PIXEL_MULTIPLE)
    denoiser = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
    patch = getattr(getattr(denoiser, "config", None), "patch_size", None) or 1
    multiple = math.lcm(PIXEL_MULTIPLE, vae * (patch[-1] if isinstance(patch, (tuple, list)) else patch))
    for klass in type(pipe).__mro__:
        multiple = math.lcm(multiple, _PIPELINE_MULTIPLES.get(klass.__name__, 1))
    return multiple


def _check_size_fits(pipe: Any, spec: GenerationSpec) -> None:
    """Raise `ConfigError` when the spec's height or width is not a multiple the loaded pipeline can run."""
    multiple = pixel_multiple(pipe)
    for name, value in (("height", spec.height), ("width", spec.width)):
        check(value is None or value % multiple == 0,
              f"{spec.model} ({type(pipe).__name__}) needs height and width in multiples of {multiple}; {name} is {value}")


def generate(spec: GenerationSpec, pipe: Any | None = None) -> GenerationResult:
    """Run one generation; `pipe` reuses an already loaded pipeline for `spec.model`."""
    from .api import apply
    from .loading import load_pipeline, parse_dtype, pick_device
    from .parallel import enable_ulysses, init_distributed

    device = init_distributed(spec.ulysses) if spec.ulysses > 1 else pick_device(spec.device)
    if pipe is None:
        pipe = load_pipeline(spec.model, device=device, dtype=parse_dtype(spec.dtype, device), cpu_offload=spec.cpu_offload)
        if spec.ulysses > 1:
            enable_ulysses(pipe.transformer if hasattr(pipe, "transformer") else pipe.unet, spec.ulysses)
    _check_size_fits(pipe, spec)
    kwargs = call_kwargs(pipe, spec)
    runner = _runner(spec.methods)
    start = time.perf_counter()
    handle = apply(pipe, *spec.methods) if spec.methods and runner is None else None
    try:
        if runner is not None:
            output, stats = runner(pipe, spec.methods, kwargs)
        else:
            output = pipe(**kwargs)
            stats = handle.stats if handle is not None else None
        frames = pipeline_frames(output)
    finally:
        if handle is not None:
            handle.remove()
    seconds = time.perf_counter() - start
    return GenerationResult(
        frames=frames,
        stats=stats.to_dict() if stats is not None else {},
        stats_summary=stats.summary() if stats is not None else {},
        seconds=seconds,
        spec=spec,
    )


def load_spec(path: str | Path) -> GenerationSpec:
    """Read a spec written by `save_spec` (JSON, or YAML by suffix); errors in it name the file."""
    data = read_settings(path, "a generation config")
    try:
        return GenerationSpec.from_dict(data)
    except DiffAttnError as exc:
        raise type(exc)(f"{path}: {exc}") from None


def save_spec(spec: GenerationSpec, path: str | Path) -> Path:
    """Write the spec (JSON, or YAML by suffix); `diffattn generate --config PATH` reproduces the run."""
    return write_settings(spec.to_dict(), path)
