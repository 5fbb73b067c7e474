"""DDIM inversion of a video, and the pieces every editing pipeline shares (prompt and video encoding, output).

Inversion runs the denoiser with the source prompt (conditional branch only, as FateZero) from the clean latents
up the DDIM schedule, keeping the latent after every step: `latents[i]` is the video after `i` inversion steps
(`latents[0]` clean, `latents[T]` the noise an edit starts from). Inversion step `i` evaluates the denoiser at
timestep `timesteps[T-1-i]`, the same timestep as edit step `T-1-i`; attention maps stored during inversion are
keyed by that timestep (see `processors.editing.store`), and `Inversion.at(c)` is the latent that edit step `c`'s
source branch (and FateZero's latent blend after step `c`) uses. The denoiser's output is read as noise through
the scheduler's prediction type (epsilon, v or sample), as DDIM's own step reads it. With a denoiser whose implied
noise does not depend on its input, DDIM sampling undoes the inversion exactly (tested for each prediction type).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler
from diffusers.utils import BaseOutput
from tqdm.auto import tqdm

from diffattn.context import RunContext
from diffattn.errors import ConfigError, VideoReadError

__all__ = [
    "Inversion",
    "VideoEditPipelineOutput",
    "alpha_cumprod",
    "as_ddim",
    "check_output_type",
    "check_video",
    "ddim_inversion_step",
    "ddim_invert",
    "predicted_noise",
    "decode_latents",
    "encode_prompts",
    "encode_video",
    "format_frames",
    "phase_bar",
    "vae_scale_factor",
]

OUTPUT_TYPES = ("pt", "np", "latent")


@dataclass
class VideoEditPipelineOutput(BaseOutput):
    """Output of the editing pipelines.

    Args:
        frames: the edited video, `[1, F, 3, H, W]` (`output_type="pt"`), `[1, F, H, W, 3]` (`"np"`) or the latents
            `[F, 4, h, w]` (`"latent"`).
        masks (`torch.Tensor`, *optional*): the edit mask of the last step, `[F, 1, h, w]` at latent resolution
            (1 = edited region), when the method computes one.
        info (`dict`): what the run did (store mode and sizes, frames, steps, chunks, ...).
    """

    frames: Any
    masks: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Inversion:
    """Latents of a DDIM inversion: `latents[i]` after `i` steps, and the (descending) sampling `timesteps`."""

    latents: list[torch.Tensor]
    timesteps: torch.Tensor

    @property
    def noise(self) -> torch.Tensor:
        """The fully inverted latent, where editing starts."""
        return self.latents[-1]

    def at(self, edit_step: int) -> torch.Tensor:
        """The inverted latent evaluated by inversion at edit step `edit_step`'s timestep (`latents[T-1-c]`)."""
        return self.latents[len(self.timesteps) - 1 - edit_step]


def alpha_cumprod(scheduler: DDIMScheduler, timestep: int) -> torch.Tensor:
    """`alphas_cumprod[t]`, or the scheduler's final value for `t < 0` (the step past the last timestep)."""
    return scheduler.alphas_cumprod[timestep] if timestep >= 0 else scheduler.final_alpha_cumprod


def predicted_noise(model_output: torch.Tensor, sample: torch.Tensor, alpha: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The noise a denoiser's output implies for `sample` at noise level `alpha` (its timestep's `alphas_cumprod`),
    for the scheduler's `prediction_type`: `"epsilon"` as is; `"v_prediction"` (SD 2.x 768-v, the shapes-world SD)
    `sqrt(a) v + sqrt(1 - a) x`; `"sample"` `(x - sqrt(a) x0) / sqrt(1 - a)`. The same conversion as DDIM's step."""
    if prediction_type == "epsilon":
        return model_output
    alpha = alpha.to(sample.device, torch.promote_types(sample.dtype, torch.float32))
    if prediction_type == "v_prediction":
        return (alpha.sqrt() * model_output + (1 - alpha).sqrt() * sample).to(model_output.dtype)
    if prediction_type == "sample":
        return ((sample - alpha.sqrt() * model_output) / (1 - alpha).sqrt()).to(model_output.dtype)
    raise ConfigError(f"DDIM inversion supports prediction types epsilon, v_prediction and sample; the scheduler has {prediction_type!r}")


