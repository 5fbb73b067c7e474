"""Tiny recipes for the CLIP/T5 image transformers: Flux (text first, packed 2x2 latents) and SD3 (text last).

Flux 2 (`flux2.py`) and QwenImage (`qwen_image.py`) have their own modules: Qwen text encoders and chat templates."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import CLIPTextModelWithProjection

from diffattn.testing.recipe import (
    CLIP_LENGTH,
    HEAD_DIM,
    HEADS,
    INNER_DIM,
    NEGATIVE_PROMPT,
    PROMPT,
    T5_LENGTH,
    Family,
    build,
    clip_text,
    random_text,
    t5_text,
)
from diffattn.testing.text import TEXT_DIM

__all__ = ["FLUX", "SD3"]

_LATENT_CHANNELS = 4
_SIDE = 8
"""Latent height and width of the call size (64 x 64 pixels through the 8x VAE)."""


def _vae() -> AutoencoderKL:
    """8x spatial compression, 4 latent channels, no quant convs (like Flux's and SD3's VAEs)."""
    return AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=_LATENT_CHANNELS,
        layers_per_block=1,
        norm_num_groups=2,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def _image_call(guidance: float, **extra: Any) -> dict[str, Any]:
    """Call kwargs shared by the image pipelines: 64 x 64 pixels, 2 steps, CFG with a negative prompt."""
    return {
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "height": 8 * _SIDE,
        "width": 8 * _SIDE,
        "num_inference_steps": 2,
        "guidance_scale": guidance,
        "max_sequence_length": T5_LENGTH,
        "output_type": "pt",
        **extra,
    }


def _clip_with_projection(seed: int, offset: int) -> dict[str, Any]:
    """A run-time CLIP tokenizer and a tiny CLIP text encoder with projection (seeded with `seed + offset`)."""
    clip = clip_text(seed + offset)
    config = clip["text_encoder"].config
    return {"tokenizer": clip["tokenizer"], "text_encoder": build(seed + offset, lambda: CLIPTextModelWithProjection(config))}


# --- Flux (1.x dev style: guidance-distilled, plus true CFG) ----------------------------------------


def _flux_transformer() -> FluxTransformer2DModel:
    """1 dual-stream + 1 single-stream block, 2 heads x 16 (rotary axes 4+6+6), packed 2x2 latents, guidance embed."""
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * _LATENT_CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS,
        joint_attention_dim=TEXT_DIM,
        pooled_projection_dim=TEXT_DIM,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )


def _flux_components(seed: int) -> dict[str, Any]:
    """CLIP (pooled) and T5 text encoders with run-time tokenizers, the 8x VAE, flow-matching Euler."""
    clip, t5 = clip_text(seed), t5_text(seed)
    return {
        "transformer": build(seed, _flux_transformer),
        "vae": build(seed, _vae),
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "text_encoder": clip["text_encoder"],
        "tokenizer": clip["tokenizer"],
        "text_encoder_2": t5["text_encoder"],
        "tokenizer_2": t5["tokenizer"],
        "image_encoder": None,
        "feature_extractor": None,
    }


def _flux_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    """Packed latents ``[B, H/2 * W/2, 16]`` with their ``img_ids`` (0, row, column), T5 states, pooled CLIP states."""
    rows, columns = height // 2, width // 2
    img_ids = torch.zeros(rows, columns, 3)
    img_ids[..., 1] = torch.arange(rows)[:, None]
    img_ids[..., 2] = torch.arange(columns)[None, :]
    return {
        "hidden_states": torch.randn(batch, rows * columns, 4 * _LATENT_CHANNELS, generator=generator),
        "encoder_hidden_states": random_text(generator, batch, T5_LENGTH),
        "pooled_projections": torch.randn(batch, TEXT_DIM, generator=generator),
        "timestep": torch.full((batch,), 0.5),
        "img_ids": img_ids.reshape(-1, 3),
        "txt_ids": torch.zeros(T5_LENGTH, 3),
        "guidance": torch.full((batch,), 3.5),
    }


FLUX = Family(
    pipeline_class=FluxPipeline,
    components=_flux_components,
    denoiser=lambda seed: build(seed, _flux_transformer),
    call=lambda: _image_call(guidance=3.5, true_cfg_scale=2.0),
    inputs=_flux_inputs,
    latent_scale=(1, 8),
    latent=(1, _SIDE, _SIDE),
    patch=(1, 2),
    max_frames=1,
)


# --- Stable Diffusion 3 -----------------------------------------------------------------------------


def _sd3_transformer() -> SD3Transformer2DModel:
    """2 joint blocks (the last one context-pre-only), 2 heads x 16, 2x2 patches."""
    return SD3Transformer2DModel(
        sample_size=_SIDE,
        patch_size=2,
        in_channels=_LATENT_CHANNELS,
        out_channels=_LATENT_CHANNELS,
        num_layers=2,
        attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS,
        joint_attention_dim=TEXT_DIM,
        caption_projection_dim=INNER_DIM,
        pooled_projection_dim=2 * TEXT_DIM,
        pos_embed_max_size=4 * _SIDE,
    )


def _sd3_components(seed: int) -> dict[str, Any]:
    """Two CLIP encoders with projection, T5, the 8x VAE, flow-matching Euler (shift 3 like SD3)."""
    clip_l, clip_g, t5 = _clip_with_projection(seed, 0), _clip_with_projection(seed, 1), t5_text(seed)
    return {
        "transformer": build(seed, _sd3_transformer),
        "vae": build(seed, _vae),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
        "text_encoder": clip_l["text_encoder"],
        "tokenizer": clip_l["tokenizer"],
        "text_encoder_2": clip_g["text_encoder"],
        "tokenizer_2": clip_g["tokenizer"],
        "text_encoder_3": t5["text_encoder"],
        "tokenizer_3": t5["tokenizer"],
        "image_encoder": None,
        "feature_extractor": None,
    }


def _sd3_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    """Latents ``[B, 4, H, W]``, CLIP + T5 states ``[B, 77 + L, 32]``, pooled CLIP states ``[B, 64]``."""
    return {
        "hidden_states": torch.randn(batch, _LATENT_CHANNELS, height, width, generator=generator),
        "encoder_hidden_states": random_text(generator, batch, CLIP_LENGTH + T5_LENGTH),
        "pooled_projections": torch.randn(batch, 2 * TEXT_DIM, generator=generator),
        "timestep": torch.full((batch,), 500.0),
    }


SD3 = Family(
    pipeline_class=StableDiffusion3Pipeline,
    components=_sd3_components,
    denoiser=lambda seed: build(seed, _sd3_transformer),
    call=lambda: _image_call(guidance=5.0),
    inputs=_sd3_inputs,
    latent_scale=(1, 8),
    latent=(1, _SIDE, _SIDE),
    patch=(1, 2),
    max_frames=1,
)
