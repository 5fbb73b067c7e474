"""The Triton block-sparse attention kernel and its torch custom op.

One kernel, specialised by constexpr switches, covers every method:

- grid `(q_blocks, batch * heads)`; one program owns one plan row (a query block of `BLOCK_M == plan.block_q`
  rows), loads Q once and walks the row's kv-block ids straight from `kv_indices` (no bitmap scan);
- level segments: level-1 blocks read K/V in `BLOCK_N`-row tiles (`BLOCK_N` divides `plan.block_k`), through
  TMA descriptors on Hopper when the autotuner finds that faster (it did on an H200, see benchmarks/RESULTS.md);
  level-l blocks read `block_k / l` rows of the pooled K/V (padded to 16 rows for `tl.dot`) with a
  `+log2(n_valid)` bias;
- online softmax in log2 units with `scale * log2(e)` folded into one FMA, `exp2` throughout;
- boundary masking only on the tile that crosses `kv_len`; token masks (`BoxMask`) only when the plan has one,
  and then only on the blocks the mask cuts: whole blocks come first in each row and run in their own loop with
  no token test (when slot order is free), and a per-(query block, kv block) flag skips the test otherwise; the
  test itself is four integer operations per pair on packed coordinates (`BoxMask.packed`), with the queries'
  boxes loaded once per program;
- `HAS_PV`: SpargeAttn stage 2, skip exp and P.V for a plan block when no valid row's local max comes within
  `pv_threshold` of its running max (decided per plan block, hence `BLOCK_N == block_k` then);
- `MARKS` (LiteAttention marks, one int8 flag per plan slot): 1 flags, during the walk itself, the slots where
  some valid row's max exceeds by more than `skip_threshold` the running max before the slot (the row's first
  slot always): per tile a few row-vector operations, one reduction over rows and a one-byte store, no extra
  Q.K. 2 flags, in a second pass that recomputes Q.K, the slots where some valid row's max is within
  `skip_threshold` of the row's final max (independent of traversal order);
- `HAS_LSE`: natural-log log-sum-exp per row;
- `PRECISION` (see `quantize.py`): 0 the inputs' dtype; 1 INT8 Q.K (int8 q/k with per-token scales, the exact
  int32 dot dequantised by `q_scale[row] * scale * log2(e) * k_scale[key]` as it leaves `_tile_scores`, so the
  rest of the walk sees log2 units and multiplies by 1); 2 also FP8 P.V (V per-channel scaled and stored
  transposed, so tiles load as [D, TILE] and enter the dot transposed: K-major for Hopper's FP8 MMA; P times 448,
  by way of the exponent, rounded to e4m3; each tile's product in a fresh float32 tile added to the accumulator;
  the channel scales applied once at the end). TMA loads serve every precision (FP8 V in `[D, TILE]` boxes of its
  transposed storage). One walk: its branches test the operand dtypes.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from triton import knobs
from triton.tools.tensor_descriptor import TensorDescriptor

from .quantize import FP8_MAX

__all__ = ["INTERPRETED", "MAX_HEAD_DIM", "SUPPORTED_BLOCKS", "block_sparse_attention_op"]

INTERPRETED: bool = bool(knobs.runtime.interpret)
"""Whether these kernels were built for Triton's CPU interpreter (`TRITON_INTERPRET=1` at import time)."""

SUPPORTED_BLOCKS = (64, 128)
"""Plan block sizes (`block_q` and `block_k`) the kernel accepts."""

MAX_HEAD_DIM = 128
LOG2E = 1.4426950408889634
LN2 = tl.constexpr(0.6931471805599453)
_LOG2_P_SCALE = tl.constexpr(math.log2(FP8_MAX))
PRECISION_CODES = {"bf16": 0, "int8": 1, "int8-fp8": 2}
"""The kernel's PRECISION constexpr for each `precision` of `block_sparse_attention`."""


# --------------------------------------------------------------------------------------------- autotuning
def _configs() -> list[triton.Config]:
    """Every (BLOCK_N, warps, stages, TMA) of `_FAMILY_SHAPES`; `_prune` picks the device's and the call's."""
    families = (*_FAMILY_SHAPES.values(), _EIGHT_BIT_SHAPES)
    candidates = sorted({shape for family in families for group in family.values() for shape in group})
    return [triton.Config({"BLOCK_N": n, "USE_TMA": tma}, num_warps=w, num_stages=s, pre_hook=_size_descriptors)
            for n, w, s, tma in candidates]


def _size_descriptors(nargs: dict) -> None:
    """Autotuner pre-hook: K/V descriptors load [1, 1, BLOCK_N, D] boxes, FP8 V (stored transposed) [1, 1, D, BLOCK_N]
    boxes (a no-op when plain pointers are passed)."""
    for name in ("DescK", "DescV"):
        desc = nargs[name]
        if isinstance(desc, TensorDescriptor):
            box = [nargs["BLOCK_N"], nargs["D_PAD"]]
            desc.block_shape = [1, 1, *(box[::-1] if name == "DescV" and nargs["PRECISION"] == 2 else box)]


