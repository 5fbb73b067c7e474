"""Plan algebra of the sparse methods (sync-free builders against the core's) and PSA's level choice."""

from __future__ import annotations

import math

import pytest
import torch

import diffattn
from diffattn.geometry import Grid
from diffattn.kernels import available_backends
from diffattn.plan import POOL_LEVELS, BlockPlan
from diffattn.processors.sparse import SparseLayout, joint_plan, psa
from diffattn.processors.sparse.psa import SAMPLE_STRIDE, block_importance, pyramid_levels

from .conftest import MIN_TOKENS, denoiser, forward, inputs


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


def _levels_by_rule(row: list[float], mode: str, cutoffs: tuple[float, ...], min_full: float) -> list[int]:
    """PSA's level choice for one row of distinct importances, written out block by block."""
    n = len(row)
    order = sorted(range(n), key=lambda j: -row[j])
    shares = [sum(row[j] for j in order[: i + 1]) / sum(row) for i in range(n)]
    ends, previous = [], 0
    for position, cutoff in enumerate(cutoffs):
        if mode == "threshold":
            within = sum(share <= cutoff + 1e-6 for share in shares)
            end = within + 1 if within else previous
            end = max(end, min(n, int(n * min_full) + 1)) if position == 0 else end
        else:
            end = max(min(n, int(n * cutoff)), 1 if position == 0 else 0)
        previous = max(previous, min(end, n))
        ends.append(previous)
    levels = [0] * n
    for rank, block in enumerate(order):
        levels[block] = next((lvl for lvl, end in zip(POOL_LEVELS, ends) if rank < end), 0)
    return levels


@pytest.mark.parametrize("mode", ["threshold", "topk"])
def test_pyramid_levels_follow_the_rule_on_random_rows(mode):
    """Random rows of 1 to 33 blocks, cut-offs including 0 and 1 and every min_full regime."""
    generator = torch.Generator().manual_seed(3)
    for trial, kv_blocks in enumerate((1, 2, 5, 16, 33) * 4):
        importance = torch.rand(2, 3, kv_blocks, generator=generator, dtype=torch.float64).float() ** 3
        cutoffs = tuple(sorted(torch.rand(4, generator=generator).tolist())) if trial % 3 else (0.0, 0.3, 1.0, 1.0)
        min_full = (0.0, 0.06, 0.5, 1.0)[trial % 4]
        levels = pyramid_levels(importance, mode, cutoffs, min_full)
        assert levels.dtype == torch.int32
        for row, got in zip(importance.reshape(-1, kv_blocks), levels.reshape(-1, kv_blocks)):
            assert got.tolist() == _levels_by_rule(row.tolist(), mode, cutoffs, min_full), (trial, cutoffs, min_full)


def test_psa_level_maps_are_the_same_whichever_backend_estimates_importance(call_spy, monkeypatch):
    """On the tiny Wan (float32, reference attention), importance from the Triton kernel (the interpreter) gives
    PSA the same level maps, layer by layer, as the reference."""
    if available_backends()["triton"] is not True or torch.cuda.is_available():
        pytest.skip("the Triton kernels run on this test's CPU tensors only under the interpreter")
    model, kwargs = denoiser("wan"), inputs("wan")
    maps = {}
    for backend in ("reference", "triton"):
        monkeypatch.setattr(psa, "_plan_backend", lambda name, backend=backend: backend)
        call_spy.clear()
        with diffattn.apply(model, diffattn.PSAConfig(dense_steps=0, backend="reference", min_tokens=MIN_TOKENS)):
            forward(model, kwargs)
        maps[backend] = [call.plan.to_level_map() for call in call_spy]
    assert len(maps["triton"]) == len(maps["reference"]) > 0
    assert all(torch.equal(a, b) for a, b in zip(maps["triton"], maps["reference"]))
    assert any(bool((m != 1).any()) for m in maps["triton"])  # some block pooled or skipped: not a trivial map
