"""A quick kernel benchmark on this machine's device: block-sparse attention time against density.

Used by `diffattn bench` and the app's Kernels tab (the full GPU benchmark with every baseline is the script
`benchmarks/kernel_speed.py`). For random block plans of increasing density it times the same call three ways:
diffattn's kernel (`block_sparse_attention` with the Triton backend on CUDA, the PyTorch reference elsewhere),
FlexAttention on the same plan (the `flex` backend), and dense SDPA as the baseline. Sizes are meant to be small on
a CPU; the device is part of the result so tables and plots say where they ran.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from diffattn.errors import ConfigError
from diffattn.plan import BlockPlan

from .api import block_sparse_attention
from .backends import available_backends

__all__ = ["KernelBenchSpec", "KernelBenchResult", "run_kernel_benchmark", "device_label"]


@dataclass(frozen=True)
class KernelBenchSpec:
    """Shape and densities of one benchmark: q/k/v `[1, heads, tokens, head_dim]`, `block`-token blocks."""

    tokens: int = 1024
    heads: int = 2
    head_dim: int = 64
    block: int = 64
    densities: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    repeats: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.block not in (16, 32, 64, 128):
            raise ConfigError(f"block must be 16, 32, 64 or 128 tokens; got {self.block}")
        if self.tokens < self.block or self.tokens % self.block:
            raise ConfigError(f"tokens must be a positive multiple of the block size {self.block}; got {self.tokens}")
        if self.heads < 1 or self.head_dim not in (16, 32, 64, 128):
            raise ConfigError(f"heads must be >= 1 and head_dim 16, 32, 64 or 128; got {self.heads} and "
                              f"{self.head_dim}")
        if not self.densities or not all(0 < d <= 1 for d in self.densities):
            raise ConfigError(f"densities must lie in (0, 1]; got {list(self.densities)}")
        if self.repeats < 1:
            raise ConfigError(f"repeats must be >= 1; got {self.repeats}")


@dataclass(frozen=True)
class KernelBenchResult:
    """Rows `{implementation, density, ms}` (density = kept kv blocks per query block) and where they ran."""

    rows: list[dict[str, float | str]]
    device: str
    dtype: str
    skipped: dict[str, str]
    """Implementations that could not run here, with the reason."""


def device_label(device: torch.device) -> str:
    """Human-readable device name, e.g. 'NVIDIA H200 (cuda:0)' or 'CPU x86_64, 2 threads'."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    return f"CPU {platform.machine()}, {torch.get_num_threads()} threads"


def _random_plan(blocks: int, density: float, block: int, generator: torch.Generator,
                 device: torch.device) -> tuple[BlockPlan, float]:
    """Each query block keeps the same number of random kv blocks (at least one); returns the actual density."""
    keep = max(1, round(density * blocks))
    scores = torch.rand(blocks, blocks, generator=generator)
    mask = torch.zeros(blocks, blocks, dtype=torch.bool)
    mask.scatter_(1, scores.topk(keep, dim=1).indices, True)
    return BlockPlan.from_block_mask(mask[None, None].to(device), block, block), keep / blocks


def _median_ms(call: Callable[[], object], repeats: int, device: torch.device,
               on_call: Callable[[], None] | None = None) -> float:
    """Median wall time of `call` after one warm-up call (which also absorbs compilation); `on_call` runs before
    each call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    before = on_call or (lambda: None)
    before()
    call()
    sync()
    times = []
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        call()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run_kernel_benchmark(spec: KernelBenchSpec, device: torch.device | None = None,
                         on_call: Callable[[], None] | None = None) -> KernelBenchResult:
    """Time diffattn's kernel, FlexAttention and dense SDPA at each density of `spec` (progress via tqdm).

    `on_call` runs before every timed call, outside the timing; raising from it stops the benchmark (the app's
    time limit per job and its cancel do).
    """
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    generator = torch.Generator().manual_seed(spec.seed)
    shape = (1, spec.heads, spec.tokens, spec.head_dim)
    q, k, v = (torch.randn(shape, generator=generator).to(device, dtype) for _ in range(3))
    status = available_backends()
    ours = "triton" if device.type == "cuda" and status.get("triton") is True else "reference"
    sparse = {f"diffattn kernel ({ours})": ours, "FlexAttention": "flex"}
    skipped = {name: str(status[backend]) for name, backend in sparse.items() if status.get(backend) is not True}
    sparse = {name: backend for name, backend in sparse.items() if name not in skipped}
    blocks = spec.tokens // spec.block
    rows: list[dict[str, float | str]] = []
    dense_ms = _median_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), spec.repeats, device,
                          on_call)
    for density in tqdm(spec.densities, desc="kernel benchmark", unit="density"):
        plan, actual = _random_plan(blocks, density, spec.block, generator, device)
        rows.append({"implementation": "dense SDPA", "density": actual, "ms": dense_ms})
        for name, backend in sparse.items():
            ms = _median_ms(lambda plan=plan, backend=backend: block_sparse_attention(q, k, v, plan, backend=backend),
                            spec.repeats, device, on_call)
            rows.append({"implementation": name, "density": actual, "ms": ms})
    return KernelBenchResult(rows=rows, device=device_label(device), dtype=str(dtype).removeprefix("torch."),
                             skipped=skipped)
