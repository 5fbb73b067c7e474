"""`FreeSwimPipeline`: coarse-to-fine high-resolution text-to-video with a Wan2.1 model (FreeSwim).

Stage 1 generates at the model's native resolution with diffusers' stock `WanPipeline`. Every frame is then
upscaled bilinearly (the released code's `cv2.INTER_LINEAR`) to the target size, and stage 2 refines it with an
SDEdit pass (diffusers' `WanVideoToVideoPipeline`, strength 0.7, flow shift 9) with FreeSwim's attention
installed for that stage only. Both stages share one set of components, so offloading and VAE tiling set on
this pipeline apply to both.

>>> pipe = FreeSwimPipeline.from_pretrained("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", torch_dtype=torch.bfloat16)
>>> pipe.enable_model_cpu_offload(); pipe.enable_vae_tiling()
>>> video = pipe("an old man's face, close-up", height=1088, width=1920).frames[0]
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, WanPipeline, WanVideoToVideoPipeline
from diffusers.utils import BaseOutput

from diffattn.api import apply
from diffattn.config import MethodConfig
from diffattn.configs.freeswim import FreeSwimConfig
from diffattn.errors import ConfigError, UnsupportedModelError
from diffattn.processors.freeswim import check_wan_text_to_video, native_base_size, pixels_per_token
from diffattn.stats import AttentionStats

__all__ = ["FreeSwimPipeline", "FreeSwimPipelineOutput", "run_freeswim", "upscale_video", "with_flow_shift"]

_COMPONENTS = ("tokenizer", "text_encoder", "vae", "scheduler", "transformer")


@dataclass
class FreeSwimPipelineOutput(BaseOutput):
    """Output of `FreeSwimPipeline`.

    Args:
        frames: the high-resolution videos, in the requested `output_type` (like `WanPipeline`'s `frames`).
        base_frames (`torch.Tensor`): stage 1's native-resolution videos `[batch, frames, 3, height, width]` in [0, 1].
        stats (`AttentionStats`): per-layer, per-step attention statistics of stage 2.
    """

    frames: Any
    base_frames: torch.Tensor
    stats: AttentionStats


def upscale_video(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize (half-pixel centres, like OpenCV's INTER_LINEAR) of every frame of `[B, F, C, h, w]` videos."""
    batch, count = frames.shape[:2]
    resized = F.interpolate(frames.flatten(0, 1), size=(height, width), mode="bilinear", align_corners=False)
    return resized.unflatten(0, (batch, count))


def with_flow_shift(scheduler: Any, shift: float) -> Any:
    """A new scheduler like `scheduler` with its flow-matching shift set (`flow_shift` for UniPC, `shift` for Euler)."""
    config = scheduler.config
    for name in ("flow_shift", "shift"):
        if name in config:
            return type(scheduler).from_config(config, **{name: shift})
    raise ConfigError(
        f"{type(scheduler).__name__} has no flow shift setting; FreeSwim's second stage needs a flow-matching scheduler "
        "(Wan's UniPCMultistepScheduler or FlowMatchEulerDiscreteScheduler)"
    )


class FreeSwimPipeline(DiffusionPipeline):
    """FreeSwim two-stage high-resolution text-to-video around a Wan2.1 text-to-video model.

    Components are those of `WanPipeline` (without Wan 2.2's second transformer). Load it like any diffusers
    pipeline (`FreeSwimPipeline.from_pretrained(wan_repo)`) or wrap a loaded one with `from_wan_pipeline`.
    For 1088x1920 on one 24 GB GPU, run with `FreeSwimConfig(memory="low")` (FreeSwim's own memory knobs,
    VAE tiling and text-encoder offload; see `FreeSwimConfig`), with every component on the GPU; the inherited
    `enable_model_cpu_offload()` is the further step if that does not fit.
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"

    def __init__(self, tokenizer: Any, text_encoder: Any, vae: Any, scheduler: Any, transformer: Any) -> None:
        super().__init__()
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer)

    @classmethod
    def from_wan_pipeline(cls, pipe: Any) -> FreeSwimPipeline:
        """A `FreeSwimPipeline` sharing the components of a loaded Wan text-to-video pipeline."""
        components = getattr(pipe, "components", None)
        if not isinstance(components, dict) or not set(_COMPONENTS) <= set(components):
            raise UnsupportedModelError(
                f"FreeSwim needs a Wan text-to-video pipeline (WanPipeline); got {type(pipe).__name__}"
            )
        if components.get("transformer_2") is not None:
            raise UnsupportedModelError(
                "FreeSwim supports single-transformer Wan2.1 text-to-video models; this pipeline has a second "
                "transformer (Wan 2.2 A14B)"
            )
        check_wan_text_to_video(components["transformer"])
        freeswim = cls(**{name: components[name] for name in _COMPONENTS})
        freeswim.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
        return freeswim

    def enable_vae_tiling(self) -> None:
        """Decode and encode the video in tiles (needed for 1080p on small GPUs)."""
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        self.vae.disable_tiling()

    def sizes(self, height: int, width: int, config: FreeSwimConfig) -> tuple[tuple[int, int], tuple[int, int]]:
        """`(base (h, w), target (h, w))` in pixels; a target off the 16-pixel grid is rounded up with a warning.

        Raises:
            ConfigError: the target is smaller than the base on either side.
        """
        check_wan_text_to_video(self.transformer)
        step_h, step_w = pixels_per_token(self.transformer, self)
        target = (math.ceil(height / step_h) * step_h, math.ceil(width / step_w) * step_w)
        if target != (height, width):
            warnings.warn(
                f"FreeSwim: {height}x{width} is not a multiple of {step_h}x{step_w} pixels (one latent token); "
                f"generating {target[0]}x{target[1]} instead",
                stacklevel=2,
            )
        base = (config.base_height, config.base_width) if config.base_height else native_base_size(self.transformer)
        if target[0] < base[0] or target[1] < base[1]:
            raise ConfigError(
                f"target {target[0]}x{target[1]} is smaller than the base {base[0]}x{base[1]}: FreeSwim generates above "
                "the model's native resolution; ask for a larger height/width or set a smaller base_height/base_width"
            )
        return base, target

    def _stages(self, flow_shift: float) -> tuple[WanPipeline, WanVideoToVideoPipeline]:
        shared = {name: getattr(self, name) for name in ("tokenizer", "text_encoder", "vae", "transformer")}
        base = WanPipeline(**shared, scheduler=self.scheduler)
        refine = WanVideoToVideoPipeline(**shared, scheduler=with_flow_shift(self.scheduler, flow_shift))
        for stage, phase in ((base, "stage 1 (base size)"), (refine, "stage 2 (target size)")):
            stage.set_progress_bar_config(**{**getattr(self, "_progress_bar_config", {}), "desc": phase})
        return base, refine

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        height: int = 1088,
        width: int = 1920,
        num_frames: int = 81,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        max_sequence_length: int = 512,
        output_type: str = "np",
        return_dict: bool = True,
        freeswim: FreeSwimConfig | None = None,
        methods: Sequence[MethodConfig] = (),
        use_freeswim: bool = True,
    ) -> FreeSwimPipelineOutput | tuple:
        """Generate at the native size, upscale, and refine at `height` x `width` with FreeSwim.

        Args:
            prompt / negative_prompt / prompt_embeds / negative_prompt_embeds / max_sequence_length:
                text conditioning, as in `WanPipeline` (encoded once, used by both stages).
            height (`int`, defaults to `1088`) / width (`int`, defaults to `1920`):
                target size in pixels; rounded up to multiples of 16 with a warning.
            num_frames (`int`, defaults to `81`): frames of the video (4k + 1).
            num_inference_steps (`int`, defaults to `50`): steps of the schedule; stage 2 runs the last
                `int(num_inference_steps * strength)` of them.
            guidance_scale (`float`, defaults to `5.0`): classifier-free guidance of both stages.
            generator: random generator(s), drawn from by stage 1, then stage 2.
            output_type (`str`, defaults to `"np"`): `"np"`, `"pt"`, `"pil"` or `"latent"`, for the final frames.
            freeswim (`FreeSwimConfig`, *optional*): FreeSwim settings (base size, window, cache, strength, flow
                shift); defaults to `FreeSwimConfig()`.
            methods (`Sequence[MethodConfig]`): other attention methods to compose with FreeSwim in stage 2
                (e.g. Sparge inside the window).
            use_freeswim (`bool`, defaults to `True`): `False` runs the same two stages with the model's own
                attention in stage 2 (plain SDEdit upscaling, the baseline FreeSwim is compared against).

        Returns:
            `FreeSwimPipelineOutput` (or `(frames,)` when `return_dict=False`).
        """
        config = freeswim if freeswim is not None else FreeSwimConfig()
        (base_height, base_width), (height, width) = self.sizes(height, width, config)
        if int(num_inference_steps * config.strength) < 1:
            raise ConfigError(
                f"strength {config.strength} of {num_inference_steps} steps leaves no high-resolution step; raise "
                "num_inference_steps or strength"
            )
        base, refine = self._stages(config.flow_shift)
        prompt_embeds, negative_prompt_embeds = base.encode_prompt(
            prompt=prompt,
            negative_prompt=negative_prompt,
            do_classifier_free_guidance=guidance_scale > 1.0,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            max_sequence_length=max_sequence_length,
            device=self._execution_device,
        )
        memory = config.memory_plan
        if memory.offload_text_encoder and self.text_encoder is not None:
            self.text_encoder.to("cpu")
        tiled = bool(getattr(self.vae, "use_tiling", False))
        if memory.vae_tiling:
            self.vae.enable_tiling()
        text = {"prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_prompt_embeds,
                "guidance_scale": guidance_scale, "num_inference_steps": num_inference_steps, "generator": generator}
        base_frames = base(height=base_height, width=base_width, num_frames=num_frames, output_type="pt", **text).frames
        video = upscale_video(base_frames, height, width)
        installed = (config, *methods) if use_freeswim else tuple(methods)
        handle = apply(refine, *installed) if installed else None
        try:
            frames = refine(video=video, height=height, width=width, strength=config.strength, output_type=output_type, **text).frames
        finally:
            if handle is not None:
                handle.remove()
            if memory.vae_tiling and not tiled:
                self.vae.disable_tiling()
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        stats = handle.stats if handle is not None else AttentionStats()
        return FreeSwimPipelineOutput(frames=frames, base_frames=base_frames, stats=stats)


def run_freeswim(pipe: Any, methods: list[MethodConfig], call_kwargs: dict[str, Any]) -> tuple[FreeSwimPipelineOutput, AttentionStats]:
    """The `runner` of `FreeSwimConfig` (`diffattn generate --method freeswim`): both stages on a Wan pipeline.

    `call_kwargs` are the pipeline call settings of the run; `height`/`width` are the target size. Other methods
    in `methods` are composed with FreeSwim in stage 2.
    """
    configs = [m for m in methods if isinstance(m, FreeSwimConfig)]
    if len(configs) != 1:
        raise ConfigError(f"run_freeswim needs exactly one FreeSwimConfig among the methods; got {len(configs)}")
    freeswim = pipe if isinstance(pipe, FreeSwimPipeline) else FreeSwimPipeline.from_wan_pipeline(pipe)
    accepted = inspect.signature(FreeSwimPipeline.__call__).parameters
    settings = {k: v for k, v in call_kwargs.items() if k in accepted}
    output = freeswim(**settings, freeswim=configs[0], methods=[m for m in methods if m is not configs[0]], return_dict=True)
    return output, output.stats