def _device_family() -> str:
    if INTERPRETED or not torch.cuda.is_available():
        return "interpreter"
    major, _ = torch.cuda.get_device_capability()
    return "hopper" if major >= 9 else "ampere"


def _both(shapes: set[tuple[int, int, int]]) -> set[tuple[int, int, int, bool]]:
    return {(*shape, tma) for shape in shapes for tma in (False, True)}


# Per device family and (BLOCK_M, head-dim bucket): the (BLOCK_N, warps, stages, TMA loads) worth timing. Chosen
# from sm_90 / sm_80 builds without register spills that fit shared memory (d128 with BLOCK_M 128 needs 8 warps),
# and measured on an H200 (benchmarks/RESULTS.md). Each set holds a BLOCK_N of 64 and of 128, so that
# pv_threshold (which needs BLOCK_N == block_k) always has a candidate.
_FAMILY_SHAPES = {
    "hopper": {
        (128, 128): {(64, 8, 4, False), (128, 8, 2, False)}
        | {(64, 8, 3, True), (64, 8, 4, True), (64, 8, 5, True), (128, 8, 2, True), (128, 8, 3, True)},
        (128, 64): _both({(64, 4, 3), (128, 8, 3)}),
        (64, 128): _both({(64, 4, 3), (128, 4, 2)}),
        (64, 64): _both({(64, 4, 3), (128, 4, 3)}),
    },
    "ampere": {
        (128, 128): {(64, 8, 2, False), (64, 8, 3, False), (128, 8, 2, False)},
        (128, 64): {(64, 4, 3, False), (128, 8, 3, False)},
        (64, 128): {(64, 4, 3, False), (128, 4, 2, False)},
        (64, 64): {(64, 4, 3, False), (128, 4, 3, False)},
    },
}


_EIGHT_BIT_SHAPES = {(128, 128): _both({(128, 4, 3), (128, 8, 3)})}
"""Hopper, 8-bit operands: also timed, beside the family's shapes. A plain FP8 flash loop on an H200 ran fastest
with BLOCK_N 128, 4 warps, 3 stages."""


