"""Pyramid Attention Broadcast: an attention-output cache above the kernels, counted per denoising step and kept
per CFG branch as the original does (or per call and shared, as diffusers' hook does, with `match_diffusers`)."""

from __future__ import annotations

import re

import torch
from diffusers.hooks._common import (
    _CROSS_TRANSFORMER_BLOCK_IDENTIFIERS,
    _SPATIAL_TRANSFORMER_BLOCK_IDENTIFIERS,
    _TEMPORAL_TRANSFORMER_BLOCK_IDENTIFIERS,
)

from diffattn.configs.sparse import PABConfig
from diffattn.context import LayerInfo, RunContext
from diffattn.method import Target

from ..base import AttentionCall, AttentionMethod, Proceed

__all__ = ["PABMethod", "attention_type"]

_IDENTIFIERS = {
    "spatial": _SPATIAL_TRANSFORMER_BLOCK_IDENTIFIERS,
    "temporal": _TEMPORAL_TRANSFORMER_BLOCK_IDENTIFIERS,
    "cross": _CROSS_TRANSFORMER_BLOCK_IDENTIFIERS,
}


def attention_type(name: str, module: torch.nn.Module, enabled: dict[str, bool]) -> str | None:
    """PAB's type of an attention module exactly as diffusers decides it: by name identifiers (regex search) and
    `is_cross_attention`, spatial first, then temporal, then cross, among the types `enabled`; `None` if none."""
    cross = bool(getattr(module, "is_cross_attention", False))
    for kind in ("spatial", "temporal", "cross"):
        wants_cross = kind == "cross"
        if enabled[kind] and cross == wants_cross and any(re.search(i, name) for i in _IDENTIFIERS[kind]):
            return kind
    return None


class PABMethod(AttentionMethod):
    """Returns a layer's cached attention output on broadcast calls, recomputes (and caches) it otherwise.

    Whether a call may reuse, and which CFG branch's cache it uses, is decided once per denoiser call, before the
    layers run (`_on_forward`): from the run's step index, one cache per branch; with `match_diffusers`, from one
    counter per run over every denoiser call and one cache for all branches, as diffusers' per-module counters
    (each attention module runs once per call).
    """

    config: PABConfig

    def __init__(self, config: PABConfig, target: Target) -> None:
        super().__init__(config, target)
        self._settings = config.resolve(target.family.name)
        self._types: dict[str, str] = {}
        self._caches: dict[str | None, dict[tuple[str, int, int | None], torch.Tensor]] = {}
        self._cache: dict[tuple[str, int, int | None], torch.Tensor] = {}
        """The current CFG branch's cache (chosen before the layers run, so compiled blocks never key on the branch)."""
        self._reuse = dict.fromkeys(self._settings, False)
        self._run = -1
        self._calls = 0
        target.listeners.append(self._on_forward)

    def applies_to(self, layer: LayerInfo) -> bool:
        if not self.config.runs_in_block(layer.block):
            return False
        module = self.target.model.get_submodule(layer.name)
        kind = attention_type(layer.name, module, {k: skip > 0 for k, (skip, _) in self._settings.items()})
        if kind is not None:
            self._types[layer.name] = kind
        return kind is not None

    def _timestep(self, ctx: RunContext) -> float | None:
        """The pipeline's `current_timestep` (what diffusers' PAB reads), else the denoiser's timestep argument."""
        value = getattr(self.target.pipeline, "current_timestep", None)
        value = ctx.timestep if value is None else value
        return None if value is None else float(value)

    def _count(self, ctx: RunContext) -> int:
        """This call's position in the run: its denoising step, or (`match_diffusers`) its denoiser call."""
        if ctx.run_index != self._run:
            self._run, self._calls = ctx.run_index, 0
            self._caches.clear()
        self._calls += 1
        return self._calls - 1 if self.config.match_diffusers else ctx.step_index

    def _on_forward(self, ctx: RunContext) -> None:
        timestep = self._timestep(ctx)
        count = self._count(ctx)
        self._cache = self._caches.setdefault(None if self.config.match_diffusers else ctx.cfg_branch, {})
        for kind, (skip, (low, high)) in self._settings.items():
            within = timestep is not None and low < timestep < high
            self._reuse[kind] = skip > 0 and count > 0 and within and count % skip != 0

    def attend(self, call: AttentionCall, proceed: Proceed) -> torch.Tensor:
        key = (call.layer.name, call.index, getattr(call.layout, "part", None))
        if self._reuse[self._types[call.layer.name]] and self.active(call):
            cached = self._cache.get(key)
            if cached is not None and cached.shape == (*call.query.shape[:-1], call.value.shape[-1]):
                call.record(reused=1.0)
                return cached
        out = proceed(call)
        self._cache[key] = out
        return out

    def on_remove(self) -> None:
        self._caches.clear()
        self._cache = {}
