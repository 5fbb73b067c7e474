"""`block_sparse_attention`, `pool_kv` and backend dispatch: the public face of the kernel family.

Semantics (every backend computes exactly this; `reference.py` is the definition):

- For each (batch, head, query block) the plan lists kv blocks. Level-1 blocks contribute their keys; a level-l
  block contributes the means of its keys/values over consecutive groups of l tokens (groups aligned to the
  block start, means over valid tokens), each with `+ln(n_valid)` added to its logit. `plan.token_mask` hides
  individual keys inside listed blocks. Logits are `scale * q.k` (natural units).
- `pv_threshold` (log2 units, SpargeAttn stage 2): slots are processed in row order (level-1 ids, then level 2,
  ...). A slot is skipped (no exp, no P.V) when no valid row has a visible key with
  `(m_local - m_running) * log2(e) >= -pv_threshold`, where `m_running` is the row's max over the slots that
  contributed before it. The first slot always contributes. `+inf` skips only slots that hide every key from
  every row (same output as None); `-inf` lets only the first slot of each row contribute (with a token mask,
  also slots that give a row its first visible key, since `m_running` is `-inf` there).
- `skip_threshold` (log2 units, LiteAttention): the output is unchanged; `kept_plan` lists the slots still
  significant under `mark_criterion`:
  - `"running"` (the default; LiteAttention's own test, computed within the attention walk): slots are walked in
    row order, as for `pv_threshold`. A slot is significant when some valid row has
    `(m_local - m_running) * log2(e) > skip_threshold`, `m_running` being the row's max over the slots that
    contributed before it (`-inf` before any: a slot giving a row its first visible key is significant); the
    row's first slot always is. So marks follow the plan's slot order (the Triton kernel then keeps that order:
    no whole-blocks-first reordering under a token mask). `-inf` keeps every slot that shows some valid row a
    key, `+inf` only each row's first slot.
  - `"final"`: a slot is significant when some valid row has
    `(m_local - m_final) * log2(e) >= skip_threshold - MARK_SLACK`, `m_final` being the row's max over the
    contributing slots: independent of traversal order, at the price of a second Q.K pass in the Triton kernel.
    `-inf` keeps every slot that shows some valid row a key, `0` the slots holding some row's max (and those
    within the slack of it). The slack (2^-10) absorbs the rounding between the Triton kernel's two Q.K passes,
    which may sum a tile's products in another order: without it, a threshold of 0 could drop the very slot that
    holds a row's max. A row left with no kept slot keeps its first slot (only possible for degenerate rows or
    thresholds > 0).
- A query row that sees no key at all (token mask) gets output 0 and lse `-inf`.
- `precision` (`quantize.py` defines it): `"bf16"` computes in the inputs' dtype; `"int8"` quantises Q and K (K
  smoothed by its per-head token mean) to INT8 with per-token scales; `"int8-fp8"` also computes P.V in FP8 e4m3
  (V scaled per channel, P against the running max). Everything above holds for the dequantised logits; the lse
  is that of the unsmoothed logits. The reference rounds P against the running max after each slot, the Triton
  kernel after each tile (the same when a tile is a whole block): they agree to rounding, not bitwise.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from diffattn.plan import BlockPlan, PackedBox

from . import backends
from .checks import (
    MARK_CRITERIA,
    AttentionInputError,
    check_plan,
    check_qkv,
    plan_tensors,
    resolve_mark_criterion,
    resolve_precision,
    resolve_scale,
    resolve_threshold,
)
from .quantize import quantize_inputs
from .reference import pool_reference, reference_attention

__all__ = ["MARK_CRITERIA", "MARK_SLACK", "PooledKV", "SparseAttentionOutput", "available_backends", "block_sparse_attention", "pool_kv"]

available_backends = backends.available_backends
MARK_SLACK = 2.0**-10
"""log2 units below `skip_threshold` that still count as significant under the "final" mark criterion (see the
module docstring)."""


class SparseAttentionOutput(NamedTuple):
    """What `block_sparse_attention` returns when `return_lse` or `skip_threshold` is set."""

    out: torch.Tensor
    lse: torch.Tensor | None
    """float32 `[B, H, Sq]`, natural log of the sum of exp(logits); None unless `return_lse`."""
    kept_plan: BlockPlan | None
    """Slots still significant under `skip_threshold` (same format and geometry as the plan); else None."""


class PooledKV(NamedTuple):
    """Pooled K/V pyramid: `k`/`v` `[B, H, rows, D]`, level `l`'s groups starting at row `starts[l]`."""

    k: torch.Tensor
    v: torch.Tensor
    starts: dict[int, int]


