"""The FlexAttention backend: torch's `flex_attention` driven by a `BlockMask` built from the plan.

- Level-1 plans: the plan's kv lists become the BlockMask's kv lists. Without a token mask every listed block is
  a *full* block (no `mask_mod` call) except a partial last kv block; with one, every listed block is partial
  and `mask_mod` evaluates the `BoxMask`.
- Pooled plans: the pooled K/V of levels 2/4/8 are appended to the keys (each level padded to whole blocks),
  a `mask_mod` admits a pooled key when its source block is listed at that level in the query's row, and a
  `score_mod` adds `log(n_valid)`. Exact, just not fast.
- `pv_threshold` / `skip_threshold` are not expressible in FlexAttention; `api` routes such calls elsewhere.

On CUDA the call goes through a module-level `torch.compile(flex_attention)` (the fused kernel); on a CPU the
eager implementation runs (it materialises the scores, fine for tests).
"""

from __future__ import annotations

import math
import warnings
import weakref

import torch
from torch.nn.attention import flex_attention as fa

from diffattn.plan import BlockPlan

from .reference import pool_reference

__all__ = ["flex_attention_backend", "flex_attention_call", "flex_block_mask"]

_MASKS: weakref.WeakKeyDictionary[BlockPlan, dict] = weakref.WeakKeyDictionary()
_COMPILED = None


