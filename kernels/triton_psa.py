"""PSA's block importance as one Triton kernel, a torch custom op: sampled attention summed per block pair, with
no logits in memory.

One program owns `BLOCK_M` sampled queries of one (batch, head), i.e. `BLOCK_M / Q_ROWS` whole query blocks, and
loads them once. Pass 1 walks every tile of `BLOCK_N` sampled keys and keeps each row's running max and sum
(online softmax, log2 units, `scale * log2(e)` folded into one multiply, `exp2` throughout). Pass 2 recomputes the
scores tile by tile, turns them into probabilities with one subtraction (`max + log2(sum)` per row) and one `exp2`,
sums them per (query block, kv block) and stores them: a tile covers `BLOCK_N / K_COLS` whole kv blocks, so every
output element is written once by one program, with no atomics and no zero fill. Sampled tokens are read with the
token stride times the sample stride; only the last, ragged key tile is masked.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .triton_attention import INTERPRETED, LOG2E, _dot

__all__ = ["psa_importance_op"]


# --------------------------------------------------------------------------------------------- autotuning
_SHAPES = ((64, 64, 4, 3), (64, 128, 4, 3), (128, 32, 4, 3), (128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 2),
           (128, 128, 8, 3))
"""(BLOCK_M sampled queries, BLOCK_N sampled keys, warps, stages) worth timing on a GPU."""
_INTERPRETER_SHAPE = (64, 64)
"""The one tile shape run under the interpreter: several query and kv blocks per tile at block sizes 64 and 128."""


def _configs() -> list[triton.Config]:
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in _SHAPES]


def _prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Tiles of whole query blocks and whole kv blocks (the interpreter runs one shape)."""
    fits = [c for c in configs if c.kwargs["BLOCK_M"] % kwargs["Q_ROWS"] == 0 and c.kwargs["BLOCK_N"] % kwargs["K_COLS"] == 0]
    if INTERPRETED:
        return [c for c in fits if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) == _INTERPRETER_SHAPE] or fits[:1]
    return fits


# ------------------------------------------------------------------------------------------------ kernel
@triton.jit
def _scores(q, K, offs_n, n_keys, offs_d, d_ok, stride_kn, stride_kd, qk_scale,
            MASK_N: tl.constexpr, MASK_D: tl.constexpr):
    """Scores of the program's sampled queries against sampled keys `offs_n`, log2 units; keys past `n_keys` -inf."""
    ptrs = K + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    if MASK_N:
        kt = tl.load(ptrs, mask=(offs_n < n_keys)[None, :] & d_ok[:, None], other=0.0)
    elif MASK_D:
        kt = tl.load(ptrs, mask=d_ok[:, None], other=0.0)
    else:
        kt = tl.load(ptrs)
    s = _dot(q, kt, tl.zeros([q.shape[0], kt.shape[1]], dtype=tl.float32)) * qk_scale
    if MASK_N:
        s = tl.where((offs_n < n_keys)[None, :], s, float("-inf"))
    return s


