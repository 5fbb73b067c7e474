"""Where a measurement ran: installed package versions and a description of the device (for `diffattn info` and
every benchmark's results)."""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
from typing import Any

import torch

__all__ = ["package_version", "device_name", "environment"]


def package_version(package: str) -> str | None:
    """The installed version of a distribution, or `None` when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_name(device: torch.device) -> str:
    """'NVIDIA H200' for a CUDA device, else the CPU with its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def environment(device: torch.device) -> dict[str, Any]:
    """Date (UTC), device, and the versions that decide performance: python, torch, triton, diffusers, CUDA, cuDNN."""
    cuda = device.type == "cuda"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": package_version("triton"),
        "diffusers": package_version("diffusers"),
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
    }
