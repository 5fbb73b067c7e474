"""Bad inputs fail loudly with diffattn errors that say what to do; plan checks that sync run once per plan."""

from __future__ import annotations

import pytest
import torch

from diffattn.errors import BackendUnavailableError, ConfigError, PlanError
from diffattn.kernels import (
    AttentionInputError,
    available_backends,
    block_sparse_attention,
)
from diffattn.plan import BlockPlan, BoxMask

from ._kernel_testing import qkv, random_plan, triton_or_skip


def _plan(**changes) -> BlockPlan:
    fields = {"kv_indices": torch.tensor([[[[0, 1], [1, -1]]]]), "kv_counts": torch.tensor([[[[2], [1]]]]),
              "block_q": 64, "block_k": 64, "num_kv_blocks": 2}
    fields.update(changes)
    return BlockPlan(**fields)


def test_empty_row_is_rejected():
    q, k, v = qkv(1, 1, 100, 100, 64)
    empty = _plan(kv_counts=torch.tensor([[[[2], [0]]]]))
    with pytest.raises(PlanError, match="no kv block"):
        block_sparse_attention(q, k, v, empty)


@pytest.mark.parametrize(
    "plan, message",
    [
        (_plan(kv_indices=torch.tensor([[[[0, 2], [1, -1]]]])), "outside"),
        (_plan(kv_counts=torch.tensor([[[[3], [1]]]])), "width"),
        (_plan(kv_indices=torch.zeros(3, 1, 2, 2, dtype=torch.int32), kv_counts=torch.ones(3, 1, 2, 1, dtype=torch.int32)), "broadcast"),
        (BlockPlan.dense(100, 300, 64, 64), "kv blocks"),
        (BlockPlan.dense(200, 100, 64, 64), "query blocks"),
        (BlockPlan.dense(100, 100, 64, 64).to("meta"), "plan.to"),
    ],
    ids=["id-out-of-range", "counts-over-width", "batch-mismatch", "kv-length", "q-length", "device"],
)
def test_plan_mismatch_is_rejected(plan, message):
    q, k, v = qkv(2, 1, 100, 100, 64)
    with pytest.raises(PlanError, match=message):
        block_sparse_attention(q, k, v, plan)


def test_token_mask_with_pooled_levels_is_rejected():
    coords = torch.arange(100, dtype=torch.int32)[:, None]
    mask = BoxMask(coords, coords, coords)
    plan = BlockPlan.from_level_map(torch.tensor([[[[1, 2], [2, 1]]]]), 64, 64, token_mask=mask)
    q, k, v = qkv(1, 1, 100, 100, 64)
    with pytest.raises(PlanError, match="token mask"):
        block_sparse_attention(q, k, v, plan)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda q, k, v: (q[0], k, v), "batch, heads, tokens"),
        (lambda q, k, v: (q.int(), k.int(), v.int()), "floating"),
        (lambda q, k, v: (q, k.double(), v), "one dtype"),
        (lambda q, k, v: (q, k[:, :, :50], v), "kv_len"),
        (lambda q, k, v: (q, k[..., :32], v[..., :32]), "head_dim"),
        (lambda q, k, v: (q, k.to("meta"), v), "one device"),
    ],
    ids=["3d", "int", "mixed-dtype", "kv-mismatch", "head-dim", "device"],
)
def test_bad_tensors_are_rejected(make, message):
    q, k, v = make(*qkv(1, 1, 100, 100, 64))
    with pytest.raises(AttentionInputError, match=message):
        block_sparse_attention(q, k, v, BlockPlan.dense(100, 100, 64, 64))


def test_bad_arguments_are_rejected():
    q, k, v = qkv(1, 2, 100, 100, 64)
    plan = BlockPlan.dense(100, 100, 64, 64)
    with pytest.raises(ConfigError, match="scale"):
        block_sparse_attention(q, k, v, plan, scale=-1.0)
    with pytest.raises(ConfigError, match="pv_threshold"):
        block_sparse_attention(q, k, v, plan, pv_threshold=torch.ones(3))
    with pytest.raises(BackendUnavailableError, match="unknown backend"):
        block_sparse_attention(q, k, v, plan, backend="cudnn")


