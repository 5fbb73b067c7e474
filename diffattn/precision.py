"""Attention precisions: the names every attention config and the kernels share, how a chain of methods combines
them, and what runs on a given device.

- `"bf16"`: attention in the inputs' own 16-bit dtype (bfloat16 or float16), no quantisation.
- `"int8"`: Q.K in INT8 (K smoothed, one scale per token), P.V in the inputs' dtype (SageAttention 1 style).
- `"int8-fp8"`: also P.V in FP8 e4m3 (V scaled per channel; SageAttention 2 style); needs FP8 tensor cores.

`diffattn.kernels.quantize` defines the exact quantisation. A chain of methods runs at the lowest precision any
of them asks for (`lowest_precision`): a user who asks one method for 8 bits gets 8 bits on the calls it shares.
"""

from __future__ import annotations

import logging
import typing
from typing import Literal

import torch

__all__ = ["Precision", "PRECISIONS", "lowest_precision", "precision_support", "runnable_precision"]

Precision = Literal["bf16", "int8", "int8-fp8"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
"""From the most accurate to the fastest."""

_FP8_CAPABILITY = (8, 9)
"""FP8 tensor cores: Ada (8.9) and Hopper (9.0) onwards."""

_RUNNABLE: dict[tuple[str, torch.device], str] = {}
# a plain dict, not functools.cache: torch.compile traces dict lookups but breaks the graph on lru_cache
_logger = logging.getLogger("diffattn")


def lowest_precision(*precisions: str) -> str:
    """The least precise of `precisions` (`"bf16"` when none is given): what a chain of methods runs at."""
    return max(precisions, key=PRECISIONS.index, default="bf16")


def runnable_precision(precision: str, device: torch.device) -> str:
    """What runs for `precision` on `device`, announced once per (precision, device) with one log line.

    `"int8-fp8"` on a CUDA GPU without FP8 tensor cores (compute capability below 8.9) runs as `"int8"`; 8 bits on
    the CPU run the PyTorch reference of the exact 8-bit arithmetic (same results as the GPU kernel within float
    rounding, no speed-up).
    """
    key = (precision, device)
    if key not in _RUNNABLE:
        _RUNNABLE[key] = _resolve(precision, device)
    return _RUNNABLE[key]


def precision_support(precision: str, device: torch.device) -> tuple[str, str | None]:
    """What runs for `precision` on `device`, and a note when that is not the requested arithmetic on a GPU kernel
    (`None` otherwise): see `runnable_precision`."""
    if precision == "bf16":
        return precision, None
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        if precision == "int8-fp8" and capability < _FP8_CAPABILITY:
            return "int8", (f"precision 'int8-fp8' needs FP8 tensor cores (compute capability 8.9+); this GPU is "
                            f"{capability[0]}.{capability[1]}, so attention runs at 'int8' (INT8 Q.K, 16-bit P.V)")
        return precision, None
    return precision, (f"precision {precision!r} on {device.type} runs the PyTorch reference of the 8-bit arithmetic "
                       "(same quantisation as the GPU kernel, no speed-up)")


@torch.compiler.disable  # once per device: queries the GPU and logs
def _resolve(precision: str, device: torch.device) -> str:
    runnable, note = precision_support(precision, device)
    if note is not None:
        _logger.warning("diffattn: %s", note)
    return runnable
