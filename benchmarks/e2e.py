"""End to end: the sparse methods on full-size Wan2.1 transformers, against dense cuDNN attention, in one run.

Models (random weights from the published configs, bf16, batch 1, diffusers' `WanTransformer3DModel`):

- Wan2.1-1.3B at 480p / 81 frames: latent 21x60x104, 32,760 tokens, 30 layers, 12 heads x 128;
- Wan2.1-14B at 720p / 81 frames: latent 21x90x160, 75,600 tokens, 40 layers, 40 heads x 128.

Measured per model, everything in the same process:

1. One forward: dense (the stock processors, cuDNN SDPA), then each method at its published default and at about
   90% sparsity (methods run their sparse phase: `dense_steps=0`; the published dense warm-up steps are a
   quality knob that does not change a sparse step's cost). Time (CUDA events, median of `--repeats` forwards
   after a warm-up; one forward for 14B, whose warm-up runs the first two blocks only), speedup over dense, the
   plans' density (from `handle.stats`), and the relative L1 / L2 error of the transformer output against dense.
2. A short loop (1.3B): `--steps` Euler steps of a flow-matching schedule, model-only, no CFG; total time and
   relative L1 error of the final latent against the dense loop. PAB (Wan preset) runs here: it reuses outputs
   across steps, so a single forward says nothing about it.
3. LiteAttention over a 50-step schedule (1.3B): skipped-tile fraction per step, *simulated* with the same
   latents at each of the 50 decreasing timesteps (a real trajectory would need a text encoder and VAE).
4. Quality proxy on structured inputs: q/k whose attention decays with spatio-temporal distance, as the Radial
   paper describes (Gaussian in frame and pixel distance, widths varying per head), at the 1.3B 480p shape; each
   method at its default against dense SDPA: relative L1 error, cosine similarity, density (LiteAttention: its
   second step, with the first step's marks).

5. LiteAttention's time where it really skips (1.3B shape): the structured q/k with its attention widths scaled
   from local to global, so that the marks skip from most tiles to none; per width, the second step's time (on the
   first step's marks) against our kernel's dense plan and cuDNN SDPA, and the kept-tile fraction.

With `--compile`, the one-forward section runs twice in the same process: eager, then with the transformer's blocks
compiled by `torch.compile` (inductor, regional: `compile_repeated_blocks`) for every variant (dense too); the
other sections are skipped. The first compiled forward of each variant (compilation included) is `first_s`.

Random weights give diffuse attention, so data-dependent methods (Sparge TopCdf, PSA thresholds, LiteAttention)
find little to skip on the models; the fixed-budget variants (top-k) and the structured proxy show their behaviour.

    pip install --no-deps -e . && python benchmarks/e2e.py          # one H200, about 6 minutes
    python benchmarks/e2e.py --tiny                                   # CPU check, under a minute
    python benchmarks/e2e.py --models wan2.1-1.3b-480p --variants "sparge 90%" radial --compile

Writes `benchmarks/results/e2e.json` (`e2e_tiny.json` with `--tiny`), or under `$OUT` when it is set, and prints a
Markdown table for `benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import diffattn
from diffattn.configs.sparse import BlockSparseConfig
from diffattn.environment import environment
from diffattn.geometry import Grid
from diffattn.processors.sparse import AttentionProbe
from diffattn.stats import timed

WAN_1_3B = {
    "patch_size": (1, 2, 2), "num_attention_heads": 12, "attention_head_dim": 128, "in_channels": 16,
    "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 8960, "num_layers": 30,
    "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024,
}
WAN_14B = {**WAN_1_3B, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40}
TINY = {**WAN_1_3B, "num_attention_heads": 2, "attention_head_dim": 32, "text_dim": 32, "ffn_dim": 64,
        "num_layers": 2, "rope_max_seq_len": 64}

# name -> (config, latent (frames, height, width), text tokens, timed forwards, run the loop and Lite schedule)
MODELS = {
    "wan2.1-1.3b-480p": (WAN_1_3B, (21, 60, 104), 512, 3, True),
    "wan2.1-14b-720p": (WAN_14B, (21, 90, 160), 512, 1, False),
}
TINY_MODELS = {"tiny-wan": (TINY, (4, 32, 32), 16, 1, True)}
LITE_SCHEDULE_STEPS = {"full": 50, "tiny": 6}
PROXY_WIDTHS = ((1.0, 2.0), (2.0, 8.0), (4.0, 4.0), (8.0, 16.0))
"""Quality proxy: (temporal, spatial) attention widths in tokens, cycled over heads (local to global)."""
LITE_WIDTH_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0, 1000.0)
"""LiteAttention skipping section: scales of `PROXY_WIDTHS`, from very local attention to diffuse."""


def common_settings(tiny: bool) -> dict[str, Any]:
    """Settings every variant shares: the sparse phase from the first step (the reference backend on the CPU check)."""
    return {"backend": "reference", "dense_steps": 0, "min_tokens": 256} if tiny else {"backend": "auto", "dense_steps": 0}


def methods(tiny: bool) -> dict[str, tuple[BlockSparseConfig, ...] | tuple]:
    """Method variants: published defaults (sparse phase), about 90% sparsity, and 8-bit attention (dense and sparse)."""
    common = common_settings(tiny)
    return {
        "sparge (top-k 0.5)": (diffattn.SpargeConfig(**common),),
        "sparge 90% (top-k 0.1)": (diffattn.SpargeConfig(topk=0.1, **common),),
        "sparge 90%, 128x128 blocks": (diffattn.SpargeConfig(topk=0.1, query_block=128, **common),),
        "radial (decay 0.2)": (diffattn.RadialConfig(**common),),
        "radial sparsest (decay 0.05, no sink)": (diffattn.RadialConfig(decay_factor=0.05, attention_sink=False, **common),),
        "psa (Wan 14B thresholds)": (diffattn.PSAConfig(**common),),
        "psa 90% (top-k, full blocks 10%)": (diffattn.PSAConfig(mode="topk", cutoffs=(0.1, 0.1, 0.1, 0.1), **common),),
        "lite (threshold -10)": (diffattn.LiteAttentionConfig(**common),),
        "lite (threshold -10, final-max marks)": (diffattn.LiteAttentionConfig(mark_criterion="final", **common),),
        "sparge 90% + lite": (diffattn.SpargeConfig(topk=0.1, **common), diffattn.LiteAttentionConfig(**common)),
        "quantized int8": (diffattn.QuantizedConfig(precision="int8", **common),),
        "quantized int8-fp8": (diffattn.QuantizedConfig(**common),),
        "sparge 90% int8-fp8": (diffattn.SpargeConfig(topk=0.1, precision="int8-fp8", **common),),
        "radial int8-fp8": (diffattn.RadialConfig(precision="int8-fp8", **common),),
    }


# ------------------------------------------------------------------------------------------------ helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def errors(out: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Relative L1 and L2 errors and cosine similarity (fp32)."""
    out, reference = out.float().flatten(), reference.float().flatten()
    diff = out - reference
    return {
        "rel_l1": float(diff.abs().sum() / reference.abs().sum()),
        "rel_l2": float(diff.norm() / reference.norm()),
        "cosine": float(F.cosine_similarity(out, reference, dim=0)),
    }


