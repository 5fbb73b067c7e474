"""`diffattn bench`: time the block-sparse attention kernel against FlexAttention and dense SDPA on this device.

A quick, self-contained measurement (random q/k/v and random block plans of the given densities); the full GPU
benchmark with every baseline and the published targets is `benchmarks/kernel_speed.py`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..config import field_parser

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help="benchmark the attention kernels on this device", description=__doc__)
    parser.add_argument("--tokens", type=int, default=None, help="sequence length (default 1024 on a CPU, 32768 on a GPU)")
    parser.add_argument("--heads", type=int, default=None, help="attention heads (default 2 on a CPU, 12 on a GPU)")
    parser.add_argument("--head-dim", type=int, default=None, help="head dimension (default 64 on a CPU, 128 on a GPU)")
    parser.add_argument("--block", type=int, default=None, help="block size in tokens (default 64 on a CPU, 128 on a GPU)")
    parser.add_argument("--densities", type=field_parser(tuple[float, ...]), default=(0.1, 0.25, 0.5, 1.0),
                        help="comma-separated fractions of kv blocks kept per query block")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..kernels.bench import KernelBenchSpec, run_kernel_benchmark
    from ..loading import pick_device

    device = pick_device(args.device)
    gpu = device.type == "cuda"
    defaults = {"tokens": 32768 if gpu else 1024, "heads": 12 if gpu else 2, "head_dim": 128 if gpu else 64,
                "block": 128 if gpu else 64}
    sizes = {name: getattr(args, name) if getattr(args, name) is not None else value for name, value in defaults.items()}
    spec = KernelBenchSpec(densities=tuple(args.densities), repeats=args.repeats, **sizes)
    result = run_kernel_benchmark(spec, device)
    if args.json:
        print(json.dumps({"device": result.device, "dtype": result.dtype, "spec": spec.__dict__,
                          "rows": result.rows, "skipped": result.skipped}, indent=2))
        return 0
    print(f"{result.device}, {result.dtype}: {spec.heads} heads x {spec.tokens} tokens x head_dim {spec.head_dim}, "
          f"{spec.block}-token blocks")
    print(f"{'implementation':<34} {'density':>8} {'ms':>10}")
    for row in result.rows:
        print(f"{row['implementation']:<34} {row['density']:>8.3f} {row['ms']:>10.3f}")
    for name, reason in result.skipped.items():
        print(f"{name}: not run ({reason})")
    return 0
