"""8-bit attention benchmark (issue 17): accuracy and speed of `precision="int8"` and `"int8-fp8"`, in one run.

1. Correctness on the device: the Triton kernel against the 8-bit torch reference (same quantisation) and against
   float64 (relative L1, cosine), on random q/k/v and on q/k with per-channel K offsets and outlier queries, for
   a dense plan, a random 25% plan, a pooled (PSA-like) plan and pv_threshold; and long rows (the first 512
   queries against every key of the 32,760-token shape), where a narrow FP8 accumulator would show.
2. Speed (head_dim 128, batch 1; 32,760 tokens x 12 heads and 75,600 x 40): cuDNN SDPA bf16, our kernel in bf16,
   int8 and int8-fp8 on the dense plan, and int8-fp8 on random plans keeping 50/25/10% of each row's kv blocks.
   Every 8-bit time includes the quantisation (the call as users make it); the fused quantisation pass the call runs
   is timed alone too (and the torch quantisation that defines its values), which gives the attention walk's time,
   and the autotuner's chosen config is recorded per precision.
   Times are `triton.testing.do_bench` medians (`kernel_speed.bench`).

    pip install --no-deps --no-build-isolation -e . && python benchmarks/precision.py   # one H200, < 5 minutes
    TRITON_INTERPRET=1 python benchmarks/precision.py --tiny                            # CPU check of the script

Writes `precision.json` under `$OUT` when set, else `benchmarks/results/precision.json` (`precision_tiny.json`
with `--tiny`), and prints a Markdown table last.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from kernel_speed import BLOCK, HEAD_DIM, KEEPS, SHAPES, bench, guarded, psa_plan, qkv, random_plan, rel_err

from diffattn.environment import environment
from diffattn.kernels import api as kernel_api
from diffattn.kernels import block_sparse_attention, triton_attention
from diffattn.kernels.quantize import quantize_inputs
from diffattn.plan import BlockPlan

PRECISIONS = ("int8", "int8-fp8")
TINY_SHAPES = {"tiny": (300, 2)}
LONG_ROW_QUERIES = 512


def rel_l1(out: torch.Tensor, exact: torch.Tensor) -> float:
    out, exact = out.double(), exact.double()
    return float((out - exact).abs().sum() / exact.abs().sum())


def cosine(out: torch.Tensor, exact: torch.Tensor) -> float:
    return float(F.cosine_similarity(out.double().flatten(), exact.double().flatten(), 0))


# ---------------------------------------------------------------------------------------------- correctness
def _inputs(kind: str, heads: int, tokens: int, device: torch.device):
    q, k, v = qkv(1, heads, tokens, tokens, HEAD_DIM, device)
    if kind == "offsets":  # large K channel offsets, every 37th query 8x louder
        k = (k.float() + 8 * torch.randn(1, heads, 1, HEAD_DIM, device=device)).bfloat16()
        q = q.clone()
        q[:, :, ::37] *= 8
    return q, k, v


def correctness(device: torch.device, tiny: bool) -> list[dict[str, Any]]:
    """Triton 8-bit vs the 8-bit reference and vs float64, per input kind, plan and precision."""
    tokens, heads = (256, 2) if tiny else (4096, 4)
    plans = {
        "dense": (BlockPlan.dense(tokens, tokens, BLOCK, BLOCK).to(device), {}),
        "random25": (random_plan(heads, tokens, 0.25, device), {}),
        "pooled": (psa_plan(heads, tokens, device), {}),
        "pv_threshold": (random_plan(heads, tokens, 0.5, device), {"pv_threshold": 6.0}),
    }
    checks = []
    for kind in ("random", "offsets"):
        q, k, v = _inputs(kind, heads, tokens, device)
        for plan_name, (plan, kw) in plans.items():
            exact = block_sparse_attention(q.double(), k.double(), v.double(), plan, backend="reference", **kw)
            for precision in PRECISIONS:
                row: dict[str, Any] = {"inputs": kind, "plan": plan_name, "precision": precision}

                def measure(q=q, k=k, v=v, plan=plan, kw=kw, precision=precision, exact=exact):
                    tri = block_sparse_attention(q, k, v, plan, backend="triton", precision=precision, **kw)
                    ref = block_sparse_attention(q, k, v, plan, backend="reference", precision=precision, **kw)
                    return {"triton_vs_reference": rel_err(tri, ref), "rel_l1": rel_l1(tri, exact),
                            "cosine": cosine(tri, exact), "reference_rel_l1": rel_l1(ref, exact),
                            "finite": bool(torch.isfinite(tri).all())}

                guarded(row, "result", measure)
                checks.append(row)
                print(f"  {kind:8s} {plan_name:13s} {precision:9s} {row['result']}", flush=True)
    return checks


def long_rows(device: torch.device, tiny: bool) -> dict[str, Any]:
    """The first queries against every key of the 32,760 x 12 shape (dense): accumulation over long rows."""
    tokens, heads = (512, 2) if tiny else (SHAPES["wan1.3b-480p"][0], SHAPES["wan1.3b-480p"][1])
    q, k, v = qkv(1, heads, min(LONG_ROW_QUERIES, tokens), tokens, HEAD_DIM, device)
    plan = BlockPlan.dense(q.shape[2], tokens, BLOCK, BLOCK).to(device)
    exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    rec: dict[str, Any] = {"queries": q.shape[2], "keys": tokens, "heads": heads}
    for precision in ("bf16", *PRECISIONS):
        out = block_sparse_attention(q, k, v, plan, backend="triton", precision=precision)
        rec[precision] = {"rel_l1": rel_l1(out, exact), "cosine": cosine(out, exact)}
    print(f"  long rows: {rec}", flush=True)
    return rec


# --------------------------------------------------------------------------------------------------- speed
def bench_shape(name: str, tokens: int, heads: int, device: torch.device) -> dict[str, Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    print(f"\n== {name}: {tokens} tokens x {heads} heads, d{HEAD_DIM}", flush=True)
    q, k, v = qkv(1, heads, tokens, tokens, HEAD_DIM, device)
    flops = 4.0 * heads * tokens * tokens * HEAD_DIM
    guess = flops / 500e12 * 1e3
    rec: dict[str, Any] = {"tokens": tokens, "heads": heads, "dense_tflop": flops / 1e12}

    def cudnn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v)

    guarded(rec, "cudnn_bf16_ms", lambda: bench(cudnn, device, guess))
    dense = BlockPlan.dense(tokens, tokens, BLOCK, BLOCK).to(device)
    for precision in ("bf16", *PRECISIONS):
        guarded(rec, f"dense_{precision}_ms", lambda p=precision: bench(
            lambda: block_sparse_attention(q, k, v, dense, backend="triton", precision=p), device, guess))
        rec[f"dense_{precision}_config"] = chosen_config()
        print(f"  dense {precision}: {rec[f'dense_{precision}_ms']} ({rec[f'dense_{precision}_config']})", flush=True)
    for precision in PRECISIONS:
        guarded(rec, f"quantize_{precision}_ms", lambda p=precision: bench(
            lambda: fused_quantization(q, k, v, p), device, 1.0))
        guarded(rec, f"quantize_torch_{precision}_ms", lambda p=precision: bench(
            lambda: quantize_inputs(q, k, v, p), device, 1.0))
        print(f"  quantise {precision}: fused {rec[f'quantize_{precision}_ms']}, torch "
              f"{rec[f'quantize_torch_{precision}_ms']}", flush=True)
    for keep in KEEPS:
        plan = random_plan(heads, tokens, keep, device)
        rec[f"keep{keep}_density"] = plan.density()
        guarded(rec, f"keep{keep}_int8-fp8_ms", lambda plan=plan, keep=keep: bench(
            lambda: block_sparse_attention(q, k, v, plan, backend="triton", precision="int8-fp8"), device,
            guess * keep))
        print(f"  int8-fp8 keep {keep}: {rec[f'keep{keep}_int8-fp8_ms']}", flush=True)
    _ratios(rec)
    return rec


def fused_quantization(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, precision: str):
    """The quantisation an 8-bit Triton call runs before its attention walk (the fused pass, no lse)."""
    return kernel_api._quantized(q, k, v, None, None, q.shape[-1] ** -0.5, precision, False)


def chosen_config() -> str:
    """The attention kernel's autotuned config for the call just timed."""
    return str(getattr(triton_attention._block_sparse_attn_fwd, "best_config", None))


