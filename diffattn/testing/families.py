"""Per-family recipes: tiny components, call kwargs and denoiser inputs, kept in one table.

Configs follow diffusers' own fast-test configs (tests/pipelines/*/test_*.py) with two changes: attention
heads are 2 x 16 everywhere (kernels need head_dim >= 16), and tokenizers are built in code instead of
being downloaded. Every component is built under its own fixed seed, so a denoiser built alone
(:func:`diffattn.testing.tiny_denoiser`) equals the one inside the pipeline.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from diffusers import (
    AnimateDiffPipeline,
    AutoencoderKL,
    AutoencoderKLCogVideoX,
    AutoencoderKLHunyuanVideo,
    AutoencoderKLLTXVideo,
    AutoencoderKLMochi,
    AutoencoderKLWan,
    CogVideoXDDIMScheduler,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
    ControlNetModel,
    DDIMScheduler,
    DiffusionPipeline,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideoPipeline,
    HunyuanVideoTransformer3DModel,
    LTXPipeline,
    LTXVideoTransformer3DModel,
    MochiPipeline,
    MochiTransformer3DModel,
    MotionAdapter,
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UNetMotionModel,
    WanPipeline,
    WanTransformer3DModel,
)
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid
from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

from diffattn.testing.text import (
    TEXT_DIM,
    clip_text_encoder,
    llama_encoder,
    llama_tokenizer,
    t5_encoder,
    t5_tokenizer,
    umt5_encoder,
    write_clip_tokenizer,
)
from diffattn.testing.video import sample_clip

__all__ = ["Family", "FAMILY_TABLE", "hunyuan_prompt_template", "seeded"]

HEADS, HEAD_DIM = 2, 16
INNER_DIM = HEADS * HEAD_DIM
T5_LENGTH = 16
"""Text length L used by the T5/Llama families (``max_sequence_length`` in the call kwargs)."""
CLIP_LENGTH = 77
PROMPT = "a painting of a squirrel eating a burger"
NEGATIVE_PROMPT = "blurry, bad quality"


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for a block without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclass(frozen=True)
class Family:
    """Everything needed to build and drive one family's tiny pipeline.

    ``components(seed)`` returns the pipeline's constructor kwargs; ``denoiser(seed)`` builds the
    transformer/UNet exactly as ``components`` does; ``inputs(batch, frames, height, width, generator)``
    returns forward kwargs for that denoiser at the given latent size; ``call()`` returns fresh pipeline call kwargs (no generator); ``latent`` is the
    latent (frames, height, width) they produce; ``patch`` is the denoiser's (temporal, spatial) patch,
    which latent sizes must be multiples of; ``max_frames`` bounds the latent frames (``None``: no bound).
    """

    pipeline_class: type[DiffusionPipeline]
    components: Callable[[int], dict[str, Any]]
    denoiser: Callable[[int], torch.nn.Module]
    call: Callable[[], dict[str, Any]]
    inputs: Callable[[int, int, int, int, torch.Generator], dict[str, Any]]
    latent_scale: tuple[int, int]
    latent: tuple[int, int, int]
    patch: tuple[int, int] = (1, 1)
    max_frames: int | None = None


def _build(seed: int, factory: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Run ``factory`` under ``seeded(seed)`` and return the module in eval mode."""
    with seeded(seed):
        return factory().eval()


def _text(generator: torch.Generator, batch: int, length: int, dim: int = TEXT_DIM) -> torch.Tensor:
    """Random text-encoder states ``[B, L, D]``."""
    return torch.randn(batch, length, dim, generator=generator)


