"""Static attention masks that are pure functions of the latent grid, and their reduction to block masks.

Each pattern is a small `mask_mod(b, h, q_idx, kv_idx) -> bool` over token indices in a given token order (raster
or `geometry.TileOrder` tiles), in the FlexAttention style; `block_mask_by_density` reduces any of them to the
block mask a `BlockPlan` is built from, once per grid, and callers cache it. Nothing here knows about processors
or models, so window builders of other methods sit beside the Radial mask.

Radial attention (Li et al., "Radial Attention: O(n log n) Sparse Attention with Energy Decay for Long Video
Generation", NeurIPS'25; mit-han-lab/radial-attention `radial_attn/attn_mask.py`): a query in frame `i` sees a key
in frame `j` when their positions inside the frame (raster index `row * width + col`) differ by at most a band
width that halves each time the temporal distance doubles; frame pairs too far apart for even the narrowest band
keep only every `128 / width`-th frame; key frame 0 may be an attention sink visible to every frame (the reference
keeps it for Wan only).
"""

from __future__ import annotations

import math

import torch

from ..errors import GridError
from ..geometry import Grid
from ..plan import MaskMod

__all__ = ["RADIAL_MIN_BAND", "radial_frame_tables", "radial_mask_mod", "block_mask_by_density"]

RADIAL_MIN_BAND = 128
"""Narrowest band (tokens) and the split threshold of the reference, equal to its 128-token block."""

_CHUNK_ELEMENTS = 1 << 24  # query x key booleans evaluated at once


def radial_frame_tables(
    frames: int, frame_tokens: int, decay_factor: float, *, half_band_next_frame: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (query frame, key frame): the band width in tokens and whether the frame pair is kept at all.

    Frames at distance 0 or 1 see each other entirely (the reference since 72788d4); `half_band_next_frame` gives
    adjacent frames a band of half a frame instead (its Wan rule up to af371ca). Returns float64 `[F, F]` widths
    and bool `[F, F]` keeps.
    """
    top = 2 ** frame_tokens.bit_length()
    width = torch.empty(frames, frames, dtype=torch.float64)
    keep = torch.empty(frames, frames, dtype=torch.bool)
    for i in range(frames):
        for j in range(frames):
            dist = abs(i - j)
            undecayed = top / 2 ** dist.bit_length()
            if dist == 0 or (dist == 1 and not half_band_next_frame):
                width[i, j] = frame_tokens
            elif dist == 1:
                width[i, j] = frame_tokens // 2
            else:
                width[i, j] = max(undecayed * decay_factor, RADIAL_MIN_BAND)
            keep[i, j] = undecayed >= RADIAL_MIN_BAND or dist % int(RADIAL_MIN_BAND / undecayed) == 0
    return width, keep


def radial_mask_mod(
    grid: Grid,
    coords: torch.Tensor,
    *,
    decay_factor: float,
    attention_sink: bool,
    half_band_next_frame: bool,
) -> MaskMod:
    """Radial attention's token mask over tokens whose (frame, row, column) are `coords` (int `[tokens, 3]`).

    `coords` fixes the token order (`grid.coords()` for raster order, `TileOrder.coords()` for tiles); the mask is
    the same set of token pairs in any order.
    """
    if coords.shape != (grid.tokens, 3):
        raise GridError(f"coords must be [{grid.tokens}, 3] for grid {grid}; got {tuple(coords.shape)}")
    device = coords.device
    width, keep = radial_frame_tables(grid.frames, grid.frame_tokens, decay_factor, half_band_next_frame=half_band_next_frame)
    width, keep = width.to(device), keep.to(device)
    frame = coords[:, 0].long()
    position = (coords[:, 1] * grid.width + coords[:, 2]).long()

    def mask_mod(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        fq, fk = frame[q_idx], frame[kv_idx]
        band = (position[q_idx] - position[kv_idx]).abs() <= width[fq, fk]
        visible = band & keep[fq, fk]
        if attention_sink:
            visible = visible | (fk == 0)
        return visible

    return mask_mod


def block_mask_by_density(
    mask_mod: MaskMod, q_len: int, kv_len: int, block_q: int, block_k: int, *, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Reduce a token mask to blocks the way Radial attention does (`shrinkMaskStrict` of the reference).

    A (query block, key block) pair is kept when more than 60% of the block's key columns that some query sees are
    seen by more than a third of the block's queries, so blocks that the pattern only grazes are dropped. Column
    densities are over the block's real rows (the last block may be short). Returns bool `[q_blocks, kv_blocks]`.
    """
    q_blocks, kv_blocks = math.ceil(q_len / block_q), math.ceil(kv_len / block_k)
    padded_kv = kv_blocks * block_k
    kv = torch.arange(padded_kv, device=device)
    kv_valid = kv < kv_len
    kv = kv.clamp(max=kv_len - 1)
    zero = torch.zeros((), dtype=torch.long, device=device)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // (block_q * padded_kv))
    chunks = []
    for start in range(0, q_blocks, rows_per_chunk):
        stop = min(q_blocks, start + rows_per_chunk)
        q = torch.arange(start * block_q, stop * block_q, device=device)
        q_valid = q < q_len
        visible = mask_mod(zero, zero, q.clamp(max=q_len - 1)[:, None], kv[None, :])
        visible = visible & q_valid[:, None] & kv_valid[None, :]
        seen = visible.view(stop - start, block_q, kv_blocks, block_k).sum(1)  # [cq, kv_blocks, block_k]
        rows = q_valid.view(stop - start, block_q).sum(1).clamp(min=1)[:, None, None]
        non_empty = (seen > 0).sum(-1)
        dense = (seen * 3 > rows).sum(-1)  # seen / rows > 1/3, in integers
        chunks.append(dense * 10 > non_empty * 6)  # dense / non_empty > 0.6, in integers
    return torch.cat(chunks, 0)