def test_triton_refusals_say_what_works():
    triton_or_skip()
    q, k, v = qkv(1, 1, 100, 100, 64)
    with pytest.raises(BackendUnavailableError, match="float16 or bfloat16.*Available here"):
        block_sparse_attention(q, k, v, BlockPlan.dense(100, 100, 64, 64), backend="triton")
    with pytest.raises(PlanError, match=r"\(64, 128\)"):
        block_sparse_attention(q.half(), k.half(), v.half(), BlockPlan.dense(100, 100, 32, 32), backend="triton")
    big = [torch.randn(1, 1, 100, 256, dtype=torch.half) for _ in range(3)]
    with pytest.raises(BackendUnavailableError, match="head_dim 256"):
        block_sparse_attention(*big, BlockPlan.dense(100, 100, 64, 64), backend="triton")
    spread = torch.arange(100, dtype=torch.int32)[:, None].expand(100, 3) * 100  # 3 axes of 14 + 1 bits
    wide = BoxMask(spread, spread, spread)
    plan = BlockPlan.from_mask_mod(wide.mask_mod, 1, 1, 100, 100, 64, 64, token_mask=wide)
    with pytest.raises(BackendUnavailableError, match="31 bits"):
        block_sparse_attention(q.half(), k.half(), v.half(), plan, backend="triton")


def test_available_backends_reports_every_backend():
    status = available_backends()
    assert set(status) == {"reference", "flex", "triton"} and status["reference"] is True
    assert all(value is True or isinstance(value, str) for value in status.values())


def test_host_checks_run_once_per_plan(monkeypatch):
    calls = []
    real = BlockPlan.check_contents
    monkeypatch.setattr(BlockPlan, "check_contents", lambda plan: calls.append(plan) or real(plan))
    plan = random_plan(1, 1, 100, 100, 64, 64)
    q, k, v = qkv(1, 1, 100, 100, 64)
    for _ in range(3):
        block_sparse_attention(q, k, v, plan)
    assert len(calls) == 1


def test_plans_built_per_call_are_trusted_and_never_read_back(monkeypatch):
    """Per-call builders give valid-by-construction plans; reading one back would stall the GPU every layer."""
    from diffattn.kernels import sparge_plan

    q, k, v = qkv(1, 2, 256, 256, 64)
    level_map = (torch.rand(1, 2, 4, 4) < 0.5).int()
    level_map[..., 0] = 1  # rows non-empty: the sync-free builder's precondition
    sync_free = BlockPlan.from_level_map(level_map, 64, 64, width=4, levels=(1,))
    planned = sparge_plan(q, k, block_q=64, block_k=64, topk=0.5, backend="reference")
    built = [sync_free, planned, sync_free & planned, planned.keep_slots(torch.rand(1, 2, 4, 4) < 0.5),
             BlockPlan.dense(256, 256, 64, 64)]
    assert all(plan.trusted for plan in built)
    monkeypatch.setattr(BlockPlan, "check_contents", lambda plan: pytest.fail("a trusted plan was read back"))
    for plan in built:
        block_sparse_attention(q, k, v, plan)


def test_user_plans_and_narrow_sync_free_plans_are_still_checked():
    level_map = torch.tensor([[[[1, 1, 0], [0, 0, 0]]]])  # the second row is empty
    narrow = BlockPlan.from_level_map(level_map, 64, 64, width=2, levels=(1,))
    assert not narrow.trusted and not _plan().trusted
    assert BlockPlan.from_level_map(level_map, 64, 64, width=3, levels=(1,)).trusted
    q, k, v = qkv(1, 1, 128, 130, 64)
    with pytest.raises(PlanError, match="no kv block"):
        block_sparse_attention(q, k, v, narrow)
