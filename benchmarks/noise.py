"""Overheads of the noise methods: FreeNoise against plain sampling, FreeInit per iteration, InitNO's optimisation.

GPU (default; full-size architectures with random weights built from their configs, fp16/bf16, batch 1, CFG 2):

- FreeNoise: one AnimateDiff UNet forward (SD 1.5 UNet + motion adapter v1.5-2, 512x512, 32 frames) plain vs
  with 16-frame windows every 4 frames; FreeNoise alone at 64 frames (beyond the adapter's 32 positions, where the
  plain model cannot run). Check: 16 frames in one window equal the plain forward bitwise.
- FreeInit: one Wan2.1-1.3B transformer forward at 480x832, 81 frames (21x60x104 latent), and the re-noising +
  filtering + frequency mixing between iterations on that latent; an iteration costs `steps x 2` forwards plus the
  mixing (plus one prompt encoding). Check: a pass-all filter returns the re-noised latent.
- InitNO: optimiser steps (conditional SD 1.5 UNet forward + backward with the attention store at 16x16) against a
  plain guided step; the worst case is the full budget of 5 x 10 + 50 steps. Check: stored maps sum to one.

CPU (`--tiny`): the same three measurements on the built-in tiny pipelines (whole `pipe(...)` calls).

    python benchmarks/noise.py           # H200: ~3 min; writes $OUT/noise.json (benchmarks/results/ without $OUT)
    python benchmarks/noise.py --tiny    # CPU: ~1 min; writes benchmarks/results/noise.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import diffattn
from diffattn.configs import FreeInitConfig, FreeNoiseConfig, InitNOConfig
from diffattn.environment import environment
from diffattn.noise import frequency_mix, low_pass_filter, renoise

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768, attention_head_dim=8,
)
MOTION_ADAPTER_V15_2 = dict(
    block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2, motion_mid_block_layers_per_block=1,
    motion_num_attention_heads=8, motion_norm_num_groups=32, motion_max_seq_length=32, use_motion_mid_block=True,
)
WAN_1_3B = dict(
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    eps=1e-6, rope_max_seq_len=1024,
)




@dataclass(frozen=True)
class Scale:
    """Architectures and sizes of the full-size measurements (`FULL`), or a toy copy that runs them on a CPU."""

    unet: dict[str, Any]
    adapter: dict[str, Any]
    wan: dict[str, Any]
    text_dim: int
    latent: int  # SD latent side (64 = 512 px)
    frames: tuple[int, int, int]  # AnimateDiff: one window, plain/FreeNoise comparison, FreeNoise only
    window: tuple[int, int]
    wan_latent: tuple[int, int, int, int, int]
    wan_text: int
    maps: tuple[int, int]
    dtype: torch.dtype
    wan_dtype: torch.dtype


FULL = Scale(SD15_UNET, MOTION_ADAPTER_V15_2, WAN_1_3B, 768, 64, (16, 32, 64), (16, 4), (1, 16, 21, 60, 104), 512,
             (16, 16), torch.float16, torch.bfloat16)
TOY = Scale(
    {**SD15_UNET, "block_out_channels": (32, 32, 64, 64), "cross_attention_dim": 32, "attention_head_dim": 2,
     "norm_num_groups": 8, "layers_per_block": 1},
    {**MOTION_ADAPTER_V15_2, "block_out_channels": (32, 32, 64, 64), "motion_num_attention_heads": 2,
     "motion_norm_num_groups": 8, "motion_layers_per_block": 1},
    {**WAN_1_3B, "num_attention_heads": 2, "attention_head_dim": 16, "text_dim": 32, "ffn_dim": 64, "num_layers": 2},
    32, 16, (4, 8, 40), (4, 2), (1, 16, 3, 8, 8), 16, (4, 4), torch.float32, torch.float32,
)


# ------------------------------------------------------------------------------------------- timing
def time_ms(fn: Callable[[], Any], device: torch.device, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of `fn` in ms (CUDA events on the GPU, perf_counter on the CPU), after `warmup` runs."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def paired_ms(plain: Callable[[], Any], method: Callable[[], Any], applied: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """CPU medians of `plain()` and of `method()` inside `with applied():`, runs alternated so load drift on a
    shared machine hits both alike (one warm-up each)."""
    cpu = torch.device("cpu")
    plain_times, method_times = [], []
    for index in range(repeats + 1):
        plain_ms = time_ms(plain, cpu, repeats=1, warmup=0)
        with applied():
            method_ms = time_ms(method, cpu, repeats=1, warmup=0)
        if index:
            plain_times.append(plain_ms)
            method_times.append(method_ms)
    return statistics.median(plain_times), statistics.median(method_times)


def bench_ms(fn: Callable[[], Any], device: torch.device) -> float:
    """Median of a short op: triton's do_bench on the GPU, ten timed runs on the CPU."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median"))
    return time_ms(fn, device, repeats=10)


