"""Tiny recipes for the video transformers: Wan 2.1, CogVideoX, HunyuanVideo, LTX-Video and Mochi."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from diffusers import (
    AutoencoderKLCogVideoX,
    AutoencoderKLHunyuanVideo,
    AutoencoderKLLTXVideo,
    AutoencoderKLMochi,
    AutoencoderKLWan,
    CogVideoXDDIMScheduler,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideoPipeline,
    HunyuanVideoTransformer3DModel,
    LTXPipeline,
    LTXVideoTransformer3DModel,
    MochiPipeline,
    MochiTransformer3DModel,
    WanPipeline,
    WanTransformer3DModel,
)
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid
from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

from diffattn.testing.recipe import (
    HEAD_DIM,
    HEADS,
    INNER_DIM,
    T5_LENGTH,
    Family,
    build,
    clip_text,
    random_text,
    t5_text,
    timesteps,
    video_call,
)
from diffattn.testing.text import TEXT_DIM, llama_encoder, llama_tokenizer, umt5_encoder

__all__ = ["WAN", "COGVIDEOX", "HUNYUANVIDEO", "LTX", "MOCHI", "hunyuan_prompt_template"]


# --- Wan 2.1 text-to-video --------------------------------------------------------------------------


def _wan_transformer() -> WanTransformer3DModel:
    """2 blocks, 2 heads x 16, 2x2 spatial patches, per-head-concatenated RMS q/k norm like Wan 2.1."""
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM,
        in_channels=16,
        out_channels=16,
        text_dim=TEXT_DIM,
        freq_dim=256,
        ffn_dim=2 * INNER_DIM,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def _wan_components(seed: int) -> dict[str, Any]:
    """UMT5 text encoder and diffusers' test VAE (8x spatial, 4x temporal, 16 latent channels)."""
    vae = build(
        seed,
        lambda: AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        ),
    )
    return {
        **t5_text(seed, umt5_encoder),
        "transformer": build(seed, _wan_transformer),
        "transformer_2": None,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
    }


def _wan_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    """Latents ``[B, 16, F, H, W]``, a timestep per sample, T5 states ``[B, L, 32]``."""
    return {
        "hidden_states": torch.randn(batch, 16, frames, height, width, generator=generator),
        "timestep": timesteps(batch),
        "encoder_hidden_states": random_text(generator, batch, T5_LENGTH),
    }


WAN = Family(
    pipeline_class=WanPipeline,
    components=_wan_components,
    denoiser=lambda seed: build(seed, _wan_transformer),
    call=lambda: video_call(frames=9, size=32, guidance=5.0),
    inputs=_wan_inputs,
    latent_scale=(4, 8),
    latent=(3, 4, 4),
    patch=(1, 2),
)


# --- CogVideoX (5b style: rotary positions, so any text length works) -------------------------------

_COG_SAMPLE = 4  # latent height/width of the call size; the rotary grid's base size


def _cog_transformer() -> CogVideoXTransformer3DModel:
    """2 blocks, 2 heads x 16, 2x2 patches, 3D rotary positions (CogVideoX-5b style)."""
    return CogVideoXTransformer3DModel(
        num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM,
        in_channels=4,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=TEXT_DIM,
        num_layers=2,
        sample_width=_COG_SAMPLE,
        sample_height=_COG_SAMPLE,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=T5_LENGTH,
        use_rotary_positional_embeddings=True,
    )


def _cog_components(seed: int) -> dict[str, Any]:
    """T5, diffusers' test VAE (8x/4x), and CogVideoX's own DDIM (v-prediction, zero terminal SNR)."""
    vae = build(
        seed,
        lambda: AutoencoderKLCogVideoX(
            down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=2,
            temporal_compression_ratio=4,
        ),
    )
    scheduler = CogVideoXDDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        snr_shift_scale=3.0,
        timestep_spacing="trailing",
    )
    return {**t5_text(seed), "transformer": build(seed, _cog_transformer), "vae": vae, "scheduler": scheduler}


