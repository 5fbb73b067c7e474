"""One full-size forward of each image transformer (Flux.1-dev, Flux.2-dev, QwenImage, SD3.5-Large) with Sparge.

Random weights (bf16, batch 1, one conditional call) in the published sizes as set below, built directly from the
diffusers classes; dense attention (the stock processors, cuDNN SDPA first) against Sparge at top-k 0.5 and at about
90% sparsity (top-k 0.1), and PSA at about 90% (full blocks for the top 10%), all in their sparse phase
(`dense_steps=0`). Radial does not apply to images (it refuses them). `--scale 2` runs every model at twice its
published side (4x the image tokens), where the `window` variants (FreeSwim-style inward windows, alone and with
Sparge inside the window) act; at scale 1 an image is no larger than the window's training size, so they are left
out. Time, density, error against dense and the
attention kernels that ran come from `benchmarks/e2e.py`'s forward section; `--compile` repeats it with the blocks
compiled (inductor, regional). Random weights give diffuse attention, so the errors say nothing about image quality.

| model | resolution | image tokens | text tokens | blocks |
|---|---|---|---|---|
| flux1-dev | 1024 x 1024 | 4,096 (64 x 64) | 512 | 19 dual + 38 single, 24 heads x 128 |
| flux2-dev | 1024 x 1024 | 4,096 (64 x 64) | 512 | 8 dual + 48 single, 48 heads x 128 |
| qwenimage | 1328 x 1328 | 6,889 (83 x 83) | 256 | 60 dual, 24 heads x 128 |
| sd3.5-large | 1024 x 1024 | 4,096 (64 x 64) | 333 (77 CLIP + 256 T5) | 38 joint, 38 heads x 64 |

    pip install --no-deps -e . && python benchmarks/image_dits.py --compile     # one H200
    python benchmarks/image_dits.py --scale 2                                   # twice the side: window variants
    python benchmarks/image_dits.py --tiny                                      # CPU check of this script

Writes `image_dits.json` (`image_dits_x2.json` at scale 2) and `.md` under `$OUT` when it is set (else
`benchmarks/results/`), and prints the table.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any

import torch

import diffattn
from diffattn.environment import environment

from e2e import bench_forward, compile_blocks, cudnn_attention, default_out, forward, markdown, write_report

Inputs = Callable[[torch.device, torch.dtype, int], dict[str, Any]]

TEXT = 512


def _randn(*shape: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator(device).manual_seed(0), device=device, dtype=dtype)


def _flux_ids(side: int, text: int, axes: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """`img_ids` (0, row, column[, 0]) and `txt_ids` as the Flux (3 axes) and Flux 2 (4 axes, batched) pipelines build."""
    zero, rows = torch.zeros(1), torch.arange(side, dtype=torch.float32)
    if axes == 3:
        return torch.cartesian_prod(zero, rows, rows).to(device), torch.zeros(text, 3, device=device)
    img = torch.cartesian_prod(zero, rows, rows, zero)[None]
    txt = torch.cartesian_prod(zero, zero, zero, torch.arange(text, dtype=torch.float32))[None]
    return img.to(device), txt.to(device)


def _flux1(device: torch.device, dtype: torch.dtype, scale: int) -> dict[str, Any]:
    side = 64 * scale
    img_ids, txt_ids = _flux_ids(side, TEXT, 3, device)
    return {
        "hidden_states": _randn(1, side * side, 64, device=device, dtype=dtype),
        "encoder_hidden_states": _randn(1, TEXT, 4096, device=device, dtype=dtype),
        "pooled_projections": _randn(1, 768, device=device, dtype=dtype),
        "timestep": torch.tensor([0.9], device=device),
        "img_ids": img_ids, "txt_ids": txt_ids,
        "guidance": torch.tensor([3.5], device=device),
    }


def _flux2(device: torch.device, dtype: torch.dtype, scale: int) -> dict[str, Any]:
    side = 64 * scale
    img_ids, txt_ids = _flux_ids(side, TEXT, 4, device)
    return {
        "hidden_states": _randn(1, side * side, 128, device=device, dtype=dtype),
        "encoder_hidden_states": _randn(1, TEXT, 15360, device=device, dtype=dtype),
        "timestep": torch.tensor([0.9], device=device),
        "img_ids": img_ids, "txt_ids": txt_ids,
        "guidance": torch.tensor([4.0], device=device),
    }


def _qwenimage(device: torch.device, dtype: torch.dtype, scale: int) -> dict[str, Any]:
    side = 83 * scale
    return {
        "hidden_states": _randn(1, side * side, 64, device=device, dtype=dtype),
        "encoder_hidden_states": _randn(1, 256, 3584, device=device, dtype=dtype),
        "timestep": torch.tensor([0.9], device=device),
        "img_shapes": [[(1, side, side)]],
    }


def _sd35(device: torch.device, dtype: torch.dtype, scale: int) -> dict[str, Any]:
    return {
        "hidden_states": _randn(1, 16, 128 * scale, 128 * scale, device=device, dtype=dtype),
        "encoder_hidden_states": _randn(1, 77 + 256, 4096, device=device, dtype=dtype),
        "pooled_projections": _randn(1, 2048, device=device, dtype=dtype),
        "timestep": torch.tensor([900.0], device=device),
    }


# name -> (diffusers class, config (the rest: the class defaults, which are these models' sizes), inputs at a side
# multiple); names carry the published side, `--scale` multiplies it
MODELS: dict[str, tuple[str, dict[str, Any], Inputs]] = {
    "flux1-dev-1024": ("FluxTransformer2DModel", {"guidance_embeds": True}, _flux1),
    "flux2-dev-1024": ("Flux2Transformer2DModel", {}, _flux2),
    "qwenimage-1328": ("QwenImageTransformer2DModel", {}, _qwenimage),
    "sd3.5-large-1024": ("SD3Transformer2DModel", {
        "num_layers": 38, "num_attention_heads": 38, "attention_head_dim": 64, "caption_projection_dim": 2432,
        "pos_embed_max_size": 192, "qk_norm": "rms_norm", "joint_attention_dim": 4096, "pooled_projection_dim": 2048,
    }, _sd35),
}
TINY_FAMILIES = ("flux", "flux2", "qwenimage", "sd3")
TINY_LATENT = (32, 64)
"""Latent height x width of the tiny runs, whatever `--scale` (a 16 x 32 token grid)."""
TINY_WINDOW_BASE = {"base_height": 128, "base_width": 256}
"""A training size for the tiny models half their side (8 x 16 tokens), so the window acts on them."""


def variants(tiny: bool, scale: int) -> dict[str, tuple]:
    common = {"backend": "reference", "dense_steps": 0, "min_tokens": 256} if tiny else {"backend": "auto", "dense_steps": 0}
    chosen = {
        "sparge (top-k 0.5)": (diffattn.SpargeConfig(**common),),
        "sparge 90% (top-k 0.1)": (diffattn.SpargeConfig(topk=0.1, **common),),
        "psa 90% (top-k, full blocks 10%)": (diffattn.PSAConfig(mode="topk", cutoffs=(0.1, 0.1, 0.1, 0.1), **common),),
    }
    if tiny or scale > 1:  # the window acts only beyond the training size (the published size of each model)
        window = diffattn.WindowConfig(**common, **(TINY_WINDOW_BASE if tiny else {}))
        chosen["window (training-size inward window)"] = (window,)
        chosen["window + sparge top-k 0.5 inside"] = (window, diffattn.SpargeConfig(**common))
    return chosen


def build(class_name: str, config: dict[str, Any], device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Random weights created in `dtype` on the device (Flux.2-dev would not fit in fp32), fp32-kept modules in fp32."""
    import diffusers

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = getattr(diffusers, class_name)(**config).eval().requires_grad_(False)
    finally:
        torch.set_default_dtype(default)
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, module in model.named_modules():
        if keep.intersection(name.split(".")):
            module.float()
    return model