def mixing(shape: tuple[int, ...], scheduler: Any, device: torch.device) -> Callable[[], torch.Tensor]:
    """FreeInit's work between two iterations on latents `[B, C, F, H, W]`: re-noise, draw, filter, mix."""
    sample = torch.randn(shape, device=device)
    noise = torch.randn(shape, device=device)
    lpf = low_pass_filter(tuple(shape[-3:]), device=device)

    def run() -> torch.Tensor:
        fresh = torch.randn(shape, device=device)
        return frequency_mix(renoise(scheduler, sample, noise), fresh, lpf)

    return run


# -------------------------------------------------------------------------------------------- GPU
def architecture_freenoise(device: torch.device, scale: Scale) -> dict[str, Any]:
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    with torch.device(device):
        unet = UNetMotionModel.from_unet2d(UNet2DConditionModel(**scale.unet), MotionAdapter(**scale.adapter))
    unet = unet.to(device, scale.dtype).eval()

    def inputs(frames: int) -> dict[str, Any]:
        return {
            "sample": torch.randn(2, 4, frames, scale.latent, scale.latent, device=device, dtype=scale.dtype),
            "timestep": torch.tensor(500, device=device),
            "encoder_hidden_states": torch.randn(2 * frames, 77, scale.text_dim, device=device, dtype=scale.dtype),
        }

    one, compared, long = scale.frames
    config = FreeNoiseConfig(context_length=scale.window[0], context_stride=scale.window[1])
    result: dict[str, Any] = {"model": f"SD1.5-style UNet + motion adapter (UNetMotionModel), {scale.dtype}, "
                                       f"{8 * scale.latent} px, CFG batch 2, windows {scale.window}"}
    with torch.no_grad():
        short = inputs(one)
        plain = unet(**short).sample
        with diffattn.apply(unet, config):
            same = unet(**short).sample
        result["check_one_window_equals_plain"] = bool(torch.equal(plain, same))
        del plain, same
        x = inputs(compared)
        result[f"plain_{compared}_frames_ms"] = time_ms(lambda: unet(**x), device)
        with diffattn.apply(unet, config):
            result[f"freenoise_{compared}_frames_ms"] = time_ms(lambda: unet(**x), device)
            x_long = inputs(long)
            result[f"freenoise_{long}_frames_ms"] = time_ms(lambda: unet(**x_long), device)
    result[f"freenoise_overhead_{compared}_frames"] = result[f"freenoise_{compared}_frames_ms"] / result[f"plain_{compared}_frames_ms"] - 1
    return result


def _wan_forward_ms(device: torch.device, scale: Scale) -> float:
    """One Wan transformer forward at `scale.wan_latent` (the model is freed on return)."""
    from diffusers import WanTransformer3DModel

    with torch.device(device):
        model = WanTransformer3DModel(**scale.wan)
    model = model.to(device, scale.wan_dtype).eval()
    x = torch.randn(scale.wan_latent, device=device, dtype=scale.wan_dtype)
    text = torch.randn(1, scale.wan_text, scale.wan["text_dim"], device=device, dtype=scale.wan_dtype)
    t = torch.tensor([500.0], device=device)
    with torch.no_grad():
        return time_ms(lambda: model(hidden_states=x, timestep=t, encoder_hidden_states=text), device)


