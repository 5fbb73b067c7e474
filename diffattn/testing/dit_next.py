"""Tiny recipes for the newer non-Wan video transformers: HunyuanVideo 1.5 and LTX-2 (a transformer only).

HunyuanVideo 1.5's pipeline encodes prompts with Qwen2.5-VL and ByT5 (a glyph encoder); the tiny pipeline has
neither (``text_encoder``/``tokenizer`` and their ``_2`` pair are ``None``), and its call kwargs pass both
encoders' states and masks directly (random, fixed; the negative prompt padded to 10 of 16 tokens), so the
transformer sees what the real pipeline gives it. CFG comes from the pipeline's ``guider`` component.

LTX-2's pipeline needs a Gemma 3 text encoder, text connectors, an audio VAE and a vocoder; its recipe has the
transformer alone (``pipeline_class=None``): :func:`~diffattn.testing.tiny_denoiser` and
:func:`~diffattn.testing.tiny_denoiser_inputs` serve it, :func:`~diffattn.testing.tiny_pipeline` refuses it.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AutoencoderKLHunyuanVideo15,
    ClassifierFreeGuidance,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideo15Pipeline,
    HunyuanVideo15Transformer3DModel,
    LTX2VideoTransformer3DModel,
)

from diffattn.testing.recipe import HEAD_DIM, HEADS, INNER_DIM, T5_LENGTH, Family, build, random_text, timesteps
from diffattn.testing.text import TEXT_DIM

__all__ = ["HUNYUANVIDEO15", "LTX2"]


# --- HunyuanVideo 1.5: joint attention over video, image, ByT5 and MLLM tokens ----------------------------

_HV15_LATENT = 4
_BYT5_DIM, _BYT5_LENGTH = 24, 8
_IMAGE_DIM = 20  # SigLIP states; the T2V pipeline passes 729 zero tokens, masked out


def _hv15_transformer() -> HunyuanVideo15Transformer3DModel:
    """2 blocks, 2 heads x 16 (rotary axes 4+6+6), 1x1 patches; input: latents, condition latents and a mask."""
    return HunyuanVideo15Transformer3DModel(
        in_channels=2 * _HV15_LATENT + 1,
        out_channels=_HV15_LATENT,
        num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM,
        num_layers=2,
        num_refiner_layers=1,
        text_embed_dim=TEXT_DIM,
        text_embed_2_dim=_BYT5_DIM,
        image_embed_dim=_IMAGE_DIM,
        rope_axes_dim=(4, 6, 6),
        target_size=32,
        task_type="t2v",
    )


def _hv15_components(seed: int) -> dict[str, Any]:
    """The transformer, a 16x spatial / 4x temporal VAE and CFG 6 through a guider; no text encoders."""
    vae = build(seed, lambda: AutoencoderKLHunyuanVideo15(
        latent_channels=_HV15_LATENT, block_out_channels=(8, 8, 8, 8, 8), layers_per_block=1,
        spatial_compression_ratio=16, temporal_compression_ratio=4,
    ))
    return {
        "transformer": build(seed, _hv15_transformer),
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
        "text_encoder": None,
        "tokenizer": None,
        "text_encoder_2": None,
        "tokenizer_2": None,
        "guider": ClassifierFreeGuidance(guidance_scale=6.0),
    }


def _padding_mask(batch: int, length: int, valid: int) -> torch.Tensor:
    return (torch.arange(length) < valid).long().expand(batch, length).clone()


def _hv15_call() -> dict[str, Any]:
    """MLLM states ``[1, 16, 32]`` and ByT5 states ``[1, 8, 24]`` with masks, for the prompt and the negative prompt."""
    generator = torch.Generator().manual_seed(0)
    call: dict[str, Any] = {"num_frames": 9, "height": 32, "width": 32, "num_inference_steps": 2, "output_type": "pt"}
    for prefix, valid in (("", T5_LENGTH), ("negative_", 10)):
        call[f"{prefix}prompt_embeds"] = random_text(generator, 1, T5_LENGTH)
        call[f"{prefix}prompt_embeds_mask"] = _padding_mask(1, T5_LENGTH, valid)
        call[f"{prefix}prompt_embeds_2"] = torch.randn(1, _BYT5_LENGTH, _BYT5_DIM, generator=generator)
        call[f"{prefix}prompt_embeds_mask_2"] = _padding_mask(1, _BYT5_LENGTH, _BYT5_LENGTH)
    return call


def _hv15_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    """Latents ``[B, 9, F, H, W]``, MLLM and ByT5 states with masks, zero image states (text-to-video)."""
    return {
        "hidden_states": torch.randn(batch, 2 * _HV15_LATENT + 1, frames, height, width, generator=generator),
        "timestep": timesteps(batch),
        "encoder_hidden_states": random_text(generator, batch, T5_LENGTH),
        "encoder_attention_mask": _padding_mask(batch, T5_LENGTH, T5_LENGTH),
        "encoder_hidden_states_2": torch.randn(batch, _BYT5_LENGTH, _BYT5_DIM, generator=generator),
        "encoder_attention_mask_2": _padding_mask(batch, _BYT5_LENGTH, _BYT5_LENGTH),
        "image_embeds": torch.zeros(batch, 9, _IMAGE_DIM),
    }


HUNYUANVIDEO15 = Family(
    pipeline_class=HunyuanVideo15Pipeline,
    components=_hv15_components,
    denoiser=lambda seed: build(seed, _hv15_transformer),
    call=_hv15_call,
    inputs=_hv15_inputs,
    latent_scale=(4, 16),
    latent=(3, 2, 2),
)


# --- LTX-2: packed video tokens (as LTX-Video) beside an audio token stream -----------------------------

_LTX2_AUDIO_CHANNELS, _LTX2_AUDIO_FRAMES = 4, 5


def _ltx2_transformer() -> LTX2VideoTransformer3DModel:
    """2 audio-video blocks, 2 heads x 16 in both streams, 1x1x1 video patches."""
    return LTX2VideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM,
        cross_attention_dim=INNER_DIM,
        audio_in_channels=_LTX2_AUDIO_CHANNELS,
        audio_out_channels=_LTX2_AUDIO_CHANNELS,
        audio_num_attention_heads=HEADS,
        audio_attention_head_dim=HEAD_DIM,
        audio_cross_attention_dim=INNER_DIM,
        num_layers=2,
        caption_channels=TEXT_DIM,
    )


def _ltx2_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    """Packed video latents ``[B, F*H*W, 8]`` with the grid, audio latents ``[B, 5, 4]``, text states for both."""
    mask = _padding_mask(batch, T5_LENGTH, T5_LENGTH)
    return {
        "hidden_states": torch.randn(batch, frames * height * width, 8, generator=generator),
        "audio_hidden_states": torch.randn(batch, _LTX2_AUDIO_FRAMES, _LTX2_AUDIO_CHANNELS, generator=generator),
        "encoder_hidden_states": random_text(generator, batch, T5_LENGTH),
        "audio_encoder_hidden_states": random_text(generator, batch, T5_LENGTH),
        "timestep": timesteps(batch),
        "encoder_attention_mask": mask,
        "audio_encoder_attention_mask": mask,
        "num_frames": frames,
        "height": height,
        "width": width,
        "audio_num_frames": _LTX2_AUDIO_FRAMES,
    }


LTX2 = Family(
    pipeline_class=None,
    components=None,
    denoiser=lambda seed: build(seed, _ltx2_transformer),
    call=None,
    inputs=_ltx2_inputs,
    latent_scale=(8, 32),
    latent=(3, 8, 8),
)
