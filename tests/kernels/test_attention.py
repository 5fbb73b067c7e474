"""block_sparse_attention: triton == reference == flex on random plans, and the exact special cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffattn.kernels import available_backends, block_sparse_attention, checks, triton_attention
from diffattn.plan import BlockPlan, BoxMask

from ._kernel_testing import qkv, random_plan, rel_err, triton_or_skip, window_mask

pytestmark = pytest.mark.usefixtures("kernel_device")  # the GPU when there is one (conftest)

# (batch, heads, q_len, kv_len, head_dim, block_q, block_k, levels, plan batch/heads broadcast)
CASES = [
    (2, 3, 77, 77, 64, 64, 64, (1,), (1, 3)),  # tiny odd length, heads-only plan
    (1, 2, 300, 200, 128, 128, 128, (1, 2, 4, 8), (1, 2)),  # cross-attention, every level
    (2, 1, 200, 300, 64, 64, 128, (2, 4), (1, 1)),  # no level-1 segment, fully broadcast plan
    (1, 1, 1000, 1000, 64, 128, 64, (1, 8), (1, 1)),  # longer rows, level 8 in 64-token blocks
    (1, 2, 129, 257, 80, 128, 128, (1, 2), (1, 2)),  # head_dim padded in-kernel (80 -> 128)
]


def _poisoned(monkeypatch) -> None:
    """Make the Triton launcher start from NaN outputs, so an unwritten element shows up as NaN."""

    def alloc(q, return_lse, dtype):
        lse_shape = q.shape[:3] if return_lse else (1,)
        return torch.full_like(q, float("nan"), dtype=dtype), q.new_full(lse_shape, float("nan"), dtype=torch.float32)

    monkeypatch.setattr(triton_attention, "_alloc_outputs", alloc)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[2]}x{c[3]}-d{c[4]}-b{c[5]}x{c[6]}-L{''.join(map(str, c[7]))}")
def test_backends_agree_on_random_plans(case, monkeypatch):
    batch, heads, q_len, kv_len, dim, bq, bk, levels, (pb, ph) = case
    plan = random_plan(pb, ph, q_len, kv_len, bq, bk, levels)
    q, k, v = qkv(batch, heads, q_len, kv_len, dim, torch.bfloat16)
    ref = block_sparse_attention(q.float(), k.float(), v.float(), plan, backend="reference", return_lse=True)
    flex = block_sparse_attention(q.float(), k.float(), v.float(), plan, backend="flex", return_lse=True)
    assert rel_err(flex.out, ref.out) < 1e-5
    torch.testing.assert_close(flex.lse, ref.lse, atol=1e-4, rtol=1e-5)
    ref_bf16 = block_sparse_attention(q, k, v, plan, backend="reference")
    assert ref_bf16.dtype == torch.bfloat16 and rel_err(ref_bf16, ref.out) < 1e-2
    triton_or_skip()
    _poisoned(monkeypatch)
    tri = block_sparse_attention(q, k, v, plan, backend="triton", return_lse=True)
    assert tri.out.dtype == torch.bfloat16 and tri.out.shape == q.shape
    assert not tri.out.isnan().any() and not tri.lse.isnan().any()
    assert rel_err(tri.out, ref.out) < 1e-2
    torch.testing.assert_close(tri.lse, ref.lse, atol=2e-2, rtol=1e-3)


def test_dense_plan_equals_sdpa():
    q, k, v = qkv(2, 2, 190, 250, 64)
    plan = BlockPlan.dense(190, 250, 64, 128)
    expected = F.scaled_dot_product_attention(q, k, v)
    out = block_sparse_attention(q, k, v, plan, backend="reference", return_lse=True)
    assert rel_err(out.out, expected) < 1e-5
    torch.testing.assert_close(out.lse, torch.logsumexp(q @ k.transpose(-1, -2) / 8.0, -1), atol=1e-4, rtol=1e-5)
    assert rel_err(block_sparse_attention(q, k, v, plan, backend="flex"), expected) < 1e-5
    triton_or_skip()
    for dtype in (torch.float16, torch.bfloat16):
        out = block_sparse_attention(q.to(dtype), k.to(dtype), v.to(dtype), plan, backend="triton", scale=0.2)
        assert rel_err(out, F.scaled_dot_product_attention(q, k, v, scale=0.2)) < 1e-2


def test_token_mask_equals_masked_sdpa():
    window = window_mask(9, 21, (2, 5))  # 189 tokens
    n = window.q_len
    plan = BlockPlan.from_mask_mod(window.mask_mod, 1, 1, n, n, 64, 64, token_mask=window)
    assert plan.density() < 1.0
    q, k, v = qkv(1, 2, n, n, 64)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=window.dense())
    assert rel_err(block_sparse_attention(q, k, v, plan, backend="reference"), expected) < 1e-5
    assert rel_err(block_sparse_attention(q, k, v, plan, backend="flex"), expected) < 1e-5
    triton_or_skip()
    out = block_sparse_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), plan, backend="triton")
    assert rel_err(out, expected) < 1e-2


def test_row_without_visible_key_is_zero_with_minus_inf_lse():
    lo = torch.zeros(70, 1, dtype=torch.int32)
    hi = torch.full((70, 1), 69, dtype=torch.int32)
    lo[5], hi[5] = 1000, 1000  # query 5 sees nothing
    mask = BoxMask(lo, hi, torch.arange(70, dtype=torch.int32)[:, None])
    plan = BlockPlan.from_mask_mod(mask.mask_mod, 1, 1, 70, 70, 64, 64, token_mask=mask)
    q, k, v = qkv(1, 1, 70, 70, 64)
    backends = ["reference", "flex"] + (["triton"] if available_backends()["triton"] is True else [])
    for backend in backends:
        dtype = torch.bfloat16 if backend == "triton" else torch.float32
        res = block_sparse_attention(q.to(dtype), k.to(dtype), v.to(dtype), plan, backend=backend, return_lse=True)
        assert torch.all(res.out[0, 0, 5] == 0) and res.lse[0, 0, 5] == float("-inf"), backend
        assert not res.out.isnan().any(), backend


def test_strided_inputs_and_output_layout():
    """q/k/v as transposed views of [B, S, H, D] (what diffusers holds) work and the output keeps that layout."""
    triton_or_skip()
    base = torch.randn(3, 1, 150, 2, 64).bfloat16()
    q, k, v = (t.transpose(1, 2) for t in base.unbind(0))
    plan = random_plan(1, 2, 150, 150, 64, 64)
    out = block_sparse_attention(q, k, v, plan, backend="triton")
    ref = block_sparse_attention(q.float(), k.float(), v.float(), plan, backend="reference")
    assert rel_err(out, ref) < 1e-2 and out.stride() == q.stride()


def test_full_blocks_are_exactly_the_blocks_the_mask_does_not_cut():
    """`BoxMask.full_blocks` against the token mask, on a window with full, cut and empty blocks (odd sizes)."""
    window = window_mask(13, 30, (4, 9))  # 390 tokens: 64-token blocks span 2-3 rows
    full = window.full_blocks(64, 32)
    dense = torch.nn.functional.pad(window.dense(), (0, 416 - 390, 0, 448 - 390), value=True)  # padding: visible
    expected = dense.view(7, 64, 13, 32).all(3).all(1)
    assert torch.equal(full, expected)
    assert 0 < int(full.sum()) < int(BlockPlan.from_mask_mod(window.mask_mod, 1, 1, 390, 390, 64, 32).block_counts().sum())


def test_token_mask_on_full_and_cut_blocks_equals_masked_sdpa():
    """Full blocks skip the token test in the Triton kernel; cut blocks keep it: both equal masked SDPA."""
    window = window_mask(64, 8, (10, 7))  # 512 tokens, 64-token blocks of 8 whole rows
    plan = BlockPlan.from_mask_mod(window.mask_mod, 1, 1, 512, 512, 64, 64, token_mask=window)
    full = window.full_blocks(64, 64) & plan.to_block_mask()[0, 0]
    assert full.any() and (plan.to_block_mask()[0, 0] & ~full).any()
    q, k, v = qkv(1, 2, 512, 512, 64)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=window.dense())
    assert rel_err(block_sparse_attention(q, k, v, plan, backend="reference"), expected) < 1e-5
    split = checks.plan_tensors(plan, split_full=True)
    indices, full_counts = split.kv_indices[0, 0], split.full_counts[0, 0, :, 0]
    for row in range(plan.num_q_blocks):  # whole blocks first, then the cut ones; the same set as the plan's row
        listed = indices[row][: int(plan.kv_counts[0, 0, row].sum())]
        assert sorted(listed.tolist()) == sorted(plan.kv_indices[0, 0, row][: len(listed)].tolist())
        whole = window.full_blocks(64, 64)[row][listed.long()]
        assert whole[: int(full_counts[row])].all() and not whole[int(full_counts[row]):].any()
    plain = checks.plan_tensors(plan, split_full=False)  # what pv_threshold and marks get: the plan's own order
    assert torch.equal(plain.kv_indices, plan.kv_indices) and plain.full_counts is None
    assert torch.equal(plain.partial.bool(), ~window.full_blocks(64, 64))
    triton_or_skip()
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    assert rel_err(block_sparse_attention(qb, kb, vb, plan, backend="triton"), expected) < 1e-2
    # those keep the plan's order and test the cut blocks by their flag
    assert rel_err(block_sparse_attention(qb, kb, vb, plan, backend="triton", pv_threshold=float("inf")), expected) < 1e-2
    marked = block_sparse_attention(qb, kb, vb, plan, backend="triton", skip_threshold=float("-inf"))
    assert rel_err(marked.out, expected) < 1e-2 and (marked.kept_plan.to_block_mask() == plan.to_block_mask()).all()