@contextmanager
def cudnn_attention(device: torch.device):
    """Prefer cuDNN SDPA for every dense attention call (the baseline and the methods' dense calls alike)."""
    if device.type != "cuda":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    try:
        context = sdpa_kernel(order, set_priority=True)
    except TypeError:  # torch without set_priority: cuDNN first among the allowed ones is not guaranteed
        context = sdpa_kernel(order)
    with context:
        yield


def build_model(config: dict, device: torch.device, dtype: torch.dtype, model_class: str = "WanTransformer3DModel") -> torch.nn.Module:
    """Random weights, cast like `from_pretrained(torch_dtype=dtype)`: the model's fp32-kept modules stay fp32.
    `model_class` names a diffusers model class (Wan's transformer by default)."""
    import diffusers

    torch.manual_seed(0)
    with torch.device(device):
        model = getattr(diffusers, model_class)(**config).eval().requires_grad_(False)
    model.to(dtype)
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, module in model.named_modules():
        if keep.intersection(name.split(".")):
            module.float()
    return model


def model_inputs(config: dict, latent: tuple[int, int, int], text_len: int, device, dtype) -> dict[str, torch.Tensor]:
    generator = torch.Generator(device).manual_seed(0)
    return {
        "hidden_states": torch.randn(1, config["in_channels"], *latent, generator=generator, device=device, dtype=dtype),
        "encoder_hidden_states": torch.randn(1, text_len, config["text_dim"], generator=generator, device=device, dtype=dtype),
        "timestep": torch.tensor([900.0], device=device),
    }


