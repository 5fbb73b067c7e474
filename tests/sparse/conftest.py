"""Helpers of the sparse-method tests: tiny denoisers at latent sizes long enough to sparsify, plan spies."""

from __future__ import annotations

import functools

import pytest
import torch

from diffattn.testing import tiny_denoiser, tiny_denoiser_inputs

VIDEO_FAMILIES = (
    "wan", "cogvideox", "hunyuanvideo", "ltx", "mochi", "wan22", "wan-i2v", "wan-vace", "skyreels-v2", "hunyuanvideo15", "ltx2",
)
IMAGE_FAMILIES = ("flux", "flux2", "qwenimage", "sd3")

_SPATIAL_PATCH = {
    family: 1 if family in ("hunyuanvideo", "hunyuanvideo15", "ltx", "ltx2") else 2 for family in (*VIDEO_FAMILIES, *IMAGE_FAMILIES)
}
MIN_TOKENS = 256
"""Test configs sparsify calls of at least this many video tokens (the grids below have 256 or 512)."""


@functools.cache
def denoiser(family: str) -> torch.nn.Module:
    """The family's tiny denoiser (built once per session; methods are always removed after use)."""
    return tiny_denoiser(family)


def inputs(family: str, frames: int = 8, side: int = 8, batch: int = 1, seed: int = 0) -> dict:
    """Denoiser inputs for a `frames x side x side` token grid (8 x 8 x 8 = 512 tokens by default); image families
    take one `16 x 16` frame (256 tokens) whatever `frames` and `side` say."""
    patch = _SPATIAL_PATCH[family]
    if family in IMAGE_FAMILIES:
        frames, side = 1, 16
    return tiny_denoiser_inputs(family, batch=batch, frames=frames, height=side * patch, width=side * patch, seed=seed)


def forward(model: torch.nn.Module, kwargs: dict, timestep: float | None = None) -> torch.Tensor:
    """One denoiser forward (optionally at another timestep), no grad."""
    if timestep is not None:
        kwargs = {**kwargs, "timestep": torch.full_like(kwargs["timestep"], timestep)}
    with torch.no_grad():
        return model(**kwargs, return_dict=False)[0]


@pytest.fixture
def call_spy(monkeypatch):
    """Every call that reaches the kernels with a plan (the end of every method chain), in order."""
    import diffattn.processors.base as base

    seen: list = []
    real = base.execute

    def spy(call):
        if call.plan is not None:
            seen.append(call)
        return real(call)

    monkeypatch.setattr(base, "execute", spy)
    return seen


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    return float((out - reference).abs().max() / reference.abs().max().clamp_min(1e-30))
