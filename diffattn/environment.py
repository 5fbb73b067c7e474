"""Where a measurement ran: installed package versions and a description of the device (for `diffattn info` and
every benchmark's results)."""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import re
from typing import Any

import torch

__all__ = ["package_version", "dependency_versions", "device_name", "environment"]

# Not declared by diffattn but imported on its paths: transformers/peft pull in Hugging Face's `kernels`, the hub
# client does all loading, xformers is an optional extra whose wheels often mismatch torch.
_INDIRECT = ("huggingface-hub", "kernels", "xformers")


def package_version(package: str) -> str | None:
    """The installed version of a distribution, or `None` when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def dependency_versions() -> dict[str, str | None]:
    """Installed version of every distribution diffattn declares (extras included) and of the few it uses
    indirectly; `None` for those not installed. Read from the package metadata, so it follows pyproject.toml."""
    try:
        requirements = importlib.metadata.requires("diffattn") or []
    except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path without an install
        requirements = []
    names = [re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0] for requirement in requirements]
    return {name: package_version(name) for name in dict.fromkeys([*names, *_INDIRECT])}


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
