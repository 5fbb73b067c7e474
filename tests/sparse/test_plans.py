"""Plan algebra of the sparse methods (sync-free builders against the core's) and PSA's level choice."""

from __future__ import annotations

import math

import pytest
import torch

from diffattn.geometry import Grid
from diffattn.plan import POOL_LEVELS, BlockPlan
from diffattn.processors.sparse import SparseLayout, joint_plan
from diffattn.processors.sparse.psa import SAMPLE_STRIDE, block_importance, pyramid_levels


def random_levels(shape, seed=0, levels=POOL_LEVELS):
    generator = torch.Generator().manual_seed(seed)
    choices = torch.tensor((0, *levels))
    level_map = choices[torch.randint(len(choices), shape, generator=generator)]
    level_map[..., 0] = torch.where(level_map[..., 0] == 0, 1, level_map[..., 0])  # no empty row
    return level_map.int()


@pytest.mark.parametrize("levels", [(1,), POOL_LEVELS])
def test_sync_free_builder_matches_the_core_builder(levels):
    level_map = random_levels((2, 3, 5, 7), levels=levels)
    mine = BlockPlan.sync_free(level_map, 128, 64, levels)
    core = BlockPlan.from_level_map(level_map, 128, 64)
    assert torch.equal(mine.to_level_map(), level_map)
    assert torch.equal(mine.to_level_map(), core.to_level_map())
    mine.validate(2, 3, 5 * 128, 7 * 64)


def test_intersection_of_sync_free_plans_matches_the_checked_builder_and_keeps_rows_non_empty():
    first, second = random_levels((1, 2, 6, 9), seed=1), random_levels((1, 2, 6, 9), seed=2)
    first[0, 0, 0] = torch.tensor([1, 2, 0, 0, 0, 0, 0, 0, 0], dtype=torch.int32)
    second[0, 0, 0] = torch.tensor([0, 0, 4, 1, 0, 0, 0, 0, 0], dtype=torch.int32)  # shares no block: keeps `first`'s
    a = BlockPlan.sync_free(first, 128, 128, POOL_LEVELS)
    b = BlockPlan.sync_free(second, 128, 128, POOL_LEVELS)
    mine = a & b  # sync-free plans (width = every kv block, all levels listed)
    core = BlockPlan.from_level_map(first, 128, 128) & BlockPlan.from_level_map(second, 128, 128)
    assert torch.equal(mine.to_level_map(), core.to_level_map())
    assert torch.equal(mine.to_level_map()[0, 0, 0], first[0, 0, 0])
    assert (mine.block_counts() > 0).all()


def test_joint_plan_keeps_every_text_column_at_full_resolution():
    layout = SparseLayout("sparse", slice(0, 300), Grid(3, 10, 10), text_keys=40, block_q=128, block_k=128)
    assert (layout.q_blocks, layout.video_kv_blocks, layout.kv_blocks, layout.first_text_block) == (3, 3, 3, 2)
    video = torch.tensor([[8, 0, 4], [0, 2, 0], [0, 0, 1]], dtype=torch.int32)[None, None]
    plan = joint_plan(video, layout, POOL_LEVELS)
    expected = torch.tensor([[8, 0, 1], [0, 2, 1], [0, 0, 1]], dtype=torch.int32)  # block 2 holds text
    assert torch.equal(plan.to_level_map()[0, 0], expected)


def test_pyramid_levels_follow_psa_threshold_and_topk_rules():
    # importance shares 0.5, 0.2, 0.1, 0.1, 0.05, 0.05 (cumulative 0.5, 0.7, 0.8, 0.9, 0.95, 1.0), shuffled
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    shares = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.05, 0.05])
    importance = torch.empty(6).scatter_(0, order, shares)[None, None, None]
    levels = pyramid_levels(importance, "threshold", (0.4, 0.5, 0.6, 0.8), min_full=0.06)
    # level 1: no share within 0.4 -> min_full: int(6 * 0.06) + 1 = 1 block; level 2 up to the block crossing 0.5;
    # level 4: nothing new; level 8 up to the block crossing 0.8 (0.8 itself counts); the rest skipped
    by_rank = torch.tensor([1, 2, 8, 8, 0, 0], dtype=torch.int32)
    assert torch.equal(levels[0, 0, 0], torch.empty(6, dtype=torch.int32).scatter_(0, order, by_rank))
    ten = torch.linspace(1.0, 0.1, 10)[None, None, None]
    topk = pyramid_levels(ten, "topk", (0.1, 0.2, 0.2, 0.5), min_full=0.06)
    assert topk[0, 0, 0].tolist() == [1, 2, 8, 8, 8, 0, 0, 0, 0, 0]


def test_block_importance_is_sampled_attention_summed_per_block():
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 2, 300, 16, generator=generator), torch.randn(1, 2, 260, 16, generator=generator)
    got = block_importance(q, k, 128, 64, scale=None)
    qs, ks = q[:, :, ::SAMPLE_STRIDE], k[:, :, ::SAMPLE_STRIDE]
    probs = torch.softmax(qs @ ks.transpose(-1, -2) / math.sqrt(16), -1)
    expected = torch.zeros(1, 2, 3, 5)
    for i in range(qs.shape[2]):
        for j in range(ks.shape[2]):
            expected[:, :, i * SAMPLE_STRIDE // 128, j * SAMPLE_STRIDE // 64] += probs[:, :, i, j]
    assert torch.allclose(got, expected, atol=1e-5)