def forward(model: torch.nn.Module, inputs: dict[str, torch.Tensor], timestep: float | None = None) -> torch.Tensor:
    if timestep is not None:
        inputs = {**inputs, "timestep": torch.tensor([timestep], device=inputs["timestep"].device)}
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


@contextmanager
def first_blocks(model: torch.nn.Module, count: int):
    """Run the model with only its first `count` blocks (kernel warm-up at full shapes without a full forward)."""
    blocks = model.blocks
    model.blocks = torch.nn.ModuleList(list(blocks)[:count])
    try:
        yield
    finally:
        model.blocks = blocks


def compile_blocks(model: torch.nn.Module, device: torch.device) -> None:
    """Regional compilation of the transformer blocks (inductor on CUDA, the eager backend on the CPU check).

    Every variant changes the attention processors, which the compiled blocks guard on, so each variant (and its
    stats-on warm-up) compiles its own graphs: the recompile limit is raised to hold them all.
    """
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 4096
    model.compile_repeated_blocks(backend="inductor" if device.type == "cuda" else "eager")


_ATTENTION_KERNEL_NAMES = ("attn", "attention", "sdpa", "fmha", "flash", "cudnn")


def kernel_times(fn, names: tuple[str, ...] | None = _ATTENTION_KERNEL_NAMES, top: int | None = None) -> dict[str, float] | str:
    """GPU time (ms) per kernel and op in one call of `fn` (torch.profiler), longest first: by default the attention
    kernels and SDPA ops (which SDPA kernel really ran, eager or compiled, and the block-sparse kernel's share);
    `names=None` keeps every kernel (`--profile`: where a variant's time goes), `top` the longest few."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        totals = {
            avg.key[:120]: avg.device_time_total / 1e3
            for avg in prof.key_averages()
            if (names is None or any(k in avg.key.lower() for k in names)) and avg.device_time_total > 0
        }
    except Exception as exc:  # noqa: BLE001 - evidence, not the measurement: report why it is missing
        return f"profiler failed: {type(exc).__name__}: {exc}"[:300]
    return dict(sorted(totals.items(), key=lambda item: -item[1])[:top])


def density_of(handle) -> float | None:
    return handle.stats.summary()["mean_density"]


# ---------------------------------------------------------------------------------------------- sections
def bench_forward(name, model, inputs, variants, repeats, device, full_warmup, eager_dense=None, profile=False) -> dict[str, Any]:
    """One forward per variant: time, speedup, density, error against dense (and against `eager_dense`, the
    uncompiled dense output, when given: compiled graphs round differently from eager ones); with `profile`, the
    15 longest GPU kernels of one forward."""
    results: dict[str, Any] = {}

    def run_variant(label: str, configs: tuple) -> None:
        handle = diffattn.apply(model, *configs) if configs else None
        try:
            start = time.perf_counter()
            if full_warmup:  # also fills LiteAttention's marks, so timed forwards use them
                forward(model, inputs)
            else:
                with first_blocks(model, 2):
                    forward(model, inputs)
            density = density_of(handle) if handle is not None else 1.0
            if handle is not None:
                handle.stats.enabled = False
            forward(model, inputs)  # with stats off (under torch.compile: the graphs timed below)
            sync(device)
            first_s = time.perf_counter() - start
            times, out = [], None
            for _ in range(repeats):
                sync(device)
                ms, out = timed(lambda: forward(model, inputs), device)
                times.append(ms)
            entry = {"ms": sorted(times)[len(times) // 2], "density": density, "first_s": first_s}
            if device.type == "cuda":
                entry["attention_kernels_ms"] = kernel_times(lambda: forward(model, inputs))
                if profile:
                    entry["top_kernels_ms"] = kernel_times(lambda: forward(model, inputs), names=None, top=15)
            if configs:
                entry.update(errors(out, results["dense"]["out"]))
            else:
                entry["out"] = out
            if eager_dense is not None:
                entry["vs_eager_dense"] = errors(out, eager_dense)
            results[label] = entry
        finally:
            if handle is not None:
                handle.remove()
        print(f"  {name} {label}: {results[label]['ms']:.1f} ms, density {results[label]['density']}", flush=True)

    run_variant("dense", ())
    for label, configs in variants.items():
        run_variant(label, configs)
    dense_ms = results["dense"]["ms"]
    results["dense"].pop("out")
    for entry in results.values():
        entry["speedup"] = dense_ms / entry["ms"]
    return results


def flow_timesteps(steps: int, shift: float = 5.0) -> tuple[list[float], list[float]]:
    """The timesteps and sigmas of diffusers' FlowMatchEulerDiscreteScheduler (shift 5, Wan's 480p setting)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    return [float(t) for t in scheduler.timesteps], [float(s) for s in scheduler.sigmas]


