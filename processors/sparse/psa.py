"""PSA, pyramid sparse attention: per (query block, key block), full or 2x/4x/8x pooled keys, or skipped."""

from __future__ import annotations

import math

import torch

from diffattn.configs.sparse import PSAConfig
from diffattn.plan import POOL_LEVELS

from ..base import AttentionCall
from .common import BlockSparseMethod, SparseLayout, attach_plan, joint_plan

__all__ = ["PSAMethod", "block_importance", "pyramid_levels", "SAMPLE_STRIDE"]

SAMPLE_STRIDE = 4
"""Every 4th token of a block is sampled (PSA samples a quarter of each block's queries and keys)."""
_CHUNK_ELEMENTS = 1 << 27  # sampled logits held at once (512 MB in float32)
_MASS_SLACK = 1e-6


def block_importance(q: torch.Tensor, k: torch.Tensor, block_q: int, block_k: int, scale: float | None) -> torch.Tensor:
    """float32 `[B, H, q_blocks, kv_blocks]`: attention of sampled queries over sampled keys, summed per block pair.

    Samples are every `SAMPLE_STRIDE`-th token (block starts are multiples of it); each sampled query's softmax is over
    all sampled keys. Computed a chunk of sampled queries at a time, so memory stays bounded.
    """
    batch, heads, q_len, dim = q.shape
    kv_len = k.shape[2]
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    q_samples, k_samples = q[:, :, ::SAMPLE_STRIDE], k[:, :, ::SAMPLE_STRIDE]
    q_block = torch.arange(0, q_len, SAMPLE_STRIDE, device=q.device) // block_q
    k_block = torch.arange(0, kv_len, SAMPLE_STRIDE, device=q.device) // block_k
    importance = torch.zeros(batch, heads, math.ceil(q_len / block_q), math.ceil(kv_len / block_k), device=q.device)
    rows = max(1, _CHUNK_ELEMENTS // max(1, batch * heads * k_samples.shape[2]))
    for start in range(0, q_samples.shape[2], rows):
        stop = min(q_samples.shape[2], start + rows)
        probs = ((q_samples[:, :, start:stop] @ k_samples.transpose(-1, -2)).float() * scale).softmax(-1)
        per_block = torch.zeros(batch, heads, stop - start, importance.shape[-1], device=q.device)
        per_block.index_add_(-1, k_block, probs)
        importance.index_add_(2, q_block[start:stop], per_block)
    return importance


def pyramid_levels(importance: torch.Tensor, mode: str, cutoffs: tuple[float, ...], min_full: float) -> torch.Tensor:
    """int32 level map (0 = skip, else 1/2/4/8) from block importance `[B, H, q_blocks, kv_blocks]`.

    Each row sorts its key blocks by importance. Segment ends are, per level, one past the last block whose
    cumulative share of the row's importance is within the cut-off (`"threshold"`), or the cut-off times the block
    count (`"topk"`); ends never decrease, and in threshold mode the full-resolution segment holds at least
    `min_full` of the blocks (plus one), as PSA does.
    """
    kv_blocks = importance.shape[-1]
    ordered, order = importance.sort(-1, descending=True)
    rank = torch.arange(kv_blocks, device=importance.device)
    ends = []
    previous = torch.zeros(importance.shape[:-1], dtype=torch.long, device=importance.device)
    if mode == "threshold":
        share = ordered.cumsum(-1) / ordered.sum(-1, keepdim=True).clamp_min(1e-30)
        for position, cutoff in enumerate(cutoffs):
            within = share <= cutoff + _MASS_SLACK
            end = torch.where(within.any(-1), within.sum(-1) + 1, previous)
            if position == 0:
                end = end.clamp(min=min(kv_blocks, int(kv_blocks * min_full) + 1))
            previous = torch.maximum(end.clamp(max=kv_blocks), previous)
            ends.append(previous)
    else:
        for position, cutoff in enumerate(cutoffs):
            end = max(min(kv_blocks, int(kv_blocks * cutoff)), 1 if position == 0 else 0)
            previous = previous.clamp(min=end)
            ends.append(previous)
    level_sorted = torch.zeros_like(order, dtype=torch.int32)
    for level, end in reversed(list(zip(POOL_LEVELS, ends))):
        level_sorted = torch.where(rank < end[..., None], level, level_sorted)
    return torch.zeros_like(level_sorted).scatter(-1, order, level_sorted)


class PSAMethod(BlockSparseMethod):
    """Attaches PSA's pyramid plan, predicted per call from sampled attention over the video tokens."""

    config: PSAConfig

    def refine(self, call: AttentionCall) -> AttentionCall:
        layout: SparseLayout = call.layout
        n = layout.video_tokens
        importance = block_importance(call.query, call.key[:, :, :n], layout.block_q, layout.block_k, call.scale)
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
