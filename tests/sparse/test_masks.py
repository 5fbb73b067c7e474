"""The Radial mask: the reference's band widths and frame keeps, order independence, the block rule, the plan."""

from __future__ import annotations

import functools

import pytest
import torch

import diffattn
from diffattn.geometry import Grid, TileOrder
from diffattn.patterns.radial import block_mask_by_density, radial_frame_tables, radial_mask_mod
from diffattn.processors.sparse import AttentionProbe


def test_frame_tables_follow_the_reference_formulas():
    """s = 1560 tokens per frame (Wan2.1 480p): 2^bit_length(s) = 2048; band = max(2048 / 2^bit_length(d) * decay, 128)."""
    width, keep = radial_frame_tables(40, 1560, 0.2, half_band_next_frame=True)
    assert width[0, 0] == 1560 and width[5, 6] == 780  # the reference's old Wan rule: half a frame next door
    assert width[0, 2] == width[0, 3] == 128  # 2048 / 4 * 0.2 = 102.4 -> the 128-token floor
    wide, _ = radial_frame_tables(40, 1560, 1.0, half_band_next_frame=False)
    assert wide[3, 4] == 1560  # the current rule (every model): adjacent frames see each other entirely
    assert (wide[0, 2], wide[0, 4], wide[0, 8], wide[0, 16]) == (512, 256, 128, 128)
    # without decay the band would drop below 128 from distance 16 on: keep every 128/64 = 2nd frame, then every 4th
    assert keep[0, :16].all()
    assert keep[0, 16] and not keep[0, 17] and keep[0, 18]
    assert keep[0, 32] and not keep[0, 34] and keep[0, 36]
    assert torch.equal(keep, keep.T)


def test_the_mask_is_the_same_set_of_pairs_in_any_token_order():
    grid = Grid(6, 12, 20)
    order = TileOrder(grid, (2, 8, 8))
    settings = {"decay_factor": 0.2, "attention_sink": True, "half_band_next_frame": True}
    raster = radial_mask_mod(grid, grid.coords(), **settings)
    tiled = radial_mask_mod(grid, order.coords(), **settings)
    q, k = torch.arange(grid.tokens)[:, None], torch.arange(grid.tokens)[None, :]
    zero = torch.zeros((), dtype=torch.long)
    raster_mask, tiled_mask = raster(zero, zero, q, k), tiled(zero, zero, q, k)
    assert torch.equal(tiled_mask, raster_mask[order.perm][:, order.perm])
    assert raster_mask[:, : grid.frame_tokens].all()  # the sink: key frame 0 is visible to every query
    assert 0.2 < raster_mask.float().mean() < 0.9


def test_block_rule_keeps_blocks_whose_touched_columns_are_mostly_dense():
    """Blocks of 3 x 5: kept when more than 60% of the touched key columns are seen by more than 1/3 of the rows."""
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[:2, 0:4] = True  # block 0: 4 touched columns, each seen by 2/3 of the rows -> kept
    mask[0, 4] = True  # plus one column seen by 1/3 (not more) -> 4/5 = 80% dense columns, still kept
    mask[:2, 5:7] = True  # block 1: 2 dense columns of 5 touched -> 40% -> dropped
    mask[0, 7:10] = True
    blocks = block_mask_by_density(lambda b, h, q, k: mask[q, k], 3, 10, 3, 5)
    assert blocks.tolist() == [[True, False]]


def test_radial_plans_thin_out_as_videos_get_longer():
    densities = []
    for frames in (4, 16, 32):
        probe = AttentionProbe([diffattn.RadialConfig(dense_steps=0, dense_layers=(), min_tokens=1)], family="wan")
        grid = Grid(frames, 8, 16)
        q = torch.zeros(1, 1, grid.tokens, 16)
        probe(q, q, q, grid, block=1)
        densities.append(probe.stats.to_dict()["blocks.1.attn1"][0]["density"])
    assert densities[0] > densities[1] > densities[2]
    assert densities[2] < 0.4


@pytest.mark.parametrize("token_order", ["raster", "tiles"])
def test_every_query_block_keeps_its_own_key_block(token_order, call_spy):
    probe = AttentionProbe(
        [diffattn.RadialConfig(dense_steps=0, dense_layers=(), attention_sink=False, min_tokens=1, token_order=token_order)]
    )
    grid = Grid(24, 4, 8)
    q = torch.randn(1, 1, grid.tokens, 16)
    probe(q, q, q, grid, block=1)
    mask = call_spy[0].plan.to_block_mask()[0, 0]
    assert mask.diagonal().all()
    assert mask.float().mean() < 0.5


RULE_GRID = Grid(4, 16, 32)
"""512 tokens per frame: half a frame's band and the whole frame give different blocks, and so does the sink."""


@functools.cache
def _expected_blocks(*, sink: bool, half_band: bool) -> torch.Tensor:
    """The reference's token mask on `RULE_GRID` reduced by its block rule, plus each query block's own key block."""
    mask_mod = radial_mask_mod(RULE_GRID, RULE_GRID.coords(), decay_factor=0.2, attention_sink=sink,
                               half_band_next_frame=half_band)
    blocks = block_mask_by_density(mask_mod, RULE_GRID.tokens, RULE_GRID.tokens, 128, 128)
    return blocks | torch.eye(blocks.shape[0], dtype=torch.bool)


@pytest.mark.parametrize(
    ("family", "settings", "sink", "half_band"),
    [
        ("wan", {}, True, False),  # upstream 72788d4: Wan keeps the sink, adjacent frames see the whole frame
        ("hunyuanvideo", {}, False, False),  # upstream 2f61c30 removed the sink for HunyuanVideo
        ("cogvideox", {}, False, False),
        ("wan", {"half_band_next_frame": True}, True, True),  # the old Wan rule, on request
        ("hunyuanvideo", {"attention_sink": True}, True, False),
    ],
)
def test_radial_follows_the_current_reference_per_model(family, settings, sink, half_band, call_spy):
    probe = AttentionProbe([diffattn.RadialConfig(dense_steps=0, dense_layers=(), min_tokens=1, **settings)], family=family)
    q = torch.zeros(1, 1, RULE_GRID.tokens, 16)
    probe(q, q, q, RULE_GRID, block=1)
    assert torch.equal(call_spy[0].plan.to_block_mask()[0, 0], _expected_blocks(sink=sink, half_band=half_band))


def test_rules_differ_where_the_tests_above_look():
    current = _expected_blocks(sink=True, half_band=False)
    assert not torch.equal(current, _expected_blocks(sink=False, half_band=False))
    assert not torch.equal(current, _expected_blocks(sink=True, half_band=True))


def test_presets_are_the_shipped_settings():
    wan22 = diffattn.RadialConfig.preset("wan2.2")
    assert (wan22.dense_steps, wan22.dense_layers, wan22.decay_factor) == (11, (0,), 0.8)
    assert diffattn.RadialConfig.preset("wan2.1") == diffattn.RadialConfig()
    hunyuan = diffattn.RadialConfig.preset("hunyuanvideo", dense_last_steps=2)
    assert (hunyuan.dense_steps, hunyuan.dense_layers, hunyuan.decay_factor, hunyuan.dense_last_steps) == (12, (), 0.95, 2)
    with pytest.raises(diffattn.ConfigError, match="no Radial preset for 'wan3'"):
        diffattn.RadialConfig.preset("wan3")