def bench_loop(name, model, inputs, variants, steps, device) -> dict[str, Any]:
    """`steps` Euler steps from the same start, dense against each method (and PAB)."""
    timesteps, sigmas = flow_timesteps(steps)

    def loop() -> torch.Tensor:
        latents = inputs["hidden_states"]
        for t, s, s_next in zip(timesteps, sigmas, sigmas[1:]):
            velocity = forward(model, {**inputs, "hidden_states": latents}, t)
            latents = latents + (s_next - s) * velocity
        return latents

    results: dict[str, Any] = {}
    sync(device)
    dense_ms, dense = timed(loop, device)
    results["dense"] = {"ms": dense_ms, "speedup": 1.0}
    loop_variants = {**variants, "pab (Wan preset)": (diffattn.PABConfig(),)}
    for label, configs in loop_variants.items():
        with diffattn.apply(model, *configs) as handle:
            handle.stats.enabled = False
            sync(device)
            ms, out = timed(loop, device)
        results[label] = {"ms": ms, "speedup": dense_ms / ms, **errors(out, dense)}
        print(f"  {name} loop {label}: {ms:.1f} ms ({dense_ms / ms:.2f}x)", flush=True)
    return {"steps": steps, "timesteps": timesteps, "variants": results}


def lite_schedule(model, inputs, tiny: bool) -> dict[str, Any]:
    """LiteAttention's skipped-tile fraction at each step of a 50-step schedule (same latents every step)."""
    timesteps, _ = flow_timesteps(LITE_SCHEDULE_STEPS["tiny" if tiny else "full"])
    config = diffattn.LiteAttentionConfig(backend="reference" if tiny else "auto", **({"min_tokens": 256} if tiny else {}))
    per_step = []
    with diffattn.apply(model, config) as handle:
        for t in timesteps:
            forward(model, inputs, t)
        for step in range(len(timesteps)):
            tiles = sum(steps[step]["tiles"] for steps in handle.stats.to_dict().values() if step in steps)
            skipped = sum(steps[step]["skipped_tiles"] for steps in handle.stats.to_dict().values() if step in steps)
            per_step.append(skipped / tiles if tiles else None)
    total = [f for f in per_step if f is not None]
    return {
        "simulated": f"same latents at each of the {len(timesteps)} decreasing timesteps",
        "skipped_fraction_per_step": per_step,
        "mean_skipped_fraction": sum(total) / len(total) if total else None,
    }


