"""Tiny recipe for QwenImage: a Qwen2.5-VL text encoder, packed 2x2 latents, text first in joint attention.

QwenImage's pipeline drops the first 34 tokens of its prompt template (the system prompt) from the text states.
The tiny word-level tokenizer keeps newlines as tokens, so that prefix is exactly 34 tokens for it too and the
denoiser sees the user's prompt only, as with the real tokenizer.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline, QwenImageTransformer2DModel
from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from diffattn.testing.recipe import HEAD_DIM, HEADS, NEGATIVE_PROMPT, PROMPT, T5_LENGTH, Family, build, random_text
from diffattn.testing.text import TEXT_DIM, _word_level

__all__ = ["QWENIMAGE", "qwen_tokenizer"]

_LATENT_CHANNELS = 16
_SIDE = 8
"""Latent height and width of the call size (64 x 64 pixels through the 8x VAE)."""
_QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "\n", "<unk>")


def qwen_tokenizer(
    model_max_length: int = 2048, extra_specials: tuple[str, ...] = (), chat_template: str | None = None
) -> PreTrainedTokenizerFast:
    """Qwen2-style fast tokenizer: chat specials (plus `extra_specials`), newline as a token, pads with
    ``<|endoftext|>`` on the right; `chat_template` serves pipelines that call ``apply_chat_template``."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_word_level(_QWEN_SPECIALS + extra_specials, unk="<unk>"),
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        model_max_length=model_max_length,
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def _qwen_encoder(tokenizer: PreTrainedTokenizerFast) -> Qwen2_5_VLForConditionalGeneration:
    """Random Qwen2.5-VL (2 text layers, 2 heads x 16, multimodal rotary sections 2+3+3; a 1-block vision tower the
    text-only prompts never use)."""
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": TEXT_DIM,
        "intermediate_size": 2 * TEXT_DIM,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": tokenizer.model_max_length,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
        "bos_token_id": None,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = {
        "depth": 1, "hidden_size": TEXT_DIM, "intermediate_size": TEXT_DIM, "num_heads": 2,
        "out_hidden_size": TEXT_DIM, "fullatt_block_indexes": [0],
    }
    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision)).eval()


def _transformer() -> QwenImageTransformer2DModel:
    """2 dual-stream blocks, 2 heads x 16 (rotary axes 4+6+6), 2x2 patches over 16 latent channels."""
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=4 * _LATENT_CHANNELS,
        out_channels=_LATENT_CHANNELS,
        num_layers=2,
        attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS,
        joint_attention_dim=TEXT_DIM,
        axes_dims_rope=(4, 6, 6),
    )


def _components(seed: int) -> dict[str, Any]:
    """The Qwen2.5-VL encoder with the run-time tokenizer, QwenImage's VAE (8x spatial), flow-matching Euler."""
    tokenizer = qwen_tokenizer()
    vae = build(
        seed,
        lambda: AutoencoderKLQwenImage(
            base_dim=3, z_dim=_LATENT_CHANNELS, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
            temperal_downsample=[False, True, True],
            latents_mean=[0.0] * _LATENT_CHANNELS, latents_std=[1.0] * _LATENT_CHANNELS,
        ),
    )
    return {
        "transformer": build(seed, _transformer),
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "text_encoder": build(seed, lambda: _qwen_encoder(tokenizer)),
        "tokenizer": tokenizer,
    }


def _call() -> dict[str, Any]:
    """64 x 64 pixels, 2 steps, true CFG (QwenImage is not guidance-distilled: ``true_cfg_scale`` with a negative
    prompt runs the conditional and unconditional calls one after the other)."""
    return {
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "true_cfg_scale": 4.0,
        "height": 8 * _SIDE,
        "width": 8 * _SIDE,
        "num_inference_steps": 2,
        "max_sequence_length": T5_LENGTH,
        "output_type": "pt",
    }


def _inputs(batch: int, frames: int, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    """Packed latents ``[B, H/2 * W/2, 64]`` with ``img_shapes``, unpadded text states (the pipeline passes no mask
    then), a timestep in [0, 1]."""
    rows, columns = height // 2, width // 2
    return {
        "hidden_states": torch.randn(batch, rows * columns, 4 * _LATENT_CHANNELS, generator=generator),
        "encoder_hidden_states": random_text(generator, batch, T5_LENGTH),
        "timestep": torch.full((batch,), 0.5),
        "img_shapes": [[(1, rows, columns)]] * batch,
    }


QWENIMAGE = Family(
    pipeline_class=QwenImagePipeline,
    components=_components,
    denoiser=lambda seed: build(seed, _transformer),
    call=_call,
    inputs=_inputs,
    latent_scale=(1, 8),
    latent=(1, _SIDE, _SIDE),
    patch=(1, 2),
    max_frames=1,
)
