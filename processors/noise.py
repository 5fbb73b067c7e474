"""Attention parts of the noise methods: FreeNoise window fusion and InitNO's attention store.

Both methods live in `diffattn.pipelines` (`FreeNoiseMethod`, `InitNOMethod`), which pair these attention parts
with their pipeline parts.

**FreeNoise** (`FreeNoiseAttention`) on AnimateDiff runs each motion-module temporal attention call (role
`"temporal"`, q/k/v `[B·H·W, heads, F, d]`) in sliding windows of `context_length` frames and fuses the window
outputs per frame with flat or pyramid weights, at the attention output as in FreeNoise's code (diffusers fuses
whole transformer blocks instead). Every window sees the positions `0 … W−1` the motion module was trained on,
as when each window is run on its own: the motion blocks add sinusoidal positions before the q/k/v projections,
and those projections are affine, so a window starting at frame `s` gets `proj(pe[0:W]) − proj(pe[s:s+W])` added
to its q, k and v (zero for the first window, exact up to rounding). Positions past the module's table (videos
longer than `motion_max_seq_length`) are zero-padded by a hook on the blocks' `pos_embed`, so long videos run.
With `{frame: prompt}` dicts, a hook on every spatial cross-attention replaces its text rows with the call's
`PromptSchedule` (per-frame prompts; the last keyframe's prompt in encoder and middle blocks outside the
per-frame steps), which the method's pipeline part sets for each call from the prompt dicts.

The **experimental** frame-window variant (`experimental_dit=True`, Wan) fuses Wan's video self-attention the same
way over windows of whole latent frames. Wan's rotary positions are relative, so windows need no position shift.
It is not the paper's method: diffusers' maintainers report that frame averaging on 3-D attention disturbs the
spatial tokens.

**InitNO's attention store** (`InitNOAttentionStore`) computes attention explicitly (softmax of `q·kᵀ·scale`) in
the self- and cross-attention layers at the configured resolution while recording, keeps the head- and
layer-averaged probabilities (differentiable, for InitNO's scores) and returns `probs·v`; everything else goes on
through the chain unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.hooks import HookRegistry, ModelHook

from diffattn.configs.freenoise import FreeNoiseConfig
from diffattn.configs.initno import InitNOConfig
from diffattn.context import LayerInfo
from diffattn.errors import BackendUnavailableError, ConfigError, UnsupportedModelError
from diffattn.geometry import Grid
from diffattn.method import Target
from diffattn.noise.freenoise import PromptSchedule, frame_windows, window_weights
from diffattn.noise.latents import check_video_family

from .base import AttentionCall, AttentionMethod, Proceed, describe_layers, find_attention_modules

__all__ = ["FreeNoiseAttention", "InitNOAttentionStore", "attention_probabilities"]

_POSITIONS_HOOK = "diffattn::freenoise-positions"
_PROMPTS_HOOK = "diffattn::freenoise-prompts"
_FRAME_WINDOW_FAMILIES = ("wan",)
_INJECTION_PREFIXES = ("down_blocks.", "mid_block.")


# ------------------------------------------------------------------------------------------- hooks
class _PaddedPositions(ModelHook):
    """`x + pe[:, :F]` of a `SinusoidalPositionalEmbedding`, with zero positions past its table (same result below it)."""

    def new_forward(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        table = module.pe
        if length > table.shape[1]:
            table = F.pad(table, (0, 0, 0, length - table.shape[1]))
        return x + table[:, :length]


class _FramePrompts(ModelHook):
    """Replaces a spatial cross-attention's text rows with the current call's per-frame prompt schedule."""

    def __init__(self, attention: FreeNoiseAttention, injection_layer: bool) -> None:
        super().__init__()
        self.attention = attention
        self.injection_layer = injection_layer

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any):
        schedule = self.attention.prompt_schedule()
        states = kwargs.get("encoder_hidden_states")
        if schedule is not None and isinstance(states, torch.Tensor):
            ctx = self.attention.target.context
            kwargs["encoder_hidden_states"] = schedule.conditioning(states, self.injection_layer, ctx.step_index, ctx.num_steps)
        return args, kwargs


def _register(module: torch.nn.Module, hook: ModelHook, name: str) -> None:
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)


def _unregister(module: torch.nn.Module, name: str) -> None:
    registry = getattr(module, "_diffusers_hook", None)
    if registry is not None and registry.get_hook(name) is not None:
        registry.remove_hook(name, recurse=False)


# ---------------------------------------------------------------------------------------- FreeNoise
@dataclasses.dataclass(frozen=True)
class _Windows:
    """Sliding windows over `frames` frames of `frame_tokens` tokens each."""

    frames: int
    length: int
    frame_index: torch.Tensor  # [windows, length] frame of each window position
    token_index: torch.Tensor  # [windows, length * frame_tokens] token of each window position
    weights: torch.Tensor  # [windows, length * frame_tokens] fusion weight of each window token

    @classmethod
    def build(cls, frames: int, frame_tokens: int, length: int, stride: int, weighting: str, device) -> _Windows:
        starts = torch.tensor(frame_windows(frames, length, stride), device=device)
        frame_index = starts[:, None] + torch.arange(length, device=device)
        token_index = (frame_index[..., None] * frame_tokens + torch.arange(frame_tokens, device=device)).flatten(1)
        weights = window_weights(length, weighting).to(device).repeat_interleave(frame_tokens).expand_as(token_index)
        return cls(frames, length, frame_index, token_index, weights)

    @property
    def count(self) -> int:
        return self.frame_index.shape[0]


def _no_prompt_schedule() -> PromptSchedule | None:
    return None


class FreeNoiseAttention(AttentionMethod):
    """FreeNoise's attention part: window-fused temporal attention (or Wan's experimental frame windows), the
    padded temporal positions, and per-frame prompts in cross-attention from `prompt_schedule()`.

    Args:
        config (`FreeNoiseConfig`): the settings.
        target (`Target`): the denoiser; refused unless AnimateDiff's, or Wan's with `experimental_dit=True`.
        prompt_schedule (`Callable[[], PromptSchedule | None]`): the current call's per-frame prompts (from the
            method's pipeline part), or `None` outside such a call.
    """

    config: FreeNoiseConfig

    def __init__(self, config: FreeNoiseConfig, target: Target,
                 prompt_schedule: Callable[[], PromptSchedule | None] = _no_prompt_schedule) -> None:
        super().__init__(config, target)
        self.prompt_schedule = prompt_schedule
        family = target.family.name
        check_video_family(family, "FreeNoise", target.pipeline)
        if family == "unet-motion":
            self.frame_windows_mode = False
        elif family in _FRAME_WINDOW_FAMILIES and config.experimental_dit:
            self.frame_windows_mode = True
        elif family in _FRAME_WINDOW_FAMILIES:
            raise UnsupportedModelError(
                f"FreeNoise on {family} (3-D attention) is experimental: frame-window fusion is not the paper's method "
                "and can disturb spatial detail. Set FreeNoiseConfig(experimental_dit=True) to use it"
            )
        else:
            raise UnsupportedModelError(
                f"FreeNoise needs factorised temporal attention (AnimateDiff's motion modules) or, experimentally, "
                f"Wan's video-only self-attention; {family} attends jointly over text and video tokens"
            )
        self._positions: dict[str, tuple[torch.nn.Module, torch.nn.Module | None]] = {}
        self._hooked: list[tuple[torch.nn.Module, str]] = []

    def applies_to(self, layer: LayerInfo) -> bool:
        return layer.role == ("self" if self.frame_windows_mode else "temporal")

    # -------------------------------------------------------------------------------- lifecycle
    def on_install(self, layers: list[LayerInfo]) -> None:
        if self.frame_windows_mode:
            return
        try:
            self._install_positions(layers)
            self._install_prompt_hooks()
        except BaseException:
            self.on_remove()
            raise

    def on_remove(self) -> None:
        for module, name in reversed(self._hooked):
            _unregister(module, name)
        self._hooked.clear()
        self._positions.clear()

    def _install_positions(self, layers: list[LayerInfo]) -> None:
        """Remember each temporal attention's module and its block's sinusoidal positions; pad long videos."""
        model = self.target.model
        for layer in layers:
            module = model.get_submodule(layer.name)
            block = model.get_submodule(layer.name.rpartition(".")[0])
            positions = getattr(block, "pos_embed", None)
            if positions is not None and not isinstance(getattr(positions, "pe", None), torch.Tensor):
                raise UnsupportedModelError(f"{layer.name}: FreeNoise expects sinusoidal temporal positions (pos_embed.pe)")
            if any(getattr(module, n, None) is not None for n in ("norm_q", "norm_k", "norm_cross")):
                raise UnsupportedModelError(f"{layer.name}: FreeNoise's per-window positions need plain q/k/v projections")
            if positions is not None:
                table = positions.pe.shape[1]
                if self.config.context_length > table:
                    raise ConfigError(
                        f"context_length={self.config.context_length} exceeds the {table} frame positions the motion "
                        f"module was built with ({layer.name}); use at most {table}"
                    )
                if all(m is not positions for m, _ in self._hooked):
                    _register(positions, _PaddedPositions(), _POSITIONS_HOOK)
                    self._hooked.append((positions, _POSITIONS_HOOK))
            self._positions[layer.name] = (module, positions)

    def _install_prompt_hooks(self) -> None:
        """A per-frame prompt hook on every spatial cross-attention (a no-op unless a call gives prompt dicts)."""
        modules = find_attention_modules(self.target.model)
        for (name, module), layer in zip(modules, describe_layers(modules, joint=False)):
            if layer.role == "cross":
                _register(module, _FramePrompts(self, name.startswith(_INJECTION_PREFIXES)), _PROMPTS_HOOK)
                self._hooked.append((module, _PROMPTS_HOOK))

    # -------------------------------------------------------------------------------- attention
    def attend(self, call: AttentionCall, proceed: Proceed) -> torch.Tensor:
        layout = call.layout
        if not self.active(call):
            return proceed(call)
        if not self.frame_windows_mode and layout.kind == "temporal":
            return self._fuse(call, proceed, call.query.shape[-2], 1)
        if self.frame_windows_mode and layout.kind == "self" and layout.grid is not None and not layout.frames_in_batch:
            return self._fuse(call, proceed, layout.grid.frames, layout.grid.frame_tokens)
        return proceed(call)

    def _fuse(self, call: AttentionCall, proceed: Proceed, frames: int, frame_tokens: int) -> torch.Tensor:
        """Attention in sliding frame windows (one batched call down the chain), fused per token by weight."""
        config = self.config
        if frames <= config.context_length:
            return proceed(call)
        if call.attn_mask is not None or call.is_causal:
            raise BackendUnavailableError(
                f"{call.layer.name}: FreeNoise window fusion does not support attention masks or causal attention"
            )
        q, k, v = call.query, call.key, call.value
        batch, heads, _, dim = q.shape
        windows = _Windows.build(frames, frame_tokens, config.context_length, config.context_stride, config.weighting, q.device)
        gathered = [t[:, :, windows.token_index] for t in (q, k, v)]  # [B, heads, windows, n, d]
        shifts = self._position_shifts(call, windows)
        if shifts is not None:
            gathered = [t + s[None] for t, s in zip(gathered, shifts)]
        n = windows.token_index.shape[1]
        as_batch = [t.transpose(1, 2).reshape(batch * windows.count, heads, n, dim) for t in gathered]
        grid = Grid(windows.length, 1, 1) if frame_tokens == 1 else dataclasses.replace(call.layout.grid, frames=windows.length)
        window_layout = dataclasses.replace(call.layout, video=slice(0, n), grid=grid)
        out = proceed(call.replace(query=as_batch[0], key=as_batch[1], value=as_batch[2], layout=window_layout))
        out = out.reshape(batch, windows.count, heads, n, dim).transpose(1, 2).float()
        weights = windows.weights.to(torch.float32)
        fused = q.new_zeros((batch, heads, frames * frame_tokens, dim), dtype=torch.float32)
        fused.index_add_(2, windows.token_index.flatten(), (out * weights[..., None]).flatten(2, 3))
        total = weights.new_zeros(frames * frame_tokens).index_add_(0, windows.token_index.flatten(), weights.flatten())
        call.record(windows=windows.count)
        return (fused / total[:, None]).to(q.dtype)

    def _position_shifts(self, call: AttentionCall, windows: _Windows) -> list[torch.Tensor] | None:
        """Per-window q/k/v shifts `proj(pe[0:W]) − proj(pe[s:s+W])`, each `[heads, windows, W, d]` (None: no positions)."""
        module, positions = self._positions.get(call.layer.name, (None, None))
        if positions is None:
            return None
        table = positions.pe[0].to(call.query.dtype)
        if windows.frames > table.shape[0]:
            table = F.pad(table, (0, 0, 0, windows.frames - table.shape[0]))
        local, placed = table[: windows.length], table[windows.frame_index]
        heads, dim = call.query.shape[1], call.query.shape[-1]
        shifts = []
        for projection in (module.to_q, module.to_k, module.to_v):
            delta = projection(local)[None] - projection(placed)  # [windows, W, heads*d]
            shifts.append(delta.reshape(windows.count, windows.length, heads, dim).permute(2, 0, 1, 3))
        return shifts


# ------------------------------------------------------------------------------------------ InitNO
def attention_probabilities(call: AttentionCall) -> torch.Tensor:
    """`softmax(q·kᵀ·scale + mask)` of an attention call, float32 `[B, heads, q, k]` (differentiable)."""
    q, k = call.query.float(), call.key.float()
    scale = call.scale if call.scale is not None else q.shape[-1] ** -0.5
    scores = q @ k.transpose(-1, -2) * scale
    mask = call.attn_mask
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    return scores.softmax(-1)


class InitNOAttentionStore(AttentionMethod):
    """Records head- and layer-averaged attention probabilities at one resolution while `recording(...)` is on.

    Self-attention maps come out as `[B, R, R, R·R]`, cross-attention maps as `[B, R, R, L]`. The recorded layers
    compute attention explicitly (so gradients reach the maps); other layers and times are untouched.
    """

    def __init__(self, config: InitNOConfig, target: Target) -> None:
        super().__init__(config, target)
        self.resolution: tuple[int, int] | None = None
        self._sums: dict[str, torch.Tensor] = {}
        self._heads: dict[str, int] = {}

    def applies_to(self, layer: LayerInfo) -> bool:
        return layer.role in ("self", "cross")

    @contextlib.contextmanager
    def recording(self, resolution: tuple[int, int]) -> Iterator[InitNOAttentionStore]:
        """Record the maps of the forwards run inside the block at `resolution` (earlier maps are dropped)."""
        self.resolution = tuple(resolution)
        self._sums.clear()
        self._heads.clear()
        try:
            yield self
        finally:
            self.resolution = None

    def attend(self, call: AttentionCall, proceed: Proceed) -> torch.Tensor:
        grid = call.layout.grid
        if self.resolution is None or grid is None or (grid.height, grid.width) != self.resolution:
            return proceed(call)
        kind = call.layout.kind
        if kind not in ("self", "cross"):
            return proceed(call)
        probs = attention_probabilities(call)
        self._sums[kind] = self._sums[kind] + probs.sum(1) if kind in self._sums else probs.sum(1)
        self._heads[kind] = self._heads.get(kind, 0) + probs.shape[1]
        return (probs.to(call.value.dtype) @ call.value).to(call.query.dtype)

    def maps(self, kind: str) -> torch.Tensor:
        """Mean recorded probabilities of `kind` (`"self"` or `"cross"`) as `[B, R, R, keys]`."""
        if kind not in self._sums:
            raise ConfigError(
                f"no {kind}-attention maps were recorded at {self.resolution}; the UNet has no such layers at this size"
            )
        mean = self._sums[kind] / self._heads[kind]
        rows, cols = self.resolution
        return mean.reshape(mean.shape[0], rows, cols, mean.shape[-1])
