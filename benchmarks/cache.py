"""diffusers' FirstBlockCache with Sparge on Wan2.1-1.3B at 480p / 81 frames: a denoising loop, one process.

Model: diffusers' `WanTransformer3DModel` with the published 1.3B config and random weights (bf16, batch 1, latent
21x60x104, 32,760 tokens), dense attention through cuDNN SDPA (`benchmarks/e2e.py` builds it). The loop is the
Wan pipeline's, over the transformer alone: a FlowMatch Euler schedule (shift 5), CFG as two calls per step (the
conditional then the unconditional one, each under `transformer.cache_context("cond"/"uncond")` as the pipeline
does, guidance 5). Variants: dense, FirstBlockCache alone, Sparge 90% (top-k 0.1, sparse from the first step) alone,
and both together.

Measured:

1. The loop's total time per variant (CUDA events), the number of calls whose blocks after the first were skipped
   (cache hits, counted from the last block's runs) and the relative L1 error of the final latent against dense.
   Random weights make the hit rate meaningless for real videos: the threshold used is recorded with it.
2. The cost of the cache's two paths per forward, with and without Sparge: a miss (first block, threshold check,
   every other block, residual kept) and a hit (first block, threshold check, cached residual added), each the
   median of `--repeats` forwards with the path forced by the threshold (0: always miss, 1e9: always hit).

    pip install --no-deps -e . && python benchmarks/cache.py               # one H200, about 5 minutes
    python benchmarks/cache.py --steps 10                                    # shorter loop (totals scale with steps)
    python benchmarks/cache.py --paths-only                                  # the path costs alone (under a minute)
    python benchmarks/cache.py --tiny                                        # CPU check of this script

Writes `cache.json` under `$OUT` when set, else `benchmarks/results/cache[_tiny].json`, and prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import diffattn
from diffattn.environment import environment
from diffattn.stats import timed

from e2e import (
    MODELS,
    TINY_MODELS,
    build_model,
    cudnn_attention,
    default_out,
    errors,
    flow_timesteps,
    model_inputs,
    sync,
    write_report,
)

GUIDANCE = 5.0
DEFAULT_THRESHOLD = 0.05
"""FirstBlockCacheConfig's own default threshold."""
FORCE_MISS, FORCE_HIT = -1.0, 1e9
"""Thresholds that force each path: the cache computes the remaining blocks when the first block's relative change
is *greater* than the threshold, and a repeated identical input changes nothing (0), so only a negative threshold
always misses."""


def first_block_cache(threshold: float):
    from diffusers.hooks import FirstBlockCacheConfig

    return FirstBlockCacheConfig(threshold=threshold)


def sparge(tiny: bool) -> diffattn.SpargeConfig:
    settings = {"backend": "reference", "min_tokens": 256} if tiny else {}
    return diffattn.SpargeConfig(topk=0.1, **settings)


class TailRuns:
    """Counts the calls in which the model's last block really ran (FirstBlockCache skips it on a hit)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.count = 0
        self._hook = model.blocks[-1].attn1.register_forward_pre_hook(self._seen)

    def _seen(self, *_: Any) -> None:
        self.count += 1

    def close(self) -> None:
        self._hook.remove()


def denoise(model: torch.nn.Module, inputs: dict[str, torch.Tensor], uncond: torch.Tensor, steps: int) -> torch.Tensor:
    """The Wan pipeline's loop over the transformer: two calls per step (cond, uncond), CFG, Euler update."""
    timesteps, sigmas = flow_timesteps(steps)
    latents = inputs["hidden_states"]
    for t, s, s_next in zip(timesteps, sigmas, sigmas[1:]):
        timestep = torch.tensor([t], device=latents.device)
        with torch.no_grad():
            with model.cache_context("cond"):
                cond = model(**{**inputs, "hidden_states": latents, "timestep": timestep}, return_dict=False)[0]
            with model.cache_context("uncond"):
                call = {**inputs, "hidden_states": latents, "timestep": timestep, "encoder_hidden_states": uncond}
                uncond_out = model(**call, return_dict=False)[0]
        velocity = uncond_out + GUIDANCE * (cond - uncond_out)
        latents = latents + (s_next - s) * velocity
    return latents


def run_variant(model, inputs, uncond, steps, device, cache: bool, method: bool, threshold: float, tiny: bool):
    """`(ms, final latents, calls, cache hits)` of one loop with the cache and/or Sparge on."""
    if cache:
        model.enable_cache(first_block_cache(threshold))
    handle = diffattn.apply(model, sparge(tiny)) if method else None
    if handle is not None:
        handle.stats.enabled = False
    tail = TailRuns(model)
    try:
        model._reset_stateful_cache()
        sync(device)
        ms, out = timed(lambda: denoise(model, inputs, uncond, steps), device)
    finally:
        tail.close()
        if handle is not None:
            handle.remove()
        if cache:
            model.disable_cache()
    calls = 2 * steps
    return ms, out, calls, calls - tail.count


