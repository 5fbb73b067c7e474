"""PSA, pyramid sparse attention: per (query block, key block), full or 2x/4x/8x pooled keys, or skipped."""

from __future__ import annotations

import torch

from diffattn.configs.sparse import PSAConfig
from diffattn.kernels.psa import SAMPLE_STRIDE, block_importance
from diffattn.plan import POOL_LEVELS

from ..base import AttentionCall
from .common import BlockSparseMethod, SparseLayout, attach_plan, joint_plan
from .sparge import _plan_backend

__all__ = ["SAMPLE_STRIDE", "PSAMethod", "block_importance", "pyramid_levels"]

_MASS_SLACK = 1e-6


def pyramid_levels(importance: torch.Tensor, mode: str, cutoffs: tuple[float, ...], min_full: float) -> torch.Tensor:
    """int32 level map (0 = skip, else 1/2/4/8) from block importance `[B, H, q_blocks, kv_blocks]`.

    Each row sorts its key blocks by importance. Segment ends are, per level, one past the last block whose
    cumulative share of the row's importance is within the cut-off (`"threshold"`), or the cut-off times the block
    count (`"topk"`); ends never decrease, and in threshold mode the full-resolution segment holds at least
    `min_full` of the blocks (plus one), as PSA does.
    """
    ordered, order = importance.sort(-1, descending=True)
    kv_blocks = importance.shape[-1]
    if mode == "threshold":
        level_sorted = _levels_by_rank(_threshold_ends(ordered, cutoffs, min_full), kv_blocks)
    else:
        level_sorted = _topk_levels_by_rank(kv_blocks, cutoffs, importance.device).expand(order.shape)
    return torch.empty_like(order, dtype=torch.int32).scatter_(-1, order, level_sorted)


def _threshold_ends(ordered: torch.Tensor, cutoffs: tuple[float, ...], min_full: float) -> torch.Tensor:
    """Segment ends `[..., levels]` (non-decreasing) of rows sorted by descending importance, by cumulative share."""
    kv_blocks = ordered.shape[-1]
    share = ordered.cumsum(-1) / ordered.sum(-1, keepdim=True).clamp_min(1e-30)
    within = torch.stack([(share <= cutoff + _MASS_SLACK).sum(-1) for cutoff in cutoffs], -1)
    ends = torch.where(within > 0, within + 1, 0)  # a cut-off no share is within adds no block
    ends[..., 0].clamp_(min=min(kv_blocks, int(kv_blocks * min_full) + 1))
    return ends.clamp(max=kv_blocks).cummax(-1).values


def _levels_by_rank(ends: torch.Tensor, kv_blocks: int) -> torch.Tensor:
    """int32 `[..., kv_blocks]`: each rank's level from its row's segment ends (the level of segment s is 2**s)."""
    rank = torch.arange(kv_blocks, device=ends.device)
    segment = (rank[:, None] >= ends[..., None, :]).sum(-1, dtype=torch.int32)
    return torch.where(segment < len(POOL_LEVELS), 1 << segment, 0)


def _topk_levels_by_rank(kv_blocks: int, cutoffs: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """int32 `[kv_blocks]`: each rank's level when segment ends are fractions of the block count (the same for
    every row); the full-resolution segment holds at least one block."""
    levels = torch.zeros(kv_blocks, dtype=torch.int32, device=device)
    start = 0
    for position, (level, cutoff) in enumerate(zip(POOL_LEVELS, cutoffs)):
        end = max(start, min(kv_blocks, int(kv_blocks * cutoff)), 1 if position == 0 else 0)
        levels[start:end] = level
        start = end
    return levels


class PSAMethod(BlockSparseMethod):
    """Attaches PSA's pyramid plan, predicted per call from sampled attention over the video tokens."""

    config: PSAConfig

    def refine(self, call: AttentionCall) -> AttentionCall:
        layout: SparseLayout = call.layout
        n = layout.video_tokens
        importance = block_importance(call.query, call.key[:, :, :n], layout.block_q, layout.block_k, call.scale,
                                      backend=_plan_backend(self.config.backend))
        levels = pyramid_levels(importance, self.config.mode, self.config.cutoffs, self.config.min_full)
        return attach_plan(call, joint_plan(levels, layout, self._levels), **self.kernel_options())

    @property
    def _levels(self) -> tuple[int, ...]:
        """Pooling levels the plans may hold: in top-k mode only those with a non-empty segment (the kernels pool
        K/V for every level a plan lists); in threshold mode the segments depend on the data, so all of them."""
        if self.config.mode != "topk":
            return POOL_LEVELS
        ends = (0.0, *self.config.cutoffs)
        return tuple(level for level, low, high in zip(POOL_LEVELS, ends, ends[1:]) if level == 1 or high > low)