@triton.jit
def _row_stats(m_i, l_i, s):
    """Fold one score tile into each row's running max and sum of exp2."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    l_i = l_i * tl.math.exp2(m_i - m_new) + tl.sum(tl.math.exp2(s - m_new[:, None]), 1)
    return m_new, l_i


@triton.jit
def _store_block_sums(Out, s, offset, offs_qb, qb_ok, kb0, kv_blocks,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, Q_ROWS: tl.constexpr, K_COLS: tl.constexpr):
    """Probabilities of one tile summed per (query block, kv block), stored at kv blocks `kb0 + [0, BLOCK_N / K_COLS)`."""
    KB: tl.constexpr = BLOCK_N // K_COLS
    p = tl.math.exp2(s - offset[:, None])
    per_row = tl.sum(tl.reshape(p, [BLOCK_M, KB, K_COLS]), 2)
    per_pair = tl.sum(tl.reshape(per_row, [BLOCK_M // Q_ROWS, Q_ROWS, KB]), 1)
    offs_kb = kb0 + tl.arange(0, KB)
    tl.store(Out + offs_qb[:, None] * kv_blocks + offs_kb[None, :], per_pair,
             mask=qb_ok[:, None] & (offs_kb < kv_blocks)[None, :])


@triton.autotune(configs=_configs(), key=["seq_bucket", "Q_ROWS", "K_COLS", "D_PAD"],
                 prune_configs_by={"early_config_prune": _prune})
@triton.jit
def _psa_importance_kernel(
    Q, K, Out, n_queries, n_keys, num_heads, q_blocks, kv_blocks, seq_bucket,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    qk_scale,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, Q_ROWS: tl.constexpr, K_COLS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Grid (query tiles, batch * heads). `stride_qn`/`stride_kn` step from one sampled token to the next;
    `n_queries`/`n_keys` count sampled tokens; a query block holds `Q_ROWS` of them, a kv block `K_COLS`."""
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // num_heads
    h = bh % num_heads
    MASK_D: tl.constexpr = D_PAD != HEAD_DIM
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_PAD)
    d_ok = offs_d < HEAD_DIM
    m_ok = offs_m < n_queries
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    K = K + b * stride_kb + h * stride_kh
    full_end = (n_keys // BLOCK_N) * BLOCK_N

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start in range(0, full_end, BLOCK_N):
        s = _scores(q, K, start + tl.arange(0, BLOCK_N), n_keys, offs_d, d_ok, stride_kn, stride_kd, qk_scale,
                    False, MASK_D)
        m_i, l_i = _row_stats(m_i, l_i, s)
    if full_end < n_keys:
        s = _scores(q, K, full_end + tl.arange(0, BLOCK_N), n_keys, offs_d, d_ok, stride_kn, stride_kd, qk_scale,
                    True, MASK_D)
        m_i, l_i = _row_stats(m_i, l_i, s)

    offset = tl.where(m_ok, m_i + tl.log2(l_i), float("inf"))  # rows past the last sampled query add nothing
    QB: tl.constexpr = BLOCK_M // Q_ROWS
    offs_qb = pid * QB + tl.arange(0, QB)
    qb_ok = offs_qb < q_blocks
    Out = Out + bh * q_blocks * kv_blocks
    for start in range(0, full_end, BLOCK_N):
        s = _scores(q, K, start + tl.arange(0, BLOCK_N), n_keys, offs_d, d_ok, stride_kn, stride_kd, qk_scale,
                    False, MASK_D)
        _store_block_sums(Out, s, offset, offs_qb, qb_ok, start // K_COLS, kv_blocks, BLOCK_M, BLOCK_N, Q_ROWS, K_COLS)
    if full_end < n_keys:
        s = _scores(q, K, full_end + tl.arange(0, BLOCK_N), n_keys, offs_d, d_ok, stride_kn, stride_kd, qk_scale,
                    True, MASK_D)
        _store_block_sums(Out, s, offset, offs_qb, qb_ok, full_end // K_COLS, kv_blocks, BLOCK_M, BLOCK_N, Q_ROWS,
                          K_COLS)


def _output_shape(q: torch.Tensor, k: torch.Tensor, block_q: int, block_k: int) -> tuple[int, int, int, int]:
    return (q.shape[0], q.shape[1], math.ceil(q.shape[2] / block_q), math.ceil(k.shape[2] / block_k))


@torch.library.custom_op("diffattn::psa_importance", mutates_args=())
def psa_importance_op(q: torch.Tensor, k: torch.Tensor, block_q: int, block_k: int, sample_stride: int,
                      scale: float) -> torch.Tensor:
    """float32 `[B, H, q_blocks, kv_blocks]`: every `sample_stride`-th query's softmax over every `sample_stride`-th
    key (logits `scale * q.k`), summed per block pair. q and k float16 or bfloat16 (float32 under the interpreter;
    on a GPU it would multiply in TF32); `block_q / sample_stride` and `block_k / sample_stride` powers of two of at
    most 128 (the backend takes block sizes 64 and 128)."""
    batch, heads, q_len, head_dim = q.shape
    n_queries, n_keys = -(-q_len // sample_stride), -(-k.shape[2] // sample_stride)
    out = q.new_empty(_output_shape(q, k, block_q, block_k), dtype=torch.float32)
    _psa_importance_kernel[lambda meta: (triton.cdiv(n_queries, meta["BLOCK_M"]), batch * heads)](
        q, k, out, n_queries, n_keys, heads, out.shape[2], out.shape[3],
        triton.next_power_of_2(max(n_queries, n_keys)),
        q.stride(0), q.stride(1), q.stride(2) * sample_stride, q.stride(3),
        k.stride(0), k.stride(1), k.stride(2) * sample_stride, k.stride(3),
        scale * LOG2E,
        HEAD_DIM=head_dim, D_PAD=max(16, triton.next_power_of_2(head_dim)),
        Q_ROWS=block_q // sample_stride, K_COLS=block_k // sample_stride,
    )
    return out


@psa_importance_op.register_fake
def _(q, k, block_q, block_k, sample_stride, scale):
    return q.new_empty(_output_shape(q, k, block_q, block_k), dtype=torch.float32)
