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

`--e2e` runs the whole `FreeSwimPipeline` instead, at 1088x1920x81, from random-weight components at their
published configs (Wan2.1 transformer and UMT5-XXL text encoder in bf16, `AutoencoderKLWan` in float32): FreeSwim
with `memory="default"` and `memory="low"` (the 14B: `"low"` only), then dense `WanPipeline` sampling at the
target size. `--steps 6` runs 6 stage-1 and 4 stage-2 steps (refresh, reuse, refresh, reuse); each phase (stage 1
denoise, VAE decode, stage 2 VAE encode, stage 2 denoise, ...) gets its wall time and its peak GPU memory
(`reset_peak_memory_stats` at its start, `max_memory_allocated` at its end), every transformer call its time,
and the denoising times are extrapolated to `--full-steps` (first step excluded as warm-up). Prompt embeddings
are random (no tokenizer offline); the text encoder is timed on its own. The low-vs-default difference is read on
stage 2's latents and on the frames. JSON to `$OUT/freeswim_e2e.json` (`_14b` for the 14B) when `$OUT` is set.

    python benchmarks/freeswim.py --e2e                      # H200, Wan2.1-1.3B
    python benchmarks/freeswim.py --e2e --model 14b          # H200, Wan2.1-14B, memory-first only
    python benchmarks/freeswim.py --e2e --tiny               # CPU check of the same code path
