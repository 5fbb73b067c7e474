"""FreeSwim's inward window as exact block plans: token-level equality with the paper's formula, full windows at
every border, exact and minimal block lists, and what the tile order buys at 1088x1920."""

import math

import pytest
import torch

from diffattn.errors import ConfigError
from diffattn.geometry import Grid, TileOrder
from diffattn.patterns.windows import (
    TILE_CANDIDATES,
    attention_temperature,
    box_block_mask,
    reference_window_mask,
    window_bounds,
    window_box_mask,
    window_plan,
    window_radius_from_base,
    window_tile_order,
)
from diffattn.plan import BoxMask


def plan_tokens_in_raster(grid, radius, *, inward=True, block=128, tiled=True):
    """The plan's token mask `[tokens, tokens]`, brought back to raster order."""
    order = window_tile_order(grid, radius, block, inward=inward) if tiled else None
    plan = window_plan(grid, radius, inward=inward, block_q=block, block_k=block, order=order)
    mask = plan.to_token_mask(grid.tokens, grid.tokens)[0, 0]
    if order is not None:
        mask = mask[order.inverse][:, order.inverse]
    return plan, mask


def test_window_bounds_clamp_the_centre_inward():
    low, high = window_bounds(10, 2)
    assert low.tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 5, 5]
    assert (high - low).tolist() == [4] * 10  # every position keeps a full 5-wide window
    for size, radius in [(7, 3), (12, 1), (5, 0), (9, 4)]:
        low, high = window_bounds(size, radius)
        centre = torch.arange(size).clamp(radius, size - 1 - radius)
        assert torch.equal(low.long(), centre - radius) and torch.equal(high.long(), centre + radius)
    low, high = window_bounds(4, 3)  # axis shorter than the window: visible whole
    assert low.tolist() == [0] * 4 and high.tolist() == [3] * 4
    low, high = window_bounds(10, 2, inward=False)
    assert low.tolist()[:3] == [0, 0, 0] and high.tolist()[:3] == [2, 3, 4]  # truncated at the border


@pytest.mark.parametrize(
    "grid, radius",
    [
        (Grid(3, 9, 11), (2, 3)),  # ragged tiles on every axis
        (Grid(1, 8, 8), (1, 2)),
        (Grid(2, 17, 30), (4, 7)),
        (Grid(3, 4, 6), (4, 6)),  # window larger than the frame
        (Grid(5, 20, 24), (0, 0)),  # one column of keys per query
    ],
)
@pytest.mark.parametrize("inward", [True, False])
@pytest.mark.parametrize("block, tiled", [(128, True), (64, True), (64, False)])
def test_plan_equals_the_papers_token_mask(grid, radius, inward, block, tiled):
    _, mask = plan_tokens_in_raster(grid, radius, inward=inward, block=block, tiled=tiled)
    assert torch.equal(mask, reference_window_mask(grid, radius, inward=inward))


@pytest.mark.parametrize("block", sorted(TILE_CANDIDATES))
def test_every_candidate_tile_gives_the_exact_window(block):
    grid, radius = Grid(5, 11, 19), (2, 4)  # ragged for every candidate tile
    reference = reference_window_mask(grid, radius)
    for tile in TILE_CANDIDATES[block]:
        order = TileOrder(grid, tile)
        plan = window_plan(grid, radius, block_q=block, block_k=block, order=order)
        mask = plan.to_token_mask(grid.tokens, grid.tokens)[0, 0][order.inverse][:, order.inverse]
        assert torch.equal(mask, reference), tile
    chosen = window_tile_order(grid, radius, block)
    fewest = min(int(window_plan(grid, radius, block_q=block, block_k=block, order=TileOrder(grid, t)).block_counts().sum())
                 for t in TILE_CANDIDATES[block])
    assert int(window_plan(grid, radius, block_q=block, block_k=block, order=chosen).block_counts().sum()) == fewest


def test_every_query_keeps_a_full_window_clamped_at_all_four_borders():
    grid, (dh, dw) = Grid(3, 11, 14), (2, 3)
    _, mask = plan_tokens_in_raster(grid, (dh, dw))
    assert (mask.sum(1) == grid.frames * (2 * dh + 1) * (2 * dw + 1)).all()
    coords = grid.coords().long()

    def keys(t, h, w):
        return coords[mask[(t * grid.height + h) * grid.width + w]]

    for (h, w), rows, cols in [
        ((0, 0), (0, 2 * dh), (0, 2 * dw)),  # top-left corner: window pushed down and right
        ((grid.height - 1, grid.width - 1), (grid.height - 1 - 2 * dh, grid.height - 1), (grid.width - 1 - 2 * dw, grid.width - 1)),
        ((0, 6), (0, 2 * dh), (6 - dw, 6 + dw)),  # top edge
        ((grid.height - 1, 6), (grid.height - 1 - 2 * dh, grid.height - 1), (6 - dw, 6 + dw)),  # bottom edge
        ((5, 1), (5 - dh, 5 + dh), (0, 2 * dw)),  # left edge
        ((5, grid.width - 2), (5 - dh, 5 + dh), (grid.width - 1 - 2 * dw, grid.width - 1)),  # right edge
        ((5, 6), (5 - dh, 5 + dh), (6 - dw, 6 + dw)),  # interior: centred on the query
    ]:
        seen = keys(1, h, w)
        assert seen[:, 0].unique().tolist() == list(range(grid.frames))  # time is not windowed
        assert (seen[:, 1].min().item(), seen[:, 1].max().item()) == rows
        assert (seen[:, 2].min().item(), seen[:, 2].max().item()) == cols


