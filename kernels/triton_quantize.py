"""Fused 8-bit quantisation for the Triton attention kernel: one read of q/k/v, one write of the 8-bit operands.

`quantize_rows` and `quantize_values` give exactly (bit for bit) what their torch namesakes in `quantize.py` give,
which define the values: IEEE division (`div_rn`), round half to even, the same NaN rules. The torch versions
take ten-odd passes over a float32 copy; these take one, which matters when the attention itself is 8-bit fast.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .quantize import FP8_MAX, INT8_MAX
from .triton_attention import INTERPRETED

__all__ = ["quantize_rows", "quantize_values"]

_ROWS = 64  # tokens per program
_ROUND = tl.constexpr(12582912.0)  # 1.5 * 2^23: adding and subtracting it rounds a float32 below 2^22 to nearest even
_INT8_MAX = tl.constexpr(INT8_MAX)
_FP8_MAX = tl.constexpr(FP8_MAX)
_EMULATE_FP8 = tl.constexpr(INTERPRETED)


@triton.jit
def _rows_kernel(X, Mean, Out, Scale, n, heads, sb, sh, sn, sd,
                 HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, ROWS: tl.constexpr, HAS_MEAN: tl.constexpr):
    """Rows [pid * ROWS, +ROWS) of one (batch, head): int8 rows with one float32 scale each."""
    bh = tl.program_id(1)
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    dims = tl.arange(0, D_PAD)
    row_ok = rows < n
    d_ok = dims < HEAD_DIM
    ok = row_ok[:, None] & d_ok[None, :]
    ptrs = X + (bh // heads) * sb + (bh % heads) * sh + rows[:, None] * sn + dims[None, :] * sd
    x = tl.load(ptrs, mask=ok, other=0.0).to(tl.float32)
    if HAS_MEAN:
        x = tl.where(ok, x - tl.load(Mean + bh * HEAD_DIM + dims, mask=d_ok, other=0.0)[None, :], 0.0)
    nonfinite = tl.max(tl.where(tl.abs(x) < float("inf"), 0, 1), 1)  # NaN fails the test too; tl.max skips NaN
    scale = tl.math.div_rn(tl.max(tl.abs(x), 1), _INT8_MAX)
    scale = tl.where(scale == 0.0, 1.0, scale)
    scale = tl.where(nonfinite > 0, float("nan"), scale)
    y = tl.math.div_rn(x, scale[:, None])
    y = (y + _ROUND) - _ROUND
    y = tl.where(y != y, 0.0, tl.minimum(tl.maximum(y, -_INT8_MAX), _INT8_MAX))
    tl.store(Out + (bh * n + rows[:, None]) * HEAD_DIM + dims[None, :], y.to(tl.int8), mask=ok)
    tl.store(Scale + bh * n + rows, scale, mask=row_ok)


@triton.jit
def _values_kernel(V, Scale, Out, n_pad, n, heads, sb, sh, sn, sd,
                   HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, ROWS: tl.constexpr):
    """Rows [pid * ROWS, +ROWS) of one (batch, head)'s V in FP8 e4m3, divided by the channel scales, stored
    transposed (`[D, n_pad]` per head). The interpreter's float32 -> FP8 cast is wrong where rounding carries into the
    next binade, so there the value is rounded in float32 first (then stored exactly)."""
    bh = tl.program_id(1)
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    dims = tl.arange(0, D_PAD)
    row_ok = rows < n
    d_ok = dims < HEAD_DIM
    ok = row_ok[:, None] & d_ok[None, :]
    ptrs = V + (bh // heads) * sb + (bh % heads) * sh + rows[:, None] * sn + dims[None, :] * sd
    x = tl.load(ptrs, mask=ok, other=0.0).to(tl.float32)
    scale = tl.load(Scale + bh * HEAD_DIM + dims, mask=d_ok, other=1.0)
    y = tl.math.div_rn(x, scale[None, :])
    y = tl.where(y != y, 0.0, tl.minimum(tl.maximum(y, -_FP8_MAX), _FP8_MAX))
    if _EMULATE_FP8:  # 3 mantissa bits, subnormal below 2^-6
        a = tl.abs(y)
        step = tl.exp2(tl.maximum(tl.floor(tl.log2(tl.maximum(a, 1e-30))), -6.0) - 3.0)
        a = ((a / step + _ROUND) - _ROUND) * step
        y = tl.where(y < 0, -a, a)
    out_ptrs = Out + (bh * HEAD_DIM + dims[:, None]) * n_pad + rows[None, :]
    tl.store(out_ptrs, tl.trans(y.to(tl.float8e4nv)), mask=tl.trans(ok))


def _grid_args(x: torch.Tensor) -> tuple:
    batch, heads, n, dim = x.shape
    return (triton.cdiv(n, _ROWS), batch * heads), (n, heads, *x.stride())


def quantize_rows(x: torch.Tensor, mean: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`quantize.quantize_rows` for `[B, H, N, D]` on the Triton device: `(int8 [B, H, N, D], float32 [B, H, N])`."""
    batch, heads, n, dim = x.shape
    out = x.new_empty((batch, heads, n, dim), dtype=torch.int8)
    scale = x.new_empty((batch, heads, n), dtype=torch.float32)
    grid, args = _grid_args(x)
    _rows_kernel[grid](x, mean.contiguous() if mean is not None else scale, out, scale, *args, HEAD_DIM=dim,
                       D_PAD=max(16, triton.next_power_of_2(dim)), ROWS=_ROWS, HAS_MEAN=mean is not None)
    return out, scale


def quantize_values(v: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """`quantize.quantize_values` on the Triton device: FP8 `[B, H, N, D]`, a view of `[B, H, D, N_pad]` (tokens
    padded to a multiple of 16, so every channel's row starts 16-byte aligned for the kernel's vector loads)."""
    batch, heads, n, dim = v.shape
    n_pad = triton.cdiv(n, 16) * 16
    out = v.new_empty((batch, heads, dim, n_pad), dtype=torch.float8_e4m3fn)
    grid, args = _grid_args(v)
    _values_kernel[grid](v, scale.contiguous(), out, n_pad, *args, HEAD_DIM=dim, D_PAD=max(16, triton.next_power_of_2(dim)),
                         ROWS=_ROWS)
    return out[..., :n].transpose(-1, -2)
