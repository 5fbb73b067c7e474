"""Inward sliding windows over a latent grid, as exact block plans (FreeSwim, arXiv 2511.14712).

A query at (frame t, row h, column w) sees every key whose row lies within `radius_h` of the window centre and
whose column lies within `radius_w` of it, in every frame (time is not windowed). The centre is the query's own
position clamped inward, `c = clamp(h, radius_h, H - 1 - radius_h)`, so a query near a border keeps a full-size
window pushed inside the frame instead of a truncated one (when the frame is at least `2 * radius + 1` tokens).

Everything here is a small pure function of the grid (FlexAttention style):

- `window_bounds`: lowest/highest visible row (or column) per position on one axis;
- `window_box_mask`: the window as a `BoxMask` (exact token edges, O(tokens) memory) in raster or tile order;
- `box_block_mask`: which (query block, kv block) pairs hold at least one visible pair, computed exactly
  without a tokens x tokens mask;
- `window_tile_order` / `window_plan`: the window as a `BlockPlan` (block mask + `BoxMask`) in a spatio-temporal
  tile order, because compact tiles make a spatial window touch far fewer kv blocks than raster rows do
  (see `geometry.TileOrder`);
- `reference_window_mask`: the token-level mask written directly from the paper's formula; tests only.
"""

from __future__ import annotations

import itertools
import math

import torch

from ..errors import ConfigError
from ..geometry import Grid, TileOrder
from ..plan import BlockPlan, BoxMask

__all__ = [
    "IMAGE_TILE_CANDIDATES",
    "TILE_CANDIDATES",
    "attention_temperature",
    "box_block_mask",
    "reference_window_mask",
    "window_bounds",
    "window_box_mask",
    "window_plan",
    "window_radius_from_base",
    "window_tile_order",
    "WindowTileOrders",
]

TILE_CANDIDATES: dict[int, tuple[tuple[int, int, int], ...]] = {
    128: ((2, 8, 8), (8, 4, 4), (16, 4, 2), (16, 2, 4), (8, 8, 2), (8, 2, 8), (32, 2, 2)),
    64: ((1, 8, 8), (4, 4, 4), (8, 4, 2), (8, 2, 4), (16, 2, 2), (4, 8, 2), (4, 2, 8)),
}
"""Spatio-temporal tiles (frames, rows, columns) of one kernel block, per supported block size. A window spans
every frame, so tall, narrow tiles often touch fewer kv blocks than square ones (0.24 instead of 0.30 of the
blocks at 1088x1920); `window_tile_order` keeps the best one for the grid."""

IMAGE_TILE_CANDIDATES: dict[int, tuple[tuple[int, int, int], ...]] = {
    128: ((1, 8, 16), (1, 16, 8), (1, 4, 32), (1, 32, 4)),
    64: ((1, 8, 8), (1, 4, 16), (1, 16, 4)),
}
"""One-frame tiles of one kernel block, the candidates on grids of a single frame (images), where the tiles above
would be cut in half by the frame axis (every one of them ragged)."""

_CHUNK_ELEMENTS = 1 << 24  # coverage cells held at once while building a block mask