def path_costs(model, inputs, device, repeats: int, method: bool, tiny: bool) -> dict[str, float]:
    """Median ms of one forward on the cache's miss path and on its hit path (the path forced by the threshold)."""
    handle = diffattn.apply(model, sparge(tiny)) if method else None
    if handle is not None:
        handle.stats.enabled = False
    result: dict[str, float] = {}
    try:
        for path, threshold in (("miss", FORCE_MISS), ("hit", FORCE_HIT)):
            model.enable_cache(first_block_cache(threshold))
            model._reset_stateful_cache()
            times = []
            with torch.no_grad(), model.cache_context("cond"):
                model(**inputs, return_dict=False)  # the first call of a context always computes: fills the cache
                tail = TailRuns(model)
                for _ in range(repeats):
                    sync(device)
                    ms, _ = timed(lambda: model(**inputs, return_dict=False), device)
                    times.append(ms)
                tail.close()
            model.disable_cache()
            if tail.count != (repeats if path == "miss" else 0):
                raise RuntimeError(f"the {path} path was not forced: the last block ran {tail.count} of {repeats} times")
            result[f"{path}_ms"] = statistics.median(times)
    finally:
        if handle is not None:
            handle.remove()
    return result


def run_loops(model, inputs, uncond, steps: int, device, threshold: float, tiny: bool) -> dict[str, Any]:
    """The four loop variants: time, cache hits and error against dense."""
    loops: dict[str, Any] = {}
    dense_out = None
    for label, cache, method in (
        ("dense", False, False),
        ("first-block cache", True, False),
        ("sparge 90%", False, True),
        ("first-block cache + sparge 90%", True, True),
    ):
        ms, out, calls, hits = run_variant(model, inputs, uncond, steps, device, cache, method, threshold, tiny)
        dense_out = out if dense_out is None else dense_out
        loops[label] = {"ms": ms, "calls": calls, "cache_hits": hits, **errors(out, dense_out)}
        print(f"{label}: {ms / 1000:.1f} s, {hits}/{calls} cache hits", flush=True)
    for entry in loops.values():
        entry["speedup"] = loops["dense"]["ms"] / entry["ms"]
    return loops


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random Wan on the CPU (a check of this script)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default 50; 3 with --tiny)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="FirstBlockCache threshold")
    parser.add_argument("--repeats", type=int, default=3, help="forwards per path in the path-cost section")
    parser.add_argument("--paths-only", action="store_true", help="skip the loop: only the cost of the two paths")
    parser.add_argument("--out", default=None, help="output JSON (default: $OUT/cache.json or benchmarks/results/)")
    args = parser.parse_args(argv)
    tiny = args.tiny
    device = torch.device("cpu" if tiny else "cuda")
    dtype = torch.float32 if tiny else torch.bfloat16
    steps = args.steps or (3 if tiny else 50)
    name, (config, latent, text_len, _, _) = next(iter((TINY_MODELS if tiny else MODELS).items()))

    start = time.perf_counter()
    report: dict[str, Any] = {
        "meta": {**environment(device), "dtype": str(dtype), "model": name, "latent": list(latent), "steps": steps,
                 "cfg": "two calls per step, guidance 5", "first_block_cache_threshold": args.threshold,
                 "sparge": "top-k 0.1, sparse from the first step"},
    }
    with cudnn_attention(device):
        model = build_model(config, device, dtype)
        inputs = model_inputs(config, latent, text_len, device, dtype)
        uncond = torch.randn_like(inputs["encoder_hidden_states"])
        with torch.no_grad():  # warm-up: kernels and autotuning at full shapes, dense and sparse
            model(**inputs, return_dict=False)
            with diffattn.apply(model, sparge(tiny)):
                model(**inputs, return_dict=False)
        if not args.paths_only:
            report["loop"] = run_loops(model, inputs, uncond, steps, device, args.threshold, tiny)
        report["paths"] = {
            "dense": path_costs(model, inputs, device, args.repeats, False, tiny),
            "sparge 90%": path_costs(model, inputs, device, args.repeats, True, tiny),
        }
    report["meta"]["seconds"] = time.perf_counter() - start

    write_report(report, Path(args.out) if args.out else default_out("cache", tiny), markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"{meta['model']}, {meta['steps']} steps, CFG as two calls per step, FirstBlockCache threshold "
        f"{meta['first_block_cache_threshold']} (hits on random weights say nothing about real videos)",
        "",
        "| variant | total s | speedup | cache hits / calls | rel L1 vs dense |",
        "|---|---|---|---|---|",
    ]
    for label, entry in report.get("loop", {}).items():
        lines.append(f"| {label} | {entry['ms'] / 1000:.1f} | {entry['speedup']:.2f}x | "
                     f"{entry['cache_hits']} / {entry['calls']} | {entry['rel_l1']:.4f} |")
    lines += ["", "| attention | cache miss ms / forward | cache hit ms / forward |", "|---|---|---|"]
    for label, entry in report["paths"].items():
        lines.append(f"| {label} | {entry['miss_ms']:.1f} | {entry['hit_ms']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
