"""Input validation for the attention entry points, and per-plan caches so hot paths never sync.

Cheap checks (shapes, dtypes, devices, plan geometry) run on every call. Checks that read plan contents on the
host (no empty row, ids in range) run once per plan object: plans are immutable and reused across layers and
steps, so `_SYNC_CHECKED` remembers them weakly. Plans built per call on the device by the library's builders
are `trusted` (valid by construction) and never read back: one read per call would stall the GPU every layer.
Under `torch.compile` the cached host checks are skipped (they would break the graph); validate a plan once
eagerly, or build it with the library's builders.
"""

from __future__ import annotations

import math
import weakref
from typing import NamedTuple

import torch

from diffattn.errors import ConfigError, DiffAttnError, PlanError
from diffattn.plan import BlockPlan, PackedBox

from .quantize import PRECISIONS

__all__ = ["MARK_CRITERIA", "AttentionInputError", "KernelPlan", "check_plan", "check_qkv", "plan_tensors",
           "resolve_mark_criterion", "resolve_precision", "resolve_scale", "resolve_threshold"]

MARK_CRITERIA = ("running", "final")
"""What `skip_threshold` compares a slot's max with: the running max before the slot, or the row's final max."""

_SYNC_CHECKED: weakref.WeakSet[BlockPlan] = weakref.WeakSet()
_PLAN_TENSORS: weakref.WeakKeyDictionary[BlockPlan, dict[bool, KernelPlan]] = weakref.WeakKeyDictionary()


class AttentionInputError(DiffAttnError, ValueError):
    """q/k/v (or an argument next to them) has the wrong shape, dtype or device for attention."""


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """q `[B, H, Sq, D]`, k/v `[B, H, Skv, D]`, one floating dtype and one device."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise AttentionInputError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
        if t.ndim != 4:
            raise AttentionInputError(f"{name} must be [batch, heads, tokens, head_dim]; got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise AttentionInputError(f"{name} must be a floating-point tensor; got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise AttentionInputError(f"q, k, v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise AttentionInputError(f"q, k, v must be on one device; got {q.device}, {k.device}, {v.device}")
    if q.shape[:2] != k.shape[:2] or k.shape != v.shape:
        raise AttentionInputError(
            f"k and v must be [batch, heads, kv_len, head_dim] matching q's batch and heads; got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if q.shape[3] != k.shape[3]:
        raise AttentionInputError(f"q and k head_dim differ: {q.shape[3]} vs {k.shape[3]}")
    if q.shape[2] == 0 or k.shape[2] == 0 or q.shape[3] == 0:
        raise AttentionInputError(f"empty attention inputs: q {tuple(q.shape)}, k {tuple(k.shape)}")


def check_plan(plan: BlockPlan, q: torch.Tensor, k: torch.Tensor) -> None:
    """The plan fits q/k (geometry, broadcast, device); its contents are checked once per plan object."""
    if not isinstance(plan, BlockPlan):
        raise PlanError(f"plan must be a diffattn.plan.BlockPlan; got {type(plan).__name__}")
    batch, heads, q_len, _ = q.shape
    kv_len = k.shape[2]
    if plan.device != q.device:
        raise PlanError(f"plan is on {plan.device} but q is on {q.device}; move it once with plan.to(q.device)")
    if plan.token_mask is not None:
        if plan.is_pooled:
            raise PlanError("a plan with pooled levels cannot also carry a token mask (not supported)")
        if plan.token_mask.q_lo.device != q.device:
            raise PlanError(f"plan.token_mask is on {plan.token_mask.q_lo.device} but q is on {q.device}")
    plan.check_fits(batch, heads, q_len, kv_len)
    if not plan.trusted and not _compiling() and plan not in _SYNC_CHECKED:
        plan.check_contents()
        _SYNC_CHECKED.add(plan)


class KernelPlan(NamedTuple):
    """A plan as the Triton kernel reads it (see `plan_tensors`); the token-mask fields are None without a mask."""

    kv_indices: torch.Tensor
    kv_offsets: torch.Tensor
    box: PackedBox | None
    partial: torch.Tensor | None
    """int8 `[q_blocks, kv_blocks]`: the blocks the token mask cuts, for rows in the plan's own order."""
    full_counts: torch.Tensor | None
    """Shaped like `kv_offsets` (column 0 used): how many leading slots of each row the mask leaves whole."""


