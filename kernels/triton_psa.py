"""PSA's block importance as one Triton kernel, a torch custom op: sampled attention summed per block pair, in one
pass over the sampled keys, with no logits in memory.

A program holds `BLOCK_M` sampled queries of one (batch, head), i.e. `BLOCK_M / Q_ROWS` whole query blocks, loaded
once, and walks every tile of `BLOCK_N` sampled keys (`BLOCK_N / K_COLS` whole kv blocks): online softmax in log2
units (`scale * log2(e)` folded into one multiply, `exp2` throughout) keeps each row's running max and sum, and each
row's sum of `exp2(s - running max)` per kv block of the tile is stored as an absolute log2 sum, `log2(sum) + max`,
so no later rescaling is needed. Once the row's final max `m` and sum `l` are known, the program turns its stored
sums into probabilities, `exp2(partial - m - log2 l)`, sums them per (query block, kv block) and writes the output:
every output element is written once by one program, with no atomics and no zero fill. The stored sums are one
float per (row, kv block), in a slice of a scratch buffer owned by the program: the kernel is persistent (a fixed
number of programs, each taking query tiles in turn), so the scratch stays `programs x BLOCK_M x kv_blocks` floats
whatever the batch and head count. Sampled tokens are read with the token stride times the sample stride; only the
last, ragged key tile is masked.
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
_MAX_BLOCK_M = max(shape[0] for shape in _SHAPES)
_FIN_KB = 32
"""kv blocks per step when the stored sums are turned into the output."""
_PROGRAMS_PER_SM = 4
"""Persistent programs per streaming multiprocessor: at least as many as fit at once for every config (1 to 3 on
sm_90), the rest queue behind them, which balances programs that take one more tile than others."""
_INTERPRETER_PROGRAMS = 2
"""Programs under the interpreter: few, so that each takes several query tiles in turn (as on a GPU)."""
_PROGRAMS: dict[int, int] = {}


def _programs(device: torch.device) -> int:
    """Persistent programs on `device` (cached per GPU)."""
    if device.type != "cuda":
        return _INTERPRETER_PROGRAMS
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _PROGRAMS:
        _PROGRAMS[index] = _PROGRAMS_PER_SM * torch.cuda.get_device_properties(index).multi_processor_count
    return _PROGRAMS[index]


def _configs() -> list[triton.Config]:
    """Every shape of `_SHAPES`; `_prune` keeps those that fit the call's block sizes."""
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in _SHAPES]


def _prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Tiles of whole query blocks and whole kv blocks (the interpreter runs one shape)."""
    fits = [c for c in configs
            if c.kwargs["BLOCK_M"] % kwargs["Q_ROWS"] == 0 and c.kwargs["BLOCK_N"] % kwargs["K_COLS"] == 0]
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
def _fold_tile(s, m_i, l_i, Partial, kb0, kv_blocks, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               K_COLS: tl.constexpr):
    """Fold one score tile into each row's running max and sum; store each row's log2 sum of exp2 per kv block of
    the tile (absolute: relative to no running max) at kv blocks `kb0 + [0, BLOCK_N / K_COLS)` of `Partial`."""
    KB: tl.constexpr = BLOCK_N // K_COLS
    m_new = tl.maximum(m_i, tl.max(s, 1))
    per_block = tl.sum(tl.reshape(tl.math.exp2(s - m_new[:, None]), [BLOCK_M, KB, K_COLS]), 2)
    l_i = l_i * tl.math.exp2(m_i - m_new) + tl.sum(per_block, 1)
    kb_ok = (kb0 + tl.arange(0, KB) < kv_blocks)[None, :]  # blocks past the last hold no key (sum 0: no log2)
    tl.store(Partial + (kb0 + tl.arange(0, KB))[None, :] * BLOCK_M + tl.arange(0, BLOCK_M)[:, None],
             tl.log2(tl.where(kb_ok, per_block, 1.0)) + m_new[:, None], mask=kb_ok)
    return m_new, l_i


@triton.jit
def _finish_rows(Partial, Out, offset, offs_qb, qb_ok, kv_blocks,
                 BLOCK_M: tl.constexpr, Q_ROWS: tl.constexpr, FIN_KB: tl.constexpr):
    """Each row's per-kv-block probability, `exp2(partial - max - log2 sum)`, summed per query block and stored."""
    QB: tl.constexpr = BLOCK_M // Q_ROWS
    for kb0 in range(0, kv_blocks, FIN_KB):
        offs_kb = kb0 + tl.arange(0, FIN_KB)
        kb_ok = offs_kb < kv_blocks
        partial = tl.load(Partial + offs_kb[None, :] * BLOCK_M + tl.arange(0, BLOCK_M)[:, None], mask=kb_ok[None, :],
                          other=float("-inf"))
        p = tl.math.exp2(partial - offset[:, None])
        per_pair = tl.sum(tl.reshape(p, [QB, Q_ROWS, FIN_KB]), 1)
        tl.store(Out + offs_qb[:, None] * kv_blocks + offs_kb[None, :], per_pair, mask=qb_ok[:, None] & kb_ok[None, :])


