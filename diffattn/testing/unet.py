"""Tiny recipes for the UNet families: Stable Diffusion 1.x, SD + ControlNet and AnimateDiff."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AnimateDiffPipeline,
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    MotionAdapter,
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UNetMotionModel,
)

from diffattn.testing.recipe import (
    CLIP_LENGTH,
    NEGATIVE_PROMPT,
    PROMPT,
    Family,
    build,
    clip_text,
    random_text,
    timesteps,
)
from diffattn.testing.text import TEXT_DIM
from diffattn.testing.video import sample_clip

__all__ = ["SD", "SD_CONTROLNET", "ANIMATEDIFF", "ddim", "sd_unet", "sd_vae"]


# --- Stable Diffusion 1.x -------------------------------------------------------------------------

_SD_BLOCKS = (32, 64)
_SD_HEADS = (2, 4)  # UNet2DConditionModel's `attention_head_dim` is really the head count: 16 per head
_SD_SAMPLE = 8  # latent size of the call (64 px)


def sd_unet(**overrides: Any) -> UNet2DConditionModel:
    """Two levels (32, 64 channels), cross-attention at full resolution and in the mid block, 16 per head;
    ``overrides`` replace any of these settings (the shapes world's SD model is built this way)."""
    settings = {
        "block_out_channels": _SD_BLOCKS,
        "layers_per_block": 1,
        "sample_size": _SD_SAMPLE,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": TEXT_DIM,
        "attention_head_dim": _SD_HEADS,
        "norm_num_groups": 8,
    }
    return UNet2DConditionModel(**{**settings, **overrides})


def sd_vae(levels: int = 4, **overrides: Any) -> AutoencoderKL:
    """KL VAE of ``levels`` levels (2 ** (levels - 1) spatial compression: 8x like SD's by default) with 8 channels
    per level; ``overrides`` replace any other setting."""
    settings = {
        "block_out_channels": (8,) * levels,
        "down_block_types": ("DownEncoderBlock2D",) * levels,
        "up_block_types": ("UpDecoderBlock2D",) * levels,
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 2,
        "sample_size": 8 * _SD_SAMPLE,
    }
    return AutoencoderKL(**{**settings, **overrides})


def ddim(beta_schedule: str) -> DDIMScheduler:
    """DDIM with SD 1.x's betas (``scaled_linear``) or AnimateDiff's (``linear``)."""
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule=beta_schedule,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def _sd_components(seed: int) -> dict[str, Any]:
    """CLIP text encoder, UNet, VAE and SD 1.x DDIM; no safety checker."""
    return {
        **clip_text(seed),
        "unet": build(seed, sd_unet),
        "vae": build(seed, sd_vae),
        "scheduler": ddim("scaled_linear"),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


def _sd_call() -> dict[str, Any]:
    """Text-to-image kwargs at 64x64 px (8x8 latents) with classifier-free guidance."""
    size = 8 * _SD_SAMPLE
    return {
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "height": size,
        "width": size,
        "num_inference_steps": 2,
        "guidance_scale": 7.5,
        "output_type": "pt",
    }


def _sd_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    """UNet inputs; video frames are folded into the batch (``B*F`` images), as image models see videos."""
    images = batch * frames
    return {
        "sample": torch.randn(images, 4, height, width, generator=generator),
        "timestep": timesteps(images, torch.long),
        "encoder_hidden_states": random_text(generator, images, CLIP_LENGTH),
    }


SD = Family(
    pipeline_class=StableDiffusionPipeline,
    components=_sd_components,
    denoiser=lambda seed: build(seed, sd_unet),
    call=_sd_call,
    inputs=_sd_inputs,
    latent_scale=(1, 8),
    latent=(1, _SD_SAMPLE, _SD_SAMPLE),
)


# --- Stable Diffusion + ControlNet -----------------------------------------------------------------


def _controlnet() -> ControlNetModel:
    """Mirrors the UNet's down path; its 4-level hint encoder downsamples the control image 8x like the VAE."""
    model = ControlNetModel(
        block_out_channels=_SD_BLOCKS,
        layers_per_block=1,
        in_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=_SD_HEADS,
        conditioning_embedding_out_channels=(8, 8, 16, 16),
        norm_num_groups=8,
    )
    # ControlNet's output convolutions start at zero (no effect on the UNet); randomise them so the
    # control image actually changes the result.
    zero_convs = [model.controlnet_cond_embedding.conv_out, *model.controlnet_down_blocks, model.controlnet_mid_block]
    for conv in zero_convs:
        torch.nn.init.normal_(conv.weight, std=0.1)
    return model


def _controlnet_components(seed: int) -> dict[str, Any]:
    """SD's components plus the ControlNet."""
    return {**_sd_components(seed), "controlnet": build(seed, _controlnet)}


def _controlnet_call() -> dict[str, Any]:
    """SD's kwargs plus a control image ``[1, 3, 64, 64]`` (first frame of :func:`sample_clip`)."""
    size = 8 * _SD_SAMPLE
    return {**_sd_call(), "image": sample_clip(1, size, size)}


SD_CONTROLNET = Family(
    pipeline_class=StableDiffusionControlNetPipeline,
    components=_controlnet_components,
    denoiser=lambda seed: build(seed, sd_unet),
    call=_controlnet_call,
    inputs=_sd_inputs,
    latent_scale=(1, 8),
    latent=(1, _SD_SAMPLE, _SD_SAMPLE),
)


# --- AnimateDiff (SD UNet + motion adapter) --------------------------------------------------------


def _motion_adapter() -> MotionAdapter:
    """One temporal transformer per UNet resnet, 16 per head, positions for up to 32 frames."""
    return MotionAdapter(
        block_out_channels=_SD_BLOCKS,
        motion_layers_per_block=1,
        motion_norm_num_groups=8,
        motion_num_attention_heads=_SD_HEADS,
        motion_max_seq_length=32,
    )


def _animatediff_denoiser(seed: int) -> UNetMotionModel:
    """The UNetMotionModel that ``AnimateDiffPipeline`` assembles from the 2D UNet and the adapter."""
    return UNetMotionModel.from_unet2d(build(seed, sd_unet), build(seed, _motion_adapter)).eval()


def _animatediff_components(seed: int) -> dict[str, Any]:
    """SD's UNet, VAE and CLIP plus the motion adapter; DDIM with AnimateDiff's linear betas."""
    return {
        **clip_text(seed),
        "unet": build(seed, sd_unet),
        "motion_adapter": build(seed, _motion_adapter),
        "vae": build(seed, sd_vae),
        "scheduler": ddim("linear"),
        "feature_extractor": None,
        "image_encoder": None,
    }


def _animatediff_inputs(
    batch: int, frames: int, height: int, width: int, generator: torch.Generator
) -> dict[str, Any]:
    """Like ``AnimateDiffPipeline``: one prompt per video, its text states repeated for every frame."""
    return {
        "sample": torch.randn(batch, 4, frames, height, width, generator=generator),
        "timestep": timesteps(batch, torch.long),
        "encoder_hidden_states": random_text(generator, batch, CLIP_LENGTH).repeat_interleave(frames, dim=0),
    }


ANIMATEDIFF = Family(
    pipeline_class=AnimateDiffPipeline,
    components=_animatediff_components,
    denoiser=_animatediff_denoiser,
    call=lambda: {**_sd_call(), "num_frames": 8},
    inputs=_animatediff_inputs,
    latent_scale=(1, 8),
    latent=(8, _SD_SAMPLE, _SD_SAMPLE),
    max_frames=32,
)
