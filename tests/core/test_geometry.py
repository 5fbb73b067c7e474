"""Grid helpers and the tile permutation (an exact inverse whose full tiles fill whole blocks)."""

import pytest
import torch

from diffattn.errors import UnsupportedModelError
from diffattn.geometry import Grid, TileOrder, bind_forward_args, family_of, gather_keeping_layout, supported_families
from diffattn.testing import tiny_denoiser, tiny_denoiser_inputs


@pytest.mark.parametrize("grid", [Grid(3, 5, 7), Grid(21, 17, 30), Grid(1, 8, 8), Grid(4, 16, 16)])
def test_tile_order_is_exact_inverse(grid):
    order = TileOrder(grid, (2, 8, 8))
    x = torch.randn(2, 3, grid.tokens, 4)
    tiled = order.to_tiles(x)
    assert torch.equal(order.to_raster(tiled), x)
    assert sorted(order.perm.tolist()) == list(range(grid.tokens))


def test_tile_order_keeps_the_memory_layout_of_diffusers_attention_inputs():
    """[B, H, S, D] views of [B, S, H, D] memory stay in that layout, so the model's transpose back is a view."""
    grid = Grid(3, 5, 7)
    order = TileOrder(grid, (2, 8, 8))
    memory = torch.randn(2, grid.tokens, 3, 4)
    x = memory.transpose(1, 2)
    tiled = order.to_tiles(x)
    assert torch.equal(tiled, x.index_select(2, order.perm)) and tiled.stride() == x.stride()
    back = order.to_raster(tiled)
    assert torch.equal(back, x) and back.transpose(1, 2).is_contiguous()
    contiguous = torch.randn(2, 3, grid.tokens, 4)
    assert order.to_tiles(contiguous).is_contiguous()
    index = torch.tensor([2, 0, 1])
    assert torch.equal(gather_keeping_layout(contiguous, 1, index), contiguous.index_select(1, index))


def test_full_tiles_are_contiguous_blocks():
    grid = Grid(5, 20, 24)  # ragged in frames and rows
    order = TileOrder(grid, (2, 8, 8))
    coords = order.coords()
    volume = 128
    assert order.num_full_tiles == 2 * 2 * 3
    for block in range(order.num_full_tiles):
        tile = coords[block * volume : (block + 1) * volume]
        extent = tile.max(0).values - tile.min(0).values + 1
        assert extent.tolist() == [2, 8, 8]


def test_downsampled_matches_padded_stride_two_conv():
    grid = Grid(1, 9, 15)
    conv = torch.nn.Conv2d(1, 1, 3, stride=2, padding=1)
    x = torch.zeros(1, 1, 9, 15)
    for level in range(1, 4):
        x = conv(x)
        assert (grid.downsampled(level).height, grid.downsampled(level).width) == tuple(x.shape[-2:])


WAN_STRUCTURED = ("wan", "wan22", "wan-i2v", "wan-vace", "skyreels-v2")


@pytest.mark.parametrize("tiny", WAN_STRUCTURED)
def test_wan_structured_transformers_share_the_wan_family_and_its_grid(tiny):
    """One family entry serves every Wan-structured transformer: [B, C, F, H, W] latents, (t, h, w) patches."""
    model, kwargs = tiny_denoiser(tiny), tiny_denoiser_inputs(tiny, frames=3, height=6, width=10)
    family = family_of(model)
    assert family.name == "wan" and family.separate_cfg and not family.text_first
    assert family.grid(model, bind_forward_args(model, (), kwargs)) == Grid(3, 3, 5)


def test_unsupported_model_error_lists_every_supported_class():
    with pytest.raises(UnsupportedModelError) as error:
        family_of(torch.nn.Linear(2, 2))
    for classes in supported_families().values():
        assert all(name in str(error.value) for name in classes)
