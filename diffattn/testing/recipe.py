"""What a family recipe is, and the helpers every recipe shares.

Configs follow diffusers' own fast-test configs (tests/pipelines/*/test_*.py) with two changes: attention
heads are 2 x 16 everywhere (kernels need head_dim >= 16), and tokenizers are built in code instead of
being downloaded. Every component is built under its own fixed seed, so a denoiser built alone equals
the one inside the pipeline.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DiffusionPipeline

from diffattn.testing.text import TEXT_DIM, clip_text_encoder, t5_encoder, t5_tokenizer, write_clip_tokenizer

__all__ = [
    "Family",
    "HEADS",
    "HEAD_DIM",
    "INNER_DIM",
    "T5_LENGTH",
    "CLIP_LENGTH",
    "PROMPT",
    "NEGATIVE_PROMPT",
    "seeded",
    "build",
    "random_text",
    "timesteps",
    "video_call",
    "t5_text",
    "clip_text",
]

HEADS, HEAD_DIM = 2, 16
INNER_DIM = HEADS * HEAD_DIM
T5_LENGTH = 16
"""Text length L of the T5/Llama families (``max_sequence_length`` in their call kwargs)."""
CLIP_LENGTH = 77
"""Text length L of the CLIP families (CLIP always pads to 77)."""
PROMPT = "a painting of a squirrel eating a burger"
NEGATIVE_PROMPT = "blurry, bad quality"


@dataclass(frozen=True)
class Family:
    """Everything needed to build and drive one family's tiny pipeline.

    ``components(seed)`` returns the pipeline's constructor kwargs; ``denoiser(seed)`` builds the
    transformer/UNet exactly as ``components`` does; ``call()`` returns fresh pipeline call kwargs
    (without generator); ``inputs(batch, frames, height, width, generator)`` returns forward kwargs for the
    denoiser at a latent size; ``latent`` is the latent (frames, height, width) that ``call()`` produces;
    ``patch`` is the denoiser's (temporal, spatial) patch, which latent sizes must be multiples of;
    ``max_frames`` bounds the latent frames (``None``: no bound). A denoiser-only recipe (a model whose pipeline
    cannot be built tiny) has ``pipeline_class``, ``components`` and ``call`` set to ``None``.
    """

    pipeline_class: type[DiffusionPipeline] | None
    components: Callable[[int], dict[str, Any]] | None
    denoiser: Callable[[int], torch.nn.Module]
    call: Callable[[], dict[str, Any]] | None
    inputs: Callable[[int, int, int, int, torch.Generator], dict[str, Any]]
    latent_scale: tuple[int, int]
    latent: tuple[int, int, int]
    patch: tuple[int, int] = (1, 1)
    max_frames: int | None = None


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for a block without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build(seed: int, factory: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Run ``factory`` under ``seeded(seed)`` and return the module in eval mode."""
    with seeded(seed):
        return factory().eval()


def random_text(generator: torch.Generator, batch: int, length: int) -> torch.Tensor:
    """Random text-encoder states ``[B, L, TEXT_DIM]``."""
    return torch.randn(batch, length, TEXT_DIM, generator=generator)


def timesteps(batch: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A mid-schedule timestep (500 of 1000) for every batch element."""
    return torch.full((batch,), 500, dtype=dtype)


def video_call(frames: int, size: int, guidance: float) -> dict[str, Any]:
    """Call kwargs shared by the T5/Llama text-to-video pipelines (square frames of ``size`` px)."""
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


def t5_text(seed: int, encoder: Callable[..., torch.nn.Module] = t5_encoder) -> dict[str, Any]:
    """``tokenizer`` and ``text_encoder`` components: the T5-style tokenizer and ``encoder`` built under ``seed``."""
    tokenizer = t5_tokenizer()
    return {"tokenizer": tokenizer, "text_encoder": build(seed, lambda: encoder(tokenizer))}


def clip_text(seed: int) -> dict[str, Any]:
    """``tokenizer`` and ``text_encoder`` components: the run-time CLIP tokenizer and a tiny CLIP encoder."""
    with tempfile.TemporaryDirectory() as directory:
        tokenizer = write_clip_tokenizer(directory)
    return {"tokenizer": tokenizer, "text_encoder": build(seed, lambda: clip_text_encoder(tokenizer))}