def _timestep(batch: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A mid-schedule timestep for every batch element."""
    return torch.full((batch,), 500, dtype=dtype)


def _video_call(frames: int, size: int, guidance: float) -> dict[str, Any]:
    """Call kwargs shared by the T5-based text-to-video pipelines."""
    return {
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "num_frames": frames,
        "height": size,
        "width": size,
        "num_inference_steps": 2,
        "guidance_scale": guidance,
        "max_sequence_length": T5_LENGTH,
        "output_type": "pt",
    }


def _t5_text(seed: int, encoder: Callable = t5_encoder) -> dict[str, Any]:
    """T5-style tokenizer and a tiny encoder built under ``seed``."""
    tokenizer = t5_tokenizer()
    return {"tokenizer": tokenizer, "text_encoder": _build(seed, lambda: encoder(tokenizer))}


def _clip_tokenizer():
    """The run-time CLIP tokenizer (files written to a temporary directory, then loaded)."""
    with tempfile.TemporaryDirectory() as directory:
        return write_clip_tokenizer(directory)


def _clip_text(seed: int) -> dict[str, Any]:
    """CLIP tokenizer and a tiny CLIP text encoder built under ``seed``."""
    tokenizer = _clip_tokenizer()
    return {"tokenizer": tokenizer, "text_encoder": _build(seed, lambda: clip_text_encoder(tokenizer))}


# --- Wan 2.1 text-to-video --------------------------------------------------------------------------


def _wan_transformer() -> WanTransformer3DModel:
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
    vae = _build(
        seed,
        lambda: AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        ),
    )
    return {
        **_t5_text(seed, umt5_encoder),
        "transformer": _build(seed, _wan_transformer),
        "transformer_2": None,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
    }


def _wan_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(batch, 16, frames, height, width, generator=generator),
        "timestep": _timestep(batch),
        "encoder_hidden_states": _text(generator, batch, T5_LENGTH),
    }


# --- CogVideoX (5b style: rotary positions, so any text length works) -------------------------------

_COG_SAMPLE = 4  # latent height/width of the call size; the rotary grid's base size


def _cog_transformer() -> CogVideoXTransformer3DModel:
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
    vae = _build(
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
    return {**_t5_text(seed), "transformer": _build(seed, _cog_transformer), "vae": vae, "scheduler": scheduler}


def _cog_rotary(frames: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary tables exactly as ``CogVideoXPipeline._prepare_rotary_positional_embeddings`` builds them."""
    grid = (height // 2, width // 2)
    base = _COG_SAMPLE // 2
    crops = get_resize_crop_region_for_grid(grid, base, base)
    return get_3d_rotary_pos_embed(HEAD_DIM, crops, grid_size=grid, temporal_size=frames)


def _cog_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(batch, frames, 4, height, width, generator=generator),
        "encoder_hidden_states": _text(generator, batch, T5_LENGTH),
        "timestep": _timestep(batch, torch.long),
        "image_rotary_emb": _cog_rotary(frames, height, width),
    }


# --- HunyuanVideo -----------------------------------------------------------------------------------


def _hunyuan_transformer() -> HunyuanVideoTransformer3DModel:
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
    vae = _build(
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
    clip = _clip_text(seed)
    return {
        "transformer": _build(seed, _hunyuan_transformer),
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
        "text_encoder": _build(seed, lambda: llama_encoder(llama)),
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
    call = _video_call(frames=9, size=16, guidance=6.0)
    return {**call, "true_cfg_scale": 2.0, "prompt_template": hunyuan_prompt_template()}


def _hunyuan_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(batch, 4, frames, height, width, generator=generator),
        "timestep": _timestep(batch),
        "encoder_hidden_states": _text(generator, batch, T5_LENGTH),
        "encoder_attention_mask": torch.ones(batch, T5_LENGTH, dtype=torch.long),
        "pooled_projections": torch.randn(batch, TEXT_DIM, generator=generator),
        "guidance": torch.full((batch,), 6000.0),
    }


# --- LTX-Video --------------------------------------------------------------------------------------


def _ltx_transformer() -> LTXVideoTransformer3DModel:
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
    vae = _build(
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
        **_t5_text(seed),
        "transformer": _build(seed, _ltx_transformer),
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
    }


def _ltx_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(batch, frames * height * width, 8, generator=generator),
        "encoder_hidden_states": _text(generator, batch, T5_LENGTH),
        "timestep": _timestep(batch),
        "encoder_attention_mask": torch.ones(batch, T5_LENGTH, dtype=torch.long),
        "num_frames": frames,
        "height": height,
        "width": width,
        "rope_interpolation_scale": (4 / 25, 4, 4),
    }


# --- Mochi ------------------------------------------------------------------------------------------


def _mochi_transformer() -> MochiTransformer3DModel:
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
    vae = _build(
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
        **_t5_text(seed),
        "transformer": _build(seed, _mochi_transformer),
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
    }


def _mochi_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    return {
        "hidden_states": torch.randn(batch, 12, frames, height, width, generator=generator),
        "encoder_hidden_states": _text(generator, batch, T5_LENGTH),
        "timestep": _timestep(batch),
        "encoder_attention_mask": torch.ones(batch, T5_LENGTH, dtype=torch.long),
    }


# --- Stable Diffusion 1.x, + ControlNet, AnimateDiff ------------------------------------------------

_SD_BLOCKS = (32, 64)
_SD_HEADS = (2, 4)  # UNet2DConditionModel's `attention_head_dim` is really the head count: 16 per head
_SD_SAMPLE = 8  # latent size of the call (64 px)


def _sd_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        block_out_channels=_SD_BLOCKS,
        layers_per_block=1,
        sample_size=_SD_SAMPLE,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=_SD_HEADS,
        norm_num_groups=8,
    )


def _sd_vae() -> AutoencoderKL:
    """4-level KL VAE (8x spatial compression like SD's) with 8 channels per level."""
    return AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        sample_size=8 * _SD_SAMPLE,
    )