def _ratios(rec: dict[str, Any]) -> None:
    """Speed-ups over cuDNN bf16, TFLOP/s, and each sparse time against keep x (dense int8-fp8 time)."""
    cudnn = rec.get("cudnn_bf16_ms")
    for key in [key for key in rec if key.startswith("dense_") and key.endswith("_ms")]:
        if isinstance(rec[key], float):
            rec[key.replace("_ms", "_tflops")] = rec["dense_tflop"] / rec[key] * 1e3
            if isinstance(cudnn, float):
                rec[key.replace("_ms", "_speedup_vs_cudnn")] = cudnn / rec[key]
    for precision in PRECISIONS:  # the attention walk alone: the call minus its fused quantisation
        total, quantize = rec.get(f"dense_{precision}_ms"), rec.get(f"quantize_{precision}_ms")
        if isinstance(total, float) and isinstance(quantize, float):
            rec[f"walk_{precision}_ms"] = total - quantize
            rec[f"walk_{precision}_tflops"] = rec["dense_tflop"] / (total - quantize) * 1e3
    dense8 = rec.get("dense_int8-fp8_ms")
    for keep in KEEPS:
        sparse = rec.get(f"keep{keep}_int8-fp8_ms")
        if isinstance(sparse, float) and isinstance(dense8, float):
            rec[f"keep{keep}_vs_keep_x_dense8"] = sparse / (rec[f"keep{keep}_density"] * dense8)