def plan_tensors(plan: BlockPlan, split_full: bool = False) -> KernelPlan:
    """Kernel-ready plan tensors, built once per plan.

    int32 and contiguous (broadcast dims stay size 1). A token mask comes packed (`BoxMask.packed`). With
    `split_full` (only when slot order does not matter: no pv_threshold, no marks), each row lists the blocks the
    mask leaves whole first and `full_counts` says how many, so the kernel walks them without any token test and
    tests every later one (FlexAttention's full/partial blocks); otherwise rows keep the plan's order and
    `partial` flags the blocks to test.
    """
    cached = None if _compiling() else _PLAN_TENSORS.get(plan, {}).get(split_full)
    if cached is not None:
        return cached
    indices, offsets = plan.kv_indices.contiguous(), plan.kv_offsets.contiguous()
    result = KernelPlan(indices, offsets, None, None, None)
    if plan.token_mask is not None:
        m = plan.token_mask
        full = m.full_blocks(plan.block_q, plan.block_k)
        if split_full:
            full_counts = torch.zeros_like(offsets)
            indices, full_counts[..., 0] = _whole_blocks_first(indices, full)
            result = KernelPlan(indices, offsets, m.packed(), None, full_counts)
        else:
            result = KernelPlan(indices, offsets, m.packed(), (~full).to(torch.int8).contiguous(), None)
    if not _compiling():
        _PLAN_TENSORS.setdefault(plan, {})[split_full] = result
    return result


def _whole_blocks_first(indices: torch.Tensor, full: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of `indices` (level-1 ids, -1 past the count) with the ids flagged in `full [q_blocks, kv_blocks]`
    first (both parts keep their order), and how many there are per row; no host synchronisation."""
    listed = indices >= 0
    q_block = torch.arange(indices.shape[2], device=indices.device)[:, None]
    whole = listed & full[q_block, indices.clamp(min=0).long()]
    rank = torch.where(listed, torch.where(whole, 0, 1), 2).to(torch.int8)
    order = torch.argsort(rank, dim=-1, stable=True)
    return torch.gather(indices, -1, order).contiguous(), whole.sum(-1, dtype=torch.int32)


def resolve_scale(scale: float | None, head_dim: int) -> float:
    """`scale` or `1/sqrt(head_dim)`; must be a positive finite number."""
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"scale must be a positive finite number; got {scale}")
    return scale


def resolve_threshold(value: float | torch.Tensor | None, q: torch.Tensor, name: str) -> torch.Tensor | None:
    """A threshold (log2 units) as float32 `[heads]` on q's device: a float, or a tensor `[]`, `[1]` or `[heads]`."""
    if value is None:
        return None
    heads = q.shape[1]
    if isinstance(value, torch.Tensor):
        if value.numel() not in (1, heads) or value.ndim > 1:
            raise ConfigError(f"{name} tensor must have shape [], [1] or [heads={heads}]; got {tuple(value.shape)}")
        if value.device != q.device:
            raise ConfigError(f"{name} is on {value.device} but q is on {q.device}")
        return value.to(torch.float32).reshape(-1).expand(heads).contiguous()
    value = float(value)
    if math.isnan(value):
        raise ConfigError(f"{name} must not be NaN")
    return torch.full((heads,), value, dtype=torch.float32, device=q.device)


def resolve_precision(precision: str, q: torch.Tensor) -> str:
    """`precision` if it is one of `quantize.PRECISIONS` and fits q's dtype (8 bits quantise 16- or 32-bit floats)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if precision != "bf16" and q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise AttentionInputError(f"precision {precision!r} quantises float16, bfloat16 or float32 inputs; got "
                                  f"{q.dtype} (use precision='bf16' for it)")
    return precision


def resolve_mark_criterion(criterion: str) -> str:
    """`criterion` if it is one of `MARK_CRITERIA` (what LiteAttention marks compare with), else a ConfigError."""
    if criterion not in MARK_CRITERIA:
        raise ConfigError(f"mark_criterion must be one of {MARK_CRITERIA}; got {criterion!r}")
    return criterion