# ------------------------------------------------------------------------------------------ triton call
def _pooled_for(k: torch.Tensor, v: torch.Tensor, plan: BlockPlan) -> tuple[torch.Tensor | None, torch.Tensor | None, list[int]]:
    """Pooled K/V for the plan's levels > 1 via the Triton pooling op (None when the plan is level-1 only)."""
    pooled_levels = [lvl for lvl in plan.levels if lvl > 1]
    if not pooled_levels:
        return None, None, [0, 0, 0]
    _, ts = backends.triton_modules()
    kp, vp = ts.pool_kv_op(k, v, pooled_levels, plan.block_k)
    _, starts = ts.pooled_layout(k.shape[2], plan.block_k, tuple(pooled_levels))
    return kp, vp, list(starts)


def _quantized(q, k, v, kp, vp, scale, precision, return_lse):
    """The 8-bit kernel's operands (`quantize.py`): int8 q/k (and pooled k) with per-token scales, under "int8-fp8"
    FP8 v (and pooled v) laid out K-major with per-channel scales; plus the lse correction when asked for."""
    fused = backends.triton_quantize()
    quant = quantize_inputs(q, k, v, precision, scale=scale if return_lse else None, rows=fused.quantize_rows,
                            values=fused.quantize_values)
    kp_scale = None
    if kp is not None:
        kp, kp_scale = fused.quantize_rows(kp, quant.k_mean)
        if quant.v_scale is not None:
            vp = fused.quantize_values(vp, quant.v_scale)
    scales = tuple(s.contiguous() if s is not None else None
                   for s in (quant.q_scale, quant.k_scale, kp_scale, quant.v_scale))
    return (quant.q, quant.k, quant.v, kp, vp), scales, quant.lse_shift


