"""Kernel benchmark: the Triton block-sparse kernel against dense and sparse baselines, in one run.

1. Correctness on the device: Triton vs the PyTorch reference (fp32 math on the same bf16 inputs) and vs SDPA,
   relative Frobenius error, on a dense plan, random plans with every pooling level, cross-attention with 64/128
   blocks, a token-mask window, and pv_threshold / skip_threshold; poisoned outputs; sparge_plan Triton vs
   reference, and without host synchronisation.
2. Speed (bf16, head_dim 128, batch 1; the project's target shapes: 32,760 tokens x 12 heads, 75,600 x 40): cuDNN SDPA,
   flash SDPA, xformers (when it imports and runs), our kernel with a dense plan, random plans keeping
   50/25/10% of the kv blocks of every row and a Radial-like static plan, compiled FlexAttention on the same
   plans (BlockMask built outside the timing), and plan building: sparge_plan and PSA's pool_kv.
   Times are `triton.testing.do_bench` medians after warm-up on random inputs.

    pip install --no-deps --no-build-isolation -e . && python benchmarks/kernel_speed.py   # one H200, ~5 minutes
    TRITON_INTERPRET=1 python benchmarks/kernel_speed.py --tiny                             # CPU check of the script
    python benchmarks/kernel_speed.py --plans-only     # just cuDNN dense + sparge_plan / pool_kv timings (~1 minute)

Writes `kernels.json` under `$OUT` when set, else `benchmarks/results/kernels.json` (`kernels_tiny.json` with
`--tiny`), and prints a Markdown table last.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from diffattn.environment import environment
from diffattn.kernels import (
    block_sparse_attention,
    pool_kv,
    sparge_plan,
    triton_attention,
)
from diffattn.kernels.flex import flex_attention_call
from diffattn.plan import BlockPlan, BoxMask

SHAPES = {"wan1.3b-480p": (32760, 12, 21), "wan14b-720p": (75600, 40, 21)}  # tokens, heads, latent frames
TINY_SHAPES = {"tiny": (300, 2, 3)}
KEEPS = (0.5, 0.25, 0.1)
HEAD_DIM = 128
BLOCK = 128


# ------------------------------------------------------------------------------------------------ helpers
def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm())


def bench(fn: Callable[[], Any], device: torch.device, expected_ms: float) -> float:
    """Median milliseconds of `fn` after warm-up (do_bench on CUDA; a short wall-clock loop on a CPU)."""
    if device.type != "cuda":
        fn()
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    import triton

    warmup = max(25.0, 0.5 * expected_ms)
    rep = max(100.0, 4.0 * expected_ms)
    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def random_plan(heads: int, tokens: int, keep: float, device: torch.device) -> BlockPlan:
    """Every row keeps exactly `max(1, round(keep * kv_blocks))` random kv blocks, per head."""
    blocks = math.ceil(tokens / BLOCK)
    count = max(1, round(keep * blocks))
    chosen = torch.rand(1, heads, blocks, blocks, device=device).topk(count, -1).indices
    mask = torch.zeros(1, heads, blocks, blocks, dtype=torch.bool, device=device).scatter_(-1, chosen, True)
    return BlockPlan.sync_free(mask, BLOCK, BLOCK)


def psa_plan(heads: int, tokens: int, device: torch.device) -> BlockPlan:
    """PSA-like pooled plan (its `topk` preset): per row 10% of kv blocks at level 1, 5% at 2, 20% at 8, rest skipped."""
    blocks = math.ceil(tokens / BLOCK)
    rank = torch.rand(1, heads, blocks, blocks, device=device).argsort(-1).argsort(-1).float() / blocks
    level_map = torch.zeros_like(rank, dtype=torch.int32)
    for lvl, (lo, hi) in ((1, (0.0, 0.10)), (2, (0.10, 0.15)), (8, (0.15, 0.35))):
        level_map = torch.where((rank >= lo) & (rank < hi), lvl, level_map)
    level_map[..., 0] = torch.where(level_map[..., 0] == 0, 1, level_map[..., 0])
    return BlockPlan.from_level_map(level_map, BLOCK, BLOCK)


def radial_plan(tokens: int, frames: int, device: torch.device) -> BlockPlan:
    """Radial-like static O(n log n) plan: full attention to the same and adjacent frames; beyond, the spatial
    window (a whole frame) halves each time the frame distance doubles. Shared by all heads."""
    blocks = math.ceil(tokens / BLOCK)
    per_frame = tokens / frames
    centre = torch.arange(blocks, device=device) * BLOCK + BLOCK / 2
    frame = torch.div(centre, per_frame, rounding_mode="floor")
    spot = centre - frame * per_frame
    distance = (frame[:, None] - frame[None, :]).abs()
    window = per_frame / torch.exp2(torch.floor(torch.log2(distance.clamp(min=1))))
    window = torch.where(distance <= 1, per_frame, window)
    mask = (spot[:, None] - spot[None, :]).abs() <= window / 2 + BLOCK
    return BlockPlan.sync_free(mask[None, None], BLOCK, BLOCK)


def flex_mask_for(plan: BlockPlan, tokens: int, heads: int, bound: Callable) -> Any:
    """FlexAttention BlockMask of a level-1 plan: listed blocks full, the ragged last kv block partial.

    One `bound` mask_mod per shape, so compiled flex_attention compiles once per shape, not once per plan.
    """
    from torch.nn.attention.flex_attention import BlockMask

    listed = plan.to_block_mask().expand(1, heads, -1, -1)  # one BlockMask shape for all plans of a shape
    last = torch.arange(plan.num_kv_blocks, device=listed.device) == plan.num_kv_blocks - 1
    partial = listed & last if tokens % BLOCK else torch.zeros_like(listed)

    def lists(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return mask.sum(-1, dtype=torch.int32), order

    num, idx = lists(partial)
    full_num, full_idx = lists(listed & ~partial)
    return BlockMask.from_kv_blocks(num, idx, full_num, full_idx, BLOCK_SIZE=(BLOCK, BLOCK), mask_mod=bound,
                                    seq_lengths=(tokens, tokens))


def qkv(batch: int, heads: int, q_len: int, kv_len: int, dim: int, device: torch.device):
    return [torch.randn(batch, heads, n, dim, device=device, dtype=torch.bfloat16) for n in (q_len, kv_len, kv_len)]


def guarded(record: dict[str, Any], key: str, fn: Callable[[], Any]) -> Any:
    """Run `fn`, storing its result under `key`, or the error's one-line description (the run goes on)."""
    try:
        record[key] = fn()
    except Exception as exc:  # noqa: BLE001 - a failed measurement is recorded, not fatal
        record[key] = f"unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        print(f"  {key}: {record[key]}", flush=True)
        if os.environ.get("KERNELS_BENCH_TRACE"):
            traceback.print_exc()
    return record[key]


