"""pv_threshold (SpargeAttn stage 2) and skip_threshold (LiteAttention marks, here the "final" criterion; the
default "running" one is in test_marks.py): exact behaviour and extremes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from diffattn.kernels import block_sparse_attention
from diffattn.kernels.api import MARK_SLACK
from diffattn.plan import BlockPlan

from ._kernel_testing import first_slot_plan, loud_and_quiet, qkv, random_plan, rel_err, triton_or_skip

pytestmark = pytest.mark.usefixtures("kernel_device")  # the GPU when there is one (conftest)

LOG2E = 1.4426950408889634
BACKENDS = ["reference", "triton"]


def _run(q, k, v, plan, backend, **kwargs):
    if backend == "triton":
        triton_or_skip()
        q, k, v = q.bfloat16(), k.bfloat16(), v.bfloat16()
    return block_sparse_attention(q, k, v, plan, backend=backend, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pv_threshold_extremes(backend):
    plan = random_plan(1, 2, 150, 260, 64, 128, (1, 2, 4))
    q, k, v = qkv(1, 2, 150, 260, 64)
    base = _run(q, k, v, plan, backend)
    # +inf == no threshold; Triton then walks whole plan blocks per tile, so only bf16 rounding of P differs
    assert rel_err(_run(q, k, v, plan, backend, pv_threshold=math.inf), base) < 5e-3
    only_first = _run(q, k, v, plan, backend, pv_threshold=-math.inf)
    expected = block_sparse_attention(q, k, v, first_slot_plan(plan), backend="reference")
    assert rel_err(only_first, expected) < 1e-2


@pytest.mark.parametrize("backend", BACKENDS)
def test_pv_threshold_skips_blocks_far_below_the_running_max(backend):
    """Block 0's keys align with the queries (logits ~+60 log2), the rest are noise: a threshold of 10 skips
    exactly the rest, 200 skips nothing, and a per-head tensor applies per head."""
    q, k, v = qkv(1, 2, 128, 512, 64)
    k[:, :, :128] = q * 4.0
    plan = BlockPlan.dense(128, 512, 128, 128)
    first_only = block_sparse_attention(q, k, v, first_slot_plan(plan), backend="reference")
    full = block_sparse_attention(q, k, v, plan, backend="reference")
    assert rel_err(_run(q, k, v, plan, backend, pv_threshold=10.0), first_only) < 1e-2
    assert rel_err(_run(q, k, v, plan, backend, pv_threshold=200.0), full) < 1e-2
    per_head = _run(q, k, v, plan, backend, pv_threshold=torch.tensor([10.0, 200.0]))
    assert rel_err(per_head[:, :1], first_only[:, :1]) < 1e-2 and rel_err(per_head[:, 1:], full[:, 1:]) < 1e-2


def test_pv_threshold_triton_matches_reference():
    plan = random_plan(1, 2, 200, 300, 64, 64, (1, 2), keep=0.8)
    q, k, v = loud_and_quiet(1, 2, 200, 300)
    ref = block_sparse_attention(q.float(), k.float(), v.float(), plan, backend="reference", pv_threshold=4.0)
    dense = block_sparse_attention(q.float(), k.float(), v.float(), plan, backend="reference")
    assert rel_err(ref, dense) > 1e-4  # the threshold really skips something here
    triton_or_skip()
    assert rel_err(block_sparse_attention(q, k, v, plan, backend="triton", pv_threshold=4.0), ref) < 1e-2


def _near_max_blocks(q, k, plan: BlockPlan, slack: float) -> torch.Tensor:
    """bool [B, H, q_blocks, kv_blocks]: the blocks where some row's max over the block's listed keys is within
    `slack` (log2 units of scaled logits, as the kernels compare) of that row's max over all its listed keys."""
    mask = plan.to_token_mask(q.shape[2], k.shape[2])
    logits = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5 * LOG2E
    logits = logits.masked_fill(~mask, -math.inf)
    kv_pad = plan.num_kv_blocks * plan.block_k - k.shape[2]
    per_block = F.pad(logits, (0, kv_pad), value=-math.inf).unflatten(-1, (plan.num_kv_blocks, plan.block_k)).amax(-1)
    near = (per_block > -math.inf) & (per_block >= logits.amax(-1, keepdim=True) - slack)
    q_pad = plan.num_q_blocks * plan.block_q - q.shape[2]
    return F.pad(near, (0, 0, 0, q_pad), value=False).unflatten(2, (plan.num_q_blocks, plan.block_q)).any(3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_skip_threshold_extremes(backend):
    plan = random_plan(1, 1, 140, 330, 64, 64, keep=0.7)
    q, k, v = qkv(1, 2, 140, 330, 64)
    base = _run(q, k, v, plan, backend)
    keep_all = _run(q, k, v, plan, backend, skip_threshold=-math.inf, mark_criterion="final")
    assert torch.equal(keep_all.out, base) and keep_all.lse is None
    assert torch.equal(keep_all.kept_plan.to_block_mask(), plan.to_block_mask().expand(1, 2, -1, -1))
    only_max = _run(q, k, v, plan, backend, skip_threshold=0.0, return_lse=True, mark_criterion="final")
    q_used, k_used = (q.bfloat16(), k.bfloat16()) if backend == "triton" else (q, k)
    marks = only_max.kept_plan.to_block_mask()
    assert not (_near_max_blocks(q_used, k_used, plan, 0.0) & ~marks).any()  # every row's max block is kept
    assert not (marks & ~_near_max_blocks(q_used, k_used, plan, 2 * MARK_SLACK)).any()  # and only those (+ slack)
    assert (only_max.kept_plan.block_counts() > 0).all()


def test_skip_threshold_marks_match_reference_and_keep_levels():
    plan = random_plan(2, 1, 200, 300, 128, 64, (1, 2, 8), keep=0.8)
    q, k, v = loud_and_quiet(2, 2, 200, 300)
    # bf16 inputs: the reference then rounds pooled K/V to bf16 too, exactly as the Triton path stores them
    ref = block_sparse_attention(q, k, v, plan, backend="reference", skip_threshold=-3.0, mark_criterion="final")
    kept = ref.kept_plan
    assert kept.levels == plan.levels and kept.width == plan.width
    assert ((kept.to_level_map() == 0) | (kept.to_level_map() == plan.to_level_map())).all()
    assert 0 < kept.density() < plan.density()
    triton_or_skip()
    tri = block_sparse_attention(q, k, v, plan, backend="triton", skip_threshold=-3.0, pv_threshold=0.0,
                                 mark_criterion="final")
    # a tile whose margin lies within rounding (pooled keys are summed in another order) of -3 may go either way
    loose, tight = (block_sparse_attention(q, k, v, plan, backend="reference", skip_threshold=t,
                                           mark_criterion="final").kept_plan.to_block_mask() for t in (-3.05, -2.95))
    marks = tri.kept_plan.to_block_mask()
    assert not (marks & ~loose).any() and not (tight & ~marks).any()
    assert ((tri.kept_plan.to_level_map() == 0) | (tri.kept_plan.to_level_map() == plan.to_level_map())).all()