"""

from __future__ import annotations

import argparse
import functools
import json
import os
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
EIGHT_BIT = ("int8", "int8-fp8")
WINDOW_CASES = ("window_tiles", "window_tiles_with_permutation", "window_tiles_no_token_test", "window_tiles_2x8x8",
                "window_raster", *(f"window_tiles_{precision}" for precision in EIGHT_BIT), "window_tiles_flex")
"""The attention-alone cases timed against dense SDPA."""


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
    """cuDNN attention first (then flash, memory-efficient, and math for what none of them takes, such as UMT5's
    float32 position bias on bf16 queries) for every SDPA call on the GPU."""
    if device.type != "cuda":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
                     set_priority=True):
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
    for precision in EIGHT_BIT:
        cases[f"window_tiles_{precision}"] = functools.partial(block_sparse_attention, qt, kt, vt, plan, scale=scale,
                                                               backend=backend, precision=precision)
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
    for name in WINDOW_CASES:
        if isinstance(results.get(f"{name}_ms"), float):
            results[f"speedup_{name}_vs_dense"] = dense / results[f"{name}_ms"]
    window = window_tiled().float()
    for precision in EIGHT_BIT:  # the 8-bit window against the 16-bit one, same plan
        out = block_sparse_attention(qt, kt, vt, plan, scale=scale, backend=backend, precision=precision).float()
        results[f"window_tiles_{precision}_rel_l1"] = float((out - window).abs().sum() / window.abs().sum())

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

    steps = tqdm(total=15, desc="forwards", leave=False)

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
        eight_bit = FreeSwimConfig(base_height=base[0], base_width=base[1], backend=backend, precision="int8-fp8")
        with diffattn.apply(model, eight_bit) as handle:  # window-only calls: the first warms up, the second is timed
            step("freeswim_uncond_int8-fp8", lambda: run("uncond", 999.0), handle.stats)
            step("freeswim_uncond_int8-fp8", lambda: run("uncond", 998.0), handle.stats)
        with diffattn.apply(model, FreeSwimConfig(base_height=base[0], base_width=base[1], backend=backend, cache_steps=None)) as handle:
            step("freeswim_nocache_dual", lambda: run("cond", 999.0), handle.stats, track_alloc=True)
            step("freeswim_nocache_dual", lambda: run("cond", 998.0), handle.stats)
    steps.close()

    dense, observe = results["dense"]["ms"], results["dense_observe"]["self_attention_ms"]
    window_self = results["freeswim_reuse"]["self_attention_ms"]
    results["summary"] = {
        "self_attention_speedup_window_vs_dense": observe / window_self,
        "self_attention_speedup_window_int8-fp8_vs_dense": observe / results["freeswim_uncond_int8-fp8"]["self_attention_ms"],
        "forward_speedup_reuse_vs_dense": dense / results["freeswim_reuse"]["ms"],
        "forward_speedup_uncond_vs_dense": dense / results["freeswim_uncond"]["ms"],
        "refresh_cost_vs_dense": results["freeswim_refresh"]["ms"] / dense,
        # one CFG step = conditional + unconditional forward; cache_steps=2 alternates refresh and reuse steps
        "step_speedup_cache2_vs_dense": 2 * dense / ((results["freeswim_refresh"]["ms"] + results["freeswim_reuse"]["ms"]) / 2
                                                     + results["freeswim_uncond"]["ms"]),
        "step_speedup_nocache_vs_dense": dense / results["freeswim_nocache_dual"]["ms"],
    }
    return results


# ------------------------------------------------------------------------------------------- end to end
WAN_14B = {**WAN_1_3B, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40}
UMT5_XXL = {"vocab_size": 256384, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
            "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128, "feed_forward_proj": "gated-gelu",
            "dense_act_fn": "gelu_new", "is_gated_act": True, "layer_norm_epsilon": 1e-6, "tie_word_embeddings": False}
TINY_UMT5 = {**UMT5_XXL, "vocab_size": 64, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4}
TINY_VAE = {"base_dim": 8, "z_dim": 16, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1}
E2E_SIZES = {"full": {"height": 1088, "width": 1920, "frames": 81, "text_len": 512},
             "tiny": {"height": 64, "width": 96, "frames": 9, "text_len": 16}}


class PhaseMeter:
    """Wall time and peak GPU memory of the pipeline's phases, cut where the transformer and the VAE are entered.

    Each phase starts with `torch.cuda.reset_peak_memory_stats` and ends with `max_memory_allocated`; a phase met
    again (e.g. several VAE decodes) adds its time and keeps the larger peak. Each transformer call is timed too.
    """

    def __init__(self, device: torch.device, prefix: str | None = None) -> None:
        self.cuda = device.type == "cuda"
        self.prefix = prefix  # of the phase names; by default stage1/stage2 from the VAE calls seen
        self.call_started = 0.0
        self.handles: list[Any] = []
        self.phases: dict[str, dict[str, float]] = {}
        self.calls: dict[str, list[float]] = {}
        self.current: str | None = None
        self.started = 0.0
        self.decodes = 0
        self.latents: list[torch.Tensor] = []

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def enter(self, name: str | None) -> None:
        now = self._now()
        if self.current is not None:
            entry = self.phases.setdefault(self.current, {"s": 0.0, "peak_gib": 0.0})
            entry["s"] += now - self.started
            if self.cuda:
                entry["peak_gib"] = max(entry["peak_gib"], torch.cuda.max_memory_allocated() / 2**30)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.current, self.started = name, self._now()

    def stage(self) -> str:
        if self.prefix:
            return self.prefix
        return "stage2" if "stage2_vae_encode" in self.phases or self.current == "stage2_vae_encode" else "stage1"

    def install(self, pipe: Any) -> None:
        """Wrap the VAE's encode/decode and time every transformer call (one pipeline, one run at a time)."""
        vae, transformer = pipe.vae, pipe.transformer
        encode, decode = vae.encode, vae.decode

        def timed_encode(*args, **kwargs):
            self.enter("stage2_vae_encode")
            try:
                return encode(*args, **kwargs)
            finally:
                self.enter("between")

        def timed_decode(z, *args, **kwargs):
            self.enter(f"{self.stage()}_vae_decode")
            self.latents.append(z.detach().float().cpu())
            try:
                return decode(z, *args, **kwargs)
            finally:
                self.decodes += 1
                self.enter("between")

        def before_forward(module, args, kwargs):
            name = f"{self.stage()}_denoise"
            if self.current != name:
                self.enter(name)
            self.call_started = self._now()

        def after_forward(module, args, kwargs, output):
            self.calls.setdefault(self.current, []).append(round((self._now() - self.call_started) * 1e3, 1))

        self.handles = [transformer.register_forward_pre_hook(before_forward, with_kwargs=True),
                        transformer.register_forward_hook(after_forward, with_kwargs=True)]
        vae.encode, vae.decode = timed_encode, timed_decode

    def uninstall(self, pipe: Any) -> None:
        self.enter(None)
        for handle in self.handles:
            handle.remove()
        vars(pipe.vae).pop("encode", None)
        vars(pipe.vae).pop("decode", None)


