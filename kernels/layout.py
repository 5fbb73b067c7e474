"""Plan-format helpers shared by every backend: slot levels, sync-free plan building and kept-tile compaction.

A plan row lists kv-block ids in *slots* (positions along the last dim of `kv_indices`); level segments are
consecutive runs of slots (see `diffattn.plan`). Everything here is plain tensor algebra with no host
synchronisation, so it can run on the GPU inside a denoising loop and under `torch.compile`.
"""

from __future__ import annotations

import torch

from diffattn.plan import BlockPlan

__all__ = ["plan_from_keep_mask", "plan_from_kept_slots", "slot_levels"]


def slot_levels(plan: BlockPlan) -> torch.Tensor:
    """int32 `[B|1, H|1, q_blocks, width]`: the pooling level of each slot, 0 for slots past the row's count."""
    offsets = plan.kv_offsets
    slot = torch.arange(plan.width, device=plan.device, dtype=torch.int32)
    level = torch.zeros_like(plan.kv_indices)
    for i, lvl in enumerate(plan.levels):
        inside = (slot >= offsets[..., i : i + 1]) & (slot < offsets[..., i + 1 : i + 2])
        level = torch.where(inside, lvl, level)
    return level


def plan_from_keep_mask(mask: torch.Tensor, block_q: int, block_k: int) -> BlockPlan:
    """A level-1 plan from a bool block mask `[B|1, H|1, q_blocks, kv_blocks]`, without a host sync.

    Unlike `BlockPlan.from_block_mask`, the row capacity is fixed to `kv_blocks` and nothing is read back to the
    host, so this is what GPU-side planners (Sparge) use. Rows must be non-empty; callers guarantee it, and the
    plan is `trusted` (kernels do not read it back to check).
    """
    kv_blocks = mask.shape[-1]
    order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    counts = mask.sum(-1, keepdim=True, dtype=torch.int32)
    slot = torch.arange(kv_blocks, device=mask.device, dtype=torch.int32)
    indices = torch.where(slot < counts, order, -1)
    return BlockPlan(indices, counts, block_q, block_k, kv_blocks, trusted=True)


def plan_from_kept_slots(plan: BlockPlan, kept: torch.Tensor) -> BlockPlan:
    """The sub-plan of `plan` made of the slots flagged in `kept` (bool `[B, H, q_blocks, width]`).

    Order within each level segment is preserved and level segments stay in place, so the result is a valid
    plan of the same geometry, width and token mask. A row with no kept slot keeps its first slot, so the
    result never leaves a row empty (only reachable through degenerate fully-masked rows); it is as `trusted` as
    `plan` was checked, since its ids are a subset of `plan`'s.
    """
    levels = slot_levels(plan).expand(kept.shape)
    kept = kept & (levels > 0)
    none = ~kept.any(-1, keepdim=True)
    first = torch.zeros_like(kept)
    first[..., 0] = True
    kept = kept | (none & first)
    order = torch.argsort((~kept).to(torch.int8), dim=-1, stable=True)
    indices = torch.gather(plan.kv_indices.expand(kept.shape), -1, order)
    total = kept.sum(-1, keepdim=True)
    slot = torch.arange(plan.width, device=kept.device)
    indices = torch.where(slot < total, indices, -1).to(torch.int32)
    counts = torch.stack([(kept & (levels == lvl)).sum(-1) for lvl in plan.levels], dim=-1).to(torch.int32)
    return BlockPlan(indices, counts, plan.block_q, plan.block_k, plan.num_kv_blocks, plan.levels, plan.token_mask,
                     trusted=True)
