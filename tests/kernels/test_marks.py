"""LiteAttention marks (`skip_threshold`) under the default "running" criterion: a slot stays marked when some row's
max inside it rises more than the threshold above the running max before it, walking the plan's slot order; the
row's first slot always stays. Hand-built logits pin the semantics, random plans pin Triton to the reference."""

from __future__ import annotations

import math

import pytest
import torch

from diffattn.errors import ConfigError
from diffattn.kernels import backends, block_sparse_attention
from diffattn.plan import BlockPlan, BoxMask

from ._kernel_testing import (
    first_slot_plan,
    loud_and_quiet,
    qkv,
    random_plan,
    rel_err,
    triton_or_skip,
    window_mask,
)

pytestmark = pytest.mark.usefixtures("kernel_device")  # the GPU when there is one (conftest)

LOG2E = 1.4426950408889634
BACKENDS = ["reference", "triton"]
DIM = 64


def _graded(logits_log2: torch.Tensor, q_len: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float16 q/k/v where every query row's logit against key j is `logits_log2[j]` in log2 units (the kernels'
    `scale * q.k * log2(e)` with the default scale), exact to fp16 rounding."""
    kv_len = logits_log2.numel()
    q = torch.zeros(1, 1, q_len, DIM)
    q[..., 0] = 1.0
    k = torch.zeros(1, 1, kv_len, DIM)
    k[0, 0, :, 0] = logits_log2 * math.sqrt(DIM) / LOG2E
    v = torch.randn(1, 1, kv_len, DIM)
    return q.half(), k.half(), v.half()


def _marks(q, k, v, plan, backend, **kwargs) -> torch.Tensor:
    """bool `[B, H, q_blocks, kv_blocks]`: the kv blocks the call keeps marked."""
    if backend == "triton":
        triton_or_skip()
    result = block_sparse_attention(q, k, v, plan, backend=backend, **kwargs)
    return result.kept_plan.to_block_mask()


@pytest.mark.parametrize("backend", BACKENDS)
def test_marks_follow_the_running_max_in_slot_order(backend):
    """Blocks at -30, 5, -20, 6 (log2), threshold -3. Walking upwards, block 0 is first (kept though quiet), 1 and 3
    rise above the running max, 2 falls 25 below it. Against the final max (6) block 0 goes. Walking 3, 1, 0, 2,
    block 1 is 1 below the running max 6: kept; 0 and 2 go."""
    q, k, v = _graded(torch.tensor([-30.0, 5.0, -20.0, 6.0]).repeat_interleave(64))
    upwards = BlockPlan.dense(64, 256, 64, 64)
    assert _marks(q, k, v, upwards, backend, skip_threshold=-3.0).flatten().tolist() == [True, True, False, True]
    final = _marks(q, k, v, upwards, backend, skip_threshold=-3.0, mark_criterion="final")
    assert final.flatten().tolist() == [False, True, False, True]
    shuffled = BlockPlan(torch.tensor([[[[3, 1, 0, 2]]]]), torch.tensor([[[[4]]]]), 64, 64, 4)
    assert _marks(q, k, v, shuffled, backend, skip_threshold=-3.0).flatten().tolist() == [False, True, False, True]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_slot_is_judged_on_all_its_tiles_against_the_max_before_it(backend):
    """128-key blocks (the interpreter's kernel reads them as two 64-key tiles), halves at (0, 0), (1.5, 3),
    (6, -10), (6.5, 6.5), threshold 2: block 1's max 3 is 3 above the running max 0 (though no half is 2 above
    the max before that half), block 2's first half is 6 above 3 (its quiet second half does not clear the
    flag), block 3 is only 0.5 above 6."""
    halves = torch.tensor([0.0, 0.0, 1.5, 3.0, 6.0, -10.0, 6.5, 6.5])
    q, k, v = _graded(halves.repeat_interleave(64), q_len=128)
    plan = BlockPlan.dense(128, 512, 128, 128)
    assert _marks(q, k, v, plan, backend, skip_threshold=2.0).flatten().tolist() == [True, True, True, False]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_first_slot_stays_though_it_shows_no_key_and_a_tie_is_no_rise(backend):
    """All logits 0; a token mask shows the queries keys 0-127 only (blocks 0 and 1). Walking 3, 0, 1 at threshold
    0: block 3 is first (kept, though it hides every key), block 0 gives the rows their first keys (kept), block
    1 only ties the running max (not kept). The final-max test drops block 3 and keeps the tie."""
    q, k, v = _graded(torch.zeros(256))
    window = BoxMask(torch.zeros(64, 1, dtype=torch.int32), torch.full((64, 1), 127, dtype=torch.int32),
                     torch.arange(256, dtype=torch.int32)[:, None])
    plan = BlockPlan(torch.tensor([[[[3, 0, 1]]]]), torch.tensor([[[[3]]]]), 64, 64, 4, token_mask=window)
    assert _marks(q, k, v, plan, backend, skip_threshold=0.0).flatten().tolist() == [True, False, False, True]
    final = _marks(q, k, v, plan, backend, skip_threshold=0.0, mark_criterion="final")
    assert final.flatten().tolist() == [True, True, False, False]


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_slot_always_kept_and_minus_inf_keeps_every_slot(backend):
    plan = random_plan(1, 2, 190, 300, 64, 64, (1, 2, 4), keep=0.7)
    q, k, v = qkv(1, 2, 190, 300, 64, torch.bfloat16)
    first_only = first_slot_plan(plan).to_block_mask().expand(1, 2, -1, -1)
    for criterion in ("running", "final"):
        assert torch.equal(_marks(q, k, v, plan, backend, skip_threshold=math.inf, mark_criterion=criterion), first_only)
    assert torch.equal(_marks(q, k, v, plan, backend, skip_threshold=-math.inf), plan.to_block_mask().expand(1, 2, -1, -1))


CASES = {
    # batch, heads (plan: per batch and head), q_len, kv_len, block_q, block_k, levels, pv_threshold
    "tiles-of-two": (1, 2, 200, 333, 64, 128, (1,), None),
    "q128-k64": (2, 2, 150, 260, 128, 64, (1,), None),
    "pooled": (1, 2, 190, 300, 64, 64, (1, 2, 4), None),
    "pooled-128": (2, 1, 256, 520, 128, 128, (1, 2, 8), None),
    "with-pv": (1, 2, 200, 300, 64, 64, (1,), 4.0),
}


def _check_triton_marks(q, k, v, plan: BlockPlan, threshold: torch.Tensor, eps: float, **kwargs) -> None:
    """The Triton kernel's running marks equal the reference's, up to slots whose margin lies within `eps` of the
    threshold (rounding may tip those either way); the reference really drops some planned blocks."""
    def marks(backend: str, thr: torch.Tensor):
        return block_sparse_attention(q, k, v, plan, backend=backend, skip_threshold=thr, **kwargs)

    ref = marks("reference", threshold)
    kept = ref.kept_plan.to_block_mask()
    planned = plan.to_block_mask().expand_as(kept)
    assert kept.any() and not (kept & ~planned).any() and kept.sum() < planned.sum()
    triton_or_skip()
    tri = marks("triton", threshold)
    assert rel_err(tri.out, ref.out) < 1e-2
    loose, tight = (marks("reference", threshold + d).kept_plan.to_block_mask() for d in (-eps, eps))
    tri_kept = tri.kept_plan.to_block_mask()
    assert not (tri_kept & ~loose).any() and not (tight & ~tri_kept).any()
    assert ((tri.kept_plan.to_level_map() == 0) | (tri.kept_plan.to_level_map() == plan.to_level_map())).all()


@pytest.mark.parametrize("case", list(CASES))
def test_triton_running_marks_match_the_reference(case):
    batch, heads, q_len, kv_len, block_q, block_k, levels, pv = CASES[case]
    torch.manual_seed(sorted(CASES).index(case))
    plan = random_plan(batch, heads, q_len, kv_len, block_q, block_k, levels, keep=0.8)
    q, k, v = loud_and_quiet(batch, 2, q_len, kv_len)
    # pooled keys are averaged in another order by the Triton pooling op: their logits differ more
    eps = 0.05 if plan.is_pooled else 1e-3
    _check_triton_marks(q, k, v, plan, torch.tensor([-3.0, 0.0]), eps, pv_threshold=pv)


def test_triton_running_marks_match_the_reference_under_a_token_mask():
    """A window cuts blocks: the kernel keeps the plan's order and tests the cut blocks by their flag; a row's
    first visible key always makes its slot significant (the running max is -inf before it)."""
    window = window_mask(40, 13, (6, 4))  # 520 tokens
    plan = BlockPlan.from_mask_mod(window.mask_mod, 1, 1, 520, 520, 64, 64, token_mask=window)
    q, k, v = loud_and_quiet(1, 2, 520, 520)
    _check_triton_marks(q, k, v, plan, torch.tensor([-3.0, 0.0]), 1e-3)


@pytest.mark.parametrize("criterion", ["running", "final"])
def test_named_flex_hands_marks_to_the_reference(criterion, monkeypatch):
    """FlexAttention cannot mark tiles: a call naming it runs the reference (with a warning), marks included."""
    monkeypatch.setattr(backends, "_WARNED", set())
    plan = random_plan(1, 2, 190, 300, 64, 64, keep=0.8)
    q, k, v = loud_and_quiet(1, 2, 190, 300)
    kwargs = {"skip_threshold": -3.0, "mark_criterion": criterion}
    with pytest.warns(UserWarning, match="backend 'flex' cannot run .*skip_threshold.*running 'reference' instead"):
        flex = block_sparse_attention(q, k, v, plan, backend="flex", **kwargs)
    ref = block_sparse_attention(q, k, v, plan, backend="reference", **kwargs)
    assert torch.equal(flex.out, ref.out) and torch.equal(flex.kept_plan.kv_indices, ref.kept_plan.kv_indices)


def test_unknown_mark_criterion_is_a_config_error():
    q, k, v = qkv(1, 1, 64, 64, 64)
    with pytest.raises(ConfigError, match="mark_criterion must be one of"):
        block_sparse_attention(q, k, v, BlockPlan.dense(64, 64, 64, 64), skip_threshold=-3.0, mark_criterion="max")