def compile_model(model: torch.nn.Module, device: torch.device) -> None:
    """Regional compilation; SD3 declares no repeated blocks, so its joint block class is named here."""
    if not getattr(model, "_repeated_blocks", None):
        model._repeated_blocks = [type(model.transformer_blocks[0]).__name__]
    compile_blocks(model, device)


def catalogue(tiny: bool, wanted: list[str] | None, scale: int = 1) -> dict[str, Callable[[torch.device, torch.dtype], tuple]]:
    """name (`x<scale>` appended beyond scale 1) -> `(device, dtype) -> (model, inputs)`."""
    suffix = f" x{scale}" if scale > 1 else ""
    if tiny:
        from diffattn.testing import tiny_denoiser, tiny_denoiser_inputs

        return {f"tiny-{family}{suffix}": lambda device, dtype, family=family: (  # one size: SD3's tiny positions stop at 32
            tiny_denoiser(family), tiny_denoiser_inputs(family, height=TINY_LATENT[0], width=TINY_LATENT[1]))
            for family in TINY_FAMILIES}
    return {  # in the order asked for, so a time-bounded run measures the ones that matter first
        f"{name}{suffix}": lambda device, dtype, spec=MODELS[name]: (build(spec[0], spec[1], device, dtype),
                                                                   spec[2](device, dtype, scale))
        for name in (wanted or MODELS)
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny image transformers on the CPU (a check of this script)")
    parser.add_argument("--models", nargs="*", default=None, choices=list(MODELS),
                        help="subset to run, in this order (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per variant (median)")
    parser.add_argument("--compile", action="store_true", help="repeat the forwards with compiled blocks (inductor)")
    parser.add_argument("--scale", type=int, default=1, choices=(1, 2),
                        help="image side as a multiple of the published one; at 2 the window variants run too")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    chosen = variants(args.tiny, args.scale)
    report: dict[str, Any] = {"meta": {**environment(device), "dtype": str(dtype), "tiny": args.tiny, "compiled": args.compile,
                                       "scale": args.scale},
                              "models": {}}
    start = time.perf_counter()
    out = default_out("image_dits" if args.scale == 1 else f"image_dits_x{args.scale}", args.tiny)
    with cudnn_attention(device):
        for name, make in catalogue(args.tiny, args.models, args.scale).items():
            model, inputs = make(device, dtype)
            with diffattn.apply(model, "observe") as handle:  # the grid diffattn recovers from this call
                forward(model, inputs)
                grid = handle.context.grid
            data: dict[str, Any] = {"tokens": grid.tokens, "grid": [grid.frames, grid.height, grid.width],
                                    "timing": f"median of {args.repeats} forwards after a full warm-up forward"}
            data["forward"] = bench_forward(name, model, inputs, chosen, args.repeats, device, True)
            if args.compile:
                eager_dense = forward(model, inputs)
                compile_model(model, device)
                data["forward_compiled"] = bench_forward(f"{name} compiled", model, inputs, chosen, args.repeats, device,
                                                         True, eager_dense)
                del eager_dense
            report["models"][name] = data
            report["meta"]["seconds"] = time.perf_counter() - start
            write_report(report, out, markdown(report))  # after each model: a run cut short keeps what it measured
            del model, inputs
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return report


if __name__ == "__main__":
    main()