def test_non_inward_windows_shrink_at_borders():
    grid, radius = Grid(2, 11, 14), (2, 3)
    _, mask = plan_tokens_in_raster(grid, radius, inward=False)
    counts = mask.sum(1).view(grid.frames, grid.height, grid.width)[0]
    full = grid.frames * 5 * 7
    assert counts[5, 6] == full and counts[0, 0] == grid.frames * 3 * 4
    assert (counts < full).sum() > 0 and (counts <= full).all()


@pytest.mark.parametrize("tiled", [True, False])
def test_block_lists_are_minimal(tiled):
    grid, block = Grid(3, 9, 13), 64
    order = window_tile_order(grid, (2, 3), block) if tiled else None
    plan = window_plan(grid, (2, 3), block_q=block, block_k=block, order=order)
    tokens = plan.token_mask.dense()
    blocks = math.ceil(grid.tokens / block)
    padded = torch.zeros(blocks * block, blocks * block, dtype=torch.bool)
    padded[: grid.tokens, : grid.tokens] = tokens
    any_visible = padded.view(blocks, block, blocks, block).any(3).any(1)
    assert torch.equal(plan.to_block_mask()[0, 0], any_visible)  # no listed block is all masked, none missing


def test_box_block_mask_matches_brute_force_on_random_boxes():
    generator = torch.Generator().manual_seed(0)
    q_len, kv_len, axes = 150, 110, 3
    k_coord = torch.randint(0, 6, (kv_len, axes), generator=generator, dtype=torch.int32)
    low = torch.randint(-1, 6, (q_len, axes), generator=generator, dtype=torch.int32)
    high = low + torch.randint(-1, 4, (q_len, axes), generator=generator, dtype=torch.int32)
    box = BoxMask(low, high, k_coord)
    mask = box_block_mask(box, 32, 16)
    q_blocks, kv_blocks = math.ceil(q_len / 32), math.ceil(kv_len / 16)
    dense = box.dense()
    expected = torch.zeros(q_blocks, kv_blocks, dtype=torch.bool)
    for qb in range(q_blocks):
        for kb in range(kv_blocks):
            expected[qb, kb] = dense[qb * 32 : (qb + 1) * 32, kb * 16 : (kb + 1) * 16].any()
    assert torch.equal(mask, expected)


def test_tile_order_makes_the_1088p_window_cheap():
    """Wan2.1-1.3B at 1088x1920, 81 frames: the design note's measured block densities, without a tokens^2 mask."""
    grid, radius = Grid(21, 68, 120), (15, 26)
    tall = window_plan(grid, radius, order=TileOrder(grid, (16, 4, 2)))  # what window_tile_order picks here
    square = window_plan(grid, radius, order=TileOrder(grid, (2, 8, 8)))
    raster = window_plan(grid, radius)
    box = tall.token_mask
    assert box.q_lo.shape == (grid.tokens, 2)  # O(tokens) token edges
    per_query = (box.q_hi - box.q_lo + 1).prod(-1) * grid.frames
    assert (per_query == 21 * 31 * 53).all()
    token_density = 31 * 53 / (68 * 120)
    assert token_density == pytest.approx(0.2013, abs=1e-4)
    assert raster.density() > 0.45  # ~0.48: raster blocks are slivers of rows
    assert square.density() < 0.31  # ~0.30 with 2x8x8 tiles (the design note's ~28%)
    assert tall.density() < 0.25  # ~0.24: tall tiles, since the window spans every frame


def test_radius_and_temperature_follow_the_paper():
    assert window_radius_from_base(480, 832, (16, 16)) == (15, 26)  # the released code's d_h, d_w
    assert window_radius_from_base(720, 1280, (16, 16)) == (22, 40)
    assert attention_temperature(30 * 52) == pytest.approx(math.sqrt(math.log(3120, 1560)))
    assert attention_temperature(30 * 52) == pytest.approx(1.0461, abs=1e-4)
    assert attention_temperature(1) == 1.0


def test_box_in_tile_order_is_the_raster_box_permuted():
    grid = Grid(3, 9, 11)
    order = TileOrder(grid, (2, 8, 8))
    raster, tiled = window_box_mask(grid, (2, 3)), window_box_mask(grid, (2, 3), order=order)
    assert torch.equal(tiled.q_lo, raster.q_lo[order.perm]) and torch.equal(tiled.k_coord, raster.k_coord[order.perm])


def test_bad_window_arguments_raise():
    with pytest.raises(ConfigError, match="block_size"):
        window_tile_order(Grid(1, 4, 4), (1, 1), 96)
    with pytest.raises(ConfigError, match="radius"):
        window_bounds(5, -1)