def build_e2e_pipeline(model: str, tiny: bool, device: torch.device) -> tuple[Any, dict[str, Any]]:
    """`FreeSwimPipeline` of random-weight components at the published configs (bf16 transformer and text encoder,
    float32 VAE as diffusers' Wan examples load it), built on `device`; the text encoder is timed on its own."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel

    from diffattn.pipelines.freeswim import FreeSwimPipeline

    dtype = torch.float32 if tiny else torch.bfloat16
    info: dict[str, Any] = {}
    torch.manual_seed(0)
    with torch.device(device):
        started = time.perf_counter()
        transformer = WanTransformer3DModel(**(TINY if tiny else WAN_14B if model == "14b" else WAN_1_3B)).eval()
        transformer = cast_like_from_pretrained(transformer, dtype)
        vae = AutoencoderKLWan(**(TINY_VAE if tiny else {})).eval()
        info["init_transformer_vae_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        try:
            from transformers import UMT5Config, UMT5EncoderModel

            text_encoder = UMT5EncoderModel(UMT5Config(**(TINY_UMT5 if tiny else UMT5_XXL))).eval().to(dtype)
            info["init_text_encoder_s"] = round(time.perf_counter() - started, 1)
        except Exception as exc:  # noqa: BLE001 - a broken transformers install: run without, and say so
            text_encoder, info["text_encoder_error"] = None, f"{type(exc).__name__}: {exc}"
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = FreeSwimPipeline(tokenizer=None, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe, info


def time_text_encoder(pipe: Any, text_len: int, device: torch.device) -> dict[str, Any]:
    """One UMT5 forward on random token ids (prompt and negative prompt): time and peak memory. The runs below get
    random prompt embeddings of the same shape instead (no tokenizer can be loaded offline)."""
    meter = PhaseMeter(device)
    ids = torch.randint(0, pipe.text_encoder.config.vocab_size, (2, text_len), device=device)
    with torch.no_grad():
        pipe.text_encoder(ids, attention_mask=torch.ones_like(ids))  # warm-up
        meter.enter("text_encoder")
        pipe.text_encoder(ids, attention_mask=torch.ones_like(ids))
        meter.enter(None)
    return meter.phases["text_encoder"]


def e2e_run(pipe: Any, meter: PhaseMeter, call: Any) -> tuple[Any, dict[str, Any]]:
    """Runs `call()` with `meter` installed; returns its output and the phases measured."""
    if meter.cuda:
        torch.cuda.empty_cache()
        resident = torch.cuda.memory_allocated() / 2**30
    meter.install(pipe)
    try:
        meter.enter("between")
        started = time.perf_counter()
        output = call()
        meter.enter(None)
        total = time.perf_counter() - started
    finally:
        meter.uninstall(pipe)
    result = {
        "total_s": round(total, 2),
        "phases": {k: {"s": round(v["s"], 2), "peak_gib": round(v["peak_gib"], 2)} for k, v in meter.phases.items()},
        "transformer_call_ms": meter.calls,
        "peak_gib": round(max((v["peak_gib"] for v in meter.phases.values()), default=0.0), 2),
    }
    if meter.cuda:
        result["resident_before_gib"] = round(resident, 2)
    return output, result


def extrapolate(calls: dict[str, list[float]], steps: int, strength: float, cache_steps: int | None,
                one_time_ms: float = 0.0) -> dict[str, Any]:
    """Denoising seconds of a `steps`-step run from the measured calls (two per step with CFG, the first step
    excluded as warm-up where there is more than one): stage 1 `steps` steps; stage 2 `int(steps * strength)`
    steps, a refresh step (full branch) every `cache_steps` and reuse steps in between, each costed as the last
    one of its kind measured (the first refresh also builds the window plan and, first in the process, tunes the
    kernel). `one_time_ms` (spent in the first refresh call, once per run) is taken out and added once."""
    out: dict[str, Any] = {"steps": steps}
    stage1 = calls.get("stage1_denoise") or calls.get("dense_denoise") or []
    step_ms = [a + b for a, b in zip(stage1[::2], stage1[1::2])]
    if step_ms:
        per = sum(step_ms[1:]) / len(step_ms[1:]) if len(step_ms) > 1 else step_ms[0]
        out["stage1_or_dense_step_ms"] = round(per, 1)
        out["stage1_or_dense_s"] = round(per * steps / 1e3, 1)
    stage2 = calls.get("stage2_denoise") or []
    pairs = [a + b for a, b in zip(stage2[::2], stage2[1::2])]
    every = cache_steps or 1
    refreshes_seen = [ms for i, ms in enumerate(pairs) if i % every == 0]
    reuses_seen = [ms for i, ms in enumerate(pairs) if i % every != 0] or refreshes_seen
    if refreshes_seen:
        refresh = refreshes_seen[-1] - (one_time_ms if len(refreshes_seen) == 1 else 0.0)
        reuse = reuses_seen[-1]
        out["stage2_first_refresh_step_ms"] = pairs[0]
        n = int(steps * strength)
        refreshes = n if cache_steps is None else -(-n // cache_steps)
        out.update(stage2_refresh_step_ms=refresh, stage2_reuse_step_ms=reuse, stage2_steps=n,
                   stage2_s=round((refreshes * refresh + (n - refreshes) * reuse + one_time_ms) / 1e3, 1))
    return out


def end_to_end(args: argparse.Namespace) -> dict[str, Any]:
    """The whole two-stage pipeline at 1088x1920x81 with random weights: default and memory-first FreeSwim, and
    dense sampling at the target size with the same steps (see `--e2e` in the module docstring)."""
    from diffusers import WanPipeline

    device = torch.device("cpu" if args.tiny else "cuda")
    size = E2E_SIZES["tiny" if args.tiny else "full"]
    pipe, report = build_e2e_pipeline(args.model, args.tiny, device)
    dtype = pipe.transformer.dtype
    report.update(benchmark="freeswim_e2e", **environment(device), model=f"Wan2.1-{args.model.upper()} random weights"
                  if not args.tiny else "tiny Wan", size=[size["height"], size["width"], size["frames"]],
                  steps=args.steps, note="prompt embeddings are random [1, text_len, 4096] tensors; the text encoder "
                  "is timed on its own (text_encoder) and is on the GPU when a run starts")
    report["text_encoder"] = time_text_encoder(pipe, size["text_len"], device) if pipe.text_encoder else {"s": 0.0, "peak_gib": 0.0}
    generator = torch.Generator(device).manual_seed(0)
    text_dim = pipe.transformer.config.text_dim
    embeds = torch.randn(2, 1, size["text_len"], text_dim, generator=generator, device=device, dtype=dtype)
    text = {"prompt_embeds": embeds[0], "negative_prompt_embeds": embeds[1], "guidance_scale": 5.0}
    base = {"base_height": 32, "base_width": 32, "backend": "reference"} if args.tiny else {}
    presets = ["default", "low"] if args.model == "1.3b" else ["low"]
    frames: dict[str, torch.Tensor] = {}
    latents: dict[str, torch.Tensor] = {}
    for preset in presets:
        if pipe.text_encoder is not None:
            pipe.text_encoder.to(device)
        config = FreeSwimConfig(**base, memory=preset)
        meter = PhaseMeter(device)
        output, run = e2e_run(pipe, meter, lambda config=config: pipe(
            height=size["height"], width=size["width"], num_frames=size["frames"], num_inference_steps=args.steps,
            generator=torch.Generator(device).manual_seed(1), output_type="pt", freeswim=config, **text))
        frames[preset], latents[preset] = output.frames.float().cpu(), meter.latents[-1]
        # page-locking the offloaded cache's host buffers happens once per process (inside the first refresh call)
        records = [rec for steps in output.stats.to_dict().values() for rec in steps.values()]
        run["cache_pin_s"] = round(sum(rec.get("cache_pin_ms", 0.0) for rec in records) / 1e3, 2)
        del output
        report[f"freeswim_{preset}"] = run
        report[f"freeswim_{preset}"]["extrapolated"] = extrapolate(meter.calls, args.full_steps, config.strength,
                                                                   config.cache_steps, one_time_ms=run["cache_pin_s"] * 1e3)
        print(f"freeswim memory={preset}: {json.dumps(report[f'freeswim_{preset}'], default=str)}", flush=True)
        save_json(report, args.out)
    if len(presets) == 2:
        report["low_vs_default"] = {
            "stage2_latent_max_abs": (latents["low"] - latents["default"]).abs().max().item(),
            "stage2_latent_rms": (latents["low"] - latents["default"]).pow(2).mean().sqrt().item(),
            "latent_rms": latents["default"].pow(2).mean().sqrt().item(),
            "frames_max_abs": (frames["low"] - frames["default"]).abs().max().item(),
            "frames_mean_abs": (frames["low"] - frames["default"]).abs().mean().item(),
        }
        low, default = report["freeswim_low"]["extrapolated"], report["freeswim_default"]["extrapolated"]
        if "stage2_s" in low and "stage2_s" in default:
            report["low_vs_default"]["stage2_time_ratio"] = round(low["stage2_s"] / default["stage2_s"], 3)
    if not args.no_dense:  # dense sampling at the target size, same step count, latents only (decode: as above)
        dense = WanPipeline(tokenizer=None, text_encoder=pipe.text_encoder, vae=pipe.vae, transformer=pipe.transformer,
                            scheduler=pipe.scheduler)
        dense.set_progress_bar_config(disable=True)
        meter = PhaseMeter(device, prefix="dense")
        _, report["dense"] = e2e_run(dense, meter, lambda: dense(
            height=size["height"], width=size["width"], num_frames=size["frames"], num_inference_steps=args.dense_steps,
            generator=torch.Generator(device).manual_seed(1), output_type="latent", **text).frames)
        report["dense"]["extrapolated"] = extrapolate(meter.calls, args.full_steps, 1.0, None)
    report["extrapolated_totals_s"] = e2e_totals(report)
    return report


def save_json(report: dict[str, Any], out: str | None) -> None:
    """Write `report` to `out` (nothing when None); called after every run so a cut-off run keeps what it measured."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2, default=str))


