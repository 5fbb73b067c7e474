"""The newer video families at full published size: one forward, dense against Sparge 90% and Radial, eager and compiled.

Transformers (random weights from the published configs, bf16, batch 1, diffusers' classes directly), each at its
common resolution:

- ``wan2.2-ti2v-5b``: ``WanTransformer3DModel`` TI2V-5B (30 layers, 24 heads x 128, 48 latent channels) at 704x1280 /
  121 frames: latent 31x44x80, 27,280 tokens, one timestep per token (the pipeline's ``expand_timesteps``);
- ``wan-vace-1.3b``: ``WanVACETransformer3DModel`` (Wan2.1 1.3B + 15 VACE blocks) at 480p / 81 frames: 32,760 tokens
  plus 96 channels of control latents;
- ``skyreels-v2-1.3b``: ``SkyReelsV2Transformer3DModel`` (Wan2.1 1.3B dimensions) at 540p / 97 frames: latent
  25x68x120, 51,000 tokens;
- ``hunyuanvideo-1.5``: ``HunyuanVideo15Transformer3DModel`` (54 layers, 16 heads x 128) at 480p / 121 frames: latent
  31x30x53, 49,290 video tokens next to 256 + 64 text tokens (T2V: the image tokens are zeros, masked out);
- ``ltx-2``: ``LTX2VideoTransformer3DModel`` (LTX-2.0, 48 layers, 32 heads x 128, audio stream 32 heads x 64) at
  512x768 / 121 frames: latent 16x16x24, 6,144 video tokens and 126 audio tokens.

Per family, in one process: dense (the stock processors, cuDNN SDPA preferred), Sparge at about 90% sparsity (top-k
0.1) and Radial (decay 0.2), each timed by `e2e.bench_forward` (median of ``--repeats`` forwards after a full warm-up
forward, which also gives the density, and one with stats off; relative error against dense); with ``--compile``,
again with the transformer's repeated blocks compiled (inductor). A method that does not apply to a family (its
``diffattn.apply`` raises a ``DiffAttnError``) is recorded with that error instead of a time. Methods act on the video
tokens' self-attention only: cross-attention, text-only refiner blocks and LTX-2's audio stream stay dense.

    pip install --no-deps -e .
    python benchmarks/families.py --families wan2.2-ti2v-5b wan-vace-1.3b skyreels-v2-1.3b --compile --out $OUT/families_wan.json
    python benchmarks/families.py --families hunyuanvideo-1.5 ltx-2 --compile --out $OUT/families_hv15_ltx2.json
    python benchmarks/families.py --tiny                                           # CPU check of this script

All five eager and compiled in one process can outrun a 10-minute command limit (`meta.seconds` in the JSON says
how long each call took): run them as the two calls above.

Writes ``families.json`` under ``$OUT`` when it is set (else ``benchmarks/results/``; ``families_tiny.json`` with
``--tiny``) and prints a Markdown table for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import diffattn
from diffattn.environment import environment
from diffattn.errors import DiffAttnError

from e2e import (
    WAN_1_3B,
    bench_forward,
    build_model,
    common_settings,
    compile_blocks,
    cudnn_attention,
    default_out,
    forward,
    write_report,
)

__all__ = ["FAMILIES", "FamilySpec", "main"]


@dataclass(frozen=True)
class FamilySpec:
    """One transformer to time.

    Args:
        model_class (`str`): the diffusers model class.
        config (`dict`): its published configuration (full size).
        latent (`tuple[int, int, int]`): latent (frames, height, width) at the family's common resolution.
        inputs (`Callable`): `(config, latent, device, dtype, generator) -> forward kwargs`.
        tiny (`dict`): overrides of `config` for the CPU check (`--tiny`).
        tiny_latent (`tuple[int, int, int]`): latent size of the CPU check.
    """

    model_class: str
    config: dict[str, Any]
    latent: tuple[int, int, int]
    inputs: Callable[..., dict[str, Any]]
    tiny: dict[str, Any]
    tiny_latent: tuple[int, int, int]


def _randn(generator: torch.Generator, *shape: int, device, dtype) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, device=device, dtype=dtype)


def _wan_inputs(config, latent, device, dtype, generator, per_token_timestep: bool = False) -> dict[str, Any]:
    """Wan-structured call: 5-D latents, 512 text tokens, one timestep (or one per token, Wan 2.2 TI2V)."""
    p_t, p_h, p_w = config["patch_size"]
    tokens = latent[0] // p_t * (latent[1] // p_h) * (latent[2] // p_w)
    return {
        "hidden_states": _randn(generator, 1, config["in_channels"], *latent, device=device, dtype=dtype),
        "encoder_hidden_states": _randn(generator, 1, 512, config["text_dim"], device=device, dtype=dtype),
        "timestep": torch.full((1, tokens) if per_token_timestep else (1,), 900.0, device=device),
    }


def _wan22_inputs(config, latent, device, dtype, generator) -> dict[str, Any]:
    return _wan_inputs(config, latent, device, dtype, generator, per_token_timestep=True)


def _vace_inputs(config, latent, device, dtype, generator) -> dict[str, Any]:
    """Wan inputs plus VACE control latents (and one scale per VACE block)."""
    return {
        **_wan_inputs(config, latent, device, dtype, generator),
        "control_hidden_states": _randn(generator, 1, config["vace_in_channels"], *latent, device=device, dtype=dtype),
        "control_hidden_states_scale": torch.ones(len(config["vace_layers"]), device=device),
    }


def _hunyuan15_inputs(config, latent, device, dtype, generator) -> dict[str, Any]:
    """Text-to-video call: Qwen (256) and ByT5 (64) text states, all valid; SigLIP image states zero (masked out).
    The timestep comes in the latents' dtype, as HunyuanVideo 1.5's pipeline passes it (its embedder casts to it)."""
    return {
        "hidden_states": _randn(generator, 1, config["in_channels"], *latent, device=device, dtype=dtype),
        "timestep": torch.tensor([900.0], device=device, dtype=dtype),
        "encoder_hidden_states": _randn(generator, 1, 256, config["text_embed_dim"], device=device, dtype=dtype),
        "encoder_attention_mask": torch.ones(1, 256, device=device, dtype=torch.long),
        "encoder_hidden_states_2": _randn(generator, 1, 64, config["text_embed_2_dim"], device=device, dtype=dtype),
        "encoder_attention_mask_2": torch.ones(1, 64, device=device, dtype=torch.long),
        "image_embeds": torch.zeros(1, 729, config["image_embed_dim"], device=device, dtype=dtype),
    }


LTX2_AUDIO_TOKENS = 126
"""Audio latents of a 121-frame, 24 fps clip: 16 kHz, hop 160, 4x compression (25 per second)."""


def _ltx2_inputs(config, latent, device, dtype, generator) -> dict[str, Any]:
    """Packed video tokens `[B, F*H*W, C]`, audio tokens, 256 caption tokens per stream."""
    frames, height, width = latent
    caption = config.get("caption_channels", 3840)
    return {
        "hidden_states": _randn(generator, 1, frames * height * width, config.get("in_channels", 128), device=device, dtype=dtype),
        "audio_hidden_states": _randn(generator, 1, LTX2_AUDIO_TOKENS, config.get("audio_in_channels", 128), device=device, dtype=dtype),
        "encoder_hidden_states": _randn(generator, 1, 256, caption, device=device, dtype=dtype),
        "audio_encoder_hidden_states": _randn(generator, 1, 256, caption, device=device, dtype=dtype),
        "timestep": torch.tensor([900.0], device=device),
        "num_frames": frames,
        "height": height,
        "width": width,
        "audio_num_frames": LTX2_AUDIO_TOKENS,
    }


_TINY_WAN = {"num_attention_heads": 2, "attention_head_dim": 16, "text_dim": 32, "ffn_dim": 64, "num_layers": 2,
             "rope_max_seq_len": 64}

FAMILIES: dict[str, FamilySpec] = {
    "wan2.2-ti2v-5b": FamilySpec(
        "WanTransformer3DModel",
        {**WAN_1_3B, "num_attention_heads": 24, "in_channels": 48, "out_channels": 48, "ffn_dim": 14336},
        (31, 44, 80), _wan22_inputs, _TINY_WAN, (4, 32, 32),
    ),
    "wan-vace-1.3b": FamilySpec(
        "WanVACETransformer3DModel",
        {**WAN_1_3B, "vace_layers": list(range(0, 30, 2)), "vace_in_channels": 96},
        (21, 60, 104), _vace_inputs, {**_TINY_WAN, "vace_layers": [0], "vace_in_channels": 8}, (4, 32, 32),
    ),
    "skyreels-v2-1.3b": FamilySpec(
        "SkyReelsV2Transformer3DModel", dict(WAN_1_3B), (25, 68, 120), _wan_inputs, _TINY_WAN, (4, 32, 32),
    ),
    "hunyuanvideo-1.5": FamilySpec(
        "HunyuanVideo15Transformer3DModel",
        {"in_channels": 65, "out_channels": 32, "num_attention_heads": 16, "attention_head_dim": 128, "num_layers": 54,
         "num_refiner_layers": 2, "patch_size": 1, "patch_size_t": 1, "text_embed_dim": 3584, "text_embed_2_dim": 1472,
         "image_embed_dim": 1152, "rope_axes_dim": (16, 56, 56), "target_size": 480, "task_type": "t2v"},
        (31, 30, 53), _hunyuan15_inputs,
        {"num_attention_heads": 2, "attention_head_dim": 16, "num_layers": 2, "num_refiner_layers": 1,
         "text_embed_dim": 32, "text_embed_2_dim": 32, "image_embed_dim": 32, "rope_axes_dim": (4, 6, 6)},
        (4, 16, 16),
    ),
    "ltx-2": FamilySpec(
        "LTX2VideoTransformer3DModel", {}, (16, 16, 24), _ltx2_inputs,
        {"num_attention_heads": 2, "attention_head_dim": 16, "audio_num_attention_heads": 2, "audio_attention_head_dim": 16,
         "cross_attention_dim": 32, "audio_cross_attention_dim": 32, "caption_channels": 32, "num_layers": 2},
        (4, 16, 16),
    ),
}
"""Name -> what to build and how to call it. LTX-2's published config is the class defaults (LTX-2.0, 19B)."""