def structured_qkv(grid: Grid, heads: int, dim: int, device, dtype, seed: int = 0, width_scale: float = 1.0):
    """q/k whose logits are `-(dt/sigma_t)^2 - (dy^2 + dx^2)/sigma_s^2` plus noise: attention decays with
    spatio-temporal distance (Radial's energy decay), each head with its own widths (`PROXY_WIDTHS` times
    `width_scale`); v random.

    With x = coordinates / widths, q = s[2x, 1, n_q] and k = s[x, -|x|^2, n_k] give q.k * scale =
    2 x_i.x_j - |x_j|^2 + noise = -|x_i - x_j|^2 + (row constant) + noise, for s^2 = 1 / scale.
    """
    generator = torch.Generator(device).manual_seed(seed)
    coords = grid.coords(device).float()
    coords = coords - coords.mean(0)
    s = (1.0 / math.sqrt(dim)) ** -0.5
    profiles = [(PROXY_WIDTHS[h % len(PROXY_WIDTHS)]) for h in range(heads)]
    widths = width_scale * torch.tensor([(t, s_, s_) for t, s_ in profiles], device=device)  # [H, 3]: frames, rows, columns
    x = coords[None] / widths[:, None, :]  # [H, N, 3]
    noise = dim - 4
    q = torch.cat([2 * x, torch.ones_like(x[..., :1]), 0.3 * torch.randn(*x.shape[:2], noise, generator=generator, device=device)], -1)
    k = torch.cat([x, -(x * x).sum(-1, keepdim=True), 0.3 * torch.randn(*x.shape[:2], noise, generator=generator, device=device)], -1)
    v = torch.randn(heads, grid.tokens, dim, generator=generator, device=device)
    return (s * q)[None].to(dtype), (s * k)[None].to(dtype), v[None].to(dtype)