def e2e_table(report: dict[str, Any]) -> str:
    """Per run and phase: seconds and peak GiB (a short table for benchmarks/RESULTS.md)."""
    lines = ["| run | phase | s | peak GiB |", "|---|---|---|---|"]
    for name in ("freeswim_default", "freeswim_low", "dense"):
        for phase, entry in report.get(name, {}).get("phases", {}).items():
            lines.append(f"| {name} | {phase} | {entry['s']:.2f} | {entry['peak_gib']:.2f} |")
    lines.append(f"| text encoder alone | forward | {report['text_encoder']['s']:.2f} | {report['text_encoder']['peak_gib']:.2f} |")
    lines += ["", f"extrapolated to {report.get('extrapolated_totals_s')}", f"low vs default: {report.get('low_vs_default')}"]
    return "\n".join(lines)


def e2e_totals(report: dict[str, Any]) -> dict[str, Any]:
    """Whole-pipeline seconds at the extrapolated step count: denoising extrapolated, VAE phases as measured."""
    totals = {}
    for name in ("freeswim_default", "freeswim_low", "dense"):
        if name not in report:
            continue
        run, ext = report[name], report[name]["extrapolated"]
        vae = sum(v["s"] for k, v in run["phases"].items() if "vae" in k)
        if name == "dense":  # decoded like FreeSwim's stage 2 output: that decode time, untiled
            vae = report.get("freeswim_default", report.get("freeswim_low", {})).get("phases", {}).get(
                "stage2_vae_decode", {}).get("s", 0.0)
        totals[name] = round(ext.get("stage1_or_dense_s", 0.0) + ext.get("stage2_s", 0.0) + vae, 1)
    if "dense" in totals and "freeswim_default" in totals:
        totals["speedup_freeswim_default_vs_dense"] = round(totals["dense"] / totals["freeswim_default"], 2)
    if "dense" in totals and "freeswim_low" in totals:
        totals["speedup_freeswim_low_vs_dense"] = round(totals["dense"] / totals["freeswim_low"], 2)
    return totals


