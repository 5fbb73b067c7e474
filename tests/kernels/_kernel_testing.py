"""Helpers shared by the kernel tests (random inputs and plans, error measure, Triton availability)."""

from __future__ import annotations

import pytest
import torch

from diffattn.kernels import available_backends
from diffattn.plan import BlockPlan, BoxMask


def triton_or_skip() -> None:
    """Skip the calling test, saying why, when the Triton kernels cannot run on this CPU."""
    status = available_backends()["triton"]
    if status is not True:
        pytest.skip(f"Triton backend unavailable here: {status}")


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative Frobenius error in float64."""
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm())


def qkv(batch: int, heads: int, q_len: int, kv_len: int, dim: int, dtype=torch.float32, spread: float = 1.0):
    """Fresh random q, k, v (never zeros); `spread` scales q to make softmax rows peakier."""
    q = torch.randn(batch, heads, q_len, dim) * spread
    k = torch.randn(batch, heads, kv_len, dim)
    v = torch.randn(batch, heads, kv_len, dim)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def random_plan(
    batch: int, heads: int, q_len: int, kv_len: int, block_q: int, block_k: int,
    levels: tuple[int, ...] = (1,), keep: float = 0.5,
) -> BlockPlan:
    """A random plan: each block kept with probability `keep` at a random level of `levels`, no empty row."""
    q_blocks, kv_blocks = -(-q_len // block_q), -(-kv_len // block_k)
    shape = (batch, heads, q_blocks, kv_blocks)
    choice = torch.tensor(levels)[torch.randint(len(levels), shape)]
    level_map = torch.where(torch.rand(shape) < keep, choice, 0)
    forced = torch.randint(kv_blocks, (*shape[:3], 1))
    level_map.scatter_(-1, forced, choice.gather(-1, forced))
    return BlockPlan.from_level_map(level_map, block_q, block_k)


def loud_and_quiet(batch: int, heads: int, q_len: int, kv_len: int, block: int = 64):
    """bf16 q/k/v whose kv blocks alternate loud and quiet keys, so whole tiles fall far below a row's max."""
    q, k, v = qkv(batch, heads, q_len, kv_len, 64, spread=2.0)
    loudness = torch.tensor([3.0, 0.2, 0.2, 3.0, 0.2]).repeat_interleave(block)
    loudness = loudness.repeat(-(-kv_len // loudness.numel()))[:kv_len]
    return q.bfloat16(), (k * loudness[:, None]).bfloat16(), v.bfloat16()


def first_slot_plan(plan: BlockPlan) -> BlockPlan:
    """The plan keeping only each row's first listed slot, at its level."""
    first_level = (plan.kv_offsets[..., 1:] > 0).int().argmax(-1, keepdim=True)
    counts = torch.zeros_like(plan.kv_counts).scatter(-1, first_level, 1)
    return BlockPlan(plan.kv_indices[..., :1].contiguous(), counts, plan.block_q, plan.block_k,
                     plan.num_kv_blocks, plan.levels)


def window_mask(height: int, width: int, radius: tuple[int, int]) -> BoxMask:
    """A sliding window on a height x width token grid: keys within `radius` rows/columns of the query."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    coord = torch.stack([rows.flatten(), cols.flatten()], -1).to(torch.int32)
    r = torch.tensor(radius, dtype=torch.int32)
    return BoxMask(coord - r, coord + r, coord)
