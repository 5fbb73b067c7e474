"""Multi-GPU benchmark: Wan2.1-1.3B (random weights) at 480p / 81 frames under diffusers' Ulysses context parallelism.

Per-forward time, dense (cuDNN SDPA, the stock processors) and sparse (diffattn methods acting after Ulysses'
all-to-all), on the GPUs `torchrun` gives it; run once with one process and once with two, then compare:

    torchrun --nproc_per_node 1 benchmarks/multigpu.py --out $OUT/multigpu_1.json
    torchrun --nproc_per_node 2 benchmarks/multigpu.py --out $OUT/multigpu_2.json   # NCCL; NCCL_NVLS_ENABLE=0
    python benchmarks/multigpu.py --tiny                                            # CPU check of the script

Scaling efficiency = t(1 GPU) / (N x t(N GPUs)). Each run also checks that rank 0's output under Ulysses equals the
single-device output of the same process (the model is built identically on every rank), and writes JSON on rank 0.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

import diffattn
from diffattn.environment import environment
from diffattn.parallel import enable_ulysses, init_distributed, is_main_process, world_size
from diffattn.stats import timed

from e2e import MODELS, TINY_MODELS, build_model, cudnn_attention, forward, model_inputs

VARIANTS = {
    "dense": (),
    "sparge 90% (top-k 0.1)": (diffattn.SpargeConfig(topk=0.1, dense_steps=0),),
    "radial (decay 0.2)": (diffattn.RadialConfig(dense_steps=0),),
}


def measure(model: torch.nn.Module, inputs: dict[str, torch.Tensor], repeats: int, device: torch.device) -> dict[str, Any]:
    """Median forward time per variant, and each variant's output (rank-local) for the equivalence check."""
    results: dict[str, Any] = {}
    for name, configs in VARIANTS.items():
        handle = diffattn.apply(model, *configs) if configs else None
        try:
            with cudnn_attention(device):
                forward(model, inputs)  # warm-up (kernels, autotuning)
                times = [timed(lambda: forward(model, inputs), device)[0] for _ in range(repeats)]
                output = forward(model, inputs)
        finally:
            if handle is not None:
                handle.remove()
        results[name] = {"ms": sorted(times)[len(times) // 2], "output": output}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny Wan on one CPU process (checks the script)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="JSON path (default: $OUT/multigpu_<N>.json or benchmarks/results/)")
    args = parser.parse_args(argv)

    ranks = world_size()
    device = init_distributed(ranks) if ranks > 1 else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    name, (config, latent, text_len, _, _) = next(iter((TINY_MODELS if args.tiny else MODELS).items()))
    inputs = model_inputs(config, latent, text_len, device, dtype)

    single = measure(build_model(config, device, dtype), inputs, 1, device) if ranks > 1 else None
    model = build_model(config, device, dtype)
    if ranks > 1:
        enable_ulysses(model, ranks)
    results = measure(model, inputs, args.repeats, device)
    report: dict[str, Any] = {
        **environment(device), "model": name, "gpus": ranks, "latent": list(latent), "dtype": str(dtype),
        "forward_ms": {variant: r["ms"] for variant, r in results.items()},
    }
    if single is not None:
        report["max_abs_diff_vs_one_device"] = {
            variant: float((results[variant]["output"].float() - single[variant]["output"].float()).abs().max())
            for variant in VARIANTS
        }
    if is_main_process():
        default = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).resolve().parent / "results"
        out = Path(args.out) if args.out else default / f"multigpu_{'tiny' if args.tiny else ranks}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