def ddim_inversion_step(noise_pred: torch.Tensor, sample: torch.Tensor, alpha_from: torch.Tensor, alpha_to: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step from noise level `alpha_from` up to `alpha_to` (the inverse of a sampling step)."""
    dtype = torch.promote_types(sample.dtype, torch.float32)
    alpha_from = alpha_from.to(sample.device, dtype)
    alpha_to = alpha_to.to(sample.device, dtype)
    noise_pred = noise_pred.to(dtype)
    x0 = (sample.to(dtype) - (1 - alpha_from).sqrt() * noise_pred) / alpha_from.sqrt()
    return (alpha_to.sqrt() * x0 + (1 - alpha_to).sqrt() * noise_pred).to(sample.dtype)


@torch.no_grad()
def ddim_invert(
    unet: torch.nn.Module,
    scheduler: DDIMScheduler,
    latents: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    *,
    context: RunContext | None = None,
    step_context: Callable[[int], AbstractContextManager] | None = None,
    progress_bar: Callable[..., Any] | None = None,
    unet_kwargs: dict[str, Any] | None = None,
) -> Inversion:
    """Invert `latents [N, C, h, w]` along `scheduler.timesteps` (set already) with the given text conditioning.

    Args:
        context: diffattn's run context of the UNet; a new explicit run is started (inversion timesteps rise).
        step_context: `timestep -> context manager` wrapped around each denoiser call (e.g. `store.step`).
        progress_bar: a pipeline's `progress_bar` (tqdm over the steps).
    """
    timesteps = scheduler.timesteps
    stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    if context is not None:
        context.start_run(len(timesteps))
    sample, kept = latents, [latents]
    bar = progress_bar(total=len(timesteps)) if progress_bar is not None else nullcontext()
    with bar as progress:
        for timestep in reversed(timesteps):
            t = int(timestep)
            with step_context(t) if step_context is not None else nullcontext():
                output = unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, **(unet_kwargs or {})).sample
            noise_pred = predicted_noise(output, sample, alpha_cumprod(scheduler, t), scheduler.config.prediction_type)
            sample = ddim_inversion_step(noise_pred, sample, alpha_cumprod(scheduler, t - stride), alpha_cumprod(scheduler, t))
            kept.append(sample)
            if progress is not None:
                progress.update()
    return Inversion(kept, timesteps)


def as_ddim(scheduler: Any) -> DDIMScheduler:
    """A fresh DDIM scheduler with `scheduler`'s configuration (editing by inversion needs deterministic DDIM)."""
    return DDIMScheduler.from_config(scheduler.config)


@torch.no_grad()
def encode_prompts(tokenizer: Any, text_encoder: Any, prompts: Sequence[str], device: torch.device) -> torch.Tensor:
    """Text-encoder states `[len(prompts), L, D]`, padded to the tokenizer's maximum length (CLIP: 77)."""
    tokens = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    return text_encoder(tokens.input_ids.to(device))[0]


@torch.no_grad()
def encode_video(vae: Any, frames: torch.Tensor, *, chunk: int = 8) -> torch.Tensor:
    """Latents `[F, C, h, w]` (posterior mean x scaling factor) of frames `[F, 3, H, W]` in [0, 1], `chunk` frames at a time."""
    device, dtype = vae.device, vae.dtype
    parts = []
    for start in range(0, frames.shape[0], chunk):
        pixels = frames[start : start + chunk].to(device, dtype) * 2 - 1
        parts.append(vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor)
    return torch.cat(parts)


@torch.no_grad()
def decode_latents(vae: Any, latents: torch.Tensor, *, chunk: int = 8) -> torch.Tensor:
    """Frames `[F, 3, H, W]` in [0, 1] (float32, CPU) from latents, `chunk` frames at a time."""
    parts = []
    for start in range(0, latents.shape[0], chunk):
        part = latents[start : start + chunk].to(vae.device, vae.dtype) / vae.config.scaling_factor
        parts.append(((vae.decode(part).sample.float() + 1) / 2).clamp(0, 1).cpu())
    return torch.cat(parts)


def check_video(video: Any, multiple: int = 8) -> torch.Tensor:
    """Frames `[F, 3, H, W]` float in [0, 1] from a tensor (`[F, 3, H, W]` / `[F, H, W, 3]`), an array or a list of images.

    Raises `VideoReadError` for an empty or malformed video and `ConfigError` when the size is not a multiple of
    `multiple` (prepare it with `diffattn.media.video.prepare_video`).
    """
    if isinstance(video, (list, tuple)):
        if not video:
            raise VideoReadError("the video has no frames")
        video = np.stack([np.asarray(frame) for frame in video])
    frames = torch.as_tensor(video)
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise VideoReadError(f"expected a video [frames, 3, height, width]; got shape {tuple(frames.shape)}")
    if frames.shape[1] != 3 and frames.shape[-1] == 3:
        frames = frames.permute(0, 3, 1, 2)
    if frames.shape[1] != 3:
        raise VideoReadError(f"expected RGB frames [frames, 3, height, width]; got shape {tuple(frames.shape)}")
    frames = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    height, width = frames.shape[-2:]
    if height % multiple or width % multiple:
        raise ConfigError(
            f"frames of {height}x{width} are not multiples of {multiple}; resize or crop them first, e.g. with "
            "diffattn.media.video.prepare_video(video, height=..., width=...)"
        )
    return frames.clamp(0, 1)


def phase_bar(pipe: Any, phase: str) -> Callable[..., Any]:
    """Like `pipe.progress_bar` (`(iterable=None, total=None) -> tqdm`, the pipeline's bar settings), with the bar
    named after the phase it counts (e.g. "inversion", "edit"), so a run with several loops says which is which."""
    return functools.partial(tqdm, **{**getattr(pipe, "_progress_bar_config", {}), "desc": phase})


def check_output_type(output_type: str) -> None:
    """Refuse an unknown `output_type` before any work is done."""
    if output_type not in OUTPUT_TYPES:
        raise ConfigError(f"output_type must be one of {OUTPUT_TYPES}; got {output_type!r}")


def vae_scale_factor(vae: Any) -> int:
    """Pixels per latent along each side (8 for Stable Diffusion's VAE)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def format_frames(frames: torch.Tensor, output_type: str) -> Any:
    """`[F, 3, H, W]` in [0, 1] as a batch of one video: `"pt"` `[1, F, 3, H, W]` or `"np"` `[1, F, H, W, 3]`."""
    if output_type == "pt":
        return frames.unsqueeze(0)
    check_output_type(output_type)
    return frames.permute(0, 2, 3, 1).unsqueeze(0).numpy()