def _run_triton(q, k, v, plan, scale, pv, skip, mark_final, return_lse, precision):
    t = plan_tensors(plan, split_full=pv is None and skip is None)  # slot order matters to both
    box = t.box if t.box is not None else PackedBox(None, None, None, 0)
    kp, vp, starts = _pooled_for(k, v, plan)
    scales, lse_shift, out_dtype = (None, None, None, None), None, q.dtype
    if precision != "bf16":
        (q, k, v, kp, vp), scales, lse_shift = _quantized(q, k, v, kp, vp, scale, precision, return_lse)
    _ta = backends.triton_modules()[0]
    out, lse, kept = _ta.block_sparse_attention_op(
        q, k, v, t.kv_indices, t.kv_offsets, kp, vp, starts, list(plan.levels), *box, t.partial, t.full_counts,
        pv, skip, mark_final, scale, plan.block_q, plan.block_k, return_lse, *scales, precision, out_dtype)
    if lse_shift is not None:
        lse = lse + lse_shift
    return out, (lse if return_lse else None), (kept.bool() if skip is not None else None)


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: BlockPlan,
    *,
    scale: float | None = None,
    pv_threshold: float | torch.Tensor | None = None,
    skip_threshold: float | torch.Tensor | None = None,
    mark_criterion: str = "running",
    return_lse: bool = False,
    precision: str = "bf16",
    backend: str = "auto",
) -> torch.Tensor | SparseAttentionOutput:
    """Attention of q over the kv blocks the plan lists (see the module docstring for exact semantics).

    Args:
        q (`torch.Tensor`): `[batch, heads, q_len, head_dim]`.
        k, v (`torch.Tensor`): `[batch, heads, kv_len, head_dim]`, same dtype and device as q.
        plan (`BlockPlan`): on q's device; batch/heads 1 or equal to q's; no empty row. The Triton backend takes
            `block_q` and `block_k` in (64, 128) (other sizes: PlanError by name, a fallback under "auto").
        scale (`float`, *optional*): logit scale, default `1/sqrt(head_dim)`.
        pv_threshold (`float` or `torch.Tensor [heads]`, *optional*): SpargeAttn P.V skip threshold, log2 units.
        skip_threshold (`float` or `torch.Tensor [heads]`, *optional*): LiteAttention mark threshold, log2 units.
        mark_criterion (`str`): what `skip_threshold` compares with: `"running"` (the running max before each
            slot, within the attention pass) or `"final"` (each row's final max; a second Q.K pass in Triton).
        return_lse (`bool`): also return the natural-log log-sum-exp `[B, H, q_len]` (float32).
        precision (`str`): `"bf16"` (the inputs' dtype), `"int8"` (INT8 Q.K, K smoothed, one scale per token) or
            `"int8-fp8"` (also FP8 P.V, V scaled per channel); 8 bits take float16/bfloat16/float32 inputs
            (float32: reference backend only), and the Triton backend needs compute capability 8.9+ for FP8 (else
            "auto" falls back to the reference, with a warning).
        backend (`str`): "auto" (Triton on CUDA when the call qualifies, else flex on CUDA without thresholds,
            else reference), or "triton", "flex", "reference".

    Returns:
        The output (like q) when neither `return_lse` nor `skip_threshold` is set, else a `SparseAttentionOutput`.
    """
    check_qkv(q, k, v)
    check_plan(plan, q, k)
    scale = resolve_scale(scale, q.shape[3])
    pv = resolve_threshold(pv_threshold, q, "pv_threshold")
    skip = resolve_threshold(skip_threshold, q, "skip_threshold")
    mark_final = resolve_mark_criterion(mark_criterion) == "final"
    if skip is not None and mark_final:
        skip = skip - MARK_SLACK  # every backend compares against the same slackened threshold
    precision = resolve_precision(precision, q)
    name = backends.select(backend, backends.Request("attention", q, plan, pv is not None or skip is not None,
                                                     precision=precision))
    if name == "triton":
        out, lse, kept = _run_triton(q, k, v, plan, scale, pv, skip, mark_final, return_lse, precision)
    elif name == "flex":
        from .flex import flex_attention_backend

        out, lse = flex_attention_backend(q, k, v, plan, scale)
        kept = None
    else:
        out, lse, kept = reference_attention(q, k, v, plan, scale, pv, skip, mark_final, precision)
    if not return_lse and skip is None:
        return out
    kept_plan = plan.keep_slots(kept) if skip is not None else None
    return SparseAttentionOutput(out, lse if return_lse else None, kept_plan)


# ---------------------------------------------------------------------------------------------- pooling
def pool_kv(
    k: torch.Tensor, v: torch.Tensor, levels: tuple[int, ...] = (2, 4, 8), block_k: int = 128, *, backend: str = "auto"
) -> PooledKV:
    """PSA's pooled K/V pyramid for levels in (2, 4, 8), one pass over K and V (Triton) or plain torch.

    Level `l` holds `ceil(kv_len / block_k) * block_k / l` rows: the mean of each group of `l` tokens, groups
    aligned to kv-block starts, the mean over the group's valid tokens (0 for groups past `kv_len`).
    `block_sparse_attention` pools internally for pooled plans; this is exposed for inspection and timing.
    """
    check_qkv(k, k, v)
    levels = tuple(sorted(set(levels)))
    if not levels or not set(levels) <= {2, 4, 8} or block_k % max(levels):
        raise AttentionInputError(f"levels must be drawn from (2, 4, 8) and divide block_k={block_k}; got {levels}")
    if backends.select(backend, backends.Request("pooling", k)) == "triton":
        _, ts = backends.triton_modules()
        kp, vp = ts.pool_kv_op(k, v, list(levels), block_k)
        _, all_starts = ts.pooled_layout(k.shape[2], block_k, levels)
        starts = dict(zip((2, 4, 8), all_starts))
        return PooledKV(kp, vp, {lvl: starts[lvl] for lvl in levels})
    keys, values, starts, row = [], [], {}, 0
    for lvl in levels:
        kl, _ = pool_reference(k, lvl, block_k)
        vl, _ = pool_reference(v, lvl, block_k)
        keys.append(kl.to(k.dtype))
        values.append(vl.to(v.dtype))
        starts[lvl] = row
        row += kl.shape[2]
    return PooledKV(torch.cat(keys, 2), torch.cat(values, 2), starts)
