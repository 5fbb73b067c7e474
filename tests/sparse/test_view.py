"""The sparse view of a call: token orders, joint text rows/columns, key padding, and the dense fallbacks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import diffattn
from diffattn.geometry import Grid
from diffattn.processors.sparse import AttentionProbe, SparseLayout

from .conftest import relative_error

GRID = Grid(4, 8, 8)  # 256 video tokens
TEXT = 24
DENSE = {"topk": 1.0, "backend": "reference", "min_tokens": 64}


def qkv(tokens: int, batch: int = 1, heads: int = 2, dim: int = 32, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, tokens, dim, generator=generator) for _ in range(3)]


@pytest.mark.parametrize("token_order", ["tiles", "raster"])
@pytest.mark.parametrize("family", ["wan", "cogvideox", "hunyuanvideo"])
def test_a_dense_plan_on_the_view_equals_sdpa(family, token_order, call_spy):
    """Self-attention (Wan) and joint attention with text first (CogVideoX) or last (HunyuanVideo)."""
    text = 0 if family == "wan" else TEXT
    q, k, v = qkv(GRID.tokens + text)
    probe = AttentionProbe([diffattn.SpargeConfig(token_order=token_order, **DENSE)], family=family)
    out = probe(q, k, v, GRID)
    assert relative_error(out, F.scaled_dot_product_attention(q, k, v)) < 1e-5
    layout = call_spy[0].layout
    assert isinstance(layout, SparseLayout) and layout.text_keys == text
    assert (layout.order is None) == (token_order == "raster")
    assert call_spy[0].query.shape[2] == GRID.tokens  # the kernels see video queries only


@pytest.mark.parametrize("family", ["cogvideox", "hunyuanvideo"])
def test_text_rows_are_the_stock_rows_and_text_columns_always_kept(family, call_spy):
    q, k, v = qkv(GRID.tokens + TEXT)
    probe = AttentionProbe([diffattn.SpargeConfig(topk=0.25, backend="reference", min_tokens=64)], family=family)
    out = probe(q, k, v, GRID)
    reference = F.scaled_dot_product_attention(q, k, v)
    text = slice(0, TEXT) if family == "cogvideox" else slice(GRID.tokens, None)
    assert relative_error(out[:, :, text], reference[:, :, text]) < 1e-6
    mask = call_spy[0].plan.to_block_mask()
    layout = call_spy[0].layout
    assert mask[..., layout.first_text_block :].all()
    assert not mask[..., : layout.first_text_block].all()  # while video columns were dropped


def test_key_padding_drops_padded_text_and_splits_samples_that_differ(call_spy):
    """HunyuanVideo's bool mask [B, 1, 1, S]: padded text keys hidden; samples with different padding get one view each."""
    q, k, v = qkv(GRID.tokens + TEXT, batch=3)
    valid_text = torch.tensor([10, 24, 10])
    keep = torch.arange(GRID.tokens + TEXT)[None] < (GRID.tokens + valid_text)[:, None]
    mask = keep[:, None, None, :]
    probe = AttentionProbe([diffattn.SpargeConfig(**DENSE)], family="hunyuanvideo")
    out = probe(q, k, v, GRID, attn_mask=mask)
    assert relative_error(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask)) < 1e-5
    assert [c.layout.part for c in call_spy] == [0, 1, 2]
    assert [c.layout.text_keys for c in call_spy] == [10, 24, 10]

    call_spy.clear()
    same = keep[[0, 2]][:, None, None, :]  # equal padding: one view for the batch
    probe(q[[0, 2]], k[[0, 2]], v[[0, 2]], GRID, attn_mask=same)
    assert [(c.layout.part, c.layout.text_keys, c.query.shape[0]) for c in call_spy] == [(None, 10, 2)]


def test_calls_that_cannot_be_sparse_stay_dense_and_the_stats_say_why(call_spy):
    short = AttentionProbe([diffattn.SpargeConfig(topk=0.25, backend="reference", min_tokens=512)], family="wan")
    probe = AttentionProbe([diffattn.SpargeConfig(topk=0.25, backend="reference", min_tokens=64)], family="wan")
    q, k, v = qkv(GRID.tokens)
    outs = [short(q, k, v, GRID, block=b) for b in range(3)]  # too short: 256 < 512 tokens
    float_mask = torch.zeros(1, 1, GRID.tokens, GRID.tokens)
    masked = probe(q, k, v, GRID, attn_mask=float_mask)
    cross = probe(q, k[:, :, :40], v[:, :, :40], GRID)  # cross-attention: dense by design, no reason
    stock = F.scaled_dot_product_attention(q, k, v)
    assert all(torch.equal(out, stock) for out in outs)  # the model's own call, bit for bit
    assert torch.equal(masked, F.scaled_dot_product_attention(q, k, v, attn_mask=float_mask))
    assert torch.equal(cross, F.scaled_dot_product_attention(q, k[:, :, :40], v[:, :, :40]))
    assert not call_spy
    assert short.stats.activity()["sparge"].fallbacks == {"256 video tokens are fewer than min_tokens=512": 3}
    assert short.stats.never_ran() == {"sparge": "256 video tokens are fewer than min_tokens=512"}
    fallbacks = probe.stats.activity()["sparge"].fallbacks
    assert fallbacks[""] == 1 and len(fallbacks) == 2
    assert "not a key padding mask" in next(r for r in fallbacks if r)