def _cog_rotary(frames: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary tables exactly as ``CogVideoXPipeline._prepare_rotary_positional_embeddings`` builds them."""
    grid = (height // 2, width // 2)
    base = _COG_SAMPLE // 2
    crops = get_resize_crop_region_for_grid(grid, base, base)
    return get_3d_rotary_pos_embed(HEAD_DIM, crops, grid_size=grid, temporal_size=frames)


def _cog_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    """Latents ``[B, F, 4, H, W]`` (frames before channels), T5 states, and the rotary tables."""
    return {
        "hidden_states": torch.randn(batch, frames, 4, height, width, generator=generator),
        "encoder_hidden_states": random_text(generator, batch, T5_LENGTH),
        "timestep": timesteps(batch, torch.long),
        "image_rotary_emb": _cog_rotary(frames, height, width),
    }


COGVIDEOX = Family(
    pipeline_class=CogVideoXPipeline,
    components=_cog_components,
    denoiser=lambda seed: build(seed, _cog_transformer),
    call=lambda: video_call(frames=9, size=8 * _COG_SAMPLE, guidance=6.0),
    inputs=_cog_inputs,
    latent_scale=(4, 8),
    latent=(3, _COG_SAMPLE, _COG_SAMPLE),
    patch=(1, 2),
)


# --- HunyuanVideo -----------------------------------------------------------------------------------


def _hunyuan_transformer() -> HunyuanVideoTransformer3DModel:
    """1 dual-stream + 1 single-stream block, 2 heads x 16 (rotary axes 4+6+6), 1x1 patches, guidance-distilled."""
    return HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=TEXT_DIM,
        pooled_projection_dim=TEXT_DIM,
        rope_axes_dim=(4, 6, 6),
    )


def _hunyuan_components(seed: int) -> dict[str, Any]:
    """Llama + CLIP text encoders with run-time tokenizers, diffusers' test VAE (8x spatial, 4x temporal)."""
    vae = build(
        seed,
        lambda: AutoencoderKLHunyuanVideo(
            latent_channels=4,
            down_block_types=("HunyuanVideoDownBlock3D",) * 4,
            up_block_types=("HunyuanVideoUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            layers_per_block=1,
            norm_num_groups=4,
            scaling_factor=0.476986,
            spatial_compression_ratio=8,
            temporal_compression_ratio=4,
            mid_block_add_attention=True,
        ),
    )
    llama = llama_tokenizer()
    clip = clip_text(seed)
    return {
        "transformer": build(seed, _hunyuan_transformer),
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
        "text_encoder": build(seed, lambda: llama_encoder(llama)),
        "tokenizer": llama,
        "text_encoder_2": clip["text_encoder"],
        "tokenizer_2": clip["tokenizer"],
    }


@lru_cache(maxsize=1)
def _hunyuan_crop_start() -> int:
    """Tokens of the default template's system prompt (up to the user text) for the tiny Llama tokenizer."""
    prefix = DEFAULT_PROMPT_TEMPLATE["template"].split("{}")[0]
    return len(llama_tokenizer()(prefix).input_ids)


def hunyuan_prompt_template() -> dict[str, Any]:
    """HunyuanVideo's default template with ``crop_start`` counted by the tiny Llama tokenizer.

    The stock ``crop_start=95`` counts Llama-3 tokens of the system prompt; the tiny word-level
    tokenizer needs fewer (92), so the call kwargs pass this template to crop exactly the system prompt.
    """
    return {"template": DEFAULT_PROMPT_TEMPLATE["template"], "crop_start": _hunyuan_crop_start()}


def _hunyuan_call() -> dict[str, Any]:
    """Embedded guidance plus true CFG (``true_cfg_scale`` > 1 with a negative prompt), so both paths run."""
    call = video_call(frames=9, size=16, guidance=6.0)
    return {**call, "true_cfg_scale": 2.0, "prompt_template": hunyuan_prompt_template()}


def _hunyuan_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    """Latents ``[B, 4, F, H, W]``, Llama states with mask, pooled CLIP states, embedded guidance 6 (x1000)."""
    return {
        "hidden_states": torch.randn(batch, 4, frames, height, width, generator=generator),
        "timestep": timesteps(batch),
        "encoder_hidden_states": random_text(generator, batch, T5_LENGTH),
        "encoder_attention_mask": torch.ones(batch, T5_LENGTH, dtype=torch.long),
        "pooled_projections": torch.randn(batch, TEXT_DIM, generator=generator),
        "guidance": torch.full((batch,), 6000.0),
    }


HUNYUANVIDEO = Family(
    pipeline_class=HunyuanVideoPipeline,
    components=_hunyuan_components,
    denoiser=lambda seed: build(seed, _hunyuan_transformer),
    call=_hunyuan_call,
    inputs=_hunyuan_inputs,
    latent_scale=(4, 8),
    latent=(3, 2, 2),
)


# --- LTX-Video --------------------------------------------------------------------------------------


def _ltx_transformer() -> LTXVideoTransformer3DModel:
    """2 blocks, 2 heads x 16, 1x1x1 patches (LTX packs latents into a token sequence before the model)."""
    return LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM,
        cross_attention_dim=INNER_DIM,
        num_layers=2,
        caption_channels=TEXT_DIM,
    )


def _ltx_components(seed: int) -> dict[str, Any]:
    """diffusers' test VAE (4x spatial and temporal compression, decoder mirroring the encoder)."""
    vae = build(
        seed,
        lambda: AutoencoderKLLTXVideo(
            latent_channels=8,
            block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
            patch_size=1,
            patch_size_t=1,
            encoder_causal=True,
            decoder_causal=False,
        ),
    )
    return {
        **t5_text(seed),
        "transformer": build(seed, _ltx_transformer),
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
    }


def _ltx_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    """Packed latents ``[B, F*H*W, 8]`` plus the grid and the rope scale ``LTXPipeline`` passes (25 fps)."""
    return {
        "hidden_states": torch.randn(batch, frames * height * width, 8, generator=generator),
        "encoder_hidden_states": random_text(generator, batch, T5_LENGTH),
        "timestep": timesteps(batch),
        "encoder_attention_mask": torch.ones(batch, T5_LENGTH, dtype=torch.long),
        "num_frames": frames,
        "height": height,
        "width": width,
        "rope_interpolation_scale": (4 / 25, 4, 4),
    }


LTX = Family(
    pipeline_class=LTXPipeline,
    components=_ltx_components,
    denoiser=lambda seed: build(seed, _ltx_transformer),
    call=lambda: video_call(frames=9, size=32, guidance=3.0),
    inputs=_ltx_inputs,
    latent_scale=(4, 4),
    latent=(3, 8, 8),
)


# --- Mochi ------------------------------------------------------------------------------------------


def _mochi_transformer() -> MochiTransformer3DModel:
    """2 blocks, 2 heads x 16, 2x2 patches, SwiGLU, like diffusers' test config."""
    model = MochiTransformer3DModel(
        patch_size=2,
        num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM,
        num_layers=2,
        pooled_projection_dim=16,
        in_channels=12,
        qk_norm="rms_norm",
        text_embed_dim=TEXT_DIM,
        time_embed_dim=4,
        activation_fn="swiglu",
        max_sequence_length=T5_LENGTH,
    )
    # Mochi learns its rotary frequencies and initialises them to zero (no positional signal); give them
    # small random values so the tiny model is position-aware like the real one.
    torch.nn.init.normal_(model.pos_frequencies, std=0.1)
    return model


def _mochi_components(seed: int) -> dict[str, Any]:
    """T5 and diffusers' test VAE (8x spatial, 6x temporal, 12 latent channels)."""
    vae = build(
        seed,
        lambda: AutoencoderKLMochi(
            latent_channels=12,
            out_channels=3,
            encoder_block_out_channels=(32, 32, 32, 32),
            decoder_block_out_channels=(32, 32, 32, 32),
            layers_per_block=(1, 1, 1, 1, 1),
        ),
    )
    return {
        **t5_text(seed),
        "transformer": build(seed, _mochi_transformer),
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
    }


def _mochi_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    """Latents ``[B, 12, F, H, W]``, T5 states with mask."""
    return {
        "hidden_states": torch.randn(batch, 12, frames, height, width, generator=generator),
        "encoder_hidden_states": random_text(generator, batch, T5_LENGTH),
        "timestep": timesteps(batch),
        "encoder_attention_mask": torch.ones(batch, T5_LENGTH, dtype=torch.long),
    }


MOCHI = Family(
    pipeline_class=MochiPipeline,
    components=_mochi_components,
    denoiser=lambda seed: build(seed, _mochi_transformer),
    call=lambda: video_call(frames=7, size=32, guidance=4.5),
    inputs=_mochi_inputs,
    latent_scale=(6, 8),
    latent=(2, 4, 4),
    patch=(1, 2),
)