def _lists_from_mask(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(num_blocks int32 [..., rows], indices int32 [..., rows, cols])` of a bool block mask, without a sync."""
    order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return mask.sum(-1, dtype=torch.int32), order


def _level1_mask(plan: BlockPlan, q_len: int, kv_len: int) -> fa.BlockMask:
    """Listed blocks as full blocks, except partial ones (last kv block if ragged, all with a token mask).

    `mask_mod` itself also says which blocks are listed: eager flex_attention (CPU) applies only `mask_mod`,
    while the compiled kernel skips unlisted blocks and calls it only on partial ones.
    """
    listed = plan.to_block_mask()
    pb, ph = listed.shape[:2]
    bq, bk = plan.block_q, plan.block_k
    token = plan.token_mask

    def mask_mod(b, h, q_idx, kv_idx):
        row = (q_idx // bq).clamp(max=listed.shape[2] - 1)
        col = (kv_idx // bk).clamp(max=listed.shape[3] - 1)
        visible = listed[b * (pb > 1), h * (ph > 1), row, col] & (kv_idx < kv_len)
        return visible & token.mask_mod(b, h, q_idx, kv_idx) if token is not None else visible

    if token is not None:
        partial = listed
    elif kv_len % bk:
        partial = listed & (torch.arange(plan.num_kv_blocks, device=plan.device) == plan.num_kv_blocks - 1)
    else:
        partial = torch.zeros_like(listed)
    num, idx = _lists_from_mask(partial)
    full_num, full_idx = _lists_from_mask(listed & ~partial)
    return fa.BlockMask.from_kv_blocks(num, idx, full_num, full_idx, BLOCK_SIZE=(bq, bk), mask_mod=mask_mod,
                                       seq_lengths=(q_len, kv_len))


def _pooled_segments(plan: BlockPlan) -> list[tuple[int, int, int]]:
    """`(level, first key row, rows)` of each level's segment in the concatenated keys; rows are whole blocks."""
    segments, start = [], 0
    for lvl in plan.levels:
        rows = math.ceil(plan.num_kv_blocks * plan.block_k / lvl / plan.block_k) * plan.block_k
        segments.append((lvl, start, rows))
        start += rows
    return segments


def _pooled_mask(plan: BlockPlan, q_len: int, kv_len: int) -> tuple[fa.BlockMask, list, object]:
    level_map = plan.to_level_map()
    bk, nkb = plan.block_k, plan.num_kv_blocks
    segments = _pooled_segments(plan)
    seg_blocks = []
    for lvl, _, rows in segments:
        at_level = level_map == lvl
        pad = rows // bk * lvl - nkb
        at_level = torch.nn.functional.pad(at_level, (0, pad))
        seg_blocks.append(at_level.view(*at_level.shape[:3], rows // bk, lvl).any(-1))
    num, idx = _lists_from_mask(torch.cat(seg_blocks, -1))
    device = plan.device
    starts = torch.tensor([s for _, s, _ in segments], device=device)
    levels = torch.tensor([lvl for lvl, _, _ in segments], device=device)
    pb, ph = level_map.shape[:2]
    bq, nqb = plan.block_q, plan.num_q_blocks  # no closure over the plan: the mask is cached weakly by it

    def locate(kv_idx):
        seg = (kv_idx[..., None] >= starts).sum(-1) - 1
        lvl = levels[seg]
        token = (kv_idx - starts[seg]) * lvl
        return lvl, token

    def mask_mod(b, h, q_idx, kv_idx):
        lvl, token = locate(kv_idx)
        blk = (token // bk).clamp(max=nkb - 1)
        row = (q_idx // bq).clamp(max=nqb - 1)
        listed = level_map[b * (pb > 1), h * (ph > 1), row, blk] == lvl
        return listed & (token < kv_len)

    def score_mod(score, b, h, q_idx, kv_idx):
        lvl, token = locate(kv_idx)
        return score + torch.log((kv_len - token).clamp(1, None).minimum(lvl).to(score.dtype))

    total = sum(rows for _, _, rows in segments)
    block_mask = fa.BlockMask.from_kv_blocks(num, idx, BLOCK_SIZE=(bq, bk), mask_mod=mask_mod,
                                             seq_lengths=(q_len, total))
    return block_mask, segments, score_mod


def flex_block_mask(plan: BlockPlan, q_len: int, kv_len: int) -> tuple[fa.BlockMask, list | None, object]:
    """`(BlockMask, pooled segments or None, score_mod or None)` for the plan, cached per plan and lengths."""
    per_plan = _MASKS.setdefault(plan, {}) if not torch.compiler.is_compiling() else {}
    key = (q_len, kv_len)
    if key not in per_plan:
        per_plan[key] = _pooled_mask(plan, q_len, kv_len) if plan.is_pooled else (_level1_mask(plan, q_len, kv_len), None, None)
    return per_plan[key]


def _pooled_keys(k: torch.Tensor, v: torch.Tensor, plan: BlockPlan, segments: list) -> tuple[torch.Tensor, torch.Tensor]:
    keys, values = [], []
    for lvl, _, rows in segments:
        if lvl == 1:
            kl, vl = k, v
        else:
            kl, _ = pool_reference(k, lvl, plan.block_k)
            vl, _ = pool_reference(v, lvl, plan.block_k)
        pad = (0, 0, 0, rows - kl.shape[2])
        keys.append(torch.nn.functional.pad(kl.to(k.dtype), pad))
        values.append(torch.nn.functional.pad(vl.to(v.dtype), pad))
    return torch.cat(keys, 2), torch.cat(values, 2)


def _flex():
    """Compiled flex_attention on CUDA (once per process), eager elsewhere and inside an outer compile."""
    global _COMPILED
    if torch.compiler.is_compiling():
        return fa.flex_attention
    if _COMPILED is None:
        _COMPILED = torch.compile(fa.flex_attention, dynamic=False)
    return _COMPILED


def _tile_options(block_mask: fa.BlockMask) -> dict[str, int]:
    """Kernel tiles that divide the mask's blocks. The compiled kernel's default tiles (up to 128) must divide the
    BlockMask's block sizes, so blocks that are not multiples of 128 (a 64-block plan) would leave inductor no valid
    kernel to choose (`NoValidChoicesError`)."""
    q_block, kv_block = block_mask.BLOCK_SIZE
    if q_block % 128 == 0 and kv_block % 128 == 0:
        return {}
    return {"BLOCK_M": math.gcd(q_block, 64), "BLOCK_N": math.gcd(kv_block, 64)}


def flex_attention_call(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: fa.BlockMask, scale: float, score_mod=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(out, lse)` from flex_attention with a prebuilt BlockMask (lse natural log, float32)."""
    kwargs = {"kernel_options": _tile_options(block_mask)} if q.is_cuda else {}
    fn = _flex() if q.is_cuda else fa.flex_attention
    if hasattr(fa, "AuxRequest"):
        kwargs["return_aux"] = fa.AuxRequest(lse=True)
    else:  # torch < 2.9
        kwargs["return_lse"] = True
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        out, aux = fn(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale, **kwargs)
    lse = aux.lse if hasattr(aux, "lse") else aux
    return out, lse.float()


def flex_attention_backend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: BlockPlan, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-sparse attention through FlexAttention: `(out like q, lse float32 [B, H, Sq])`."""
    block_mask, segments, score_mod = flex_block_mask(plan, q.shape[2], k.shape[2])
    if segments is not None:
        k, v = _pooled_keys(k, v, plan, segments)
    return flex_attention_call(q, k, v, block_mask, scale, score_mod)
