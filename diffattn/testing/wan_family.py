"""Tiny recipes for the Wan-structured transformers beyond Wan 2.1 T2V: Wan 2.2 TI2V-5B, Wan 2.1 image-to-video,
Wan VACE and SkyReels-V2.

They share Wan 2.1's transformer shape (2 blocks, 2 heads x 16, 2x2 spatial patches) and UMT5 text encoder
(:mod:`diffattn.testing.dit`); each differs where its diffusers pipeline calls the transformer differently:

- ``wan22``: 48 latent channels from a 16x spatial VAE, and ``expand_timesteps``, so the transformer gets one
  timestep per token (``[B, F*H*W]``), as ``Wan-AI/Wan2.2-TI2V-5B-Diffusers`` runs.
- ``wan-i2v``: 36 input channels (latents, frame mask, encoded image) and CLIP image tokens that the
  cross-attention attends to in a second SDPA call before the text tokens.
- ``wan-vace``: ``WanVACETransformer3DModel`` with one VACE block that embeds the control video.
- ``skyreels-v2``: ``SkyReelsV2Transformer3DModel`` under UniPC flow sampling.

The I2V, VACE and SkyReels-V2 pipelines clean prompts with ``ftfy`` unconditionally (Wan's T2V pipeline only when
it is installed), which is no dependency here, so their call kwargs pass text-encoder states
(``prompt_embeds``, ``negative_prompt_embeds``: random, fixed) instead of prompts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    SkyReelsV2Pipeline,
    SkyReelsV2Transformer3DModel,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
    WanVACEPipeline,
    WanVACETransformer3DModel,
)
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

from diffattn.testing.recipe import (
    HEAD_DIM,
    HEADS,
    INNER_DIM,
    T5_LENGTH,
    Family,
    build,
    random_text,
    t5_text,
    timesteps,
    video_call,
)
from diffattn.testing.text import TEXT_DIM, umt5_encoder
from diffattn.testing.video import sample_clip

__all__ = ["WAN22", "WAN_I2V", "WAN_VACE", "SKYREELS_V2", "wan_transformer", "wan_vae"]

_WAN_BLOCKS = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": HEADS,
    "attention_head_dim": HEAD_DIM,
    "text_dim": TEXT_DIM,
    "freq_dim": 256,
    "ffn_dim": 2 * INNER_DIM,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 32,
}
"""Transformer settings every recipe here shares with the tiny Wan 2.1 (``diffattn.testing.dit``)."""


def wan_transformer(**overrides: Any) -> WanTransformer3DModel:
    """The tiny Wan 2.1 transformer (16 latent channels) with ``overrides`` (the shapes world's model is built so)."""
    return WanTransformer3DModel(**{**_WAN_BLOCKS, "in_channels": 16, "out_channels": 16, **overrides})


def wan_vae(**overrides: Any) -> AutoencoderKLWan:
    """diffusers' test Wan VAE (8x spatial, 4x temporal, 16 channels) with ``overrides``."""
    settings = {"base_dim": 3, "z_dim": 16, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1,
                "temperal_downsample": [False, True, True]}
    return AutoencoderKLWan(**{**settings, **overrides})


def _latents(channels: int, batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    """Latents ``[B, channels, F, H, W]``, a timestep per sample, T5 states ``[B, L, 32]``."""
    return {
        "hidden_states": torch.randn(batch, channels, frames, height, width, generator=generator),
        "timestep": timesteps(batch),
        "encoder_hidden_states": random_text(generator, batch, T5_LENGTH),
    }


def _embedded_call(frames: int, size: int, guidance: float) -> dict[str, Any]:
    """:func:`video_call` with fixed random text-encoder states ``[1, L, 32]`` in place of the two prompts."""
    call = video_call(frames, size, guidance)
    del call["prompt"], call["negative_prompt"], call["max_sequence_length"]
    generator = torch.Generator().manual_seed(0)
    call["prompt_embeds"] = random_text(generator, 1, T5_LENGTH)
    call["negative_prompt_embeds"] = random_text(generator, 1, T5_LENGTH)
    return call


def _image(size: int) -> PIL.Image.Image:
    """The first frame of :func:`sample_clip` as a PIL image (the conditioning image of I2V calls)."""
    frame = sample_clip(1, size, size)[0].permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()
    return PIL.Image.fromarray(np.ascontiguousarray(frame))


# --- Wan 2.2 TI2V-5B: 48 latent channels, 16x spatial VAE, one timestep per token --------------------------


def _wan22_transformer() -> WanTransformer3DModel:
    return wan_transformer(in_channels=48, out_channels=48)


def _wan22_components(seed: int) -> dict[str, Any]:
    """The TI2V-5B layout: a residual VAE with 2x2 pixel patches (16x spatial, 48 channels), ``expand_timesteps``."""
    vae = build(seed, lambda: wan_vae(
        z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2, scale_factor_spatial=16,
        latents_mean=[0.0] * 48, latents_std=[1.0] * 48,
    ))
    return {
        **t5_text(seed, umt5_encoder),
        "transformer": build(seed, _wan22_transformer),
        "transformer_2": None,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=5.0),
        "expand_timesteps": True,
    }


def _wan22_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    """Latents ``[B, 48, F, H, W]`` and one timestep per token ``[B, F*H*W/4]``, as ``expand_timesteps`` passes."""
    inputs = _latents(48, batch, frames, height, width, generator)
    inputs["timestep"] = torch.full((batch, frames * (height // 2) * (width // 2)), 500.0)
    return inputs


WAN22 = Family(
    pipeline_class=WanPipeline,
    components=_wan22_components,
    denoiser=lambda seed: build(seed, _wan22_transformer),
    call=lambda: video_call(frames=9, size=64, guidance=5.0),
    inputs=_wan22_inputs,
    latent_scale=(4, 16),
    latent=(3, 4, 4),
    patch=(1, 2),
)


# --- Wan 2.1 image-to-video: channel-concatenated condition, CLIP image tokens in cross-attention -------------

_CLIP_IMAGE_DIM = 24
_CLIP_IMAGE_SIZE, _CLIP_PATCH = 32, 8  # 16 patches + the class token: 17 image tokens


def _i2v_transformer() -> WanTransformer3DModel:
    """36 input channels (16 latents, 4 frame-mask, 16 encoded image) and a projection of CLIP image tokens."""
    return WanTransformer3DModel(
        **_WAN_BLOCKS, in_channels=36, out_channels=16, image_dim=_CLIP_IMAGE_DIM, added_kv_proj_dim=INNER_DIM
    )


def _i2v_components(seed: int) -> dict[str, Any]:
    """UMT5, a tiny CLIP vision tower and its image processor, the test Wan VAE."""
    vision = CLIPVisionConfig(
        hidden_size=_CLIP_IMAGE_DIM, intermediate_size=2 * _CLIP_IMAGE_DIM, num_hidden_layers=2, num_attention_heads=2,
        image_size=_CLIP_IMAGE_SIZE, patch_size=_CLIP_PATCH, projection_dim=_CLIP_IMAGE_DIM,
    )
    processor = CLIPImageProcessorPil(size={"shortest_edge": _CLIP_IMAGE_SIZE},
                                      crop_size={"height": _CLIP_IMAGE_SIZE, "width": _CLIP_IMAGE_SIZE})
    return {
        **t5_text(seed, umt5_encoder),
        "image_encoder": build(seed, lambda: CLIPVisionModel(vision)),
        "image_processor": processor,
        "transformer": build(seed, _i2v_transformer),
        "transformer_2": None,
        "vae": build(seed, wan_vae),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=5.0),
    }


def _i2v_call() -> dict[str, Any]:
    return {**_embedded_call(frames=9, size=32, guidance=5.0), "image": _image(32)}


def _i2v_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    """Latents with condition channels ``[B, 36, F, H, W]``, T5 states and CLIP image states ``[B, 17, 24]``."""
    inputs = _latents(36, batch, frames, height, width, generator)
    tokens = (_CLIP_IMAGE_SIZE // _CLIP_PATCH) ** 2 + 1
    inputs["encoder_hidden_states_image"] = torch.randn(batch, tokens, _CLIP_IMAGE_DIM, generator=generator)
    return inputs


WAN_I2V = Family(
    pipeline_class=WanImageToVideoPipeline,
    components=_i2v_components,
    denoiser=lambda seed: build(seed, _i2v_transformer),
    call=_i2v_call,
    inputs=_i2v_inputs,
    latent_scale=(4, 8),
    latent=(3, 4, 4),
    patch=(1, 2),
)


# --- Wan VACE: a control branch of VACE blocks whose hints are added to the main blocks --------------------

_VACE_IN_CHANNELS = 16 + 16 + 8 * 8  # inactive and reactive control latents, and the 8x8 pixel mask per latent pixel


def _vace_transformer() -> WanVACETransformer3DModel:
    """The tiny Wan transformer plus one VACE block, whose hint is added after main block 0."""
    return WanVACETransformer3DModel(
        **_WAN_BLOCKS, in_channels=16, out_channels=16, vace_layers=[0], vace_in_channels=_VACE_IN_CHANNELS
    )


def _vace_components(seed: int) -> dict[str, Any]:
    return {
        **t5_text(seed, umt5_encoder),
        "transformer": build(seed, _vace_transformer),
        "transformer_2": None,
        "vae": build(seed, wan_vae),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=5.0),
    }


def _vace_call() -> dict[str, Any]:
    """A control video (:func:`sample_clip`, every pixel to regenerate: no mask)."""
    frames = sample_clip(9, 32, 32).permute(0, 2, 3, 1).mul(255).round().to(torch.uint8).numpy()
    video = [PIL.Image.fromarray(np.ascontiguousarray(frame)) for frame in frames]
    return {**_embedded_call(frames=9, size=32, guidance=5.0), "video": video}


def _vace_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    """Latents ``[B, 16, F, H, W]``, T5 states and control latents ``[B, 96, F, H, W]``."""
    inputs = _latents(16, batch, frames, height, width, generator)
    inputs["control_hidden_states"] = torch.randn(batch, _VACE_IN_CHANNELS, frames, height, width, generator=generator)
    return inputs


WAN_VACE = Family(
    pipeline_class=WanVACEPipeline,
    components=_vace_components,
    denoiser=lambda seed: build(seed, _vace_transformer),
    call=_vace_call,
    inputs=_vace_inputs,
    latent_scale=(4, 8),
    latent=(3, 4, 4),
    patch=(1, 2),
)


# --- SkyReels-V2 text-to-video: Wan's transformer layout under UniPC flow sampling -------------------------


def _skyreels_transformer() -> SkyReelsV2Transformer3DModel:
    return SkyReelsV2Transformer3DModel(**_WAN_BLOCKS, in_channels=16, out_channels=16)


def _skyreels_components(seed: int) -> dict[str, Any]:
    return {
        **t5_text(seed, umt5_encoder),
        "transformer": build(seed, _skyreels_transformer),
        "vae": build(seed, wan_vae),
        "scheduler": UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=8.0),
    }


SKYREELS_V2 = Family(
    pipeline_class=SkyReelsV2Pipeline,
    components=_skyreels_components,
    denoiser=lambda seed: build(seed, _skyreels_transformer),
    call=lambda: _embedded_call(frames=9, size=32, guidance=6.0),
    inputs=lambda batch, frames, height, width, generator: _latents(16, batch, frames, height, width, generator),
    latent_scale=(4, 8),
    latent=(3, 4, 4),
    patch=(1, 2),
)