# ---------------------------------------------------------------------------------------------- correctness
def _poisoned_alloc(q: torch.Tensor, return_lse: bool, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    shape = q.shape[:3] if return_lse else (1,)
    return torch.full_like(q, float("nan"), dtype=dtype), q.new_full(shape, float("nan"), dtype=torch.float32)


def _random_level_plan(heads, q_len, kv_len, bq, bk, levels, keep, device) -> BlockPlan:
    qb, kb = math.ceil(q_len / bq), math.ceil(kv_len / bk)
    choice = torch.tensor(levels, device=device)[torch.randint(len(levels), (1, heads, qb, kb), device=device)]
    level_map = torch.where(torch.rand(1, heads, qb, kb, device=device) < keep, choice, 0)
    level_map[..., 0] = torch.where(level_map[..., 0] == 0, choice[..., 0], level_map[..., 0])
    return BlockPlan.from_level_map(level_map, bq, bk)


def correctness(device: torch.device, tiny: bool, attention: bool = True) -> list[dict[str, Any]]:
    """Triton vs reference / SDPA on the device; one dict per check; a check that raises is recorded, not fatal."""
    checks: list[dict[str, Any]] = []
    parts = (_check_dense, _check_random_plans, _check_window, _check_thresholds) if attention else ()
    for part in (*parts, _check_pool, _check_sparge):
        try:
            part(device, 16 if tiny else 1, checks)
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            checks.append({"check": part.__name__, "error": f"{type(exc).__name__}: {exc}"[:500], "ok": False})
    if triton_attention._TMA_FAILURE:
        checks.append({"check": "TMA descriptors", "error": triton_attention._TMA_FAILURE[0][:500], "ok": False})
    return checks


def _record(checks: list[dict[str, Any]], name: str, error: float, limit: float, **extra: Any) -> None:
    ok = error <= limit and not math.isnan(error)
    checks.append({"check": name, "rel_err": error, "limit": limit, "ok": ok, **extra})
    print(f"  {name:58s} rel_err={error:.2e} (<= {limit:g}) {'ok' if ok else 'FAIL'}", flush=True)


def _reference(q, k, v, plan, **kw):
    return block_sparse_attention(q.float(), k.float(), v.float(), plan, backend="reference", **kw)


def _check_dense(device, scale_n, checks):
    n = 8190 // scale_n
    q, k, v = qkv(1, 4, n, n, HEAD_DIM, device)
    dense = BlockPlan.dense(n, n, BLOCK, BLOCK, device=device)
    out = block_sparse_attention(q, k, v, dense, backend="triton")
    exact = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    _record(checks, f"dense plan vs SDPA fp32 ({n} tokens, d128)", rel_err(out, exact), 1e-2)


def _check_random_plans(device, scale_n, checks):
    original = triton_attention._alloc_outputs
    triton_attention._alloc_outputs = _poisoned_alloc
    try:
        for q_len, kv_len, dim, bq, bk, levels in [
            (3000 // scale_n, 2000 // scale_n, 128, 128, 128, (1, 2, 4, 8)),
            (2500 // scale_n, 1777 // scale_n, 64, 64, 128, (1,)),
            (1111 // scale_n, 3001 // scale_n, 128, 128, 64, (1, 8)),
        ]:
            q, k, v = qkv(1, 4, q_len, kv_len, dim, device)
            plan = _random_level_plan(4, q_len, kv_len, bq, bk, levels, 0.4, device)
            res = block_sparse_attention(q, k, v, plan, backend="triton", return_lse=True)
            ref = _reference(q, k, v, plan, return_lse=True)
            written = not bool(res.out.isnan().any() or res.lse.isnan().any())
            _record(checks, f"random plan {q_len}x{kv_len} d{dim} blocks {bq}x{bk} levels {levels}", rel_err(res.out, ref.out),
                  1e-2, all_written=written, lse_max_abs=float((res.lse - ref.lse).abs().max()))
    finally:
        triton_attention._alloc_outputs = original


def _check_window(device, scale_n, checks):
    height, width = (6, 10) if scale_n > 1 else (24, 40)
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    coord = torch.stack([rows.flatten(), cols.flatten()], -1).to(torch.int32).to(device)
    radius = torch.tensor([3, 6], dtype=torch.int32, device=device)
    window = BoxMask(coord - radius, coord + radius, coord)
    plan = BlockPlan.from_mask_mod(window.mask_mod, 1, 1, window.q_len, window.q_len, 64, 64, device=device,
                                   token_mask=window)
    q, k, v = qkv(1, 4, window.q_len, window.q_len, HEAD_DIM, device)
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=window.dense())
    out = block_sparse_attention(q, k, v, plan, backend="triton")
    _record(checks, f"token-mask window {height}x{width} vs masked SDPA", rel_err(out, expected), 1e-2)


def _check_thresholds(device, scale_n, checks):
    n = 2048 // scale_n
    q, k, v = qkv(1, 4, n, n, HEAD_DIM, device)
    k = k * torch.tensor([3.0, 0.2, 0.2, 3.0], device=device).repeat_interleave(BLOCK).repeat(n // (4 * BLOCK) + 1)[:n, None].bfloat16()
    plan = _random_level_plan(4, n, n, BLOCK, BLOCK, (1, 2), 0.7, device)
    res = block_sparse_attention(q, k, v, plan, backend="triton", pv_threshold=6.0, skip_threshold=-6.0)
    ref = block_sparse_attention(q, k, v, plan, backend="reference", pv_threshold=6.0, skip_threshold=-6.0)
    same = float((res.kept_plan.to_level_map() == ref.kept_plan.to_level_map()).float().mean())
    _record(checks, "pv_threshold=6 + skip_threshold=-6 vs reference", rel_err(res.out, ref.out), 1e-2,
            kept_tiles_equal=same, kept_density=res.kept_plan.density(), plan_density=plan.density())


def _check_pool(device, scale_n, checks):
    _, k, v = qkv(1, 4, 16, 3001 // scale_n, HEAD_DIM, device)
    ref = pool_kv(k, v, (2, 4, 8), BLOCK, backend="reference")
    tri = pool_kv(k, v, (2, 4, 8), BLOCK, backend="triton")
    _record(checks, f"pool_kv triton vs reference ({k.shape[2]} tokens)", max(rel_err(tri.k, ref.k), rel_err(tri.v, ref.v)), 1e-2)


def _check_sparge(device, scale_n, checks):
    q, k, _ = qkv(1, 4, 4096 // scale_n, 4096 // scale_n, HEAD_DIM, device)
    for selection in ({"topk": 0.3}, {"cdf_threshold": 0.9}):
        ref_plan = sparge_plan(q, k, backend="reference", **selection)
        tri_plan = sparge_plan(q, k, backend="triton", **selection)
        agree = float((tri_plan.to_block_mask() == ref_plan.to_block_mask()).float().mean())
        checks.append({"check": f"sparge_plan {selection} triton vs reference (block agreement)", "agreement": agree,
                       "density": tri_plan.density(), "ok": agree > 0.999})
        print(f"  sparge_plan {selection} triton vs reference: block agreement {agree:.4f}, density {tri_plan.density():.3f}", flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            sparge_plan(q, k, topk=0.3)
            synced = "no host sync"
        except RuntimeError as exc:
            synced = f"host sync: {exc}"
        finally:
            torch.cuda.set_sync_debug_mode("default")
        checks.append({"check": "sparge_plan under cuda sync_debug_mode=error", "result": synced, "ok": synced == "no host sync"})
        print(f"  sparge_plan under sync_debug_mode=error: {synced}", flush=True)


# -------------------------------------------------------------------------------------------------- speed
def bench_shape(name: str, tokens: int, heads: int, frames: int, device: torch.device, attention: bool = True) -> dict[str, Any]:
    """All timings for one shape (only cuDNN and plan building unless `attention`); shared inputs and plans."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    print(f"\n== {name}: {tokens} tokens x {heads} heads, d{HEAD_DIM}, bf16", flush=True)
    q, k, v = qkv(1, heads, tokens, tokens, HEAD_DIM, device)
    flops = 4.0 * heads * tokens * tokens * HEAD_DIM
    rec: dict[str, Any] = {"tokens": tokens, "heads": heads, "dense_tflop": flops / 1e12}
    guess = flops / 500e12 * 1e3  # expected dense ms, for warm-up/rep sizing

    def sdpa(backend):
        def run():
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v)
        return run

    cudnn = guarded(rec, "cudnn_ms", lambda: bench(sdpa(SDPBackend.CUDNN_ATTENTION), device, guess))
    reference_ms = cudnn if isinstance(cudnn, float) else None
    if attention:
        bench_attention(rec, q, k, v, frames, device, guess, reference_ms)
    guarded(rec, "sparge_ms", lambda: bench(lambda: sparge_plan(q, k), device, 1.0))
    guarded(rec, "sparge_topk_ms", lambda: bench(lambda: sparge_plan(q, k, topk=0.5), device, 1.0))
    guarded(rec, "pool_kv_ms", lambda: bench(lambda: pool_kv(k, v, (2, 4, 8), BLOCK), device, 1.0))
    if reference_ms:
        for key in ("sparge_ms", "sparge_topk_ms", "pool_kv_ms"):
            if isinstance(rec.get(key), float):
                rec[key.replace("_ms", "_pct_of_dense")] = 100.0 * rec[key] / reference_ms
    return rec


def bench_attention(rec: dict[str, Any], q, k, v, frames: int, device: torch.device, guess: float,
                    reference_ms: float | None) -> None:
    """Flash / xformers baselines, then our kernel and compiled FlexAttention on each plan, into `rec`."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    heads, tokens = q.shape[1], q.shape[2]
    flops = 4.0 * heads * tokens * tokens * HEAD_DIM

    def sdpa(backend):
        def run():
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v)
        return run

    guarded(rec, "flash_ms", lambda: bench(sdpa(SDPBackend.FLASH_ATTENTION), device, guess))

    def xformers_ms() -> float:
        import xformers.ops as xops

        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
        xops.memory_efficient_attention(qt, kt, vt)
        return bench(lambda: xops.memory_efficient_attention(qt, kt, vt), device, guess)

    guarded(rec, "xformers_ms", xformers_ms)

    def bound(b, h, q_idx, kv_idx):
        return kv_idx < tokens

    plans = {"dense": BlockPlan.dense(tokens, tokens, BLOCK, BLOCK, device=device)}
    plans.update({f"keep{int(keep * 100)}": random_plan(heads, tokens, keep, device) for keep in KEEPS})
    plans["radial"] = radial_plan(tokens, frames, device)
    plans["psa"] = psa_plan(heads, tokens, device)
    rec["plans"] = {}
    for label, plan in plans.items():
        entry: dict[str, Any] = {"density": plan.density()}
        rec["plans"][label] = entry
        expected = guess * entry["density"]
        out = block_sparse_attention(q, k, v, plan, backend="triton")  # validates the plan, autotunes
        entry["config"] = str(triton_attention._block_sparse_attn_fwd.best_config)
        if label == "dense" and device.type == "cuda":
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                entry["rel_err_vs_cudnn"] = rel_err(out, F.scaled_dot_product_attention(q, k, v))
        ours = guarded(entry, "ours_ms",
                       lambda p=plan, e=expected: bench(lambda: block_sparse_attention(q, k, v, p, backend="triton"), device, e))
        if plan.is_pooled:  # flex would need the pooled keys appended (diffattn.kernels.flex does, slowly)
            mean_counts = plan.kv_counts.float().mean((0, 1, 2)) / plan.num_kv_blocks
            entry["levels"] = {str(lvl): float(c) for lvl, c in zip(plan.levels, mean_counts)}
            flex = entry["flex_ms"] = "not timed (pooled plan)"
        else:
            block_mask = flex_mask_for(plan, tokens, heads, bound)
            scale = 1.0 / math.sqrt(HEAD_DIM)
            flex = guarded(entry, "flex_ms",
                           lambda m=block_mask, s=scale, e=expected: bench(lambda: flex_attention_call(q, k, v, m, s), device, e))
        if reference_ms and isinstance(ours, float):
            entry["ours_vs_cudnn_dense"] = ours / reference_ms
            if not plan.is_pooled:
                entry["ours_tflops_effective"] = flops * entry["density"] / ours / 1e9
        if isinstance(ours, float) and isinstance(flex, float):
            entry["flex_over_ours"] = flex / ours
        print(f"  {label:8s} density {entry['density']:.3f}  ours {entry.get('ours_ms')}  flex {entry.get('flex_ms')}", flush=True)

    half = plans["keep50"]
    extra = rec["plans"]["keep50"]

    def half_ms(**options: Any) -> float:
        """The keep50 plan's time with the kernel's extra `options`."""
        return bench(lambda: block_sparse_attention(q, k, v, half, backend="triton", **options), device, guess / 2)

    guarded(extra, "ours_pv50_ms", lambda: half_ms(pv_threshold=50.0))
    guarded(extra, "ours_marks_ms", lambda: half_ms(skip_threshold=-10.0))
    guarded(extra, "ours_marks_final_ms", lambda: half_ms(skip_threshold=-10.0, mark_criterion="final"))
    guarded(extra, "ours_lse_ms", lambda: half_ms(return_lse=True))


# ---------------------------------------------------------------------------------------------- targets
def targets(shapes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The project's kernel targets per shape: value, goal, met."""
    rows = []
    for name, rec in shapes.items():
        cudnn = rec.get("cudnn_ms")
        plans = rec.get("plans", {})
        if not isinstance(cudnn, float):
            continue
        dense = plans.get("dense", {}).get("ours_ms")
        if isinstance(dense, float):
            rows.append({"shape": name, "target": "dense >= 0.9x cuDNN throughput",
                         "value": cudnn / dense, "goal": 0.9, "met": cudnn / dense >= 0.9})
        for keep in KEEPS:
            entry = plans.get(f"keep{int(keep * 100)}", {})
            ours = entry.get("ours_ms")
            if isinstance(ours, float):
                bound = 1.1 * keep * cudnn
                rows.append({"shape": name, "target": f"keep {int(keep * 100)}%: ms <= 1.1 x keep x cuDNN dense",
                             "value": ours, "goal": bound, "met": ours <= bound})
        ten = plans.get("keep10", {})
        if isinstance(ten.get("flex_over_ours"), float):
            rows.append({"shape": name, "target": "keep 10%: >= 1.3x faster than FlexAttention",
                         "value": ten["flex_over_ours"], "goal": 1.3, "met": ten["flex_over_ours"] >= 1.3})
        for key, label in (("sparge_pct_of_dense", "sparge_plan"), ("pool_kv_pct_of_dense", "pool_kv")):
            if isinstance(rec.get(key), float):
                rows.append({"shape": name, "target": f"{label} <= 5% of dense", "value": rec[key], "goal": 5.0, "met": rec[key] <= 5.0})
    return rows


def table(result: dict[str, Any]) -> str:
    """The Markdown table for benchmarks/RESULTS.md."""
    env = result["env"]
    lines = [f"{env['device']}, torch {env['torch']}, triton {env['triton']}, {env['date']}", ""]
    lines += ["| shape | plan | density | ours ms | flex ms | cuDNN dense ms | ours / cuDNN dense | flex / ours |",
              "|---|---|---|---|---|---|---|---|"]

    def fmt(x: Any, spec: str = ".2f") -> str:
        return format(x, spec) if isinstance(x, float) else "n/a"

    for name, rec in result["shapes"].items():
        for label, entry in rec.get("plans", {}).items():
            lines.append(f"| {name} | {label} | {entry['density']:.3f} | {fmt(entry.get('ours_ms'))} | {fmt(entry.get('flex_ms'))} | "
                         f"{fmt(rec.get('cudnn_ms'))} | {fmt(entry.get('ours_vs_cudnn_dense'), '.3f')} | "
                         f"{fmt(entry.get('flex_over_ours'))} |")
    lines += ["",
              "| shape | cuDNN ms | flash ms | xformers | sparge ms (% dense) | pool_kv ms (% dense) | keep50 +pv50 / +marks / +lse ms |",
              "|---|---|---|---|---|---|---|"]
    for name, rec in result["shapes"].items():
        half = rec.get("plans", {}).get("keep50", {})
        xf = rec.get("xformers_ms")
        lines.append(f"| {name} | {fmt(rec.get('cudnn_ms'))} | {fmt(rec.get('flash_ms'))} | "
                     f"{fmt(xf) if isinstance(xf, float) else 'unavailable'} | "
                     f"{fmt(rec.get('sparge_ms'), '.3f')} ({fmt(rec.get('sparge_pct_of_dense'))}%) | "
                     f"{fmt(rec.get('pool_kv_ms'), '.3f')} ({fmt(rec.get('pool_kv_pct_of_dense'))}%) | "
                     f"{fmt(half.get('ours_pv50_ms'))} / {fmt(half.get('ours_marks_ms'))} / {fmt(half.get('ours_lse_ms'))} |")
    lines += ["", "| shape | target | value | goal | met |", "|---|---|---|---|---|"]
    for row in result["targets"]:
        lines.append(f"| {row['shape']} | {row['target']} | {row['value']:.3f} | {row['goal']:.3f} | {'yes' if row['met'] else 'NO'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on any device (checks the script)")
    parser.add_argument("--shapes", nargs="*", default=None, help=f"subset of {list(SHAPES)}")
    parser.add_argument("--plans-only", action="store_true", help="only cuDNN dense and plan building (sparge, pool_kv)")
    args = parser.parse_args()
    attention = not args.plans_only
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shapes = TINY_SHAPES if args.tiny else {k: v for k, v in SHAPES.items() if args.shapes is None or k in args.shapes}
    result: dict[str, Any] = {"env": environment(device), "block": BLOCK, "head_dim": HEAD_DIM}
    print(json.dumps(result["env"]), flush=True)
    print("== correctness", flush=True)
    result["correctness"] = correctness(device, args.tiny, attention)
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).parent / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ("kernels_tiny.json" if args.tiny else "kernels.json" if attention else "kernels_plans.json")
    result["shapes"] = {}
    for name, (tokens, heads, frames) in shapes.items():
        started = time.time()
        result["shapes"][name] = bench_shape(name, tokens, heads, frames, device, attention)
        result["shapes"][name]["wall_s"] = time.time() - started
        if device.type == "cuda":
            torch.cuda.empty_cache()
        result["targets"] = targets(result["shapes"])
        path.write_text(json.dumps(result, indent=1))  # after every shape: a late failure keeps what was measured
    print(f"\nwrote {path}\n")
    print(table(result))


if __name__ == "__main__":
    main()
