"""Helpers of the composition tests: a short denoising loop over the tiny Wan denoiser, as pipelines drive it
(`cache_context` per CFG branch), diffusers cache configs sized for it, and a count of the attention calls run."""

from __future__ import annotations

import functools

import pytest
import torch
from diffusers.hooks import (
    FasterCacheConfig,
    FirstBlockCacheConfig,
    MagCacheConfig,
    PyramidAttentionBroadcastConfig,
    TaylorSeerCacheConfig,
)

import diffattn
from diffattn.testing import tiny_denoiser, tiny_denoiser_inputs

STEPS = 6
TIMESTEPS = torch.linspace(900.0, 100.0, STEPS)
MIN_TOKENS = 256
COMMON = {"backend": "reference", "min_tokens": MIN_TOKENS}

METHODS = {
    "sparge": lambda: diffattn.SpargeConfig(topk=0.5, **COMMON),
    "radial": lambda: diffattn.RadialConfig(dense_steps=0, dense_layers=(), **COMMON),
    "psa": lambda: diffattn.PSAConfig(dense_steps=0, mode="topk", cutoffs=(0.25, 0.5, 0.5, 0.75), **COMMON),
    # random latents leave no tile negligible in a few steps; a must-skip key block makes Lite's plan visible
    "lite": lambda: diffattn.LiteAttentionConfig(threshold=0.0, must_skip=(0, 128), **COMMON),
    "quantized": lambda: diffattn.QuantizedConfig(precision="int8", **COMMON),
    "pab": lambda: diffattn.PABConfig(preset="none", spatial_skip_range=3, spatial_timestep_range=(0.0, 1000.0)),
}
"""Each method at settings where it visibly acts on the tiny denoiser's 8x8x8 token grid."""

_clock = {"t": 0.0}


CACHES = {
    # thresholds far above any relative change: every call after a branch's first skips the blocks after the first
    "FirstBlockCache": lambda: FirstBlockCacheConfig(threshold=10.0),
    "MagCache": lambda: MagCacheConfig(
        threshold=10.0, num_inference_steps=STEPS, mag_ratios=[1.0] * STEPS, max_skip_steps=1
    ),
    # diffusers matches its default patterns ("^blocks.*attn") with re.fullmatch, which misses Wan's attn1/attn2
    "TaylorSeer": lambda: TaylorSeerCacheConfig(
        cache_interval=2, disable_cache_before_step=1, taylor_factors_dtype=torch.float32,
        cache_identifiers=[r"blocks\.\d+\.attn[12]"],
    ),
    "FasterCache": lambda: FasterCacheConfig(
        current_timestep_callback=lambda: _clock["t"], attention_weight_callback=lambda _: 0.5,
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 1000),
        unconditional_batch_skip_range=2, unconditional_batch_timestep_skip_range=(-1, 1000), tensor_format="BCFHW",
    ),
    "PyramidAttentionBroadcast": lambda: PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(0, 1000),
        current_timestep_callback=lambda: _clock["t"],
    ),
}
"""diffusers' caches sized for the loop below; FasterCache splits a batched [uncond, cond] call, the others key their
state by `cache_context` name."""

BATCHED = {"FasterCache"}
"""Caches driven by one batched CFG call per step; the others by separate cond and uncond calls (as Wan's pipeline)."""


@functools.cache
def _inputs(batch: int) -> dict:
    return tiny_denoiser_inputs("wan", batch=batch, frames=8, height=16, width=16)


@functools.cache
def _negative_text() -> torch.Tensor:
    """The unconditional branch's text embedding (another prompt than the conditional branch's)."""
    return tiny_denoiser_inputs("wan", frames=8, height=16, width=16, seed=1)["encoder_hidden_states"]


@pytest.fixture
def model() -> torch.nn.Module:
    return tiny_denoiser("wan")


def denoise(model: torch.nn.Module, batched: bool = False) -> torch.Tensor:
    """`STEPS` Euler-like steps, each one call per CFG branch (or one batched call), with the cache state reset first
    (as a pipeline run starts fresh); every output stacked."""
    from diffusers.hooks import HookRegistry

    HookRegistry.check_if_exists_or_initialize(model).reset_stateful_hooks()
    kwargs = _inputs(2 if batched else 1)
    branches = ("cond_uncond",) if batched else ("cond", "uncond")
    x, outputs = kwargs["hidden_states"], []
    for t in TIMESTEPS:
        _clock["t"] = float(t)
        for branch in branches:
            text = _negative_text() if branch == "uncond" else kwargs["encoder_hidden_states"]
            with torch.no_grad(), model.cache_context(branch):
                timestep = torch.full_like(kwargs["timestep"], float(t))
                call = {**kwargs, "hidden_states": x, "timestep": timestep, "encoder_hidden_states": text}
                out = model(**call, return_dict=False)[0]
            outputs.append(out)
        x = x - 0.05 * out
    return torch.stack(outputs)


@pytest.fixture
def attention_calls(monkeypatch) -> list[str]:
    """Names of the layers whose processor ran, one entry per attention module call (under diffattn or not)."""
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    seen: list[str] = []
    real = WanAttnProcessor.__call__

    def spy(self, attn, *args, **kwargs):
        seen.append("cross" if attn.is_cross_attention else "self")
        return real(self, attn, *args, **kwargs)

    monkeypatch.setattr(WanAttnProcessor, "__call__", spy)
    return seen


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    return float((out - reference).abs().max() / reference.abs().max().clamp_min(1e-30))
