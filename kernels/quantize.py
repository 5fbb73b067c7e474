"""8-bit attention inputs: the quantisation both the Triton kernel and the torch reference use.

Precisions (`PRECISIONS`, defined in `diffattn.precision`): `"bf16"` (no quantisation), `"int8"` (INT8 Q.K,
16-bit P.V, SageAttention 1 style) and `"int8-fp8"` (INT8 Q.K, FP8 e4m3 P.V, SageAttention 2 style; sm_89+).

The recipe, all on the device and without host synchronisation:

- K smoothing: the per-(batch, head) mean of K over its tokens is subtracted first. Every logit of a query row
  then moves by the same `q . mean`, which softmax ignores, while the INT8 grid no longer has to span a large
  common offset of K's channels. The log-sum-exp gets `scale * q . mean` back (`QuantizedInputs.lse_shift`).
- INT8 Q and K with one float32 scale per token (`amax(|row|) / 127`, round to nearest): finer than a per-block
  scale, and independent of the kernel's tile sizes, pooled levels and token masks.
- V (int8-fp8 only): one float32 scale per (batch, head, channel), `amax over tokens / 448`, stored as FP8 e4m3
  and transposed to `[batch, heads, head_dim, tokens]`: Hopper's FP8 MMA needs its second operand K-major.
  Pooled values (means of V) reuse the scales of V, which bound them.
- P (int8-fp8 only, in the kernel): each tile's probabilities `exp(s - m)` lie in [0, 1] against the running max
  `m` after that tile; they are multiplied by 448 and rounded to FP8 e4m3; the row sum uses the unrounded
  probabilities. Each tile's P.V is summed in a fresh float32 tile before it joins the running output (FP8 MMA
  accumulators are narrower than float32).

Inputs with inf or NaN: a token (or V channel) holding one gets a NaN scale, so the outputs it reaches are NaN,
never finite values; with K smoothing a single non-finite key makes its whole head NaN (the mean carries it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from diffattn.precision import PRECISIONS

__all__ = ["FP8_MAX", "INT8_MAX", "PRECISIONS", "QuantizedInputs", "dequantize_rows", "quantize_inputs",
           "quantize_rows", "quantize_values", "round_e4m3", "value_scales"]

INT8_MAX = 127.0
FP8_MAX = 448.0
"""Largest finite FP8 e4m3 value: P is scaled by it before rounding, V channels are scaled to it."""


class QuantizedInputs(NamedTuple):
    """What the 8-bit kernel reads (see `quantize_inputs`)."""

    q: torch.Tensor
    """int8 `[B, H, Sq, D]`."""
    q_scale: torch.Tensor
    """float32 `[B, H, Sq]`: q ~ q_int8 * q_scale."""
    k: torch.Tensor
    """int8 `[B, H, Skv, D]`: the smoothed keys."""
    k_scale: torch.Tensor
    """float32 `[B, H, Skv]`."""
    k_mean: torch.Tensor
    """float32 `[B, H, D]`: the mean subtracted from every key (zeros without smoothing)."""
    v: torch.Tensor
    """FP8 e4m3 `[B, H, Skv, D]` as a transposed view of a contiguous `[B, H, D, Skv]` tensor (int8-fp8), or v."""
    v_scale: torch.Tensor | None
    """float32 `[B, H, D]`: v ~ v_fp8 * v_scale (int8-fp8), else None."""
    lse_shift: torch.Tensor | None
    """float32 `[B, H, Sq]`: `scale * q . k_mean`, what smoothing took off each row's logits (when asked for)."""


def quantize_rows(x: torch.Tensor, mean: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """INT8 rows with one scale each: `(int8 like x, float32 scale x.shape[:-1])`, after subtracting `mean`
    (`[..., D]`, broadcast over rows). A row of zeros gets scale 1; a row holding inf/NaN gets scale NaN."""
    x = x.float()
    if mean is not None:
        x = x - mean.unsqueeze(-2)
    scale = x.abs().amax(-1) / INT8_MAX  # amax propagates NaN
    scale = torch.where(scale == 0, 1.0, scale)
    scale = torch.where(torch.isfinite(scale), scale, float("nan"))
    quantized = (x / scale.unsqueeze(-1)).round().clamp(-INT8_MAX, INT8_MAX).nan_to_num(0.0).to(torch.int8)
    return quantized, scale


def dequantize_rows(quantized: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float32 rows back from `quantize_rows`."""
    return quantized.float() * scale.unsqueeze(-1)


def value_scales(v: torch.Tensor) -> torch.Tensor:
    """float32 `[B, H, D]`: per-channel FP8 scales of V over its tokens (1 for an all-zero channel, NaN for a
    channel holding inf/NaN)."""
    scale = v.abs().amax(-2).float() / FP8_MAX  # exact in v's dtype: no float32 copy of v
    scale = torch.where(scale == 0, 1.0, scale)
    return torch.where(torch.isfinite(scale), scale, float("nan"))


def quantize_values(v: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """FP8 e4m3 values `v / scale` (rows `[B, H, N, D]`, channel scales `[B, H, D]`), laid out K-major: a
    `[B, H, N, D]` view of a contiguous `[B, H, D, N]` tensor."""
    scaled = (v.float() / scale.unsqueeze(-2)).clamp(-FP8_MAX, FP8_MAX).nan_to_num(0.0)
    return scaled.transpose(-1, -2).contiguous().to(torch.float8_e4m3fn).transpose(-1, -2)


def round_e4m3(x: torch.Tensor) -> torch.Tensor:
    """`x` rounded to the nearest FP8 e4m3 value (as float32)."""
    return x.to(torch.float8_e4m3fn).float()


def quantize_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, precision: str, *, smooth_k: bool = True,
    scale: float | None = None, rows: Callable = quantize_rows, values: Callable = quantize_values,
) -> QuantizedInputs:
    """Quantise q/k/v for `precision` ("int8" or "int8-fp8"), sync-free torch ops on their device.

    `scale` (the logit scale) asks for `lse_shift`, the log-sum-exp correction smoothing makes necessary.
    `smooth_k=False` skips the smoothing (k_mean is then zero): only there to measure what smoothing buys.
    `rows`/`values` quantise (`quantize_rows`/`quantize_values` or the fused Triton kernels that give the same
    values, `triton_quantize`).
    """
    if smooth_k:
        k_mean = torch.mean(k, dim=2, dtype=torch.float32)  # no float32 copy of k
    else:
        k_mean = k.new_zeros((*k.shape[:2], k.shape[3]), dtype=torch.float32)
    q8, q_scale = rows(q)
    k8, k_scale = rows(k, k_mean)
    if precision == "int8-fp8":
        v_scale = value_scales(v)
        v8 = values(v, v_scale)
    else:
        v_scale, v8 = None, v
    lse_shift = None
    if scale is not None:
        lse_shift = (q.float() @ k_mean.unsqueeze(-1)).squeeze(-1) * scale
    return QuantizedInputs(q8, q_scale, k8, k_scale, k_mean, v8, v_scale, lse_shift)