def lite_skipping(grid: Grid, heads: int, dim: int, device, dtype, tiny: bool) -> dict[str, Any]:
    """LiteAttention's call time against the fraction of tiles its marks keep, on structured q/k whose attention
    widths are scaled from local (most tiles skipped) to global (none): the second step's call, which reads the
    first step's marks, against the same kernel on the dense plan (`threshold=-inf`: never marks) and cuDNN SDPA."""
    results, repeats = {}, 1 if tiny else 3
    never = diffattn.LiteAttentionConfig(threshold=-math.inf, **common_settings(tiny))
    lite = diffattn.LiteAttentionConfig(**common_settings(tiny))
    for scale in LITE_WIDTH_SCALES:
        qkv = structured_qkv(grid, heads, dim, device, dtype, width_scale=scale)
        dense = F.scaled_dot_product_attention(*qkv)
        entry: dict[str, Any] = {"sdpa_ms": _median_ms(functools.partial(F.scaled_dot_product_attention, *qkv), device, repeats)}
        for label, config in (("dense_plan", never), ("lite", lite)):
            times, kept, out = [], None, None
            for _ in range(repeats):
                ms, kept, out = _second_step(config, qkv, grid, device)
                times.append(ms)
            entry[f"{label}_ms"] = sorted(times)[len(times) // 2]
            entry[f"{label}_kept"] = kept
        entry.update(errors(out, dense))
        entry["lite_over_dense_plan"] = entry["lite_ms"] / entry["dense_plan_ms"]
        results[f"widths x{scale:g}"] = entry
        print(f"  lite skipping, widths x{scale:g}: kept {entry['lite_kept']:.3f}, {entry['lite_ms']:.2f} ms vs dense plan "
              f"{entry['dense_plan_ms']:.2f} ms ({entry['lite_over_dense_plan']:.3f}), sdpa {entry['sdpa_ms']:.2f} ms", flush=True)
    return results


def _second_step(config, qkv, grid: Grid, device) -> tuple[float, float, torch.Tensor]:
    """A fresh probe's second-step call (on the first step's marks): its time, kept-tile fraction and output."""
    probe = AttentionProbe((config,), family="wan")
    with torch.no_grad():
        probe.start_step()
        probe(*qkv, grid, block=1)
        probe.start_step()
        ms, out = timed(functools.partial(probe, *qkv, grid, block=1), device)
    return ms, probe.stats.to_dict()["blocks.1.attn1"][1]["density"], out


def _median_ms(fn, device, repeats: int) -> float:
    fn()
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            times.append(timed(fn, device)[0])
    return sorted(times)[len(times) // 2]


def quality_proxy(grid: Grid, heads: int, dim: int, variants, device, dtype) -> dict[str, Any]:
    """Each method at its default on structured inputs, against dense SDPA on the same inputs."""
    q, k, v = structured_qkv(grid, heads, dim, device, dtype)
    with torch.no_grad():
        dense = F.scaled_dot_product_attention(q, k, v)
    results = {}
    for label, configs in variants.items():
        probe = AttentionProbe(configs, family="wan")
        with torch.no_grad():
            probe.start_step()
            out = probe(q, k, v, grid, block=1)
            probe.start_step()  # LiteAttention: the second step runs on the first step's marks
            out = probe(q, k, v, grid, block=1)
        step = probe.stats.to_dict()["blocks.1.attn1"][1]
        results[label] = {**errors(out, dense), "density": step["density"]}
        print(f"  proxy {label}: rel L1 {results[label]['rel_l1']:.4f}, cosine {results[label]['cosine']:.5f}, "
              f"density {step['density']:.3f}", flush=True)
    return results


# --------------------------------------------------------------------------------------------------- main
def markdown(report: dict[str, Any]) -> str:
    lines = []
    for model, data in report["models"].items():
        for section, title in (("forward", "one forward"), ("forward_compiled", "one forward, compiled blocks")):
            if section not in data:
                continue
            lines += [f"### {model} ({data['tokens']:,} tokens), {title}", "",
                      "| variant | ms | speedup | density | rel L1 vs dense | rel L2 |", "|---|---|---|---|---|---|"]
            for label, entry in data[section].items():
                density = "n/a" if entry.get("density") is None else f"{entry['density']:.3f}"
                lines.append(f"| {label} | {entry['ms']:.1f} | {entry['speedup']:.2f}x | {density} | "
                             f"{entry.get('rel_l1', 0.0):.4f} | {entry.get('rel_l2', 0.0):.4f} |")
            lines.append("")
        if "loop" in data:
            loop = data["loop"]
            lines += ["", f"{loop['steps']}-step loop:", "", "| variant | ms | speedup | final latent rel L1 |", "|---|---|---|---|"]
            for label, entry in loop["variants"].items():
                lines.append(f"| {label} | {entry['ms']:.1f} | {entry['speedup']:.2f}x | {entry.get('rel_l1', 0.0):.4f} |")
        if "lite_schedule" in data:
            schedule = data["lite_schedule"]
            mean = schedule["mean_skipped_fraction"]
            lines += ["", f"LiteAttention over {len(schedule['skipped_fraction_per_step'])} steps (simulated): mean skipped-tile fraction "
                      f"{'n/a' if mean is None else f'{mean:.3f}'}"]
        lines.append("")
    if "quality_proxy" not in report:
        return "\n".join(lines)
    lines += ["### Quality proxy (structured q/k, energy decay)", "", "| method | rel L1 | cosine | density |", "|---|---|---|---|"]
    for label, entry in report["quality_proxy"].items():
        lines.append(f"| {label} | {entry['rel_l1']:.4f} | {entry['cosine']:.5f} | {entry['density']:.3f} |")
    lines += ["", "### LiteAttention where it skips (structured q/k, second step on the first step's marks)", "",
              "| widths | kept tiles | Lite ms | dense plan ms | Lite / dense plan | cuDNN SDPA ms | rel L1 |",
              "|---|---|---|---|---|---|---|"]
    for label, entry in report["lite_skipping"].items():
        lines.append(f"| {label} | {entry['lite_kept']:.3f} | {entry['lite_ms']:.2f} | {entry['dense_plan_ms']:.2f} | "
                     f"{entry['lite_over_dense_plan']:.3f} | {entry['sdpa_ms']:.2f} | {entry['rel_l1']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random Wan on the CPU (a check of this script)")
    parser.add_argument("--models", nargs="*", default=None, help=f"subset of {list(MODELS)}")
    parser.add_argument("--steps", type=int, default=None, help="steps of the short loop (default 4; 2 with --tiny)")
    parser.add_argument("--variants", nargs="*", default=None,
                        help="run only the method variants whose label contains one of these strings (dense always runs)")
    parser.add_argument("--compile", action="store_true",
                        help="run the one-forward section eager, then with compiled blocks (inductor); implies --forward-only")
    parser.add_argument("--forward-only", action="store_true", help="only the one-forward section")
    parser.add_argument("--profile", action="store_true", help="also record each variant's 15 longest GPU kernels")
    parser.add_argument("--out", default=None, help="output JSON (default: benchmarks/results/e2e[_tiny].json or $OUT)")
    args = parser.parse_args(argv)
    forward_only = args.forward_only or args.compile

    tiny = args.tiny
    device = torch.device("cpu" if tiny else "cuda")
    dtype = torch.float32 if tiny else torch.bfloat16
    catalogue = TINY_MODELS if tiny else {k: v for k, v in MODELS.items() if not args.models or k in args.models}
    variants = {label: configs for label, configs in methods(tiny).items()
                if not args.variants or any(wanted in label for wanted in args.variants)}
    report: dict[str, Any] = {
        "meta": {
            **environment(device),
            "dtype": str(dtype),
            "tiny": tiny,
            "compiled": args.compile,
        },
        "models": {},
    }
    start = time.perf_counter()
    with cudnn_attention(device):
        for name, (config, latent, text_len, repeats, extras) in catalogue.items():
            model = build_model(config, device, dtype)
            inputs = model_inputs(config, latent, text_len, device, dtype)
            grid = Grid(latent[0], latent[1] // 2, latent[2] // 2)
            data: dict[str, Any] = {
                "tokens": grid.tokens,
                "grid": [grid.frames, grid.height, grid.width],
                "timing": (
                    f"median of {repeats} forwards after a full warm-up forward (which also gives the density) and "
                    "one with stats off" if extras
                    else f"{repeats} forward after a warm-up through the first 2 blocks (which also gives the density) "
                    "and one full forward with stats off"
                ),
            }
            data["forward"] = bench_forward(name, model, inputs, variants, repeats, device, extras, profile=args.profile)
            if args.compile:
                eager_dense = forward(model, inputs)
                compile_blocks(model, device)
                data["forward_compiled"] = bench_forward(
                    f"{name} compiled", model, inputs, variants, repeats, device, extras, eager_dense, args.profile
                )
                del eager_dense
            if extras and not forward_only:
                data["loop"] = bench_loop(name, model, inputs, variants, args.steps or (2 if tiny else 4), device)
                data["lite_schedule"] = lite_schedule(model, inputs, tiny)
            report["models"][name] = data
            del model, inputs
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if not forward_only:
            proxy_config, proxy_latent = next(iter(catalogue.values()))[:2]
            proxy_grid = Grid(proxy_latent[0], proxy_latent[1] // 2, proxy_latent[2] // 2)
            defaults = {label: configs for label, configs in variants.items() if "90%" not in label and "sparsest" not in label}
            heads, dim = proxy_config["num_attention_heads"], proxy_config["attention_head_dim"]
            report["quality_proxy"] = quality_proxy(proxy_grid, heads, dim, defaults, device, dtype)
            report["lite_skipping"] = lite_skipping(proxy_grid, heads, dim, device, dtype, tiny)
    report["meta"]["seconds"] = time.perf_counter() - start
    write_report(report, Path(args.out) if args.out else default_out("e2e", tiny), markdown(report))
    return report


def default_out(stem: str, tiny: bool) -> Path:
    """`<stem>.json` (`<stem>_tiny.json` for a CPU check) under `$OUT` when it is set, else `benchmarks/results/`."""
    name = f"{stem}_tiny.json" if tiny else f"{stem}.json"
    folder = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).resolve().parent / "results"
    return folder / name


def write_report(report: dict[str, Any], out: Path, table: str) -> None:
    """Write the JSON report and its Markdown table beside it (`.md`), and print the table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"wrote {out} in {report['meta']['seconds']:.0f} s")


if __name__ == "__main__":
    main()
