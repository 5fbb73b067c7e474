"""FreeNoise (`diffattn.apply(pipe, FreeNoiseConfig(...))`): longer videos from a model trained on short ones.

`FreeNoiseMethod` is made of two parts: `FreeNoiseAttention` (`diffattn.processors.noise`: window-fused temporal
attention, padded positions, per-frame prompts in cross-attention) on the denoiser, and `FreeNoiseSampling` (here:
rescheduled initial noise, `{frame: prompt}` dicts turned into a per-frame schedule) on the pipeline. The
rescheduling, windows, weights and prompt interpolation are model-free (`diffattn.noise.freenoise`).
"""

from __future__ import annotations

from typing import Any

import torch

from diffattn.configs.freenoise import FreeNoiseConfig
from diffattn.errors import ConfigError
from diffattn.extension import PipelineExtension, Proceed, first_latents
from diffattn.method import Method, Part, Target
from diffattn.noise.freenoise import PromptSchedule, check_keyframes, interpolate_keyframes, reschedule_noise
from diffattn.noise.latents import as_video, from_video
from diffattn.processors.noise import FreeNoiseAttention

__all__ = ["FreeNoiseMethod", "FreeNoiseSampling"]

_NOT_NOISE = ("latents", "video", "image")
"""`prepare_latents` arguments that make its result something other than fresh noise (left unrescheduled)."""


class FreeNoiseMethod(Method):
    """Implementation of `FreeNoiseConfig`: the attention part on the denoiser and, when applied to a pipeline, the
    sampling part on the pipeline (the window fusion alone runs on a bare denoiser)."""

    def __init__(self, config: FreeNoiseConfig, target: Target) -> None:
        super().__init__(config, target)
        self.attention = FreeNoiseAttention(config, target, self._prompt_schedule)
        self.sampling = FreeNoiseSampling(config, target, prompt_schedules=not self.attention.frame_windows_mode)

    def _prompt_schedule(self) -> PromptSchedule | None:
        """The per-frame prompts of the pipeline call in progress (None outside one, or without prompt dicts)."""
        return self.sampling.prompt_schedule

    def parts(self) -> tuple[Part, ...]:
        if self.target.pipeline is None:
            return (self.attention,)
        return (self.attention, self.sampling)


class FreeNoiseSampling(PipelineExtension):
    """FreeNoise's pipeline part: reschedules the initial noise and turns `{frame: prompt}` dicts into the call's
    `prompt_schedule`, which the attention part's cross-attention hooks read.

    Args:
        config (`FreeNoiseConfig`): the settings.
        target (`Target`): the pipeline's main denoiser and the pipeline.
        prompt_schedules (`bool`): whether the denoiser conditions frame by frame (AnimateDiff), so prompt dicts
            can be honoured; otherwise they are refused.
    """

    order = 50
    config: FreeNoiseConfig

    def __init__(self, config: FreeNoiseConfig, target: Target, prompt_schedules: bool) -> None:
        super().__init__(config, target)
        self.supports_prompt_schedule = prompt_schedules
        self.prompt_schedule: PromptSchedule | None = None

    def around_prepare_latents(self, pipe: Any, proceed: Proceed, arguments: dict[str, Any]) -> Any:
        prepared = proceed(arguments)
        if any(arguments.get(name) is not None for name in _NOT_NOISE):
            return prepared  # the caller's latents, or latents made from a video/image: not FreeNoise's to reorder
        family = self.target.family.name
        latents = first_latents(prepared)
        video = reschedule_noise(
            as_video(latents, family), self.config.context_length, self.config.context_stride,
            self.config.noise_type, arguments.get("generator"),
        )
        rescheduled = from_video(video, family)
        return (rescheduled, *prepared[1:]) if isinstance(prepared, tuple) else rescheduled

    def around_call(self, pipe: Any, proceed: Proceed, arguments: dict[str, Any]) -> Any:
        prompt, negative = arguments.get("prompt"), arguments.get("negative_prompt")
        if not isinstance(prompt, dict) and not isinstance(negative, dict):
            return proceed(arguments)
        if not self.supports_prompt_schedule:
            raise ConfigError(
                f"per-frame prompt dicts need a UNet with per-frame text conditioning (AnimateDiff); "
                f"{type(pipe).__name__} conditions whole videos. Pass a single prompt string"
            )
        if arguments.get("prompt_embeds") is not None or arguments.get("negative_prompt_embeds") is not None:
            raise ConfigError("FreeNoise per-frame prompts are given as {frame: text} dicts, not prompt_embeds")
        num_frames = int(arguments["num_frames"])
        self.prompt_schedule = self._schedule(pipe, prompt, negative, num_frames, arguments.get("clip_skip"))
        call = dict(arguments)
        call["prompt"] = prompt[0] if isinstance(prompt, dict) else prompt
        if isinstance(negative, dict):
            call["negative_prompt"] = negative[0]
        try:
            return proceed(call)
        finally:
            self.prompt_schedule = None

    def _schedule(self, pipe: Any, prompt: Any, negative: Any, num_frames: int, clip_skip: int | None) -> PromptSchedule:
        prompts = prompt if isinstance(prompt, dict) else {0: prompt}
        check_keyframes("prompt", prompts, num_frames)
        encoded = self._encode(pipe, prompts, clip_skip)
        per_frame = interpolate_keyframes(encoded, num_frames)
        last = encoded[max(encoded)]
        negatives = None
        if isinstance(negative, dict):
            check_keyframes("negative_prompt", negative, num_frames)
            negatives = interpolate_keyframes(self._encode(pipe, negative, clip_skip), num_frames)
        steps = self.config.per_frame_steps if self.config.motion_injection else None
        return PromptSchedule(per_frame, last.expand(num_frames, *last.shape).contiguous(), negatives, steps)

    @staticmethod
    def _encode(pipe: Any, prompts: dict[int, str], clip_skip: int | None) -> dict[int, torch.Tensor]:
        frames = sorted(prompts)
        embeds, _ = pipe.encode_prompt(
            [prompts[f] for f in frames], pipe._execution_device, 1, False, clip_skip=clip_skip
        )
        return dict(zip(frames, embeds))