# -------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU with the reference kernel")
    parser.add_argument("--out", default=None, help="JSON results (default: benchmarks/results/freeswim.json; none with --tiny)")
    parser.add_argument("--no-flex", action="store_true", help="skip the compiled FlexAttention baseline")
    parser.add_argument("--rep-ms", type=int, default=2000, help="do_bench repetition time per attention case")
    parser.add_argument("--e2e", action="store_true", help="the whole two-stage FreeSwimPipeline end to end (see above)")
    parser.add_argument("--model", choices=("1.3b", "14b"), default="1.3b",
                        help="--e2e: Wan2.1 size; 14b runs the memory-first preset only")
    parser.add_argument("--steps", type=int, default=6,
                        help="--e2e: steps of the schedule run; stage 2 runs 70%% (6: refresh, reuse, refresh, reuse)")
    parser.add_argument("--dense-steps", type=int, default=2, help="--e2e: steps of the dense baseline at the target size")
    parser.add_argument("--full-steps", type=int, default=50, help="--e2e: step count the times are extrapolated to")
    parser.add_argument("--no-dense", action="store_true", help="--e2e: skip the dense baseline")
    args = parser.parse_args(argv)
    if args.e2e:
        if not args.tiny and not torch.cuda.is_available():
            parser.error("the end-to-end run needs a CUDA GPU; use --tiny for a CPU check")
        started = time.perf_counter()
        name = "freeswim_e2e.json" if args.model == "1.3b" else "freeswim_e2e_14b.json"
        args.out = args.out or (str(Path(os.environ["OUT"]) / name) if os.environ.get("OUT") else None)
        with dense_backend(torch.device("cpu" if args.tiny else "cuda")):
            report = end_to_end(args)
        report["seconds"] = round(time.perf_counter() - started, 1)
        save_json(report, args.out)
        print(json.dumps(report, indent=2, default=str))
        print(e2e_table(report))
        return 0

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
    for name in ("dense_sdpa", *WINDOW_CASES):
        speed = attention.get(f"speedup_{name}_vs_dense")
        relative = f"{speed:.2f}x" if speed else "1.00x" if name == "dense_sdpa" else "n/a"
        lines.append(f"| {name} | {ms(attention.get(f'{name}_ms'))} | {relative} |")
    lines += ["", "| forward | ms | self-attention ms | peak GiB |", "|---|---|---|---|"]
    for name in ("dense", "dense_observe", "freeswim_refresh", "freeswim_reuse", "freeswim_uncond", "freeswim_uncond_int8-fp8",
                 "freeswim_nocache_dual"):
        entry = forward[name]
        lines.append(f"| {name} | {ms(entry['ms'])} | {ms(entry.get('self_attention_ms'))} | {gib(entry)} |")
    lines += ["", "summary: " + ", ".join(f"{k}={v:.2f}" for k, v in forward["summary"].items())]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