def _prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Keep configs whose BLOCK_N divides the plan's block_k (equals it under pv_threshold), that use TMA only
    when descriptors were passed, and that suit this device (the interpreter runs one, TMA when it can; 8-bit calls on
    Hopper also time `_EIGHT_BIT_SHAPES`)."""
    block_m, block_k, tma_ok = kwargs["BLOCK_M"], kwargs["BLOCK_K"], kwargs["TMA_OK"]
    fits = [
        c for c in configs
        if block_k % c.kwargs["BLOCK_N"] == 0 and (not kwargs["HAS_PV"] or c.kwargs["BLOCK_N"] == block_k)
        and (tma_ok or not c.kwargs["USE_TMA"])
    ]
    family = _device_family()
    if family == "interpreter":
        return sorted(fits, key=lambda c: not c.kwargs["USE_TMA"])[:1]
    shape_key = (block_m, 64 if kwargs["D_PAD"] <= 64 else 128)
    wanted = _FAMILY_SHAPES[family][shape_key]
    if family == "hopper" and kwargs["PRECISION"] > 0:
        wanted = wanted | _EIGHT_BIT_SHAPES.get(shape_key, set())
    chosen = [c for c in fits if (c.kwargs["BLOCK_N"], c.num_warps, c.num_stages, c.kwargs["USE_TMA"]) in wanted]
    return chosen or fits[:1]


# ------------------------------------------------------------------------------------------------ kernel
_NARROW_AS_FLOAT32 = tl.constexpr(INTERPRETED)
"""The Triton 3.x interpreter multiplies bfloat16 and FP8 operands as their raw storage: there, they go in as
float32 (int8 dots are exact there as they are)."""


class _Rows(NamedTuple):
    """Where one level's K/V rows are: base pointers of this (batch, head), (row, dim) strides, the level-1 TMA
    descriptors, and `row0`: the level's first row (0 for level 1; for the pooled K/V the kernel passes the first rows
    of levels (2, 4, 8) and `_segment` picks its level's). 8-bit Q.K only: `k_scale`, the per-row K scales of this
    (batch, head) (rows counted like the K/V rows), and `q_scale`, the program's query rows' scales."""

    k: object
    v: object
    k_stride_n: object
    k_stride_d: object
    v_stride_n: object
    v_stride_d: object
    desc_k: object
    desc_v: object
    row0: object
    k_scale: object
    q_scale: object


@triton.jit
def _dot(a, b, acc):
    """`acc + a @ b` (bfloat16 and FP8 operands upcast under the interpreter, see `_NARROW_AS_FLOAT32`)."""
    if _NARROW_AS_FLOAT32 and (a.dtype == tl.bfloat16 or a.dtype == tl.float8e4nv or b.dtype == tl.float8e4nv):
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    return tl.dot(a, b, acc)


@triton.jit
def _to_e4m3(x):
    """`x` (>= 0, at most 448) rounded to FP8 e4m3. The interpreter's float32 -> FP8 cast is wrong where rounding
    carries into the next binade (125.2 gives 64, not 128): there the rounding is done in float32 arithmetic
    (nearest, ties possibly away from even) and the value stays float32, which `_dot` takes as it is."""
    if _NARROW_AS_FLOAT32:
        step = tl.exp2(tl.maximum(tl.floor(tl.log2(tl.maximum(x, 1e-30))), -6.0) - 3.0)  # 3 mantissa bits
        return ((x / step + 12582912.0) - 12582912.0) * step  # 1.5 * 2^23: float32 round to nearest integer
    return x.to(tl.float8e4nv)


@triton.jit
def _softmax_update(acc, l_i, m_i, qk, m_loc, v, qk_scale):
    """Fold one tile into the running (acc, l, m); `qk` is raw Q.K (masked to -inf), m in log2 units. FP8 `v`:
    P comes out of exp2 already times 448 (log2(448) taken off the max, no multiply), goes in as e4m3, and its product
    lands in a fresh float32 tile (two-level accumulation); l then sums the scaled P too, which acc / l cancels."""
    m_new = tl.maximum(m_i, m_loc)
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    m_exp = m_use - _LOG2_P_SCALE if v.dtype == tl.float8e4nv else m_use
    p = tl.math.exp2(qk * qk_scale - m_exp[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    if v.dtype == tl.float8e4nv:
        acc += _dot(_to_e4m3(p), v, tl.zeros_like(acc))
    else:
        acc = _dot(p.to(v.dtype), v, acc)
    return acc, l_i, m_new


@triton.jit
def _box_masked(qk, box, offs_n, n_ok, MASK_N: tl.constexpr):
    """`qk` with each query's keys outside its `BoxMask` box at -inf, on packed coordinates (`BoxMask.packed`):
    a key is inside iff both differences keep every guard bit, whatever the number of axes. `box` holds the
    queries' packed lows and highs, the keys' packed coordinates (pointer) and the guard bits."""
    box_lo, box_hi, BoxK, box_guard = box
    if MASK_N:
        kc = tl.load(BoxK + offs_n, mask=n_ok, other=0)
    else:
        kc = tl.load(BoxK + offs_n)
    kept = ((kc | box_guard)[None, :] - box_lo[:, None]) & (box_hi[:, None] - kc[None, :]) & box_guard
    return tl.where(kept == box_guard, qk, float("-inf"))


@triton.jit
def _load_rows(base, offs_n, stride_n, offs_d, stride_d, n_ok, d_ok, MASK_N: tl.constexpr, MASK_D: tl.constexpr):
    """A [rows, D_PAD] tile; masked only when rows may pass the end or head_dim is padded."""
    ptrs = base + offs_n[:, None] * stride_n + offs_d[None, :] * stride_d
    if MASK_N or MASK_D:
        return tl.load(ptrs, mask=n_ok[:, None] & d_ok[None, :], other=0.0)
    return tl.load(ptrs)


@triton.jit
def _tile_scores(
    q, rows, b, h, first, offs_d, d_ok, kv_len, qk_scale, box, Partial,
    POOL: tl.constexpr, ROWS: tl.constexpr, TILE: tl.constexpr, MASK_D: tl.constexpr, EVEN_N: tl.constexpr,
    TOKEN_TEST: tl.constexpr, USE_TMA: tl.constexpr,
):
    """Raw Q.K for the TILE (pooled) rows starting at `first` of a segment (`rows`: a `_Rows`), invisible keys at
    -inf.

    Returns `(qk [BLOCK_M, TILE], offs_n, n_ok)`; pooled rows carry their `log2(n_valid)` bias (in raw
    units, i.e. divided by qk_scale), and only the tile crossing kv_len pays for the boundary mask. The token
    mask is tested on no tile (TOKEN_TEST 0), on tiles of blocks flagged in this row's `Partial` (int8 per kv
    block; 1) or on every tile (2).
    """
    tile = tl.arange(0, TILE)
    offs_n = first + tile
    if POOL == 1:
        n_ok = offs_n < kv_len
    else:
        n_ok = (tile < ROWS) & (offs_n < tl.cdiv(kv_len, POOL))
    MASK_N: tl.constexpr = POOL > 1 or not EVEN_N
    if USE_TMA:  # level 1 only; rows past kv_len come back as zeros
        k = rows.desc_k.load([b, h, rows.row0 + first, 0]).reshape(TILE, q.shape[1])
    else:
        k = _load_rows(rows.k, rows.row0 + offs_n, rows.k_stride_n, offs_d, rows.k_stride_d, n_ok, d_ok, MASK_N,
                       MASK_D)
    if q.dtype == tl.int8:  # exact int32 dot, dequantised by the rows' and keys' scales
        k_scale = tl.load(rows.k_scale + rows.row0 + offs_n, mask=n_ok, other=0.0)
        qk = tl.dot(q, tl.trans(k), out_dtype=tl.int32).to(tl.float32) * rows.q_scale[:, None] * k_scale[None, :]
    else:
        qk = _dot(q, tl.trans(k), tl.zeros([q.shape[0], TILE], dtype=tl.float32))
    if POOL > 1:
        n_valid = tl.minimum(kv_len - offs_n * POOL, POOL).to(tl.float32)
        bias = tl.where(n_ok, tl.log2(tl.maximum(n_valid, 1.0)) / qk_scale, float("-inf"))
        qk = qk + bias[None, :]
    elif not EVEN_N:  # noqa: SIM102 - a compile-time test around a run-time one: Triton cannot `and` them
        if first + TILE > kv_len:
            qk = tl.where(n_ok[None, :], qk, float("-inf"))
    if TOKEN_TEST == 2:
        qk = _box_masked(qk, box, offs_n, n_ok, MASK_N)
    elif TOKEN_TEST == 1:  # noqa: SIM102 - a compile-time test around a run-time one
        if tl.load(Partial + first // ROWS) != 0:  # level 1 only: ROWS == BLOCK_K, so this is the kv block
            qk = _box_masked(qk, box, offs_n, n_ok, MASK_N)
    return qk, offs_n, n_ok


@triton.jit
def _segment(
    acc, l_i, m_i, started, m_fin,
    q, row_ok, offs_d, d_ok, b, h,
    Idx, Kept, lo, hi, keys, pooled,
    kv_len, qk_scale, neg_pv, skip_thr, box, Partial,
    POOL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, MASK_D: tl.constexpr, EVEN_N: tl.constexpr,
    HAS_PV: tl.constexpr, TOKEN_TEST: tl.constexpr, MARK: tl.constexpr, USE_TMA: tl.constexpr,
):
    """Walk slots [lo, hi) of the level-POOL segment: attend (MARK 0), attend and flag slots against the running
    max (MARK 1), or only flag slots against the row's final max `m_fin` (MARK 2, the second pass).

    Level 1 reads `keys`; level l reads `pooled` from its first row `pooled.row0[l // 4]` (levels 2, 4, 8 -> 0, 1, 2).
    A slot's block `blk` covers (pooled) rows `row0 + blk * ROWS + [0, ROWS)`, read in
    SUB tiles of TILE rows (pooled tiles are padded to 16 rows for `tl.dot`, 32 under FP8 P.V, whose MMA takes at
    least 32 along its reduction). Attending walks one flat loop over
    tiles (one K/V tile per iteration keeps the software pipeline simple); MARK 1 compares each tile with the
    running max at its slot's first tile (`m_ref`) and stores the slot's flag so far after every tile: selects
    and one reduction over rows to a scalar, no branch (a masked per-row store instead makes ptxas serialise
    the Q.K wgmma chain on sm_90); MARK 2 walks slots, so a slot's flag covers all its tiles.
    """
    ROWS: tl.constexpr = BLOCK_K // POOL
    FP8_PV: tl.constexpr = pooled.v.dtype.element_ty == tl.float8e4nv
    TILE: tl.constexpr = BLOCK_N if POOL == 1 else max(32 if FP8_PV else 16, ROWS)
    SUB: tl.constexpr = ROWS // TILE if POOL == 1 else 1
    TMA: tl.constexpr = USE_TMA and POOL == 1  # constexprs do not survive a return on Triton 3.6: derived here
    MASK_N: tl.constexpr = POOL > 1 or not EVEN_N
    if POOL == 1:
        rows = keys
    else:
        rows = _Rows(pooled.k, pooled.v, pooled.k_stride_n, pooled.k_stride_d, pooled.v_stride_n, pooled.v_stride_d,
                     pooled.desc_k, pooled.desc_v, pooled.row0[POOL // 4], pooled.k_scale, pooled.q_scale)
    if MARK == 2:
        for s in range(lo, hi):
            blk = tl.load(Idx + s)
            flags = tl.zeros_like(row_ok).to(tl.int32)
            for sub in tl.static_range(SUB):
                qk, offs_n, n_ok = _tile_scores(
                    q, rows, b, h, blk * ROWS + sub * TILE, offs_d, d_ok, kv_len, qk_scale, box, Partial,
                    POOL, ROWS, TILE, MASK_D, EVEN_N, TOKEN_TEST, TMA)
                m_loc = tl.max(qk, 1) * qk_scale
                significant = row_ok & (m_loc > float("-inf")) & (m_loc - m_fin >= skip_thr)
                flags = tl.maximum(flags, significant.to(tl.int32))
            tl.store(Kept + s, tl.max(flags, 0).to(tl.int8))
    else:
        if MARK == 1:
            m_ref = m_i
            flag = started * 0
        for t in range(lo * SUB, hi * SUB):
            blk = tl.load(Idx + t // SUB)
            first = blk * ROWS + (t % SUB) * TILE
            qk, offs_n, n_ok = _tile_scores(
                q, rows, b, h, first, offs_d, d_ok, kv_len, qk_scale, box, Partial,
                POOL, ROWS, TILE, MASK_D, EVEN_N, TOKEN_TEST, TMA)
            m_loc = tl.max(qk, 1) * qk_scale
            if MARK == 1:  # before this tile moves m_i (folds to m_ref = m_i, flag = hit when SUB == 1)
                new_slot = (t % SUB) == 0
                m_ref = tl.where(new_slot, m_i, m_ref)
                above = row_ok & (m_loc > float("-inf")) & (m_loc - m_ref > skip_thr)
                hit = tl.maximum(tl.max(above.to(tl.int32), 0), (started == 0).to(tl.int32))
                flag = tl.where(new_slot, hit, tl.maximum(flag, hit))
                tl.store(Kept + t // SUB, flag.to(tl.int8))
            if TMA and rows.v.dtype.element_ty == tl.float8e4nv:  # V^T: [D_PAD, TILE] boxes
                v = tl.trans(rows.desc_v.load([b, h, 0, rows.row0 + first]).reshape(q.shape[1], TILE))
            elif TMA:
                v = rows.desc_v.load([b, h, rows.row0 + first, 0]).reshape(TILE, q.shape[1])
            elif rows.v.dtype.element_ty == tl.float8e4nv:  # V^T: [D_PAD, TILE] tiles, tokens contiguous
                v = tl.trans(_load_rows(rows.v, offs_d, rows.v_stride_d, rows.row0 + offs_n, rows.v_stride_n, d_ok,
                                        n_ok, MASK_D, MASK_N))
            else:
                v = _load_rows(rows.v, rows.row0 + offs_n, rows.v_stride_n, offs_d, rows.v_stride_d, n_ok, d_ok,
                               MASK_N, MASK_D)
            if HAS_PV:
                significant = row_ok & (m_loc > float("-inf")) & (m_loc - m_i >= neg_pv)
                if (tl.max(significant.to(tl.int32), 0) > 0) | (started == 0):
                    acc, l_i, m_i = _softmax_update(acc, l_i, m_i, qk, m_loc, v, qk_scale)
            else:
                acc, l_i, m_i = _softmax_update(acc, l_i, m_i, qk, m_loc, v, qk_scale)
            started = started + 1
    return acc, l_i, m_i, started


@triton.jit
def _walk_row(
    acc, l_i, m_i, started, m_fin,
    q, row_ok, offs_d, d_ok, b, h,
    Idx, Off, Kept, Full, keys, pooled,
    kv_len, qk_scale, neg_pv, skip_thr, box, Partial,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, LEVELS: tl.constexpr, MASK_D: tl.constexpr, EVEN_N: tl.constexpr,
    HAS_PV: tl.constexpr, HAS_TMASK: tl.constexpr, SPLIT_FULL: tl.constexpr, MARK: tl.constexpr,
    USE_TMA: tl.constexpr,
):
    """Every level segment of one plan row in order: levels 1, 2, 4, 8, those whose bit is set in LEVELS.

    `Off` points at the row's segment offsets (where each present level's slots start, then the end), so the walk is
    a compile-time loop over the four levels with one `_segment` call each. With SPLIT_FULL, the row's first
    `Full[0]` level-1 slots are blocks the token mask leaves whole: they run in their own loop without any token
    test, and the rest (all cut) test every tile; both loops are branch-free, so they pipeline like the mask-free
    kernel. Otherwise a token mask is tested on the blocks flagged in `Partial`.
    """
    CUT_TEST: tl.constexpr = 2 if SPLIT_FULL else (1 if HAS_TMASK else 0)
    for i in tl.static_range(4):
        if (LEVELS >> i) & 1:
            lo = tl.load(Off)  # this segment's slots: [Off[0], Off[1])
            hi = tl.load(Off + 1)
            Off += 1
            if i == 0 and SPLIT_FULL:  # level 1's whole blocks first, no token test
                mid = lo + tl.load(Full)
                acc, l_i, m_i, started = _segment(
                    acc, l_i, m_i, started, m_fin, q, row_ok, offs_d, d_ok, b, h, Idx, Kept, lo, mid, keys, pooled,
                    kv_len, qk_scale, neg_pv, skip_thr, box, Partial,
                    1, BLOCK_N, BLOCK_K, MASK_D, EVEN_N, HAS_PV, 0, MARK, USE_TMA)
                lo = mid
            acc, l_i, m_i, started = _segment(
                acc, l_i, m_i, started, m_fin, q, row_ok, offs_d, d_ok, b, h, Idx, Kept, lo, hi, keys, pooled,
                kv_len, qk_scale, neg_pv, skip_thr, box, Partial,
                1 << i, BLOCK_N, BLOCK_K, MASK_D, EVEN_N, HAS_PV, CUT_TEST if i == 0 else 0, MARK, USE_TMA)
    return acc, l_i, m_i, started


@triton.autotune(
    configs=_configs(),
    key=["seq_bucket", "BLOCK_M", "BLOCK_K", "D_PAD", "LEVELS", "HAS_PV", "MARKS", "HAS_TMASK", "SPLIT_FULL",
         "EVEN_N", "TMA_OK", "PRECISION"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.jit
def _block_sparse_attn_fwd(
    Q, K, V, Out, Lse, Kept, DescK, DescV,
    q_strides, k_strides, v_strides, o_strides, pooled, plan, box, thresholds, scales,
    qk_scale, q_len, kv_len, num_heads, width, seq_bucket,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, LEVELS: tl.constexpr, EVEN_N: tl.constexpr, HAS_PV: tl.constexpr,
    MARKS: tl.constexpr, HAS_LSE: tl.constexpr, HAS_TMASK: tl.constexpr, SPLIT_FULL: tl.constexpr,
    TMA_OK: tl.constexpr, PRECISION: tl.constexpr, USE_TMA: tl.constexpr,
):
    """One plan row per program, grid `(q_blocks, batch * heads)`; `_launch` packs the grouped arguments.

    `*_strides`: (batch, head, token, dim) strides of q, k, v, out. `pooled`: (KP, VP, their (batch, head, row, dim)
    strides, first rows of levels (2, 4, 8)). `plan`: (Idx, Off, Full, Idx's and Off's (batch, head, q-block)
    strides; Full has Off's shape). `box`: (BoxLo, BoxHi, BoxK, guard bits, Partial). `thresholds`: (PvThr,
    SkipThr). `scales` (8 bits, contiguous float32): (QScale [B, H, Sq], KScale [B, H, Skv], pooled KScale
    [B, H, pooled_rows], VScale [B, H, D], pooled_rows). LEVELS has bit i set when the plan has level 2**i.
    MARKS: 0 none, 1 against the running max (within the walk), 2 against the final max (a second walk). Kept has
    `width` slots per row.
    """
    qb = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // num_heads
    h = bh % num_heads
    MASK_D: tl.constexpr = D_PAD != HEAD_DIM
    KP, VP, kp_strides, vp_strides, starts = pooled
    QScale, KScale, KPScale, VScale, pooled_rows = scales
    Idx, Off, Full, i_strides, f_strides = plan
    BoxLo, BoxHi, BoxK, box_guard, Partial = box
    PvThr, SkipThr = thresholds

    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_PAD)
    row_ok = offs_m < q_len
    d_ok = offs_d < HEAD_DIM
    q_ptrs = Q + b * q_strides[0] + h * q_strides[1] + offs_m[:, None] * q_strides[2] + offs_d[None, :] * q_strides[3]
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    q_scale = offs_m  # placeholder in 16 bits, never read
    walk_scale = qk_scale
    if PRECISION > 0:  # qk_scale joins the rows' scales: Q.K leaves `_tile_scores` in log2 units, the walk's scale is 1
        q_scale = tl.load(QScale + bh * q_len + offs_m, mask=row_ok, other=0.0) * qk_scale
        walk_scale = 1.0

    Idx = Idx + b * i_strides[0] + h * i_strides[1] + qb * i_strides[2]
    Off = Off + b * f_strides[0] + h * f_strides[1] + qb * f_strides[2]
    Kept = Kept + ((b * num_heads + h) * tl.num_programs(0) + qb) * width
    box_lo = offs_m  # placeholders without a token mask, never read
    box_hi = offs_m
    if HAS_TMASK:  # each query's packed box, loaded once (see BoxMask.packed)
        box_lo = tl.load(BoxLo + offs_m, mask=row_ok, other=0)
        box_hi = tl.load(BoxHi + offs_m, mask=row_ok, other=0)
        Partial = Partial + qb * tl.cdiv(kv_len, BLOCK_K)
    if SPLIT_FULL:
        Full = Full + b * f_strides[0] + h * f_strides[1] + qb * f_strides[2]  # shaped like the offsets
    keys = _Rows(K + b * k_strides[0] + h * k_strides[1], V + b * v_strides[0] + h * v_strides[1],
                 k_strides[2], k_strides[3], v_strides[2], v_strides[3], DescK, DescV, 0, KScale + bh * kv_len, q_scale)
    pooled_rows = _Rows(KP + b * kp_strides[0] + h * kp_strides[1], VP + b * vp_strides[0] + h * vp_strides[1],
                        kp_strides[2], kp_strides[3], vp_strides[2], vp_strides[3], DescK, DescV, starts,
                        KPScale + bh * pooled_rows, q_scale)
    neg_pv = 0.0
    skip_thr = 0.0
    if HAS_PV:
        neg_pv = -tl.load(PvThr + h)
    if MARKS > 0:
        skip_thr = tl.load(SkipThr + h)
    query_box = (box_lo, box_hi, BoxK, box_guard)

    acc = tl.zeros([BLOCK_M, D_PAD], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    started = tl.program_id(0) * 0
    acc, l_i, m_i, started = _walk_row(
        acc, l_i, m_i, started, m_i, q, row_ok, offs_d, d_ok, b, h, Idx, Off, Kept, Full, keys, pooled_rows,
        kv_len, walk_scale, neg_pv, skip_thr, query_box, Partial,
        BLOCK_N, BLOCK_K, LEVELS, MASK_D, EVEN_N, HAS_PV, HAS_TMASK, SPLIT_FULL, MARKS % 2, USE_TMA)
    if MARKS == 2:
        _walk_row(
            acc, l_i, m_i, started, m_i, q, row_ok, offs_d, d_ok, b, h, Idx, Off, Kept, Full, keys, pooled_rows,
            kv_len, walk_scale, neg_pv, skip_thr, query_box, Partial,
            BLOCK_N, BLOCK_K, LEVELS, MASK_D, EVEN_N, False, HAS_TMASK, SPLIT_FULL, 2, USE_TMA)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    lse_shift = 0.0
    if PRECISION == 2:  # V's channel scales, once per row; l (like acc) holds P times 448
        v_scale = tl.load(VScale + bh * HEAD_DIM + offs_d, mask=d_ok, other=0.0)
        acc = acc * v_scale[None, :]
        lse_shift = _LOG2_P_SCALE
    out = acc / l_safe[:, None]
    o_ptrs = (Out + b * o_strides[0] + h * o_strides[1] + offs_m[:, None] * o_strides[2]
              + offs_d[None, :] * o_strides[3])
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    if HAS_LSE:
        lse = tl.where(l_i == 0.0, float("-inf"), (m_i + tl.log2(l_safe) - lse_shift) * LN2)
        tl.store(Lse + (b * num_heads + h) * q_len + offs_m, lse, mask=row_ok)


# ----------------------------------------------------------------------------------------------- launcher
def _alloc_outputs(q: torch.Tensor, return_lse: bool, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Uninitialised `(out like q (its layout) in dtype, lse f32 [B,H,Sq] or [1])`; the kernel writes every element
    (tests poison them)."""
    lse_shape = q.shape[:3] if return_lse else (1,)
    return torch.empty_like(q, dtype=dtype), q.new_empty(lse_shape, dtype=torch.float32)