def architecture_freeinit(device: torch.device, scale: Scale) -> dict[str, Any]:
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    latent = scale.wan_latent
    forward_ms = _wan_forward_ms(device, scale)
    flow = FlowMatchEulerDiscreteScheduler(shift=3.0)
    mix_ms = bench_ms(mixing(latent, flow, device), device)
    animatediff_latent = (1, 4, scale.frames[0], scale.latent, scale.latent)
    animatediff_mix_ms = bench_ms(mixing(animatediff_latent, DDIMScheduler(beta_schedule="linear"), device), device)
    sample, noise = torch.randn(latent, device=device), torch.randn(latent, device=device)
    renoised = renoise(flow, sample, noise)
    passed = frequency_mix(renoised, torch.randn_like(renoised), torch.ones(latent[-3:], device=device))
    iteration_ms = 50 * 2 * forward_ms + mix_ms
    return {
        "model": f"Wan2.1-1.3B-style transformer {scale.wan['num_layers']} layers, {scale.wan_dtype}, latent {latent}",
        "check_pass_all_returns_renoised": bool(torch.allclose(passed, renoised, atol=1e-4)),
        "transformer_forward_ms": forward_ms,
        "mixing_ms_wan_latent": mix_ms,
        "mixing_ms_animatediff_latent": animatediff_mix_ms,
        "iteration_ms_50_steps_cfg": iteration_ms,
        "mixing_share_of_iteration": mix_ms / iteration_ms,
    }


def architecture_initno(device: torch.device, scale: Scale) -> dict[str, Any]:
    from diffusers import UNet2DConditionModel

    from diffattn.noise.initno import attention_scores, optimise_noise

    with torch.device(device):
        unet = UNet2DConditionModel(**scale.unet)
    unet = unet.to(device, scale.dtype).eval().requires_grad_(False)
    cond = torch.randn(1, 77, scale.text_dim, device=device, dtype=scale.dtype)
    t = torch.tensor(981, device=device)
    noise = torch.randn(1, 4, scale.latent, scale.latent, device=device, dtype=scale.dtype)
    with torch.no_grad():
        batch, texts = torch.cat([noise, noise]), torch.cat([cond, cond])
        guided_step_ms = time_ms(lambda: unet(batch, t, encoder_hidden_states=texts), device)
    with diffattn.apply(unet, InitNOConfig()) as handle:
        store = handle.methods[0].store

        def score(latents):
            with store.recording(scale.maps):
                unet(latents, t, encoder_hidden_states=cond)
                return attention_scores(store.maps("cross")[0].float(), store.maps("self")[0].float(), [2, 5])

        with store.recording(scale.maps), torch.no_grad():
            unet(noise, t, encoder_hidden_states=cond)
            sums = store.maps("cross").sum(-1).float()
        steps = 10
        optimise_ms = time_ms(lambda: optimise_noise(noise, score, max_steps=steps, tau_cross=0.0), device, repeats=2)
    step_ms = optimise_ms / steps
    budget = InitNOConfig().optimiser_budget
    return {
        "model": f"SD1.5-style UNet, {scale.dtype}, {8 * scale.latent} px, maps at {scale.maps}",
        "check_maps_sum_to_one": bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-2)),
        "guided_step_ms": guided_step_ms,
        "optimiser_step_ms": step_ms,
        "worst_case_optimisation_ms": step_ms * budget,
        "sampling_50_steps_ms": 50 * guided_step_ms,
        "worst_case_vs_sampling": step_ms * budget / (50 * guided_step_ms),
    }


def architecture_measurements(device: torch.device, scale: Scale) -> dict[str, Any]:
    results = {}
    for name, measure in (("freenoise", architecture_freenoise), ("freeinit", architecture_freeinit), ("initno", architecture_initno)):
        results[name] = measure(device, scale)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