def window_bounds(
    size: int, radius: int, *, inward: bool = True, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lowest and highest visible coordinate (inclusive, int32 `[size]`) for each position on one axis.

    Inward: the window `[c - radius, c + radius]` around the clamped centre `c = clamp(p, radius, size-1-radius)`;
    an axis shorter than `2 * radius + 1` is visible whole. Not inward (the paper's ablation): the window is
    simply truncated at the borders.
    """
    if size < 1 or radius < 0:
        raise ConfigError(f"window axis needs size >= 1 and radius >= 0; got size={size}, radius={radius}")
    position = torch.arange(size, device=device)
    if inward:
        low = (position - radius).clamp(min=0, max=max(size - 1 - 2 * radius, 0))
        high = (low + 2 * radius).clamp(max=size - 1)
    else:
        low = (position - radius).clamp(min=0)
        high = (position + radius).clamp(max=size - 1)
    return low.to(torch.int32), high.to(torch.int32)


def window_box_mask(
    grid: Grid, radius: tuple[int, int], *, inward: bool = True, order: TileOrder | None = None
) -> BoxMask:
    """The window over `grid` as a `BoxMask` on (row, column), tokens in `order` (raster order when None)."""
    coords = order.coords() if order is not None else grid.coords()
    rows, cols = coords[:, 1].long(), coords[:, 2].long()
    row_lo, row_hi = window_bounds(grid.height, radius[0], inward=inward, device=coords.device)
    col_lo, col_hi = window_bounds(grid.width, radius[1], inward=inward, device=coords.device)
    q_lo = torch.stack([row_lo[rows], col_lo[cols]], dim=-1)
    q_hi = torch.stack([row_hi[rows], col_hi[cols]], dim=-1)
    return BoxMask(q_lo, q_hi, coords[:, 1:].contiguous())


def _ravel(index: torch.Tensor, extents: torch.Tensor) -> torch.Tensor:
    """Flat cell ids of integer coordinates `[..., axes]` in a row-major box of `extents`."""
    flat = torch.zeros(index.shape[:-1], dtype=torch.long, device=index.device)
    for axis in range(index.shape[-1]):
        flat = flat * extents[axis] + index[..., axis]
    return flat


def _blocks(values: torch.Tensor, block: int, fill: int = -1) -> torch.Tensor:
    """`values [n, ...]` padded with `fill` to whole blocks and viewed as `[blocks, block, ...]`."""
    blocks = math.ceil(values.shape[0] / block)
    padded = values.new_full((blocks * block, *values.shape[1:]), fill)
    padded[: values.shape[0]] = values
    return padded.view(blocks, block, *values.shape[1:])


def _distinct_blocks(ids: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Group per-token ids into blocks and merge blocks holding the same multiset of ids.

    Returns `(representative block of each distinct group [groups], group of each block [blocks])`.
    """
    rows = _blocks(ids, block).sort(dim=-1).values
    _, group = torch.unique(rows, dim=0, return_inverse=True)
    groups = int(group.max()) + 1
    representative = torch.empty(groups, dtype=torch.long, device=ids.device)
    representative.scatter_(0, group, torch.arange(rows.shape[0], device=ids.device))
    return representative, group


def _union_coverage(low: torch.Tensor, high: torch.Tensor, extents: torch.Tensor) -> torch.Tensor:
    """bool `[sets, cells]`: the cells covered by the union of each set's boxes (`low`/`high` `[sets, boxes, axes]`).

    A difference array per set (+-1 at the 2^axes corners of each box) summed along every axis; boxes with
    `low > high` on some axis are empty and add nothing.
    """
    sets, _, axes = low.shape
    padded = extents + 1
    valid = (low <= high).all(-1)
    diff = torch.zeros(sets, int(padded.prod()), dtype=torch.int32, device=low.device)
    for corner in itertools.product((0, 1), repeat=axes):
        pick = torch.tensor(corner, dtype=torch.bool, device=low.device)
        index = torch.where(pick, high + 1, low)
        sign = -1 if sum(corner) % 2 else 1
        diff.scatter_add_(1, _ravel(index, padded), (valid.to(torch.int32) * sign))
    coverage = diff.view(sets, *padded.tolist())
    for axis in range(axes):
        coverage = coverage.cumsum(dim=axis + 1)
    crop = (slice(None), *(slice(0, int(n)) for n in extents))
    return (coverage[crop] > 0).reshape(sets, -1)


def box_block_mask(box: BoxMask, block_q: int, block_k: int) -> torch.Tensor:
    """bool `[q_blocks, kv_blocks]`: True exactly where some query of the block sees some key of the kv block.

    Queries are grouped by block and each group's visible cells (the union of its boxes) are rasterised over the
    key-coordinate box; a kv block is kept when one of its keys lies in a visible cell. Blocks holding the same
    boxes (or the same key cells) are computed once, so memory is O(tokens + distinct blocks x cells), never
    tokens^2.
    """
    device = box.k_coord.device
    k_coord = box.k_coord.long()
    extents = k_coord.max(0).values + 1
    low = box.q_lo.long().clamp(min=0)
    high = torch.minimum(box.q_hi.long(), extents - 1)
    empty = (low > high).any(-1, keepdim=True)
    low, high = torch.where(empty, 0, low), torch.where(empty, -1, high)  # one canonical empty box
    box_id = torch.where(empty[:, 0], -1, _ravel(low, extents) * int(extents.prod()) + _ravel(high, extents))
    q_rep, q_group = _distinct_blocks(box_id, block_q)
    q_low = _blocks(low, block_q, fill=0)[q_rep]  # padding queries of a last partial block: empty boxes
    q_high = _blocks(high, block_q, fill=-1)[q_rep]

    cells = int(extents.prod())
    k_cell = _ravel(k_coord, extents)
    k_rep, k_group = _distinct_blocks(k_cell, block_k)
    k_cells = _blocks(k_cell, block_k)[k_rep]
    listed = k_cells >= 0
    footprint = torch.sparse_coo_tensor(  # [kv groups, cells]: which cells each group of kv blocks holds
        torch.stack([torch.arange(k_cells.shape[0], device=device)[:, None].expand_as(k_cells)[listed], k_cells[listed]]),
        torch.ones(int(listed.sum()), device=device),
        (k_cells.shape[0], cells),
        check_invariants=True,
    ).coalesce()

    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(1, cells))
    chunks = (slice(i, i + rows_per_chunk) for i in range(0, q_low.shape[0], rows_per_chunk))
    kept = torch.cat(
        [torch.sparse.mm(footprint, _union_coverage(q_low[rows], q_high[rows], extents).T.float()).T > 0 for rows in chunks]
    )
    return kept[q_group][:, k_group]


def window_tile_order(
    grid: Grid, radius: tuple[int, int], block_size: int = 128, *, inward: bool = True, device: torch.device | str = "cpu"
) -> TileOrder:
    """The tile permutation (full tiles are exactly one block of `block_size` tokens) under which the window
    lists the fewest kv blocks, among `TILE_CANDIDATES`, or `IMAGE_TILE_CANDIDATES` on a one-frame grid (the first
    on ties)."""
    if block_size not in TILE_CANDIDATES:
        raise ConfigError(f"block_size must be one of {sorted(TILE_CANDIDATES)}; got {block_size}")
    candidates = IMAGE_TILE_CANDIDATES if grid.frames == 1 else TILE_CANDIDATES
    best: tuple[int, TileOrder] | None = None
    for tile in candidates[block_size]:
        order = TileOrder(grid, tile, device=device)
        blocks = int(box_block_mask(window_box_mask(grid, radius, inward=inward, order=order), block_size, block_size).sum())
        if best is None or blocks < best[0]:
            best = (blocks, order)
    return best[1]


class WindowTileOrders:
    """`window_tile_order` of one window, built once per (grid, device), outside any compiled graph; `clear` drops
    them (a processor's `on_remove`)."""

    def __init__(self, radius: tuple[int, int], block_size: int, *, inward: bool = True) -> None:
        self.radius, self.block_size, self.inward = radius, block_size, inward
        self._orders: dict[tuple[Grid, torch.device], TileOrder] = {}

    def __call__(self, grid: Grid, device: torch.device) -> TileOrder:
        key = (grid, device)
        if key not in self._orders:
            self._orders[key] = self._build(grid, device)
        return self._orders[key]

    @torch.compiler.disable  # once per grid: never part of a compiled graph
    def _build(self, grid: Grid, device: torch.device) -> TileOrder:
        return window_tile_order(grid, self.radius, self.block_size, inward=self.inward, device=device)

    def clear(self) -> None:
        self._orders.clear()


def window_plan(
    grid: Grid,
    radius: tuple[int, int],
    *,
    inward: bool = True,
    block_q: int = 128,
    block_k: int = 128,
    order: TileOrder | None = None,
) -> BlockPlan:
    """The window over `grid` as a `BlockPlan` (broadcast over batch and heads) with an exact `BoxMask`.

    Tokens are in `order` (see `window_tile_order`) or raster order when None; q, k and v must be permuted the
    same way before attention and the output permuted back.
    """
    box = window_box_mask(grid, radius, inward=inward, order=order)
    mask = box_block_mask(box, block_q, block_k)
    # derived once here and cached on the mask, so no attention call derives them: the blocks the window leaves whole
    # (the kernels test tokens only on the others) and the packed form the Triton kernel tests tokens with
    box.full_blocks(block_q, block_k)
    box.packed()
    return BlockPlan.from_level_map(mask[None, None].to(torch.int32), block_q, block_k, token_mask=box)


def window_radius_from_base(base_height: int, base_width: int, pixels_per_token: tuple[int, int]) -> tuple[int, int]:
    """Window radii `(d_h, d_w)` from the model's native size in pixels: half its token grid (15, 26 for 480x832)."""
    return base_height // pixels_per_token[0] // 2, base_width // pixels_per_token[1] // 2


def attention_temperature(base_tokens: int) -> float:
    """FreeSwim's logit-scale factor `sqrt(log(2N) / log(N))` for a native grid of `N` tokens per frame.

    ~1.046 for Wan2.1-1.3B's 30x52 grid (N = 1560). A grid of one token has no defined factor; 1.0 is returned.
    """
    if base_tokens < 2:
        return 1.0
    return math.sqrt(math.log(2 * base_tokens) / math.log(base_tokens))


def reference_window_mask(grid: Grid, radius: tuple[int, int], *, inward: bool = True) -> torch.Tensor:
    """bool `[tokens, tokens]` in raster order, written from the paper's extension terms; for tests only.

    A key row `kh` is visible from query row `h` when `h - d - ext_up <= kh <= h + d + ext_down` with
    `ext_down = max(0, d - h)` and `ext_up = max(0, d + h - H + 1)` (both 0 when not inward); columns alike.
    """
    coords = grid.coords().long()
    q, k = coords[:, None, :], coords[None, :, :]
    visible = torch.ones(grid.tokens, grid.tokens, dtype=torch.bool)
    for axis, (size, d) in zip((1, 2), ((grid.height, radius[0]), (grid.width, radius[1]))):
        position = q[..., axis]
        grow_high = (d - position).clamp(min=0) if inward else 0
        grow_low = (d + position - size + 1).clamp(min=0) if inward else 0
        visible &= (k[..., axis] <= position + d + grow_high) & (k[..., axis] >= position - d - grow_low)
    return visible