_TMA_FAILURE: list[str] = []
"""Set (with the error) when TMA descriptors failed once in this process; plain loads are used from then on."""


def _tma_ok(k: torch.Tensor, v: torch.Tensor, head_dim: int, d_pad: int) -> bool:
    """Level-1 K/V may be read through TMA: Hopper (or the interpreter), unpadded head_dim, 16-byte strides (FP8 V
    is checked as the `[B, H, D, tokens]` tensor it is a transposed view of)."""
    if _TMA_FAILURE or _device_family() not in ("hopper", "interpreter") or head_dim != d_pad:
        return False
    for t in (k, _stored(v)):
        if t.stride(-1) != 1 or t.data_ptr() % 16 or any(st * t.element_size() % 16 for st in t.stride()[:-1]):
            return False
    return True


def _stored(v: torch.Tensor) -> torch.Tensor:
    """V as laid out in memory: FP8 V is a `[B, H, tokens, D]` view of a `[B, H, D, tokens]` tensor."""
    return v.transpose(-1, -2) if v.dtype == torch.float8_e4m3fn else v


def _descriptor(t: torch.Tensor) -> TensorDescriptor:
    """A 4-D descriptor over `t` as stored; its block shape is set per config by `_size_descriptors`."""
    return TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, 16, 16])