# --------------------------------------------------------------------------------------------------- report
def table(result: dict[str, Any]) -> str:
    def fmt(x: Any, spec: str = ".2f") -> str:
        return format(x, spec) if isinstance(x, float) else "n/a"

    lines = ["| shape | cuDNN bf16 ms | ours bf16 | int8 | int8-fp8 (x cuDNN) | quantise int8 / int8-fp8 ms | "
             "walk int8 / int8-fp8 TFLOP/s | fp8 50% | 25% | 10% (/ keep x dense8) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["shapes"].items():
        sparse = [f"{fmt(r.get(f'keep{k}_int8-fp8_ms'))} ({fmt(r.get(f'keep{k}_vs_keep_x_dense8'))})" for k in KEEPS]
        lines.append(f"| {name} | {fmt(r.get('cudnn_bf16_ms'))} | {fmt(r.get('dense_bf16_ms'))} | "
                     f"{fmt(r.get('dense_int8_ms'))} | {fmt(r.get('dense_int8-fp8_ms'))} "
                     f"({fmt(r.get('dense_int8-fp8_speedup_vs_cudnn'))}x) | "
                     f"{fmt(r.get('quantize_int8_ms'), '.3f')} / {fmt(r.get('quantize_int8-fp8_ms'), '.3f')} | "
                     f"{fmt(r.get('walk_int8_tflops'), '.0f')} / {fmt(r.get('walk_int8-fp8_tflops'), '.0f')} | "
                     + " | ".join(sparse) + " |")
    lines += ["", "| inputs | plan | precision | triton vs ref | rel L1 vs fp64 | cosine | ref rel L1 |", "|---|---|---|---|---|---|---|"]
    for c in result["correctness"]:
        r = c["result"] if isinstance(c["result"], dict) else {}
        lines.append(f"| {c['inputs']} | {c['plan']} | {c['precision']} | {fmt(r.get('triton_vs_reference'), '.4f')} | "
                     f"{fmt(r.get('rel_l1'), '.4f')} | {fmt(r.get('cosine'), '.5f')} | {fmt(r.get('reference_rel_l1'), '.4f')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on any device (checks the script)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    result: dict[str, Any] = {"env": environment(device), "block": BLOCK, "head_dim": HEAD_DIM}
    print(json.dumps(result["env"]), flush=True)
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).parent / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ("precision_tiny.json" if args.tiny else "precision.json")
    print("== correctness", flush=True)
    result["correctness"] = correctness(device, args.tiny)
    guarded(result, "long_rows", lambda: long_rows(device, args.tiny))
    result["shapes"] = {}
    for name, (tokens, heads) in (TINY_SHAPES if args.tiny else {n: s[:2] for n, s in SHAPES.items()}).items():
        started = time.time()
        result["shapes"][name] = bench_shape(name, tokens, heads, device)
        result["shapes"][name]["wall_s"] = time.time() - started
        path.write_text(json.dumps(result, indent=1))  # after every shape: a late failure keeps what was measured
        if device.type == "cuda":
            torch.cuda.empty_cache()
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {path}\n")
    print(table(result))


if __name__ == "__main__":
    main()
