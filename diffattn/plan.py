"""Block plans: which key/value blocks each query block attends to.

A `BlockPlan` is the one description of a sparse attention pattern that every method produces and every
kernel backend consumes (docs/ARCHITECTURE.md). For each (batch, head, query block) it lists the kv
blocks to compute, optionally split into pooling levels (PSA: a level-`l` block is attended through keys
and values mean-pooled over groups of `l` tokens, with a `+log(l)` logit bias). Batch and head dimensions
may be 1 to broadcast. An optional `BoxMask` gives exact token-level edges (sliding windows) without ever
materialising a tokens x tokens mask.

Layout (FlexAttention-like, built for kernels that skip whole tiles):

- `kv_indices` int32 `[B|1, H|1, q_blocks, width]`: per row, the level-1 block ids in ascending order, then
  the level-2 ids, and so on; entries past the row's total count are `-1`.
- `kv_counts` int32 `[B|1, H|1, q_blocks, len(levels)]`: how many ids each level segment holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch

from .errors import PlanError

__all__ = ["BlockPlan", "BoxMask", "MaskMod", "POOL_LEVELS", "PackedBox"]

POOL_LEVELS = (1, 2, 4, 8)
"""Pooling levels a plan may use (PSA)."""

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""`mask_mod(b, h, q_idx, kv_idx) -> bool`, vectorised over broadcastable index tensors (as in FlexAttention)."""

_MASK_MOD_CHUNK = 1 << 24  # booleans evaluated per chunk when building a plan from a mask_mod
_PACKED_BITS = 31  # bit fields of a packed box, guard bits included, kept clear of the int32 sign bit


class PackedBox(NamedTuple):
    """A `BoxMask` as one int32 per token (see `BoxMask.packed`)."""

    q_lo: torch.Tensor
    """int32 `[q_len]`: each query's lowest visible coordinates, one bit field per axis."""
    q_hi: torch.Tensor
    """int32 `[q_len]`: each query's highest visible coordinates, with every guard bit set."""
    k_coord: torch.Tensor
    """int32 `[kv_len]`: each key's coordinates, guard bits clear."""
    guard: int
    """The guard bits: the bit above each axis's field."""