def variants(tiny: bool) -> dict[str, tuple]:
    """The timed methods: Sparge at about 90% sparsity and Radial at its default decay, sparse from the first step."""
    common = common_settings(tiny)
    return {
        "sparge 90% (top-k 0.1)": (diffattn.SpargeConfig(topk=0.1, **common),),
        "radial (decay 0.2)": (diffattn.RadialConfig(**common),),
    }


def applicable(model: torch.nn.Module, inputs: dict[str, Any], candidates: dict[str, tuple]) -> tuple[dict, dict]:
    """Split `candidates` into those that apply to `model` and `{label: error}` for the others.

    A method can refuse at `apply` (unsupported model) or at its first call (a layout it cannot plan), so each is
    applied and run once through the full model."""
    usable, refused = {}, {}
    for label, configs in candidates.items():
        try:
            with diffattn.apply(model, *configs):
                forward(model, inputs)
            usable[label] = configs
        except DiffAttnError as exc:
            refused[label] = f"{type(exc).__name__}: {exc}"
            print(f"  {label}: n/a ({refused[label][:160]})", flush=True)
    return usable, refused


def run_family(name: str, spec: FamilySpec, tiny: bool, compiled: bool, repeats: int, device, dtype,
               on_eager: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Time every applicable variant of family `name`, eager then (with `compiled`) compiled; `on_eager(data)` is
    called between the two, so a run stopped while compiling keeps the eager figures."""
    config = {**spec.config, **spec.tiny} if tiny else spec.config
    latent = spec.tiny_latent if tiny else spec.latent
    model = build_model(config, device, dtype, spec.model_class)
    generator = torch.Generator(device).manual_seed(0)
    inputs = spec.inputs(config, latent, device, dtype, generator)
    data: dict[str, Any] = {
        "model_class": spec.model_class,
        "parameters": sum(p.numel() for p in model.parameters()),
        "latent": list(latent),
        "timing": f"median of {repeats} forwards after a full warm-up forward and one with stats off",
    }
    usable, data["not_applicable"] = applicable(model, inputs, variants(tiny))
    data["forward"] = bench_forward(name, model, inputs, usable, repeats, device, full_warmup=True)
    if on_eager is not None:
        on_eager(data)
    if compiled:
        eager_dense = forward(model, inputs)
        compile_blocks(model, device)
        data["forward_compiled"] = bench_forward(f"{name} compiled", model, inputs, usable, repeats, device, True, eager_dense)
    del model, inputs
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return data


def markdown(report: dict[str, Any]) -> str:
    lines = ["| family | variant | eager ms | speedup | compiled ms | speedup | density | rel L1 |", "|---|---|---|---|---|---|---|---|"]
    for name, data in report["families"].items():
        if "error" in data:
            lines.append(f"| {name} | - | {data['error'][:80]} | | | | | |")
            continue
        compiled = data.get("forward_compiled", {})
        for label, entry in data["forward"].items():
            other = compiled.get(label)
            compiled_cells = f"{other['ms']:.0f} | {other['speedup']:.2f}x" if other else "- | -"
            density = entry["density"]
            lines.append(f"| {name} | {label} | {entry['ms']:.0f} | {entry['speedup']:.2f}x | {compiled_cells} | "
                         f"{'-' if density is None else f'{density:.3f}'} | {entry.get('rel_l1', 0.0):.4f} |")
        for label, error in data["not_applicable"].items():
            lines.append(f"| {name} | {label} | n/a: {error[:80]} | | | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="*", default=None, help=f"subset of {list(FAMILIES)}")
    parser.add_argument("--compile", action="store_true", help="also time every variant with compiled blocks (inductor)")
    parser.add_argument("--repeats", type=int, default=2, help="timed forwards per variant (median)")
    parser.add_argument("--tiny", action="store_true", help="tiny configurations on the CPU (a check of this script)")
    parser.add_argument("--out", default=None, help="output JSON (default: $OUT/families.json or benchmarks/results/)")
    args = parser.parse_args(argv)
    unknown = set(args.families or ()) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}; choose from {list(FAMILIES)}")

    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    report: dict[str, Any] = {"meta": {**environment(device), "dtype": str(dtype), "tiny": args.tiny, "compiled": args.compile},
                              "families": {}}
    start = time.perf_counter()
    out = Path(args.out) if args.out else default_out("families", args.tiny)

    def save(name: str, data: dict[str, Any]) -> None:  # after every section: a stopped run keeps what it measured
        report["families"][name] = data
        report["meta"]["seconds"] = time.perf_counter() - start
        write_report(report, out, markdown(report))

    with cudnn_attention(device):
        for name in args.families or FAMILIES:
            print(f"{name}:", flush=True)
            try:
                save(name, run_family(name, FAMILIES[name], args.tiny, args.compile, args.repeats, device, dtype,
                                      on_eager=lambda data, name=name: save(name, data)))
            except Exception as exc:  # noqa: BLE001 - one family failing (e.g. out of memory) must not lose the others
                save(name, {"error": f"{type(exc).__name__}: {exc}"[:500]})
                print(f"  failed: {report['families'][name]['error']}", flush=True)
            gc.collect()
    return report


if __name__ == "__main__":
    main()