@triton.autotune(configs=_configs(), key=["seq_bucket", "Q_ROWS", "K_COLS", "D_PAD"],
                 prune_configs_by={"early_config_prune": _prune})
@triton.jit
def _psa_importance_kernel(
    Q, K, Out, Partials, n_queries, n_keys, num_heads, num_bh, q_blocks, kv_blocks, seq_bucket,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    qk_scale,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, Q_ROWS: tl.constexpr, K_COLS: tl.constexpr, FIN_KB: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Persistent: program p takes query tiles p, p + programs, ... (tile t: `BLOCK_M` sampled queries of (batch,
    head) `t // q_tiles`), with its own `[kv_blocks, BLOCK_M]` slice of `Partials`. `stride_qn`/`stride_kn` step
    from one sampled token to the next; `n_queries`/`n_keys` count sampled tokens; a query block holds `Q_ROWS` of
    them, a kv block `K_COLS`."""
    MASK_D: tl.constexpr = D_PAD != HEAD_DIM
    QB: tl.constexpr = BLOCK_M // Q_ROWS
    offs_d = tl.arange(0, D_PAD)
    d_ok = offs_d < HEAD_DIM
    q_tiles = tl.cdiv(n_queries, BLOCK_M)
    full_end = (n_keys // BLOCK_N) * BLOCK_N
    Partial = Partials + tl.program_id(0) * kv_blocks * BLOCK_M
    for tile in range(tl.program_id(0), q_tiles * num_bh, tl.num_programs(0)):
        bh = tile // q_tiles
        qt = tile % q_tiles
        b = bh // num_heads
        h = bh % num_heads
        offs_m = qt * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = offs_m < n_queries
        q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                    mask=m_ok[:, None] & d_ok[None, :], other=0.0)
        Kh = K + b * stride_kb + h * stride_kh
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        for start in range(0, full_end, BLOCK_N):
            s = _scores(q, Kh, start + tl.arange(0, BLOCK_N), n_keys, offs_d, d_ok, stride_kn, stride_kd, qk_scale,
                        False, MASK_D)
            m_i, l_i = _fold_tile(s, m_i, l_i, Partial, start // K_COLS, kv_blocks, BLOCK_M, BLOCK_N, K_COLS)
        if full_end < n_keys:
            s = _scores(q, Kh, full_end + tl.arange(0, BLOCK_N), n_keys, offs_d, d_ok, stride_kn, stride_kd,
                        qk_scale, True, MASK_D)
            m_i, l_i = _fold_tile(s, m_i, l_i, Partial, full_end // K_COLS, kv_blocks, BLOCK_M, BLOCK_N, K_COLS)
        offset = tl.where(m_ok, m_i + tl.log2(l_i), float("inf"))  # rows past the last sampled query add nothing
        offs_qb = qt * QB + tl.arange(0, QB)
        tl.debug_barrier()  # the partials of every thread of this program are written (bar.sync orders memory)
        _finish_rows(Partial, Out + bh * q_blocks * kv_blocks, offset, offs_qb, offs_qb < q_blocks, kv_blocks,
                     BLOCK_M, Q_ROWS, FIN_KB)
        tl.debug_barrier()  # ... and read, before the next tile overwrites them


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
    programs = _programs(q.device)
    partials = q.new_empty((programs, out.shape[3], _MAX_BLOCK_M), dtype=torch.float32)

    def grid(meta: dict) -> tuple[int]:
        return (min(programs, triton.cdiv(n_queries, meta["BLOCK_M"]) * batch * heads),)

    _psa_importance_kernel[grid](
        q, k, out, partials, n_queries, n_keys, heads, batch * heads, out.shape[2], out.shape[3],
        triton.next_power_of_2(max(n_queries, n_keys)),
        q.stride(0), q.stride(1), q.stride(2) * sample_stride, q.stride(3),
        k.stride(0), k.stride(1), k.stride(2) * sample_stride, k.stride(3),
        scale * LOG2E,
        HEAD_DIM=head_dim, D_PAD=max(16, triton.next_power_of_2(head_dim)),
        Q_ROWS=block_q // sample_stride, K_COLS=block_k // sample_stride, FIN_KB=_FIN_KB,
    )
    return out


@psa_importance_op.register_fake
def _(q, k, block_q, block_k, sample_stride, scale):
    return q.new_empty(_output_shape(q, k, block_q, block_k), dtype=torch.float32)