@dataclass(frozen=True, eq=False)
class BoxMask:
    """Exact token-level mask: key `j` is visible to query `i` iff `q_lo[i] <= k_coord[j] <= q_hi[i]` on every axis.

    Shared by all batches and heads. Coordinates are integers on up to three axes (e.g. a token's row and column
    in the latent frame), so a sliding window costs O(tokens) memory instead of O(tokens^2).

    Args:
        q_lo (`torch.Tensor`): int32 `[q_len, axes]`, lowest visible key coordinate per query.
        q_hi (`torch.Tensor`): int32 `[q_len, axes]`, highest visible key coordinate per query (inclusive).
        k_coord (`torch.Tensor`): int32 `[kv_len, axes]`, each key's coordinates.
    """

    q_lo: torch.Tensor
    q_hi: torch.Tensor
    k_coord: torch.Tensor
    _cache: dict[object, object] = field(default_factory=dict, init=False, repr=False, compare=False)
    """Derived forms computed once: full blocks per block sizes, the packed form."""

    def __post_init__(self) -> None:
        if self.q_lo.shape != self.q_hi.shape or self.q_lo.ndim != 2:
            raise PlanError(f"BoxMask q_lo/q_hi must both be [q_len, axes]; got {tuple(self.q_lo.shape)} and {tuple(self.q_hi.shape)}")
        if self.k_coord.ndim != 2 or self.k_coord.shape[1] != self.q_lo.shape[1]:
            raise PlanError(f"BoxMask k_coord must be [kv_len, {self.q_lo.shape[1]}]; got {tuple(self.k_coord.shape)}")

    @property
    def q_len(self) -> int:
        return self.q_lo.shape[0]

    @property
    def kv_len(self) -> int:
        return self.k_coord.shape[0]

    def mask_mod(self, b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        """The mask as a FlexAttention-style `mask_mod`; out-of-range indices are masked."""
        q_ok = q_idx < self.q_len
        k_ok = kv_idx < self.kv_len
        q = q_idx.clamp(max=self.q_len - 1)
        k = kv_idx.clamp(max=self.kv_len - 1)
        lo, hi, kc = self.q_lo[q], self.q_hi[q], self.k_coord[k]
        return ((kc >= lo) & (kc <= hi)).all(-1) & q_ok & k_ok

    def full_blocks(self, block_q: int, block_k: int) -> torch.Tensor:
        """bool `[q_blocks, kv_blocks]`: True where the mask hides no (query, key) pair of the two blocks.

        Kernels test tokens against the box only on the other (partial) blocks. Exact: every pair is visible iff on
        every axis the keys' lowest coordinate is at least the queries' highest `q_lo` and the keys' highest is at
        most the queries' lowest `q_hi` (tokens past the ends are left out). Cached per block sizes; memory is
        O(q_blocks x kv_blocks), never tokens^2.
        """
        key = (block_q, block_k)
        if key not in self._cache:
            big = torch.iinfo(torch.int32).max
            lo_max = _per_block(self.q_lo, block_q, -big, torch.amax)  # [q_blocks, axes]
            hi_min = _per_block(self.q_hi, block_q, big, torch.amin)
            k_min = _per_block(self.k_coord, block_k, big, torch.amin)  # [kv_blocks, axes]
            k_max = _per_block(self.k_coord, block_k, -big, torch.amax)
            inside = (k_min[None] >= lo_max[:, None]) & (k_max[None] <= hi_min[:, None])
            self._cache[key] = inside.all(-1)
        return self._cache[key]

    def packed(self) -> PackedBox | None:
        """The mask with all axes packed into one int32 per token, so a kernel tests a pair in four integer ops.

        Each axis gets a bit field wide enough for its key coordinates (shifted to start at 0) and a guard bit
        above it. With the guard bits set in the minuend, no field borrows from the next one and a field keeps
        its guard bit iff its difference is not negative, so key `j` is visible to query `i` iff
        `((k_coord[j] | guard) - q_lo[i]) & (q_hi[i] - k_coord[j]) & guard == guard` (SWAR). Boxes are clipped
        to the keys' range first; a query that sees no key gets an empty box. Cached. None when the fields need
        more than 31 bits (the Triton kernel then cannot take this mask).
        """
        if "packed" not in self._cache:
            k = self.k_coord.long()
            origin = k.amin(0)
            k = k - origin
            extent = k.amax(0) + 1  # keys' coordinates lie in [0, extent) on each axis
            lo = torch.minimum((self.q_lo.long() - origin).clamp(min=0), extent)
            hi = torch.minimum(self.q_hi.long() - origin, extent - 1)
            empty = (lo > hi).any(-1, keepdim=True)
            lo, hi = torch.where(empty, extent, lo), torch.where(empty, 0, hi)
            widths = [int(e).bit_length() for e in extent.tolist()]  # extent < 2**width: an empty box's lo fits
            shifts = [sum(w + 1 for w in widths[:axis]) for axis in range(len(widths))]
            packed = None
            if sum(w + 1 for w in widths) <= _PACKED_BITS:
                guard = sum(1 << (shift + width) for shift, width in zip(shifts, widths))

                def pack(values: torch.Tensor) -> torch.Tensor:
                    return sum(values[:, axis] << shift for axis, shift in enumerate(shifts))

                packed = PackedBox(pack(lo).to(torch.int32), (pack(hi) | guard).to(torch.int32),
                                   pack(k).to(torch.int32), guard)
            self._cache["packed"] = packed
        return self._cache["packed"]

    def dense(self) -> torch.Tensor:
        """Token mask `[q_len, kv_len]`; for tests and small inputs only."""
        q = torch.arange(self.q_len, device=self.q_lo.device)[:, None]
        k = torch.arange(self.kv_len, device=self.q_lo.device)[None, :]
        return self.mask_mod(q.new_zeros(()), q.new_zeros(()), q, k)

    def __and__(self, other: BoxMask) -> BoxMask:
        if self is other:
            return self
        if not torch.equal(self.k_coord, other.k_coord):
            raise PlanError("cannot intersect BoxMasks over different key coordinates")
        return BoxMask(torch.maximum(self.q_lo, other.q_lo), torch.minimum(self.q_hi, other.q_hi), self.k_coord)

    def to(self, device: torch.device | str) -> BoxMask:
        return BoxMask(self.q_lo.to(device), self.q_hi.to(device), self.k_coord.to(device))


def _per_block(values: torch.Tensor, block: int, fill: int, reduce: Callable[..., torch.Tensor]) -> torch.Tensor:
    """`reduce` of int `values [n, axes]` over each block of `block` rows; padding rows hold `fill`."""
    blocks = math.ceil(values.shape[0] / block)
    padded = values.new_full((blocks * block, values.shape[1]), fill)
    padded[: values.shape[0]] = values
    return reduce(padded.view(blocks, block, -1), dim=1)


@dataclass(frozen=True, eq=False)
class BlockPlan:
    """Per (batch, head, query block) lists of kv blocks, optionally split into pooling levels.

    Build plans with `from_block_mask`, `from_level_map`, `from_mask_mod` or `dense`, per call on the device with
    `sync_free`; combine them with `&`, keep some of their slots with `keep_slots`. `check_fits` and
    `check_contents` are the format's checks (`validate` runs both).

    Args:
        kv_indices (`torch.Tensor`): int32 `[B|1, H|1, q_blocks, width]`, see the module docstring.
        kv_counts (`torch.Tensor`): int32 `[B|1, H|1, q_blocks, len(levels)]`.
        block_q (`int`): query tokens per block.
        block_k (`int`): key tokens per block.
        num_kv_blocks (`int`): number of kv blocks, `ceil(kv_len / block_k)`.
        levels (`tuple[int, ...]`, defaults to `(1,)`): the pooling level of each segment, ascending.
        token_mask (`BoxMask`, *optional*): exact token-level edges applied inside the listed blocks.
        trusted (`bool`, defaults to `False`): the contents are valid by construction (ids in range, counts within
            the width, no empty row), so kernels skip their host-side content check, which reads the plan back and
            would stall the GPU on every call of a plan built per call. The library's per-call builders set it.
    """

    kv_indices: torch.Tensor
    kv_counts: torch.Tensor
    block_q: int
    block_k: int
    num_kv_blocks: int
    levels: tuple[int, ...] = (1,)
    token_mask: BoxMask | None = None
    trusted: bool = field(default=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kv_indices.ndim != 4 or self.kv_counts.ndim != 4:
            raise PlanError("kv_indices and kv_counts must be 4-D: [B|1, H|1, q_blocks, ...]")
        if self.kv_indices.shape[:3] != self.kv_counts.shape[:3]:
            raise PlanError(f"kv_indices {tuple(self.kv_indices.shape)} and kv_counts {tuple(self.kv_counts.shape)} disagree")
        if self.kv_counts.shape[-1] != len(self.levels):
            raise PlanError(f"kv_counts has {self.kv_counts.shape[-1]} level columns but levels={self.levels}")
        if tuple(sorted(set(self.levels))) != tuple(self.levels) or not set(self.levels) <= set(POOL_LEVELS):
            raise PlanError(f"levels must be ascending and drawn from {POOL_LEVELS}; got {self.levels}")
        if self.block_q <= 0 or self.block_k <= 0 or self.num_kv_blocks <= 0:
            raise PlanError("block sizes and num_kv_blocks must be positive")
        if self.kv_indices.dtype != torch.int32 or self.kv_counts.dtype != torch.int32:
            object.__setattr__(self, "kv_indices", self.kv_indices.to(torch.int32))
            object.__setattr__(self, "kv_counts", self.kv_counts.to(torch.int32))

    # ----------------------------------------------------------------------------------------- shape
    @property
    def num_q_blocks(self) -> int:
        return self.kv_indices.shape[2]

    @property
    def width(self) -> int:
        """Capacity of each row of `kv_indices` (at least the longest row's block count)."""
        return self.kv_indices.shape[3]

    @property
    def device(self) -> torch.device:
        return self.kv_indices.device

    @property
    def kv_offsets(self) -> torch.Tensor:
        """int32 `[B|1, H|1, q_blocks, len(levels) + 1]`: where each level segment starts in a row."""
        zero = torch.zeros_like(self.kv_counts[..., :1])
        return torch.cat([zero, self.kv_counts.cumsum(-1, dtype=torch.int32)], dim=-1)

    @property
    def is_pooled(self) -> bool:
        return self.levels != (1,)

    # ------------------------------------------------------------------------------------ builders
    @classmethod
    def from_level_map(
        cls,
        level_map: torch.Tensor,
        block_q: int = 128,
        block_k: int = 128,
        *,
        width: int | None = None,
        levels: tuple[int, ...] | None = None,
        token_mask: BoxMask | None = None,
    ) -> BlockPlan:
        """Build from an integer map `[B|1, H|1, q_blocks, kv_blocks]`: 0 skips a block, 1/2/4/8 is its level.

        By default the map's values are checked, the plan's levels are those present and the row capacity is the
        longest row, which reads the map back to the host. With `levels` and `width` given (e.g. `kv_blocks`) nothing
        is read back, for plans built per call on the GPU; values outside `levels` then count as skipped. Such a
        plan with the full width (`kv_blocks`) is `trusted`: the caller guarantees that no row is empty.
        """
        if level_map.ndim != 4:
            raise PlanError(f"a level map must be [B|1, H|1, q_blocks, kv_blocks]; got shape {tuple(level_map.shape)}")
        level_map = level_map.to(torch.int32)
        if levels is None:
            unknown = (level_map != 0) & ~torch.isin(level_map, torch.tensor(POOL_LEVELS, device=level_map.device))
            if bool(unknown.any()):
                raise PlanError(f"level map values must be 0 or one of {POOL_LEVELS}")
            levels = tuple(lvl for lvl in POOL_LEVELS if lvl == 1 or bool((level_map == lvl).any()))
        kv_blocks = level_map.shape[-1]
        rank = torch.full_like(level_map, len(levels))
        for r, lvl in enumerate(levels):
            rank = torch.where(level_map == lvl, r, rank)
        order = rank.to(torch.int8).argsort(dim=-1, stable=True).to(torch.int32)  # stable: ascending ids per level
        counts = torch.stack([(level_map == lvl).sum(-1, dtype=torch.int32) for lvl in levels], dim=-1)
        width_given = width is not None
        if width is None:
            width = max(int(counts.sum(-1).max()), 1)
        width = min(width, kv_blocks)
        slot = torch.arange(width, device=level_map.device, dtype=torch.int32)
        indices = torch.where(slot < counts.sum(-1, keepdim=True), order[..., :width], -1)
        trusted = width_given and width == kv_blocks
        return cls(indices, counts, block_q, block_k, kv_blocks, tuple(levels), token_mask, trusted=trusted)

    @classmethod
    def sync_free(
        cls,
        level_map: torch.Tensor,
        block_q: int,
        block_k: int,
        levels: tuple[int, ...] = (1,),
        *,
        token_mask: BoxMask | None = None,
    ) -> BlockPlan:
        """A `trusted` plan with room for every kv block, built from a level map (or bool mask) without reading
        anything back to the host: for plans built per call on the GPU. The caller guarantees that no row is empty.
        """
        return cls.from_level_map(
            level_map, block_q, block_k, width=level_map.shape[-1], levels=levels, token_mask=token_mask
        )

    @classmethod
    def from_block_mask(
        cls, mask: torch.Tensor, block_q: int = 128, block_k: int = 128, *, width: int | None = None
    ) -> BlockPlan:
        """Build from a boolean block mask `[B|1, H|1, q_blocks, kv_blocks]` (True = compute the block)."""
        if mask.dtype != torch.bool:
            raise PlanError(f"a block mask must be bool; got {mask.dtype}")
        return cls.from_level_map(mask.to(torch.int32), block_q, block_k, width=width)

    @classmethod
    def from_mask_mod(
        cls,
        mask_mod: MaskMod,
        batch: int,
        heads: int,
        q_len: int,
        kv_len: int,
        block_q: int = 128,
        block_k: int = 128,
        *,
        device: torch.device | str | None = None,
        token_mask: BoxMask | None = None,
    ) -> BlockPlan:
        """Build from a `mask_mod(b, h, q_idx, kv_idx)`: a block is kept when any token pair in it is visible.

        The mask is evaluated a chunk of query blocks at a time, so memory stays bounded (never tokens^2 at once).
        Pass `batch=1` / `heads=1` when the mask does not depend on them. `device` defaults to the token mask's,
        else torch's default device.
        """
        if device is None and token_mask is not None:
            device = token_mask.q_lo.device
        q_blocks, kv_blocks = math.ceil(q_len / block_q), math.ceil(kv_len / block_k)
        rows_per_chunk = max(1, _MASK_MOD_CHUNK // max(1, batch * heads * block_q * kv_blocks * block_k))
        b = torch.arange(batch, device=device)[:, None, None, None]
        h = torch.arange(heads, device=device)[None, :, None, None]
        kv = torch.arange(kv_blocks * block_k, device=device)[None, None, None, :]
        chunks = []
        for start in range(0, q_blocks, rows_per_chunk):
            stop = min(q_blocks, start + rows_per_chunk)
            q = torch.arange(start * block_q, stop * block_q, device=device)[None, None, :, None]
            visible = mask_mod(b, h, q, kv).expand(batch, heads, q.shape[2], kv.shape[3])
            visible = visible & (q < q_len) & (kv < kv_len)
            chunks.append(visible.reshape(batch, heads, stop - start, block_q, kv_blocks, block_k).any(5).any(3))
        return cls.from_level_map(torch.cat(chunks, dim=2).to(torch.int32), block_q, block_k, token_mask=token_mask)

    @classmethod
    def dense(
        cls, q_len: int, kv_len: int, block_q: int = 128, block_k: int = 128, *, device: torch.device | str | None = None
    ) -> BlockPlan:
        """Every query block attends to every kv block (broadcast over batch and heads); on `device` (torch's default
        device when None)."""
        q_blocks, kv_blocks = math.ceil(q_len / block_q), math.ceil(kv_len / block_k)
        indices = torch.arange(kv_blocks, device=device, dtype=torch.int32).expand(1, 1, q_blocks, kv_blocks)
        counts = torch.full((1, 1, q_blocks, 1), kv_blocks, device=device, dtype=torch.int32)
        return cls(indices.contiguous(), counts, block_q, block_k, kv_blocks, trusted=True)

    # --------------------------------------------------------------------------------------- slots
    def slot_levels(self) -> torch.Tensor:
        """int32 `[B|1, H|1, q_blocks, width]`: the pooling level of each slot, 0 for slots past the row's count."""
        offsets = self.kv_offsets
        slot = torch.arange(self.width, device=self.device, dtype=torch.int32)
        level = torch.zeros_like(self.kv_indices)
        for i, lvl in enumerate(self.levels):
            inside = (slot >= offsets[..., i : i + 1]) & (slot < offsets[..., i + 1 : i + 2])
            level = torch.where(inside, lvl, level)
        return level

    def keep_slots(self, kept: torch.Tensor) -> BlockPlan:
        """The sub-plan made of the slots flagged in `kept` (bool `[B, H, q_blocks, width]`), without a host sync.

        Order within each level segment is preserved and level segments stay in place, so the result is a valid
        plan of the same geometry, width and token mask. A row with no kept slot keeps its first slot, so the
        result never leaves a row empty (only reachable through degenerate fully-masked rows); it is `trusted`,
        its ids being a subset of this (checked) plan's.
        """
        levels = self.slot_levels().expand(kept.shape)
        kept = kept & (levels > 0)
        none = ~kept.any(-1, keepdim=True)
        first = torch.zeros_like(kept)
        first[..., 0] = True
        kept = kept | (none & first)
        order = torch.argsort((~kept).to(torch.int8), dim=-1, stable=True)
        indices = torch.gather(self.kv_indices.expand(kept.shape), -1, order)
        total = kept.sum(-1, keepdim=True)
        slot = torch.arange(self.width, device=kept.device)
        indices = torch.where(slot < total, indices, -1).to(torch.int32)
        counts = torch.stack([(kept & (levels == lvl)).sum(-1) for lvl in self.levels], dim=-1).to(torch.int32)
        return replace(self, kv_indices=indices, kv_counts=counts, trusted=True)

    # --------------------------------------------------------------------------------- conversions
    def to_level_map(self) -> torch.Tensor:
        """int32 `[B|1, H|1, q_blocks, kv_blocks]`: 0 for skipped blocks, the pooling level for computed ones."""
        lead = self.kv_indices.shape[:3]
        out = torch.zeros(*lead, self.num_kv_blocks + 1, dtype=torch.int32, device=self.device)
        target = torch.where(self.kv_indices >= 0, self.kv_indices, self.num_kv_blocks).long()
        out.scatter_(-1, target, self.slot_levels())
        return out[..., : self.num_kv_blocks]

    def to_block_mask(self) -> torch.Tensor:
        """bool `[B|1, H|1, q_blocks, kv_blocks]`: which blocks are computed (at any level)."""
        return self.to_level_map() > 0

    def to_token_mask(self, q_len: int, kv_len: int) -> torch.Tensor:
        """bool `[B|1, H|1, q_len, kv_len]` of the tokens the plan covers; for tests and small inputs only."""
        self.check_fits(*self.kv_indices.shape[:2], q_len, kv_len)
        mask = self.to_block_mask()
        mask = mask.repeat_interleave(self.block_q, dim=2)[:, :, :q_len]
        mask = mask.repeat_interleave(self.block_k, dim=3)[..., :kv_len]
        if self.token_mask is not None:
            mask = mask & self.token_mask.dense()
        return mask

    def to(self, device: torch.device | str) -> BlockPlan:
        token_mask = self.token_mask.to(device) if self.token_mask is not None else None
        return replace(self, kv_indices=self.kv_indices.to(device), kv_counts=self.kv_counts.to(device), token_mask=token_mask)

    # -------------------------------------------------------------------------------------- algebra
    def __and__(self, other: BlockPlan) -> BlockPlan:
        """Blocks computed by both plans, at the coarser of their two levels; nothing is read back to the host.

        A query row that the intersection would leave empty keeps this (left) plan's row, so the result never
        leaves a row empty; token masks are intersected (exact window edges survive composition).
        """
        if not isinstance(other, BlockPlan):
            return NotImplemented
        geometry = (self.block_q, self.block_k, self.num_q_blocks, self.num_kv_blocks)
        theirs_geometry = (other.block_q, other.block_k, other.num_q_blocks, other.num_kv_blocks)
        if geometry != theirs_geometry:
            raise PlanError(f"cannot intersect plans of different geometry: {geometry} vs {theirs_geometry}")
        mine, theirs = self.to_level_map(), other.to_level_map()
        both = torch.where((mine > 0) & (theirs > 0), torch.maximum(mine, theirs), 0)
        mine, both = torch.broadcast_tensors(mine, both)
        empty = ~(both > 0).any(-1, keepdim=True)
        if self.token_mask is None or other.token_mask is None:
            token_mask = self.token_mask if other.token_mask is None else other.token_mask
        else:
            token_mask = self.token_mask & other.token_mask
        return BlockPlan.from_level_map(
            torch.where(empty, mine, both), self.block_q, self.block_k, width=max(self.width, other.width),
            levels=tuple(sorted(set(self.levels) | set(other.levels))), token_mask=token_mask,
        )

    # ----------------------------------------------------------------------------------- statistics
    def density(self) -> float:
        """Fraction of (query block, kv block) pairs computed, averaged over batch and heads."""
        total = self.kv_counts.sum(-1).double().mean()
        return float(total / self.num_kv_blocks)

    def block_counts(self) -> torch.Tensor:
        """int32 `[B|1, H|1, q_blocks]`: blocks computed per query block, all levels together."""
        return self.kv_counts.sum(-1, dtype=torch.int32)

    # ------------------------------------------------------------------------------------ checking
    def check_fits(self, batch: int, heads: int, q_len: int, kv_len: int) -> None:
        """Raise `PlanError` unless the plan's geometry fits q/k of these sizes; cheap (nothing is read back)."""
        if math.ceil(q_len / self.block_q) != self.num_q_blocks:
            raise PlanError(
                f"plan has {self.num_q_blocks} query blocks of {self.block_q} but q has {q_len} tokens "
                f"({math.ceil(q_len / self.block_q)} blocks); build the plan for this sequence length"
            )
        if math.ceil(kv_len / self.block_k) != self.num_kv_blocks:
            raise PlanError(
                f"plan has {self.num_kv_blocks} kv blocks of {self.block_k} but k has {kv_len} tokens "
                f"({math.ceil(kv_len / self.block_k)} blocks); build the plan for this sequence length"
            )
        if self.token_mask is not None and (self.token_mask.q_len, self.token_mask.kv_len) != (q_len, kv_len):
            raise PlanError(
                f"token mask is for {self.token_mask.q_len}x{self.token_mask.kv_len} tokens, inputs are {q_len}x{kv_len}"
            )
        pb, ph = self.kv_indices.shape[:2]
        if pb not in (1, batch) or ph not in (1, heads):
            raise PlanError(f"plan batch/heads ({pb}, {ph}) do not broadcast to q's ({batch}, {heads})")

    def check_contents(self) -> None:
        """Raise `PlanError` unless counts are in range, no row is empty and every listed id is a kv block.

        This reads the plan back to the host (a GPU sync): kernels run it once per plan object, never on `trusted`
        plans.
        """
        total = self.block_counts()
        if bool((self.kv_counts < 0).any()) or bool((total > self.width).any()):
            raise PlanError(f"kv_counts must be >= 0 and sum to at most the width of kv_indices ({self.width})")
        if bool((total == 0).any()):
            raise PlanError("the plan leaves a query row with no kv block; every query block must keep at least one")
        listed = torch.arange(self.width, device=self.device) < total[..., None]
        ids = self.kv_indices
        if bool((listed & ((ids < 0) | (ids >= self.num_kv_blocks))).any()):
            raise PlanError(f"kv_indices lists a block id outside [0, {self.num_kv_blocks})")

    def validate(self, batch: int, heads: int, q_len: int, kv_len: int) -> None:
        """Raise `PlanError` unless the plan fits q/k of these sizes and its contents are valid (see
        `check_contents`, which reads the plan back: hot paths run it once per new plan, not per use)."""
        self.check_fits(batch, heads, q_len, kv_len)
        self.check_contents()
