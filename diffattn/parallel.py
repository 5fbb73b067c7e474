"""Multi-GPU generation through diffusers' Ulysses context parallelism, launched with `torchrun`.

After Ulysses' all-to-all every rank holds all tokens for a subset of heads, which is what diffattn's
processors see (they act on the routed SDPA call inside diffusers' context-parallel attention), so every
method runs unchanged on the full sequence with the global grid. Ring attention is refused by the processors.
"""

from __future__ import annotations

import os

import torch

from .errors import ConfigError

__all__ = ["init_distributed", "enable_ulysses", "is_main_process", "world_size"]


def world_size() -> int:
    """Number of processes `torchrun` started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 (or no distributed run): the process that writes outputs."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed(degree: int) -> torch.device:
    """Join the process group `torchrun` set up (NCCL on CUDA, gloo on CPU); return this rank's device."""
    if degree < 2:
        raise ConfigError(f"a Ulysses degree must be at least 2; got {degree}")
    if world_size() != degree:
        raise ConfigError(
            f"--ulysses {degree} needs {degree} processes; launch with "
            f"`torchrun --nproc_per_node {degree} -m diffattn generate --ulysses {degree} ...` (WORLD_SIZE={world_size()})"
        )
    use_cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo", device_id=device if use_cuda else None)
    return device


def enable_ulysses(model: torch.nn.Module, degree: int) -> None:
    """Shard the denoiser's sequence over `degree` ranks with diffusers' Ulysses context parallelism."""
    from diffusers import ContextParallelConfig

    if not hasattr(model, "enable_parallelism"):
        raise ConfigError(f"{type(model).__name__} does not support diffusers' context parallelism")
    if torch.accelerator.device_count() < 1:
        raise ConfigError("Ulysses context parallelism needs accelerators (one GPU per rank); none is visible")
    model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree))
