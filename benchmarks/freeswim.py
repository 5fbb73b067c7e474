"""FreeSwim on the full-size Wan2.1-1.3B transformer at 1088x1920, 81 frames (21x68x120 = 171,360 tokens).

Random weights from the model's config, bf16, batch 1, one forward per mode:

- dense: the stock model, cuDNN SDPA (flash if cuDNN is unavailable); `observe` gives its self-attention time;
- FreeSwim (paper defaults: 31x53-token inward window, temperature 1.046, cache_steps 2), each call mode:
  `refresh` (conditional pass that runs the full branch: doubled batch, dense full self-attention, stores the
  cross-attention), `reuse` (conditional pass between refreshes: window + cached cross-attention) and `uncond`
  (window only); and no-cache mode (every call dual, as the paper's no-cache code);
- attention alone on one layer's shapes (q/k/v in the layout diffusers passes: `[B, H, S, D]` views of
  `[B, S, H, D]` memory): cuDNN dense vs the window through the Triton block-sparse kernel in
  FreeSwim's tile order (the candidate tile with the fewest kv blocks; with and without the token permutation;
  and its blocks without any token test, wrong at the window's edges: the floor of that plan), in square 2x8x8
  tiles, in raster order, and compiled FlexAttention on the tile-order plan; plus the plan's build time and a check
  of the window output against exact masked attention on sampled query rows.

Per mode: wall time (CUDA events), self-attention time (diffattn's per-call timers on `attn1`), peak memory
(`torch.cuda.max_memory_allocated`) and the largest single allocation (CUDA allocator history), which must stay
below tokens^2 bytes. Target: windowed self-attention >= 3x faster than dense (the project's target).

    pip install --no-deps --no-build-isolation -e . && python benchmarks/freeswim.py      # H200, ~6 min
    python benchmarks/freeswim.py --tiny                                                   # CPU check, seconds
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import diffattn
from diffattn.configs import FreeSwimConfig, ObserveConfig
from diffattn.environment import environment
from diffattn.geometry import Grid, TileOrder
from diffattn.kernels import backends, block_sparse_attention
from diffattn.patterns.windows import attention_temperature, window_box_mask, window_plan, window_tile_order

WAN_1_3B = {
    "patch_size": (1, 2, 2), "num_attention_heads": 12, "attention_head_dim": 128, "in_channels": 16,
    "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 8960, "num_layers": 30,
    "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024,
}
TINY = {**WAN_1_3B, "num_attention_heads": 2, "attention_head_dim": 16, "text_dim": 32, "ffn_dim": 64, "num_layers": 2,
        "rope_max_seq_len": 32}
FULL_SHAPE = {"latent": (21, 136, 240), "text_len": 512, "base": (480, 832)}  # 1088x1920 px, 81 frames
TINY_SHAPE = {"latent": (5, 32, 48), "text_len": 16, "base": (112, 176)}  # grid 5x16x24, 7x11-token window


# ------------------------------------------------------------------------------------------------ timing
class Clock:
    """Wall time of a region: CUDA events on the GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def time_ms(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end), out
        t0 = time.perf_counter()
        out = fn()
        return (time.perf_counter() - t0) * 1e3, out

    def bench_ms(self, fn: Callable[[], Any], rep_ms: int) -> float:
        """Median time of `fn` (triton's do_bench on the GPU, a few timed runs on the CPU)."""
        if self.cuda:
            import triton.testing

            return float(triton.testing.do_bench(fn, warmup=max(100, rep_ms // 4), rep=rep_ms, return_mode="median"))
        fn()
        return sorted(self.time_ms(fn)[0] for _ in range(3))[1]


@contextmanager
def dense_backend(device: torch.device):
    """cuDNN attention first (then flash, then memory-efficient) for every SDPA call on the GPU."""
    if device.type != "cuda":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION], set_priority=True):
        yield


@contextmanager
def allocation_history(device: torch.device, result: dict[str, Any]):
    """Records the largest single CUDA allocation made inside the block into `result["largest_alloc_bytes"]`."""
    if device.type != "cuda":
        yield
        return
    try:
        torch.cuda.memory._record_memory_history(enabled="all", context=None, stacks="python", max_entries=2_000_000)
    except Exception as exc:  # noqa: BLE001 - private API: report instead of failing the benchmark
        result["largest_alloc_bytes"] = f"unavailable: {exc}"
        yield
        return
    try:
        yield
    finally:
        snapshot = torch.cuda.memory._snapshot()
        torch.cuda.memory._record_memory_history(enabled=None)
        sizes = [e["size"] for trace in snapshot.get("device_traces", []) for e in trace if e.get("action") == "alloc"]
        result["largest_alloc_bytes"] = max(sizes, default=0)


# ------------------------------------------------------------------------------------------------- parts
def attention_alone(grid: Grid, heads: int, head_dim: int, radius: tuple[int, int], temperature: float, device, dtype,
                    clock: Clock, backend: str, flex: bool, rep_ms: int) -> dict[str, Any]:
    """One layer's self-attention: dense vs the window in every layout, the plan build, and a correctness check."""
    results: dict[str, Any] = {}
    generator = torch.Generator(device).manual_seed(0)
    # the layout diffusers hands attention: [B, H, S, D] views of [B, S, H, D] memory
    q, k, v = (torch.randn(1, grid.tokens, heads, head_dim, device=device, dtype=dtype, generator=generator).transpose(1, 2)
               for _ in range(3))
    scale = head_dim ** -0.5 * temperature

    results["plan_build_ms"], (order, plan) = clock.time_ms(lambda: _tiled_plan(grid, radius, device))
    results["tile"] = list(order.tile)
    square = TileOrder(grid, (2, 8, 8), device)
    square_plan = window_plan(grid, radius, order=square)
    raster_plan = window_plan(grid, radius).to(device)
    results["token_density"] = (2 * radius[0] + 1) * (2 * radius[1] + 1) / (grid.height * grid.width) if (
        2 * radius[0] + 1 <= grid.height and 2 * radius[1] + 1 <= grid.width) else None
    results["block_density_tiles"] = plan.density()
    results["block_density_tiles_2x8x8"] = square_plan.density()
    results["block_density_raster"] = raster_plan.density()
    qt, kt, vt = order.to_tiles(q), order.to_tiles(k), order.to_tiles(v)
    qs, ks, vs = square.to_tiles(q), square.to_tiles(k), square.to_tiles(v)

    def window_tiled():
        return block_sparse_attention(qt, kt, vt, plan, scale=scale, backend=backend)

    def window_with_permutation():
        return order.to_raster(block_sparse_attention(order.to_tiles(q), order.to_tiles(k), order.to_tiles(v), plan,
                                                      scale=scale, backend=backend))

    cases: dict[str, Callable[[], Any]] = {
        "dense_sdpa": lambda: F.scaled_dot_product_attention(q, k, v, scale=scale),
        "window_tiles": window_tiled,
        "window_tiles_with_permutation": window_with_permutation,
        "window_tiles_no_token_test": lambda: block_sparse_attention(qt, kt, vt, replace(plan, token_mask=None), scale=scale,
                                                                     backend=backend),
        "window_tiles_2x8x8": lambda: block_sparse_attention(qs, ks, vs, square_plan, scale=scale, backend=backend),
        "window_raster": lambda: block_sparse_attention(q, k, v, raster_plan, scale=scale, backend=backend),
    }
    if flex:
        cases["window_tiles_flex"] = lambda: block_sparse_attention(qt, kt, vt, plan, scale=scale, backend="flex")
    with dense_backend(device):
        for name, fn in tqdm(cases.items(), desc="attention alone", leave=False):
            try:
                results[f"{name}_ms"] = clock.bench_ms(fn, rep_ms)
                if backend == "triton" and name.startswith("window") and not name.endswith("flex"):
                    kernel = backends.triton_modules()[0]._block_sparse_attn_fwd
                    results[f"{name}_config"] = str(kernel.best_config)  # the autotuner's pick for this case
            except Exception as exc:  # noqa: BLE001 - a baseline that cannot run here is reported, not fatal
                results[f"{name}_ms"] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
    dense = results["dense_sdpa_ms"]
    for name in ("window_tiles", "window_tiles_with_permutation", "window_tiles_no_token_test", "window_tiles_2x8x8",
                 "window_raster", "window_tiles_flex"):
        if isinstance(results.get(f"{name}_ms"), float):
            results[f"speedup_{name}_vs_dense"] = dense / results[f"{name}_ms"]

    rows = torch.randperm(grid.tokens, generator=torch.Generator().manual_seed(1))[:256].to(device)
    box = window_box_mask(grid, radius).to(device)
    visible = ((box.k_coord[None] >= box.q_lo[rows, None]) & (box.k_coord[None] <= box.q_hi[rows, None])).all(-1)
    logits = (q[:, :, rows].float() @ k.float().transpose(-1, -2)) * scale
    exact = torch.softmax(logits.masked_fill(~visible, float("-inf")), -1) @ v.float()
    results["max_abs_err_sampled_rows"] = float((window_with_permutation()[:, :, rows].float() - exact).abs().max())
    return results


def _tiled_plan(grid: Grid, radius: tuple[int, int], device: torch.device) -> tuple[TileOrder, Any]:
    """What FreeSwim builds once per grid: the best tile order and the window plan in it."""
    order = window_tile_order(grid, radius, 128, device=device)
    return order, window_plan(grid, radius, order=order)


def self_attention_ms(stats: Any) -> float:
    """Time of every `attn1` call recorded since the stats were last cleared."""
    return sum(rec["time_ms"] for layer, steps in stats.to_dict().items() if layer.endswith("attn1") for rec in steps.values())


def forward_modes(model, inputs: dict[str, torch.Tensor], base: tuple[int, int], device, clock: Clock, backend: str) -> dict[str, Any]:
    """Full forwards: stock dense, dense through `observe` (self-attention time), and every FreeSwim call mode."""
    results: dict[str, Any] = {}
    cuda = device.type == "cuda"

    def measure(name: str, call: Callable[[], Any], stats=None, *, track_alloc: bool = False) -> None:
        entry: dict[str, Any] = {}
        if stats is not None:
            stats.clear()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        with allocation_history(device, entry) if track_alloc else nullcontext():
            entry["ms"], out = clock.time_ms(call)
        if not torch.isfinite(out).all():
            raise RuntimeError(f"{name}: non-finite output")
        if cuda:
            entry["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            entry["peak_above_start_gib"] = (torch.cuda.max_memory_allocated() - before) / 2**30
        if stats is not None:
            entry["self_attention_ms"] = self_attention_ms(stats)
        results.setdefault(name, {}).update(entry)

    def run(branch: str | None, timestep: float):
        kwargs = dict(inputs, timestep=torch.full((1,), timestep, device=device))
        context = model.cache_context(branch) if branch else nullcontext()
        with context, torch.no_grad():
            return model(**kwargs, return_dict=False)[0]

    steps = tqdm(total=13, desc="forwards", leave=False)

    def step(*args, **kwargs):
        measure(*args, **kwargs)
        steps.update()

    with dense_backend(device):
        step("dense", lambda: run(None, 999.0), track_alloc=True)  # warm-up (and allocation scan)
        step("dense", lambda: run(None, 999.0))
        with diffattn.apply(model, ObserveConfig()) as handle:
            step("dense_observe", lambda: run(None, 999.0), handle.stats)
        config = FreeSwimConfig(base_height=base[0], base_width=base[1], backend=backend)
        with diffattn.apply(model, config) as handle:
            results["window_radius"] = handle.methods[0].radius
            results["temperature"] = handle.methods[0].temperature
            for cycle, (t0, t1) in enumerate(((999.0, 998.0), (997.0, 996.0))):  # cycle 0 warms up, cycle 1 is timed
                scan = cycle == 0
                step("freeswim_refresh", lambda t=t0: run("cond", t), handle.stats, track_alloc=scan)
                step("freeswim_uncond", lambda t=t0: run("uncond", t), handle.stats, track_alloc=scan)
                step("freeswim_reuse", lambda t=t1: run("cond", t), handle.stats, track_alloc=scan)
                step("freeswim_uncond", lambda t=t1: run("uncond", t), handle.stats)
            results["freeswim_counts"] = dict(handle.methods[0].controller.counts)
        with diffattn.apply(model, FreeSwimConfig(base_height=base[0], base_width=base[1], backend=backend, cache_steps=None)) as handle:
            step("freeswim_nocache_dual", lambda: run("cond", 999.0), handle.stats, track_alloc=True)
            step("freeswim_nocache_dual", lambda: run("cond", 998.0), handle.stats)
    steps.close()

    dense, observe = results["dense"]["ms"], results["dense_observe"]["self_attention_ms"]
    window_self = results["freeswim_reuse"]["self_attention_ms"]
    results["summary"] = {
        "self_attention_speedup_window_vs_dense": observe / window_self,
        "forward_speedup_reuse_vs_dense": dense / results["freeswim_reuse"]["ms"],
        "forward_speedup_uncond_vs_dense": dense / results["freeswim_uncond"]["ms"],
        "refresh_cost_vs_dense": results["freeswim_refresh"]["ms"] / dense,
        # one CFG step = conditional + unconditional forward; cache_steps=2 alternates refresh and reuse steps
        "step_speedup_cache2_vs_dense": 2 * dense / ((results["freeswim_refresh"]["ms"] + results["freeswim_reuse"]["ms"]) / 2
                                                     + results["freeswim_uncond"]["ms"]),
        "step_speedup_nocache_vs_dense": dense / results["freeswim_nocache_dual"]["ms"],
    }
    return results


# -------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU with the reference kernel")
    parser.add_argument("--out", default=None, help="JSON results (default: benchmarks/results/freeswim.json; none with --tiny)")
    parser.add_argument("--no-flex", action="store_true", help="skip the compiled FlexAttention baseline")
    parser.add_argument("--rep-ms", type=int, default=2000, help="do_bench repetition time per attention case")
    args = parser.parse_args(argv)

    from diffusers import WanTransformer3DModel

    device = torch.device("cpu" if args.tiny else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("the full benchmark needs a CUDA GPU; use --tiny for a CPU check")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    config, shape = (TINY, TINY_SHAPE) if args.tiny else (WAN_1_3B, FULL_SHAPE)
    backend = "reference" if args.tiny else "triton"
    clock = Clock(device)
    frames, height, width = shape["latent"]
    grid = Grid(frames, height // 2, width // 2)
    base = shape["base"]
    radius = (base[0] // 16 // 2, base[1] // 16 // 2)
    started = time.perf_counter()

    report: dict[str, Any] = {
        "benchmark": "freeswim",
        **environment(device),
        "dtype": str(dtype),
        "model": "Wan2.1-T2V-1.3B transformer (random weights)" if not args.tiny else "tiny Wan transformer",
        "grid": [grid.frames, grid.height, grid.width],
        "tokens": grid.tokens,
        "window": [2 * radius[0] + 1, 2 * radius[1] + 1],
    }
    heads, head_dim = config["num_attention_heads"], config["attention_head_dim"]
    temperature = attention_temperature((base[0] // 16) * (base[1] // 16))
    report["attention_alone"] = attention_alone(grid, heads, head_dim, radius, temperature, device, dtype, clock, backend,
                                                flex=not args.no_flex and not args.tiny, rep_ms=args.rep_ms)
    if device.type == "cuda":
        torch.cuda.empty_cache()

    with torch.device(device):
        torch.manual_seed(0)
        model = cast_like_from_pretrained(WanTransformer3DModel(**config).eval(), dtype)
    generator = torch.Generator(device).manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, 16, frames, height, width, device=device, dtype=dtype, generator=generator),
        "encoder_hidden_states": torch.randn(1, shape["text_len"], config["text_dim"], device=device, dtype=dtype,
                                             generator=generator),
    }
    report["forward"] = forward_modes(model, inputs, base, device, clock, backend)
    tokens_squared = grid.tokens ** 2
    largest = [entry.get("largest_alloc_bytes") for entry in report["forward"].values() if isinstance(entry, dict)]
    largest = [b for b in largest if isinstance(b, int)]
    if largest:
        report["largest_alloc_bytes"] = max(largest)
        report["largest_alloc_vs_tokens_squared_bytes"] = max(largest) / tokens_squared
        report["no_tokens_squared_allocation"] = max(largest) < tokens_squared
    report["seconds"] = round(time.perf_counter() - started, 1)

    out = args.out or (None if args.tiny else "benchmarks/results/freeswim.json")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))
    print(markdown_rows(report))
    return 0


def cast_like_from_pretrained(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast to `dtype` but keep the modules diffusers keeps in float32 when loading (Wan: rope, norms, time embedder)."""
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point():
            tensor.data = tensor.data.to(torch.float32 if keep.intersection(name.split(".")) else dtype)
    return model


def markdown_rows(report: dict[str, Any]) -> str:
    """Rows for benchmarks/RESULTS.md."""
    attention, forward = report["attention_alone"], report["forward"]

    def ms(value: Any) -> str:
        return f"{value:.1f}" if isinstance(value, float) else "n/a"

    def gib(entry: dict[str, Any]) -> str:
        return f"{entry['peak_gib']:.1f}" if "peak_gib" in entry else "n/a"

    title = (
        f"FreeSwim, {report['model']}, grid {'x'.join(map(str, report['grid']))} ({report['tokens']} tokens), "
        f"window {'x'.join(map(str, report['window']))}, {report['device']}, torch {report['torch']}, "
        f"triton {report['triton']}, {report['date']}"
    )
    lines = [
        title,
        "",
        "| attention alone (one layer) | ms | vs dense |",
        "|---|---|---|",
    ]
    for name in ("dense_sdpa", "window_tiles", "window_tiles_with_permutation", "window_tiles_no_token_test",
                 "window_tiles_2x8x8", "window_raster", "window_tiles_flex"):
        speed = attention.get(f"speedup_{name}_vs_dense")
        relative = f"{speed:.2f}x" if speed else "1.00x" if name == "dense_sdpa" else "n/a"
        lines.append(f"| {name} | {ms(attention.get(f'{name}_ms'))} | {relative} |")
    lines += ["", "| forward | ms | self-attention ms | peak GiB |", "|---|---|---|---|"]
    for name in ("dense", "dense_observe", "freeswim_refresh", "freeswim_reuse", "freeswim_uncond", "freeswim_nocache_dual"):
        entry = forward[name]
        lines.append(f"| {name} | {ms(entry['ms'])} | {ms(entry.get('self_attention_ms'))} | {gib(entry)} |")
    lines += ["", "summary: " + ", ".join(f"{k}={v:.2f}" for k, v in forward["summary"].items())]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
