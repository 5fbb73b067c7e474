"""Tiny recipe for Flux 2 through its Klein pipeline: a Qwen3 text encoder, packed 2x2 latents with 4-axis position
ids, text first in joint attention, true CFG against an empty prompt (the base, non-distilled Klein)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from diffattn.testing.qwen_image import qwen_tokenizer
from diffattn.testing.recipe import HEAD_DIM, HEADS, PROMPT, Family, build
from diffattn.testing.text import TEXT_DIM

__all__ = ["FLUX2"]

_LATENT_CHANNELS = 4
_SIDE = 8
"""Latent height and width of the call size (64 x 64 pixels through the 8x VAE) before 2x2 packing."""
_TEXT_LENGTH = 32
"""Text length L: Klein pads every prompt to ``max_sequence_length`` (its chat template alone is 12 tokens)."""
_TEXT_LAYERS = (1, 2, 3)
"""Encoder hidden states the pipeline stacks into the text states (every layer of the 3-layer tiny encoder)."""
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and not enable_thinking %}"
    "<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
"""Qwen3's chat layout (user turn, then the assistant turn with an empty thinking block when thinking is off)."""


def _qwen3_encoder(tokenizer: PreTrainedTokenizerFast) -> Qwen3ForCausalLM:
    """Random 3-layer Qwen3 (2 heads x 16)."""
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=2 * TEXT_DIM,
        num_hidden_layers=len(_TEXT_LAYERS),
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return Qwen3ForCausalLM(config).eval()


def _transformer() -> Flux2Transformer2DModel:
    """1 dual-stream + 1 single-stream block, 2 heads x 16 (rotary axes 4+4+4+4), no guidance embedding (base Klein)."""
    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4 * _LATENT_CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS,
        joint_attention_dim=len(_TEXT_LAYERS) * TEXT_DIM,
        timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    )


def _components(seed: int) -> dict[str, Any]:
    """The Qwen3 encoder with a run-time tokenizer, Flux 2's VAE (8x, 2x2 patches, batch-norm statistics)."""
    tokenizer = qwen_tokenizer(extra_specials=("<think>", "</think>"), chat_template=_CHAT_TEMPLATE)
    vae = build(
        seed,
        lambda: AutoencoderKLFlux2(
            block_out_channels=(8, 8, 8, 8),
            latent_channels=_LATENT_CHANNELS,
            layers_per_block=1,
            norm_num_groups=2,
            sample_size=8 * _SIDE,
        ),
    )
    return {
        "transformer": build(seed, _transformer),
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "text_encoder": build(seed, lambda: _qwen3_encoder(tokenizer)),
        "tokenizer": tokenizer,
        "is_distilled": False,
    }


def _call() -> dict[str, Any]:
    """64 x 64 pixels, 2 steps, CFG (Klein has no ``negative_prompt`` argument: its negative is the empty prompt)."""
    return {
        "prompt": PROMPT,
        "height": 8 * _SIDE,
        "width": 8 * _SIDE,
        "num_inference_steps": 2,
        "guidance_scale": 4.0,
        "max_sequence_length": _TEXT_LENGTH,
        "text_encoder_out_layers": _TEXT_LAYERS,
        "output_type": "pt",
    }


def _positions(batch: int, rows: int, columns: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``img_ids`` ``[B, rows * columns, 4]`` (0, row, column, 0) and ``txt_ids`` ``[B, length, 4]`` (0, 0, 0, index),
    as the pipeline builds them."""
    zero = torch.arange(1)
    img = torch.cartesian_prod(zero, torch.arange(rows), torch.arange(columns), zero)
    txt = torch.cartesian_prod(zero, zero, zero, torch.arange(length))
    return img.expand(batch, -1, -1), txt.expand(batch, -1, -1)


def _inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    """Packed latents ``[B, H/2 * W/2, 16]``, stacked Qwen3 states ``[B, L, 96]``, position ids, a timestep in [0, 1]."""
    rows, columns = height // 2, width // 2
    img_ids, txt_ids = _positions(batch, rows, columns, _TEXT_LENGTH)
    return {
        "hidden_states": torch.randn(batch, rows * columns, 4 * _LATENT_CHANNELS, generator=generator),
        "encoder_hidden_states": torch.randn(batch, _TEXT_LENGTH, len(_TEXT_LAYERS) * TEXT_DIM, generator=generator),
        "timestep": torch.full((batch,), 0.5),
        "img_ids": img_ids,
        "txt_ids": txt_ids,
    }


FLUX2 = Family(
    pipeline_class=Flux2KleinPipeline,
    components=_components,
    denoiser=lambda seed: build(seed, _transformer),
    call=_call,
    inputs=_inputs,
    latent_scale=(1, 8),
    latent=(1, _SIDE, _SIDE),
    patch=(1, 2),
    max_frames=1,
)
