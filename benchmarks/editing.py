"""Zero-shot video editing on a full-size Stable Diffusion 1.5 (random weights) at 512x512: FateZero, RealCraft, FRESCO.

The UNet, VAE, CLIP text encoder (and, for FRESCO, a ControlNet made from the UNet) are built from SD 1.5's
configs with random weights; cost does not depend on the weights. The input is the synthetic sample clip (a disc
moving over a textured background) at 512x512 with 8, 24 and 64 frames. Few steps keep the run short:

- FateZero: 5 DDIM inversion + 5 edit steps, classifier-free guidance 7.5, attention store "auto" (RAM up to the
  16 GiB budget, online beyond it; the mode used is recorded), blend words, spatial-temporal K/V ('mid').
- RealCraft: 5 inversion + 5 edit steps, online source (no stored maps), automatic object mask.
- FRESCO: 7-step schedule at strength 0.75 = 5 denoising steps (no inversion), ControlNet (canny), OpenCV DIS flow,
  feature optimisation (20 Adam iterations per up block) at every step, batches of 8 anchored frames.

Weights in bfloat16 (random float16 weights risk overflow), TF32 matmuls allowed (FRESCO's Gram matrices).
Per run: wall time (CUDA events, after one warm-up run of each pipeline), peak GPU memory
(`torch.cuda.max_memory_allocated`) and peak CPU RSS (sampled from /proc every 10 ms), plus the store mode and
size. Prints a table last and writes `$OUT/editing.json` (`benchmarks/results/editing.json` without `$OUT`).

    python benchmarks/editing.py            # H200: a few minutes
    python benchmarks/editing.py --tiny     # CPU check on the tiny models, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from diffattn.configs import FateZeroConfig, FrescoConfig, RealCraftConfig
from diffattn.environment import environment
from diffattn.pipelines.fatezero import FateZeroPipeline
from diffattn.pipelines.fresco import FrescoPipeline
from diffattn.pipelines.realcraft import RealCraftPipeline
from diffattn.stats import timed
from diffattn.testing import sample_clip

SOURCE = "a silver jeep driving down a curvy road in the countryside"
TARGET = "a silver truck driving down a curvy road in the countryside"
SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32,
}
SD15_VAE = {
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "sample_size": 512, "scaling_factor": 0.18215,
}
SD15_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
             "hidden_act": "quick_gelu", "projection_dim": 768}
SD15_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False,
                  "set_alpha_to_one": False, "steps_offset": 1}


# ------------------------------------------------------------------------------------------- models
def full_size_components(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """SD 1.5 components with random weights (built directly on `device`), a ControlNet from the UNet."""
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        DDIMScheduler,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from diffattn.testing import write_clip_tokenizer

    with tempfile.TemporaryDirectory() as folder:
        tokenizer = write_clip_tokenizer(folder)
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**SD15_VAE)
        text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), max_position_embeddings=77,
                                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                            pad_token_id=tokenizer.pad_token_id, **SD15_TEXT))
        controlnet = ControlNetModel.from_unet(unet)
    parts = {"unet": unet, "vae": vae, "text_encoder": text, "controlnet": controlnet}
    for module in parts.values():
        module.to(dtype=dtype).eval().requires_grad_(False)
    return {**parts, "tokenizer": tokenizer, "scheduler": DDIMScheduler(**SD15_SCHEDULER)}


def tiny_components() -> dict[str, Any]:
    from diffattn.testing import tiny_pipeline

    return tiny_pipeline("sd-controlnet").components


def pipelines(components: dict[str, Any]) -> dict[str, Any]:
    sd = {k: components[k] for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    built = {
        "fatezero": FateZeroPipeline(**sd),
        "realcraft": RealCraftPipeline(**sd),
        "fresco": FrescoPipeline(**sd, controlnet=components["controlnet"]),
    }
    for pipe in built.values():
        pipe.set_progress_bar_config(disable=True)
    return built


def edit_runner(name: str, pipe: Any, steps: int) -> Callable[[torch.Tensor], Any]:
    """A function editing a clip with `name`'s pipeline in `steps` inversion + edit steps (FRESCO: denoising steps)."""
    if name == "fatezero":
        config = FateZeroConfig(num_inference_steps=steps, blend_words=("jeep",))
        return lambda clip: pipe(clip, SOURCE, TARGET, config)
    if name == "realcraft":
        config = RealCraftConfig(num_inference_steps=steps)
        return lambda clip: pipe(clip, SOURCE, TARGET, config)
    schedule = round(steps / 0.75)  # strength 0.75 runs int(schedule * 0.75) == steps of them
    config = FrescoConfig(num_inference_steps=schedule, strength=0.75)
    return lambda clip: pipe(clip, TARGET, config, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------------------------- measuring
class PeakRSS:
    """Peak resident memory of this process over a region, sampled from /proc/self/statm every 10 ms."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.peak = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as statm:
                return int(statm.read().split()[1]) * self.page
        except OSError:  # not Linux: the process-lifetime peak
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._rss())

    @contextmanager
    def watch(self):
        self.peak, self._stop = self._rss(), threading.Event()
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self.peak = max(self.peak, self._rss())


def measure(name: str, run: Callable[[torch.Tensor], Any], clip: torch.Tensor, device: torch.device) -> dict[str, Any]:
    """One edit: time, peak GPU and CPU memory, what the pipeline reports; an out-of-memory error is recorded."""
    rss = PeakRSS()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    record: dict[str, Any] = {"pipeline": name, "frames": clip.shape[0], "size": list(clip.shape[-2:])}
    try:
        with rss.watch():
            ms, output = timed(lambda: run(clip), device)
            seconds = ms / 1e3
    except torch.cuda.OutOfMemoryError as exc:
        record.update(status="out of memory", error=str(exc).splitlines()[0])
        return record
    info = output.info
    record.update(
        status="ok",
        seconds=round(seconds, 3),
        peak_gpu_gib=round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None,
        peak_rss_gib=round(rss.peak / 2**30, 3),
        store_mode=info.get("store_mode"),
        store_gib=round(info["store_estimate_bytes"] / 2**30, 3) if info.get("store_mode") in ("ram", "disk") else 0.0,
        batches=len(info["batches"]) if "batches" in info else None,
        finite=bool(torch.isfinite(output.frames).all()),
    )
    return record


def table(records: list[dict[str, Any]]) -> str:
    lines = ["| pipeline | frames | time (s) | peak GPU (GiB) | peak CPU RSS (GiB) | store | status |", "|---|---|---|---|---|---|---|"]
    for r in records:
        store = f"{r.get('store_mode')} {r.get('store_gib', 0):.1f} GiB" if r.get("store_mode") else "-"
        lines.append(f"| {r['pipeline']} | {r['frames']} | {r.get('seconds', '-')} | {r.get('peak_gpu_gib', '-')} | "
                     f"{r.get('peak_rss_gib', '-')} | {store} | {r['status']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random models at 64x64 on the CPU (a quick check)")
    parser.add_argument("--frames", type=int, nargs="+", default=None, help="frame counts (default 8 24 64; tiny: 2 3)")
    parser.add_argument("--steps", type=int, default=None, help="inversion/edit steps (default 5; tiny: 2)")
    parser.add_argument("--pipelines", nargs="+", default=["fatezero", "realcraft", "fresco"])
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    size = 64 if args.tiny else 512
    frames = args.frames or ([2, 3] if args.tiny else [8, 24, 64])
    steps = args.steps or (2 if args.tiny else 5)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        torch.set_num_threads(1)  # tiny models: threads only add contention
    components = tiny_components() if args.tiny else full_size_components(device, torch.bfloat16)
    built = pipelines(components)
    for pipe in built.values():
        pipe.to(device)
    records = []
    for name in args.pipelines:
        run = edit_runner(name, built[name], steps)
        warm = run(sample_clip(2, size, size))  # warm-up: kernels, cuDNN autotuning, allocator
        del warm
        for count in frames:
            record = measure(name, run, sample_clip(count, size, size), device)
            print(json.dumps(record), flush=True)
            records.append(record)
    settings = {"size": size, "steps": steps, "dtype": "bfloat16" if device.type == "cuda" else "float32",
                "source_prompt": SOURCE, "target_prompt": TARGET}
    result = {"environment": environment(device), "settings": settings, "runs": records}
    out = Path(os.environ.get("OUT", Path(__file__).resolve().parent / "results"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "editing.json").write_text(json.dumps(result, indent=2))
    print(table(records))
    print(f"wrote {out / 'editing.json'}")
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