def _launch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_indices: torch.Tensor, kv_offsets: torch.Tensor,
    pooled_k: torch.Tensor | None, pooled_v: torch.Tensor | None, pooled_starts: list[int], levels: list[int],
    box_lo: torch.Tensor | None, box_hi: torch.Tensor | None, box_k: torch.Tensor | None, box_guard: int,
    box_partial: torch.Tensor | None, box_full_counts: torch.Tensor | None,
    pv_threshold: torch.Tensor | None, skip_threshold: torch.Tensor | None, mark_final: bool,
    scale: float, block_q: int, block_k: int, return_lse: bool,
    q_scale: torch.Tensor | None, k_scale: torch.Tensor | None, pooled_k_scale: torch.Tensor | None,
    v_scale: torch.Tensor | None, precision: str, out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, heads, q_len, head_dim = q.shape
    kv_len = k.shape[2]
    num_q_blocks, width = kv_indices.shape[2], kv_indices.shape[3]
    out, lse = _alloc_outputs(q, return_lse, out_dtype)
    marks = skip_threshold is not None
    mark_mode = (2 if mark_final else 1) if marks else 0  # the kernel's MARKS
    # marks start at 0 (slots past a row's count stay 0); the dummies stand in for absent inputs, never read
    kept = q.new_zeros((batch, heads, num_q_blocks, width), dtype=torch.int8) if marks else q.new_empty(1, dtype=torch.int8)
    dummy_i32 = kv_indices.new_empty(1)
    dummy_f32 = lse.new_empty(1)
    pk = pooled_k if pooled_k is not None else k.new_empty((1, 1, 1, head_dim))
    pv = pooled_v if pooled_v is not None else pk
    d_pad = max(16 if precision == "bf16" else 32, triton.next_power_of_2(head_dim))  # int8 MMA: K >= 32

    def strides(t: torch.Tensor) -> tuple[int, int, int]:
        return tuple(0 if t.shape[i] == 1 else t.stride(i) for i in range(3))

    def given(t: torch.Tensor | None, dummy: torch.Tensor) -> torch.Tensor:
        return t if t is not None else dummy

    pooled = (pk, pv, pk.stride(), pv.stride(), tuple(pooled_starts))
    scales = (*(given(t, dummy_f32) for t in (q_scale, k_scale, pooled_k_scale, v_scale)), pk.shape[2])
    plan = (kv_indices, kv_offsets, given(box_full_counts, dummy_i32), strides(kv_indices), strides(kv_offsets))
    box = (*(given(t, dummy_i32) for t in (box_lo, box_hi, box_k)), box_guard, given(box_partial, dummy_i32))
    thresholds = (given(pv_threshold, dummy_f32), given(skip_threshold, dummy_f32))

    def launch(tma_ok: bool) -> None:
        desc_k, desc_v = (_descriptor(k), _descriptor(_stored(v))) if tma_ok else (k, v)
        _block_sparse_attn_fwd[(num_q_blocks, batch * heads)](
            q, k, v, out, lse, kept, desc_k, desc_v, q.stride(), k.stride(), v.stride(), out.stride(),
            pooled, plan, box, thresholds, scales,
            scale * LOG2E, q_len, kv_len, heads, width, triton.next_power_of_2(max(q_len, kv_len)),
            HEAD_DIM=head_dim, D_PAD=d_pad, BLOCK_M=block_q, BLOCK_K=block_k, LEVELS=sum(levels), EVEN_N=kv_len % block_k == 0,
            HAS_PV=pv_threshold is not None, MARKS=mark_mode, HAS_LSE=return_lse, HAS_TMASK=box_lo is not None,
            SPLIT_FULL=box_full_counts is not None, TMA_OK=tma_ok, PRECISION=PRECISION_CODES[precision],
        )

    tma_ok = _tma_ok(k, v, head_dim, d_pad)
    try:
        launch(tma_ok)
    except Exception as exc:
        if not tma_ok:
            raise
        launch(False)  # raises again unless TMA was the problem; if it was: say so, use plain loads from now on
        _TMA_FAILURE.append(f"{type(exc).__name__}: {exc}")
        # stacklevel=1: the failure belongs to this launch, not to whoever called the kernel
        warnings.warn(f"diffattn: TMA loads failed ({_TMA_FAILURE[0][:300]}); using plain loads from now on", stacklevel=1)
    return out, lse, kept