# -------------------------------------------------------------------------------------------- CPU
def tiny_measurements(repeats: int) -> dict[str, Any]:
    from diffattn.pipelines.initno import InitNOPipeline
    from diffattn.testing import tiny_call_kwargs, tiny_pipeline

    results: dict[str, Any] = {}
    animatediff = tiny_pipeline("animatediff")
    call = lambda: animatediff(**tiny_call_kwargs("animatediff", num_frames=32, num_inference_steps=4))  # noqa: E731
    config = FreeNoiseConfig(context_length=8, context_stride=4)
    plain, windowed = paired_ms(call, call, lambda: diffattn.apply(animatediff, config), repeats)
    results["freenoise"] = {"model": "tiny AnimateDiff, 32 frames, 8-frame windows every 4, 4 steps",
                            "plain_ms": plain, "freenoise_ms": windowed, "overhead": windowed / plain - 1}

    call = lambda: animatediff(**tiny_call_kwargs("animatediff", num_inference_steps=4))  # noqa: E731
    plain, total = paired_ms(call, call, lambda: diffattn.apply(animatediff, FreeInitConfig(num_iters=3)), repeats)
    mix = bench_ms(mixing((1, 4, 8, 8, 8), animatediff.scheduler, torch.device("cpu")), torch.device("cpu"))
    results["freeinit"] = {"model": "tiny AnimateDiff, 8 frames, 4 steps, 3 iterations", "plain_ms": plain,
                           "freeinit_ms": total, "per_iteration_ms": total / 3, "mixing_ms": mix, "cost_vs_plain": total / plain}

    sd = tiny_pipeline("sd")
    pipe = InitNOPipeline.from_pipe(sd)
    pipe.set_progress_bar_config(disable=True)
    config = InitNOConfig(words=("squirrel", "burger"))
    summary: dict[str, Any] = {}
    plain, total = paired_ms(
        lambda: sd(**tiny_call_kwargs("sd")),
        lambda: summary.update(pipe(**tiny_call_kwargs("sd"), initno=config).initno),
        contextlib.nullcontext, repeats,
    )
    results["initno"] = {"model": "tiny SD 1.x UNet, 64x64 px, maps at 8x8, default budget", "plain_ms": plain,
                         "initno_ms": total, "optimiser_steps": summary["optimiser_steps"],
                         "ms_per_optimiser_step": (total - plain) / max(summary["optimiser_steps"], 1),
                         "succeeded": summary["succeeded"]}
    return results


# --------------------------------------------------------------------------------------------- main
def _table(results: dict[str, Any]) -> str:
    rows = ["| measurement | value |", "|---|---|"]
    for method, values in results.items():
        for key, value in values.items():
            if key != "model":
                shown = f"{value:.3f}" if isinstance(value, float) else str(value)
                rows.append(f"| {method}.{key} | {shown} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU measurements on the built-in tiny pipelines")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads with --tiny (tiny ops gain nothing from more)")
    parser.add_argument("--out", default=None, help="JSON path (default: $OUT/noise.json, else benchmarks/results/noise.json)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    if args.tiny:
        torch.set_num_threads(args.threads)
        device = torch.device("cpu")
        results = tiny_measurements(args.repeats)
        # the full-size code path at toy sizes, so a CPU run checks it (its timings mean nothing)
        results.update({f"toy_{k}": v for k, v in architecture_measurements(device, TOY).items()})
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA device: the full-size run needs a GPU; use --tiny on a CPU")
        device = torch.device("cuda")
        results = architecture_measurements(device, FULL)
    report = {
        **environment(device),
        "mode": "tiny" if args.tiny else "full-size",
        "results": results,
    }
    default_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") and not args.tiny else Path(__file__).parent / "results"
    out = Path(args.out) if args.out else default_dir / "noise.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"{report['mode']} on {report['device']}, torch {report['torch']}; JSON: {out}")
    print(_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