def _ddim(beta_schedule: str) -> DDIMScheduler:
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
    return {
        **_clip_text(seed),
        "unet": _build(seed, _sd_unet),
        "vae": _build(seed, _sd_vae),
        "scheduler": _ddim("scaled_linear"),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


def _controlnet() -> ControlNetModel:
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
    return {**_sd_components(seed), "controlnet": _build(seed, _controlnet)}


def _sd_call(guidance: float = 7.5) -> dict[str, Any]:
    size = 8 * _SD_SAMPLE
    return {
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "height": size,
        "width": size,
        "num_inference_steps": 2,
        "guidance_scale": guidance,
        "output_type": "pt",
    }


def _controlnet_call() -> dict[str, Any]:
    size = 8 * _SD_SAMPLE
    return {**_sd_call(), "image": sample_clip(1, size, size)}


def _sd_inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    """UNet inputs; video frames are folded into the batch (``B*F`` images), as image models see videos."""
    images = batch * frames
    return {
        "sample": torch.randn(images, 4, height, width, generator=generator),
        "timestep": _timestep(images, torch.long),
        "encoder_hidden_states": _text(generator, images, CLIP_LENGTH),
    }


def _motion_adapter() -> MotionAdapter:
    return MotionAdapter(
        block_out_channels=_SD_BLOCKS,
        motion_layers_per_block=1,
        motion_norm_num_groups=8,
        motion_num_attention_heads=_SD_HEADS,
        motion_max_seq_length=32,
    )


def _animatediff_denoiser(seed: int) -> UNetMotionModel:
    """The UNetMotionModel that ``AnimateDiffPipeline`` assembles from the 2D UNet and the adapter."""
    return UNetMotionModel.from_unet2d(_build(seed, _sd_unet), _build(seed, _motion_adapter)).eval()


def _animatediff_components(seed: int) -> dict[str, Any]:
    return {
        **_clip_text(seed),
        "unet": _build(seed, _sd_unet),
        "motion_adapter": _build(seed, _motion_adapter),
        "vae": _build(seed, _sd_vae),
        "scheduler": _ddim("linear"),
        "feature_extractor": None,
        "image_encoder": None,
    }


def _animatediff_inputs(
    batch: int, frames: int, height: int, width: int, generator: torch.Generator
) -> dict[str, Any]:
    """Like ``AnimateDiffPipeline``: one prompt per video, its text states repeated for every frame."""
    return {
        "sample": torch.randn(batch, 4, frames, height, width, generator=generator),
        "timestep": _timestep(batch, torch.long),
        "encoder_hidden_states": _text(generator, batch, CLIP_LENGTH).repeat_interleave(frames, dim=0),
    }


FAMILY_TABLE: dict[str, Family] = {
    "wan": Family(
        WanPipeline,
        _wan_components,
        lambda seed: _build(seed, _wan_transformer),
        lambda: _video_call(frames=9, size=32, guidance=5.0),
        _wan_inputs,
        latent_scale=(4, 8),
        latent=(3, 4, 4),
        patch=(1, 2),
    ),
    "cogvideox": Family(
        CogVideoXPipeline,
        _cog_components,
        lambda seed: _build(seed, _cog_transformer),
        lambda: _video_call(frames=9, size=8 * _COG_SAMPLE, guidance=6.0),
        _cog_inputs,
        latent_scale=(4, 8),
        latent=(3, _COG_SAMPLE, _COG_SAMPLE),
        patch=(1, 2),
    ),
    "hunyuanvideo": Family(
        HunyuanVideoPipeline,
        _hunyuan_components,
        lambda seed: _build(seed, _hunyuan_transformer),
        _hunyuan_call,
        _hunyuan_inputs,
        latent_scale=(4, 8),
        latent=(3, 2, 2),
    ),
    "ltx": Family(
        LTXPipeline,
        _ltx_components,
        lambda seed: _build(seed, _ltx_transformer),
        lambda: _video_call(frames=9, size=32, guidance=3.0),
        _ltx_inputs,
        latent_scale=(4, 4),
        latent=(3, 8, 8),
    ),
    "mochi": Family(
        MochiPipeline,
        _mochi_components,
        lambda seed: _build(seed, _mochi_transformer),
        lambda: _video_call(frames=7, size=32, guidance=4.5),
        _mochi_inputs,
        latent_scale=(6, 8),
        latent=(2, 4, 4),
        patch=(1, 2),
    ),
    "sd": Family(
        StableDiffusionPipeline,
        _sd_components,
        lambda seed: _build(seed, _sd_unet),
        _sd_call,
        _sd_inputs,
        latent_scale=(1, 8),
        latent=(1, _SD_SAMPLE, _SD_SAMPLE),
    ),
    "sd-controlnet": Family(
        StableDiffusionControlNetPipeline,
        _controlnet_components,
        lambda seed: _build(seed, _sd_unet),
        _controlnet_call,
        _sd_inputs,
        latent_scale=(1, 8),
        latent=(1, _SD_SAMPLE, _SD_SAMPLE),
    ),
    "animatediff": Family(
        AnimateDiffPipeline,
        _animatediff_components,
        _animatediff_denoiser,
        lambda: {**_sd_call(), "num_frames": 8},
        _animatediff_inputs,
        latent_scale=(1, 8),
        latent=(8, _SD_SAMPLE, _SD_SAMPLE),
        max_frames=32,
    ),
}
"""Recipe of every family, keyed by the names in :data:`diffattn.testing.FAMILIES`."""
