"""Triton kernels that read K/V (or Q/K) once per block to build what attention plans need, as torch custom ops.

- `pool_kv_op`: PSA's pooled K/V pyramid. For each kv block and level l in (2, 4, 8) the mean of each group of
  l tokens (groups aligned to the block start; a group's mean is over its valid tokens).
- `block_stats_op`: SpargeAttn stage 1 statistics per block: the mean token (`pool`) and the mean pairwise
  cosine similarity of its tokens (`sim`), computed as `|sum_i u_i|^2 / n^2` with `u_i` the L2-normalised tokens
  (equal to the mean of the block's Gram matrix of normalised tokens, without forming it).
- `sparge_select_op`: SpargeAttn's per-row selection (softmax, TopCdf / top-k, forced keeps) writing the plan
  rows directly, so a whole prediction is a handful of launches (eager calls are launch-bound at 32k tokens).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

__all__ = ["POOLED_LEVELS", "block_stats_op", "pool_kv_op", "pooled_layout", "sparge_select_op"]

POOLED_LEVELS = (2, 4, 8)
NORM_EPS = 1e-12


def pooled_layout(kv_len: int, block_k: int, levels: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """Rows of the concatenated pooled tensor and the first row of each of levels (2, 4, 8) (0 when absent).

    Level l holds `ceil(kv_len / block_k) * block_k / l` rows: every kv block's groups, trailing ones empty.
    """
    blocks = math.ceil(kv_len / block_k)
    starts, total = [], 0
    for lvl in POOLED_LEVELS:
        starts.append(total)
        if lvl in levels:
            total += blocks * block_k // lvl
    return total, tuple(starts)


_POOL_CHUNK = 64
"""Tokens per pooling program (a multiple of every level)."""


@triton.jit
def _pool_level(src, stride_n, stride_d, dst, stride_pn, chunk_start, row0, kv_len, offs_d, d_ok,
                POOL: tl.constexpr, CHUNK: tl.constexpr, D_PAD: tl.constexpr):
    """Means of the POOL-token groups of one chunk, summed from POOL strided row loads (no cross-thread reduction:
    each group's rows land in the same threads), over each group's valid tokens."""
    G: tl.constexpr = CHUNK // POOL
    first = chunk_start + tl.arange(0, G) * POOL
    total = tl.zeros([G, D_PAD], dtype=tl.float32)
    for p in tl.static_range(POOL):
        rows = first + p
        total += tl.load(src + rows[:, None] * stride_n + offs_d[None, :] * stride_d,
                         mask=(rows < kv_len)[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
    count = tl.minimum(tl.maximum(kv_len - first, 0), POOL).to(tl.float32)
    mean = total / tl.maximum(count, 1.0)[:, None]
    rows = row0 + tl.arange(0, G)
    tl.store(dst + rows[:, None] * stride_pn + offs_d[None, :], mean.to(dst.dtype.element_ty), mask=d_ok[None, :])


@triton.jit
def _pool_kv_kernel(
    K, V, KP, VP, kv_len, num_heads,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_pb, stride_ph, stride_pn,
    START2, START4, START8,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, CHUNK: tl.constexpr,
    HAS2: tl.constexpr, HAS4: tl.constexpr, HAS8: tl.constexpr,
):
    """Grid (chunks, batch * heads, 2): axis 2 picks K (0) or V (1); one CHUNK of tokens of one tensor each.

    Chunks start at multiples of CHUNK (a multiple of 8), so every level's groups stay aligned to kv blocks.
    """
    j = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // num_heads
    h = bh % num_heads
    if tl.program_id(2) == 0:
        src = K + b * stride_kb + h * stride_kh
        stride_n = stride_kn
        stride_d = stride_kd
        dst = KP + b * stride_pb + h * stride_ph
    else:
        src = V + b * stride_vb + h * stride_vh
        stride_n = stride_vn
        stride_d = stride_vd
        dst = VP + b * stride_pb + h * stride_ph
    offs_d = tl.arange(0, D_PAD)
    d_ok = offs_d < HEAD_DIM
    start = j * CHUNK
    if HAS2:
        _pool_level(src, stride_n, stride_d, dst, stride_pn, start, START2 + j * (CHUNK // 2), kv_len, offs_d, d_ok,
                    2, CHUNK, D_PAD)
    if HAS4:
        _pool_level(src, stride_n, stride_d, dst, stride_pn, start, START4 + j * (CHUNK // 4), kv_len, offs_d, d_ok,
                    4, CHUNK, D_PAD)
    if HAS8:
        _pool_level(src, stride_n, stride_d, dst, stride_pn, start, START8 + j * (CHUNK // 8), kv_len, offs_d, d_ok,
                    8, CHUNK, D_PAD)


@torch.library.custom_op("diffattn::pool_kv", mutates_args=())
def pool_kv_op(k: torch.Tensor, v: torch.Tensor, levels: list[int], block_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled K and V `[B, H, rows, D]` (contiguous, dtype of k) laid out by `pooled_layout`."""
    batch, heads, kv_len, head_dim = k.shape
    rows, starts = pooled_layout(kv_len, block_k, tuple(levels))
    kp = k.new_empty((batch, heads, rows, head_dim))
    vp = k.new_empty((batch, heads, rows, head_dim))
    grid = (math.ceil(kv_len / block_k) * block_k // _POOL_CHUNK, batch * heads, 2)
    _pool_kv_kernel[grid](
        k, v, kp, vp, kv_len, heads, *k.stride(), *v.stride(), kp.stride(0), kp.stride(1), kp.stride(2), *starts,
        HEAD_DIM=head_dim, D_PAD=max(16, triton.next_power_of_2(head_dim)), CHUNK=_POOL_CHUNK,
        HAS2=2 in levels, HAS4=4 in levels, HAS8=8 in levels, num_warps=4,
    )
    return kp, vp


@pool_kv_op.register_fake
def _(k, v, levels, block_k):
    batch, heads, kv_len, head_dim = k.shape
    rows, _ = pooled_layout(kv_len, block_k, tuple(levels))
    return k.new_empty((batch, heads, rows, head_dim)), k.new_empty((batch, heads, rows, head_dim))


@triton.jit
def _block_stats_kernel(
    X, Mean, Pool, Sim, n_tokens, num_heads, num_blocks,
    stride_xb, stride_xh, stride_xn, stride_xd, stride_mb, stride_mh,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr, SMOOTH: tl.constexpr,
    EPS: tl.constexpr,
):
    """One block of one (batch, head) per program, read CHUNK tokens at a time (few registers, many programs)."""
    j = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // num_heads
    h = bh % num_heads
    offs_d = tl.arange(0, D_PAD)
    d_ok = offs_d < HEAD_DIM
    mean = tl.zeros([D_PAD], dtype=tl.float32)
    if SMOOTH:
        mean = tl.load(Mean + b * stride_mb + h * stride_mh + offs_d, mask=d_ok, other=0.0)
    total = tl.zeros([D_PAD], dtype=tl.float32)
    unit_sum = tl.zeros([D_PAD], dtype=tl.float32)
    base = X + b * stride_xb + h * stride_xh
    for c in tl.static_range(BLOCK // CHUNK):
        offs_n = j * BLOCK + c * CHUNK + tl.arange(0, CHUNK)
        n_ok = offs_n < n_tokens
        x = tl.load(base + offs_n[:, None] * stride_xn + offs_d[None, :] * stride_xd,
                    mask=n_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
        x = tl.where(n_ok[:, None], x - mean[None, :], 0.0)
        norm = tl.sqrt(tl.sum(x * x, 1))
        total += tl.sum(x, 0)
        unit_sum += tl.sum(x / tl.maximum(norm, EPS)[:, None], 0)
    count = tl.minimum(n_tokens - j * BLOCK, BLOCK).to(tl.float32)
    row = bh * num_blocks + j
    tl.store(Pool + row * HEAD_DIM + offs_d, total / count, mask=d_ok)
    tl.store(Sim + row, tl.sum(unit_sum * unit_sum, 0) / (count * count))


@torch.library.custom_op("diffattn::block_stats", mutates_args=())
def block_stats_op(x: torch.Tensor, mean: torch.Tensor | None, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per block of `block` tokens: mean token fp32 `[B, H, blocks, D]` and mean pairwise cosine `[B, H, blocks]`.

    With `mean` (`[B, H, D]`, last dim contiguous), tokens are smoothed (`x - mean`) first, as SpargeAttn does for K.
    """
    batch, heads, n_tokens, head_dim = x.shape
    blocks = math.ceil(n_tokens / block)
    pool = x.new_empty((batch, heads, blocks, head_dim), dtype=torch.float32)
    sim = x.new_empty((batch, heads, blocks), dtype=torch.float32)
    m = mean if mean is not None else pool
    _block_stats_kernel[(blocks, batch * heads)](
        x, m, pool, sim, n_tokens, heads, blocks, *x.stride(), m.stride(0), m.stride(1),
        HEAD_DIM=head_dim, D_PAD=max(16, triton.next_power_of_2(head_dim)), BLOCK=block, CHUNK=min(block, 32),
        SMOOTH=mean is not None, EPS=NORM_EPS, num_warps=4,
    )
    return pool, sim


@block_stats_op.register_fake
def _(x, mean, block):
    batch, heads, n_tokens, head_dim = x.shape
    blocks = math.ceil(n_tokens / block)
    return (x.new_empty((batch, heads, blocks, head_dim), dtype=torch.float32),
            x.new_empty((batch, heads, blocks), dtype=torch.float32))


@triton.jit
def _sparge_select_kernel(
    Scores, SimQ, SimK, Theta, Idx, Cnt, scale, kv_blocks, num_heads, num_q_blocks, topk_count, cdf_threshold,
    KB_PAD: tl.constexpr, TOPK: tl.constexpr, SINK: tl.constexpr,
):
    """One plan row per program: softmax over self-similar kv blocks, TopCdf / top-k cut, forced keeps, and the
    kept ids written in ascending order (then -1) with their count. Ties at the cut are all kept."""
    qb = tl.program_id(0)
    bh = tl.program_id(1)
    row = bh * num_q_blocks + qb
    offs = tl.arange(0, KB_PAD)
    k_ok = offs < kv_blocks
    theta = tl.load(Theta + bh % num_heads)
    k_similar = (tl.load(SimK + bh * kv_blocks + offs, mask=k_ok, other=0.0) > theta) & k_ok
    s = tl.load(Scores + row * kv_blocks + offs, mask=k_ok, other=0.0) * scale
    s = tl.where(k_similar, s, float("-inf"))
    e = tl.where(k_similar, tl.exp(s - tl.max(s, 0)), 0.0)
    p = e / tl.maximum(tl.sum(e, 0), 1e-30)
    ordered = tl.sort(p, descending=True)
    if TOPK:
        n_keep = topk_count
    else:
        n_keep = tl.maximum(tl.sum((tl.cumsum(ordered, 0) <= cdf_threshold).to(tl.int32), 0), 1)
    cut = tl.sum(tl.where(offs == n_keep - 1, ordered, 0.0), 0)
    dense_row = tl.load(SimQ + row) <= theta  # a Q block that is not self-similar attends densely
    keep = tl.where(dense_row, k_ok, k_ok & ((p >= cut) | ~k_similar))
    if SINK:
        keep = keep | (offs == 0)
    flags = keep.to(tl.int32)
    count = tl.sum(flags, 0)
    position = tl.cumsum(flags, 0) - 1
    tl.store(Idx + row * kv_blocks + position, offs, mask=keep)
    tl.store(Idx + row * kv_blocks + offs, tl.full([KB_PAD], -1, tl.int32), mask=k_ok & (offs >= count))
    tl.store(Cnt + row, count)


@torch.library.custom_op("diffattn::sparge_select", mutates_args=())
def sparge_select_op(
    scores: torch.Tensor, sim_q: torch.Tensor, sim_k: torch.Tensor, theta: torch.Tensor, scale: float,
    topk_count: int, cdf_threshold: float, attention_sink: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SpargeAttn selection from the pooled scores `q_pool . k_pool^T` `[B, H, QB, KB]` (fp32, contiguous).

    Returns the plan rows `(kv_indices int32 [B, H, QB, KB], kv_counts int32 [B, H, QB, 1])`. `topk_count > 0`
    keeps that many blocks per row, else TopCdf(`cdf_threshold`); `theta` `[H]` is the self-similarity threshold.
    """
    batch, heads, q_blocks, kv_blocks = scores.shape
    idx = scores.new_empty((batch, heads, q_blocks, kv_blocks), dtype=torch.int32)
    cnt = scores.new_empty((batch, heads, q_blocks, 1), dtype=torch.int32)
    _sparge_select_kernel[(q_blocks, batch * heads)](
        scores, sim_q, sim_k, theta, idx, cnt, scale, kv_blocks, heads, q_blocks, topk_count, cdf_threshold,
        KB_PAD=max(16, triton.next_power_of_2(kv_blocks)), TOPK=topk_count > 0, SINK=attention_sink, num_warps=4,
    )
    return idx, cnt


@sparge_select_op.register_fake
def _(scores, sim_q, sim_k, theta, scale, topk_count, cdf_threshold, attention_sink):
    batch, heads, q_blocks, kv_blocks = scores.shape
    return (scores.new_empty((batch, heads, q_blocks, kv_blocks), dtype=torch.int32),
            scores.new_empty((batch, heads, q_blocks, 1), dtype=torch.int32))
