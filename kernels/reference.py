"""The PyTorch reference: the definition of what every backend must compute.

Plain tensor code on any device and any float dtype (float32 math, float64 for float64 inputs). It processes a
chunk of query blocks at a time against all keys of the plan's levels, so memory stays bounded by
`_CHUNK_ELEMENTS` logits per chunk and never reaches tokens^2 for big inputs. Semantics (module docstring of
`diffattn.kernels.api`): pooled levels, token masks, `pv_threshold` skipping in row order and
`skip_threshold` marks against the running max in row order (or the row's final max). With an 8-bit `precision`
it attends over the quantised inputs exactly as the Triton kernel does (`diffattn.kernels.quantize`): integer Q.K
times the per-token scales, and under "int8-fp8" P rounded to FP8 e4m3 against the running max after each slot,
in the order the kernel walks the slots.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import torch

from diffattn.plan import BlockPlan

from .quantize import FP8_MAX, quantize_inputs, quantize_rows, quantize_values, round_e4m3

__all__ = ["block_stats_reference", "pool_reference", "reference_attention"]

LOG2E = 1.4426950408889634
_CHUNK_ELEMENTS = 1 << 25  # logits held at once per chunk of query blocks


def pool_reference(x: torch.Tensor, level: int, block_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of each group of `level` consecutive tokens and the number of valid tokens in it.

    Groups are aligned to multiples of `level` (so to every kv block start, `block_k` being a multiple of it);
    the sequence is padded to whole kv blocks, so there are `ceil(kv_len / block_k) * block_k / level` groups,
    trailing ones empty (count 0, value 0). Returns `(pooled [B, H, groups, D] in float32 or float64,
    counts int64 [groups])`.
    """
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    batch, heads, kv_len, dim = x.shape
    padded = math.ceil(kv_len / block_k) * block_k
    counts = (kv_len - torch.arange(0, padded, level, device=x.device)).clamp(0, level)
    x = torch.nn.functional.pad(x, (0, 0, 0, padded - kv_len))
    sums = x.reshape(batch, heads, padded // level, level, dim).sum(3)
    return sums / counts.clamp(min=1)[:, None].to(sums.dtype), counts


def block_stats_reference(
    x: torch.Tensor, mean: torch.Tensor | None, block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """SpargeAttn block statistics by definition: mean token and mean of the Gram matrix of normalised tokens.

    `x` `[B, H, N, D]`, optional `mean` `[B, H, D]` subtracted first (K smoothing). Returns float32
    `(pool [B, H, blocks, D], sim [B, H, blocks])`; the last block averages over its valid tokens only.
    """
    batch, heads, n_tokens, dim = x.shape
    blocks = math.ceil(n_tokens / block)
    x = x.float()
    if mean is not None:
        x = x - mean.float()[:, :, None, :]
    x = torch.nn.functional.pad(x, (0, 0, 0, blocks * block - n_tokens)).view(batch, heads, blocks, block, dim)
    valid = (torch.arange(blocks * block, device=x.device) < n_tokens).view(blocks, block)
    x = x * valid[..., None]
    count = valid.sum(-1).float()
    pool = x.sum(3) / count[:, None]
    unit = torch.nn.functional.normalize(x, dim=-1, eps=1e-12)
    sim = (unit @ unit.transpose(-1, -2)).sum((-1, -2)) / count**2
    return pool, sim


def _plan_keys(
    k: torch.Tensor, v: torch.Tensor, plan: BlockPlan, storage: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """All keys/values of every level side by side, each key's logit bias and its column in the slot map.

    Pooled keys/values are rounded to `storage` (the inputs' dtype), as every backend materialises them.
    """
    keys, values, biases, columns = [], [], [], []
    kv_len = k.shape[2]
    for i, lvl in enumerate(plan.levels):
        if lvl == 1:
            kl, vl = k, v
            counts = torch.ones(kv_len, device=k.device)
        else:
            kl, counts = pool_reference(k, lvl, plan.block_k)
            vl, _ = pool_reference(v, lvl, plan.block_k)
            kl, vl = kl.to(storage).to(k.dtype), vl.to(storage).to(v.dtype)
        token = torch.arange(kl.shape[2], device=k.device) * lvl
        keys.append(kl)
        values.append(vl)
        biases.append(torch.log(counts.to(k.dtype)))  # -inf for empty groups: never visible
        columns.append(i * plan.num_kv_blocks + token // plan.block_k)
    return torch.cat(keys, 2), torch.cat(values, 2), torch.cat(biases), torch.cat(columns)


def _slot_map(plan: BlockPlan) -> torch.Tensor:
    """int64 `[B|1, H|1, q_blocks, levels * kv_blocks]`: the slot listing (level, block) in each row, or -1."""
    levels = plan.slot_levels()
    level_index = torch.zeros_like(levels)
    for i, lvl in enumerate(plan.levels):
        level_index = torch.where(levels == lvl, i, level_index)
    dump = len(plan.levels) * plan.num_kv_blocks
    target = torch.where(levels > 0, level_index * plan.num_kv_blocks + plan.kv_indices, dump).long()
    slots = torch.arange(plan.width, device=plan.device).expand_as(target)
    out = torch.full((*target.shape[:3], dump + 1), -1, dtype=torch.long, device=plan.device)
    return out.scatter_(-1, target, slots)[..., :dump]


def _slot_walk(
    m_local: torch.Tensor, listed: torch.Tensor, row_ok: torch.Tensor, pv_threshold: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Walk slots in row order: which contribute, bool `[B, H, cq, width]`, and each row's running max before
    each slot, `[B, H, cq, bq, width]` (`-inf` before the first contribution).

    `m_local` `[B, H, cq, bq, width]` holds each row's max natural logit per slot; `listed` `[B, H, cq, width]`
    the slots within each row's count. Without `pv_threshold` every listed slot contributes; with it, slot 0
    always does and a later one when some valid row comes within the threshold of its running max, which only
    grows with slots that contribute.
    """
    empty = torch.full_like(m_local[..., :1], float("-inf"))
    if pv_threshold is None:
        return listed, torch.cat([empty, m_local[..., :-1].cummax(-1).values], -1)
    running = empty[..., 0]
    neg = -pv_threshold.to(m_local.dtype).view(1, -1, 1, 1)
    computed, before = [], []
    for j in range(m_local.shape[-1]):
        local = m_local[..., j]
        significant = (local > float("-inf")) & ((local - running) * LOG2E >= neg) & row_ok
        go = (significant.any(-1) | (j == 0)) & listed[..., j]
        before.append(running)
        running = torch.where(go[..., None], torch.maximum(running, local), running)
        computed.append(go)
    return torch.stack(computed, -1), torch.stack(before, -1)


def _marks(
    m_local: torch.Tensor, reference: torch.Tensor, listed: torch.Tensor, row_ok: torch.Tensor,
    skip_threshold: torch.Tensor, final: bool,
) -> torch.Tensor:
    """LiteAttention marks, bool `[B, H, cq, width]`: the listed slots where some valid row's max rises above
    `reference` (each slot's running max before it; the row's first slot is always marked) by more than
    `skip_threshold`, or with `final` comes within it of `reference` (the row's final max)."""
    thr = skip_threshold.to(m_local.dtype).view(1, -1, 1, 1, 1)
    margin = (m_local - reference) * LOG2E
    above = margin >= thr if final else margin > thr
    significant = ((m_local > float("-inf")) & above & row_ok[..., None]).any(3)
    if not final:
        significant[..., 0] = True
    return significant & listed


class _Operands(NamedTuple):
    """What the reference multiplies: q and every level's keys/values, each key's bias and slot-map column, and
    for 8-bit precisions the per-token Q and K scales (q and keys then hold integers), V already dequantised."""

    q: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    bias: torch.Tensor
    columns: torch.Tensor
    q_scale: torch.Tensor | None = None
    k_scale: torch.Tensor | None = None
    lse_shift: torch.Tensor | None = None


def _operands(q, k, v, plan: BlockPlan, scale: float, precision: str, smooth_k: bool) -> _Operands:
    """The reference's operands for `precision`: plain (float32/float64), or quantised as the Triton launcher
    quantises them (pooled keys/values are pooled from the 16-bit inputs first, then smoothed and quantised)."""
    if precision == "bf16":
        dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        return _Operands(q.to(dtype), *_plan_keys(k.to(dtype), v.to(dtype), plan, k.dtype))
    quant = quantize_inputs(q, k, v, precision, smooth_k=smooth_k, scale=scale)
    keys, values, bias, columns = _plan_keys(k.float(), v.float(), plan, k.dtype)
    keys, k_scale = quantize_rows(keys, quant.k_mean)
    if quant.v_scale is not None:
        values = quantize_values(values, quant.v_scale).float() * quant.v_scale.unsqueeze(-2)
    return _Operands(quant.q.float(), keys.float(), values, bias, columns, quant.q_scale, k_scale, quant.lse_shift)


def _kernel_order(plan: BlockPlan, pv_threshold, skip_threshold) -> BlockPlan:
    """The plan with its rows in the order the Triton kernel walks them (whole blocks first under a token mask
    when the order is free: see `plan_tensors`); the order shapes FP8 rounding of P, never the exact result."""
    if plan.token_mask is None or pv_threshold is not None or skip_threshold is not None:
        return plan
    from .checks import plan_tensors  # checks imports the plan module only; no cycle at call time

    return dataclasses.replace(plan, kv_indices=plan_tensors(plan, split_full=True).kv_indices)


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: BlockPlan,
    scale: float,
    pv_threshold: torch.Tensor | None = None,
    skip_threshold: torch.Tensor | None = None,
    mark_final: bool = False,
    precision: str = "bf16",
    smooth_k: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Block-sparse attention by definition. Thresholds are float tensors `[H]` in log2 units.

    `precision` is one of `diffattn.kernels.quantize.PRECISIONS`; `smooth_k=False` quantises K without smoothing
    (only to measure what smoothing buys; the kernel always smooths).

    Returns `(out, lse, kept)`: `out` like `q`; `lse` float32 `[B, H, Sq]`, natural log, `-inf` for a row that
    sees no key; `kept` bool `[B, H, q_blocks, width]` slot marks when `skip_threshold` is given (against the
    running max, or each row's final max with `mark_final`), else None.
    """
    batch, heads, q_len, _ = q.shape
    fp8_p = precision == "int8-fp8"
    if fp8_p:
        plan = _kernel_order(plan, pv_threshold, skip_threshold)
    bq, width = plan.block_q, plan.width
    ops = _operands(q, k, v, plan, scale, precision, smooth_k)
    keys, values, bias, columns = ops.keys, ops.values, ops.bias, ops.columns
    slot_map = _slot_map(plan)
    counts = plan.block_counts().long()
    pad = plan.num_q_blocks * bq - q_len
    q_pad = torch.nn.functional.pad(ops.q, (0, 0, 0, pad))
    q_scale = torch.nn.functional.pad(ops.q_scale, (0, pad)) if ops.q_scale is not None else None
    token_visible = plan.token_mask.mask_mod if plan.token_mask is not None else None
    need_local = pv_threshold is not None or skip_threshold is not None or fp8_p
    chunk = max(1, _CHUNK_ELEMENTS // max(1, batch * heads * bq * keys.shape[2] * (3 if need_local else 1)))
    outs, lses, marks = [], [], []
    for qb0 in range(0, plan.num_q_blocks, chunk):
        qb1 = min(plan.num_q_blocks, qb0 + chunk)
        cq = qb1 - qb0
        rows = torch.arange(qb0 * bq, qb1 * bq, device=q.device).view(cq, bq)
        row_ok = rows < q_len
        logits = q_pad[:, :, qb0 * bq : qb1 * bq] @ keys.transpose(-1, -2)
        if q_scale is not None:  # integer products, then the per-token scales (the kernel's order)
            logits = logits * q_scale[:, :, qb0 * bq : qb1 * bq, None] * ops.k_scale[:, :, None, :]
        logits = (logits * scale + bias).view(batch, heads, cq, bq, -1)
        slot = slot_map[:, :, qb0:qb1, None, :][..., columns]  # [B|1, H|1, cq, 1, keys]
        visible = slot >= 0
        if token_visible is not None:
            zero = rows.new_zeros(())
            visible = visible & token_visible(zero, zero, rows[..., None], torch.arange(k.shape[2], device=q.device))
        logits = logits.masked_fill(~visible, float("-inf"))
        slot_index = torch.where(visible, slot, width).expand(logits.shape)
        listed = torch.arange(width, device=q.device) < counts[:, :, qb0:qb1, None]
        if need_local:
            m_local = logits.new_full((*logits.shape[:-1], width + 1), float("-inf"))
            m_local = m_local.scatter_reduce(-1, slot_index, logits, "amax")[..., :width]
            computed, running = _slot_walk(m_local, listed, row_ok, pv_threshold)
        if pv_threshold is not None:
            computed = torch.cat([computed, computed.new_zeros((*computed.shape[:-1], 1))], -1)
            computed = torch.gather(computed[:, :, :, None].expand(*logits.shape[:-1], width + 1), -1, slot_index)
            logits = logits.masked_fill(~computed, float("-inf"))
        row_max = logits.amax(-1, keepdim=True)
        empty = row_max == float("-inf")
        p = torch.exp(logits - row_max.masked_fill(empty, 0.0))
        total = p.sum(-1, keepdim=True)
        weights = _fp8_weights(logits, m_local, running, slot_index, row_max) if fp8_p else p
        out = (weights.view(batch, heads, cq * bq, -1) @ values).view(batch, heads, cq, bq, -1)
        outs.append(out / total.masked_fill(total == 0, 1.0))
        lses.append(torch.where(empty, float("-inf"), row_max + torch.log(total)).squeeze(-1))
        if skip_threshold is not None:
            reference = row_max if mark_final else running
            marks.append(_marks(m_local, reference, listed, row_ok, skip_threshold, mark_final))
    out = torch.cat(outs, 2).reshape(batch, heads, -1, q.shape[-1])[:, :, :q_len]
    lse = torch.cat(lses, 2).reshape(batch, heads, -1)[:, :, :q_len]
    if ops.lse_shift is not None:
        lse = lse + ops.lse_shift
    kept = torch.cat(marks, 2) if skip_threshold is not None else None
    return out.to(q.dtype), lse.float(), kept


def _fp8_weights(logits, m_local, running, slot_index, row_max) -> torch.Tensor:
    """P as the int8-fp8 kernel multiplies it with V: each key's `exp(logit - m)` against the running max `m` after
    its slot, times 448 and rounded to FP8 e4m3, then rescaled to the row's final max (the row sum stays unrounded)."""
    m_after = torch.maximum(running, m_local)
    m_after = torch.cat([m_after, m_after.new_zeros((*m_after.shape[:-1], 1))], -1)
    m_key = torch.gather(m_after, -1, slot_index)
    seen = logits > float("-inf")
    p_tile = torch.where(seen, torch.exp(logits - torch.where(seen, m_key, 0.0)), 0.0)
    rescale = torch.where(seen, torch.exp(torch.where(seen, m_key - row_max, 0.0)), 0.0)
    return round_e4m3(p_tile * FP8_MAX) / FP8_MAX * rescale