@torch.library.custom_op("diffattn::block_sparse_attention", mutates_args=())
def block_sparse_attention_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_indices: torch.Tensor, kv_offsets: torch.Tensor,
    pooled_k: torch.Tensor | None, pooled_v: torch.Tensor | None, pooled_starts: list[int], levels: list[int],
    box_lo: torch.Tensor | None, box_hi: torch.Tensor | None, box_k: torch.Tensor | None, box_guard: int,
    box_partial: torch.Tensor | None, box_full_counts: torch.Tensor | None,
    pv_threshold: torch.Tensor | None, skip_threshold: torch.Tensor | None, mark_final: bool,
    scale: float, block_q: int, block_k: int, return_lse: bool,
    q_scale: torch.Tensor | None, k_scale: torch.Tensor | None, pooled_k_scale: torch.Tensor | None,
    v_scale: torch.Tensor | None, precision: str, out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton block-sparse attention as a torch op: `(out like q, lse f32 [B,H,Sq] or [1], kept int8 or [1])`.

    Inputs are validated by `diffattn.kernels.api`; this op trusts them. `kv_indices`/`kv_offsets` may have
    size-1 batch/head dims (broadcast). `pooled_k/v` hold the pooled levels (see `pool_kv`) at `pooled_starts`
    rows for levels 2, 4, 8 in that order. A token mask comes packed (`box_lo/hi/k`, `box_guard`: see
    `BoxMask.packed`) with either `box_partial`, int8 `[q_blocks, kv_blocks]` flagging the blocks the mask cuts
    (`BoxMask.full_blocks` negated), or `box_full_counts` (shaped like `kv_offsets`, column 0): how many leading
    level-1 slots of each row are whole blocks, all later ones being cut (see `plan_tensors`). With
    `skip_threshold`, `kept` flags the slots significant against the running max (the walk's own, one pass) or,
    with `mark_final`, against each row's final max (a second Q.K pass); see `diffattn.kernels.api`. Under an
    8-bit `precision` the operands and scales come from `quant.kernel_operands` (q, k, pooled_k int8; under
    "int8-fp8" v and pooled_v FP8 `[B, H, D, rows]`); `out_dtype` is the output's dtype.
    """
    return _launch(q, k, v, kv_indices, kv_offsets, pooled_k, pooled_v, pooled_starts, levels, box_lo, box_hi,
                   box_k, box_guard, box_partial, box_full_counts, pv_threshold, skip_threshold, mark_final, scale,
                   block_q, block_k, return_lse, q_scale, k_scale, pooled_k_scale, v_scale, precision, out_dtype)


@block_sparse_attention_op.register_fake
def _(q, k, v, kv_indices, kv_offsets, pooled_k, pooled_v, pooled_starts, levels, box_lo, box_hi, box_k, box_guard,
      box_partial, box_full_counts, pv_threshold, skip_threshold, mark_final, scale, block_q, block_k, return_lse,
      q_scale, k_scale, pooled_k_scale, v_scale, precision, out_dtype):
    batch, heads, q_len, _ = q.shape
    lse = q.new_empty((batch, heads, q_len) if return_lse else (1,), dtype=torch.float32)
    kept_shape = (batch, heads, kv_indices.shape[2], kv_indices.shape[3]) if skip_threshold is not None else (1,)
    return torch.empty_like(q, dtype=out_dtype), lse, q.new_empty(kept_shape, dtype=torch.int8)
