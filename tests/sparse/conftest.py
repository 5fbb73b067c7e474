"""Helpers of the sparse-method tests: tiny denoisers at latent sizes long enough to sparsify, plan spies."""

from __future__ import annotations

import functools

import pytest
import torch

from diffattn.testing import tiny_denoiser, tiny_denoiser_inputs

VIDEO_FAMILIES = ("wan", "cogvideox", "hunyuanvideo", "ltx", "mochi")

_SPATIAL_PATCH = {"wan": 2, "cogvideox": 2, "hunyuanvideo": 1, "ltx": 1, "mochi": 2}
MIN_TOKENS = 256
"""Test configs sparsify calls of at least this many video tokens (the grids below have 256 or 512)."""


@functools.lru_cache(maxsize=None)
def denoiser(family: str) -> torch.nn.Module:
    """The family's tiny denoiser (built once per session; methods are always removed after use)."""
    return tiny_denoiser(family)


def inputs(family: str, frames: int = 8, side: int = 8, batch: int = 1, seed: int = 0) -> dict:
    """Denoiser inputs for a `frames x side x side` token grid (8 x 8 x 8 = 512 tokens by default)."""
    patch = _SPATIAL_PATCH[family]
    return tiny_denoiser_inputs(family, batch=batch, frames=frames, height=side * patch, width=side * patch, seed=seed)


def forward(model: torch.nn.Module, kwargs: dict, timestep: float | None = None) -> torch.Tensor:
    """One denoiser forward (optionally at another timestep), no grad."""
    if timestep is not None:
        kwargs = {**kwargs, "timestep": torch.full_like(kwargs["timestep"], timestep)}
    with torch.no_grad():
        return model(**kwargs, return_dict=False)[0]


@pytest.fixture
def plan_spy(monkeypatch):
    """Records `(layer name, plan)` of every call that reaches the kernels (the end of every method chain)."""
    import diffattn.processors.base as base

    seen: list[tuple[str, object]] = []
    real = base.execute

    def spy(call):
        if call.plan is not None:
            seen.append((call.layer.name, call.plan))
        return real(call)

    monkeypatch.setattr(base, "execute", spy)
    return seen
