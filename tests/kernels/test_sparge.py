"""sparge_plan (SpargeAttn stage 1) and pool_kv (PSA pyramid): Triton statistics equal the torch reference,
selection rules and forced keeps hold, and no row is ever empty."""

from __future__ import annotations

import pytest
import torch

from diffattn.kernels import pool_kv, sparge_plan
from diffattn.kernels.reference import block_stats_reference

from ._kernel_testing import qkv, rel_err, triton_or_skip

pytestmark = pytest.mark.usefixtures("kernel_device")  # the GPU when there is one (conftest)


def _similar_blocks(batch: int, heads: int, tokens: int, dim: int, block: int) -> torch.Tensor:
    """Tokens that are a per-block direction plus small noise: every block strongly self-similar."""
    blocks = -(-tokens // block)
    base = torch.randn(batch, heads, blocks, 1, dim).expand(-1, -1, -1, block, -1).reshape(batch, heads, -1, dim)
    return base[:, :, :tokens] + 0.05 * torch.randn(batch, heads, tokens, dim)


@pytest.mark.parametrize("selection", [{"topk": 0.3}, {"cdf_threshold": 0.7, "attention_sink": False}])
def test_triton_equals_reference(selection):
    """Odd lengths and mixed blocks: some Q/K blocks are noise (forced dense rows / kept columns), most are not."""
    triton_or_skip()
    q = _similar_blocks(1, 2, 300, 64, 64)
    k = _similar_blocks(1, 2, 700, 64, 128)
    q[:, 1, 64:128] = torch.randn(64, 64)
    k[:, 0, 256:384] = torch.randn(128, 64)
    q, k = q.bfloat16(), k.bfloat16()
    ref = sparge_plan(q, k, block_q=64, block_k=128, backend="reference", sim_threshold=0.5, **selection)
    tri = sparge_plan(q, k, block_q=64, block_k=128, backend="triton", sim_threshold=0.5, **selection)
    assert torch.equal(tri.to_block_mask(), ref.to_block_mask())
    assert torch.equal(tri.kv_indices, ref.kv_indices) and torch.equal(tri.kv_counts, ref.kv_counts)
    assert tri.width == tri.num_kv_blocks == 6 and tri.num_q_blocks == 5
    assert tri.to_block_mask()[0, 1, 1].all() and tri.to_block_mask()[0, 0, :, 2].all()  # forced keeps


def test_block_stats_triton_equals_reference():
    triton_or_skip()
    from diffattn.kernels import triton_stats

    x = torch.randn(2, 3, 333, 80)
    mean = x.mean(2)
    for m in (None, mean):
        pool, sim = triton_stats.block_stats_op(x, m, 128)
        ref_pool, ref_sim = block_stats_reference(x, m, 128)
        assert rel_err(pool, ref_pool) < 1e-5 and rel_err(sim, ref_sim) < 1e-5


def test_topk_one_is_dense_and_rows_are_never_empty():
    q, k, _ = qkv(2, 2, 300, 500, 64)
    assert sparge_plan(q, k, topk=1.0, backend="reference").density() == 1.0
    lean = sparge_plan(q, k, cdf_threshold=0.0, attention_sink=False, sim_threshold=-1.0, backend="reference")
    assert (lean.block_counts() == 1).all()


def test_forced_keeps_and_sink():
    """A noisy K block is kept in every row, a noisy Q block's row is dense, block 0 is the sink."""
    q = _similar_blocks(1, 1, 512, 64, 128)
    k = _similar_blocks(1, 1, 640, 64, 128)
    q[:, :, 256:384] = torch.randn(1, 1, 128, 64)  # q block 2 not self-similar
    k[:, :, 384:512] = torch.randn(1, 1, 128, 64)  # k block 3 not self-similar
    plan = sparge_plan(q, k, topk=0.2, sim_threshold=0.5, backend="reference")
    mask = plan.to_block_mask()[0, 0]
    assert mask[:, 3].all() and mask[2].all() and mask[:, 0].all()
    assert mask.sum() < mask.numel()  # still sparse elsewhere
    no_sink = sparge_plan(q, k, topk=0.2, sim_threshold=0.5, attention_sink=False, backend="reference")
    assert no_sink.density() <= plan.density()


def test_pool_kv_triton_equals_reference():
    triton_or_skip()
    k = torch.randn(1, 2, 300, 64)
    v = torch.randn(1, 2, 300, 64)
    ref = pool_kv(k, v, (2, 4, 8), 64, backend="reference")
    tri = pool_kv(k, v, (2, 4, 8), 64, backend="triton")
    assert tri.starts == ref.starts == {2: 0, 4: 160, 8: 240}
    assert rel_err(tri.k, ref.k) < 1e-6 and rel_err(tri.v, ref.v) < 1e-6
    # the last level-8 group of the ragged block averages its 4 valid tokens only
    torch.testing.assert_close(ref.k[:, :, 240 + 37], k[:, :, 296:300].mean(2))
