"""The attention-probability store: what DDIM inversion keeps for FateZero's fusion, within a RAM budget.

Maps are kept per step (keyed by the integer timestep, so an editing step finds the inversion step of the same
timestep whatever order the two runs go in) and per layer (keyed by the attention module's name), as `dtype`
(fp16 by default, as FateZero) on the CPU. A map that would take the store past `ram_budget` bytes is written to
a spill folder on disk instead and read back when its step is loaded, so the RAM held never exceeds the budget.
`estimate_store_bytes` predicts the total exactly from the shapes, so a pipeline can choose RAM, disk or online
mode before it starts.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from .errors import EditingStateError, MemoryBudgetError

__all__ = ["AttentionStore", "estimate_store_bytes", "format_bytes"]

_DISK_MARGIN = 256 * 2**20
"""Free disk space kept untouched when spilling (bytes)."""


def format_bytes(count: float) -> str:
    """Human-readable size, e.g. `"1.5 GiB"`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"


def estimate_store_bytes(step_shapes: Iterable[tuple[int, ...]], steps: int, dtype: torch.dtype) -> int:
    """Bytes a store holds for `steps` steps of maps with `step_shapes` each (exactly what `AttentionStore` keeps)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return steps * sum(math.prod(shape) * itemsize for shape in step_shapes)


class AttentionStore:
    """Attention probabilities per (timestep, layer name) on the CPU, spilling to disk beyond a RAM budget.

    Args:
        ram_budget (`int`): bytes of maps held in RAM at most (0 keeps everything on disk, FateZero's `disk_store`).
        dtype (`torch.dtype`, *optional*, defaults to `torch.float16`): storage dtype.
        spill_dir (`str`, *optional*): where the spill folder is created (the system temp folder by default).
    """

    def __init__(self, ram_budget: int, *, dtype: torch.dtype = torch.float16, spill_dir: str | Path | None = None) -> None:
        self.ram_budget = int(ram_budget)
        self.dtype = dtype
        self._spill_parent = spill_dir
        self._spill: Path | None = None
        self._steps: dict[int, dict[str, torch.Tensor | Path]] = {}
        self._current: int | None = None
        self.ram_bytes = 0
        self.disk_bytes = 0
        self.peak_ram_bytes = 0

    @property
    def total_bytes(self) -> int:
        return self.ram_bytes + self.disk_bytes

    @property
    def keys(self) -> list[int]:
        return list(self._steps)

    # ------------------------------------------------------------------------------ writing
    @contextmanager
    def step(self, key: int) -> Iterator[None]:
        """Collect the maps of one denoiser call under `key` (the integer timestep)."""
        if self._current is not None:
            raise EditingStateError(f"store step {self._current} is still open")
        self._current = int(key)
        self._steps.setdefault(self._current, {})
        try:
            yield
        finally:
            self._current = None

    def add(self, layer: str, probs: torch.Tensor) -> None:
        """Keep `probs` for `layer` in the open step (in RAM while the budget allows, else on disk)."""
        if self._current is None:
            raise EditingStateError("AttentionStore.add outside a step; wrap the denoiser call in `with store.step(t):`")
        maps = self._steps[self._current]
        if layer in maps:
            raise EditingStateError(f"layer {layer} was stored twice in step {self._current}")
        tensor = probs.detach().to("cpu", self.dtype)
        nbytes = tensor.numel() * tensor.element_size()
        if self.ram_bytes + nbytes <= self.ram_budget:
            maps[layer] = tensor.contiguous()
            self.ram_bytes += nbytes
            self.peak_ram_bytes = max(self.peak_ram_bytes, self.ram_bytes)
        else:
            maps[layer] = self._write(self._current, len(maps), tensor, nbytes)
            self.disk_bytes += nbytes

    def _write(self, key: int, index: int, tensor: torch.Tensor, nbytes: int) -> Path:
        if self._spill is None:
            self._spill = Path(tempfile.mkdtemp(prefix="diffattn-attention-", dir=self._spill_parent))
        free = shutil.disk_usage(self._spill).free
        if free - nbytes < _DISK_MARGIN:
            raise MemoryBudgetError(
                f"the attention store needs more than its RAM budget of {format_bytes(self.ram_budget)} and the disk at "
                f"{self._spill} has only {format_bytes(free)} free; use online mode (attention_store='online'), "
                "fewer frames per chunk (frames_per_chunk) or fewer steps"
            )
        path = self._spill / f"{key:05d}_{index:04d}.pt"
        torch.save(tensor.contiguous(), path)
        return path

    # ------------------------------------------------------------------------------ reading
    def load(self, key: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The maps of step `key` by layer name, on `device` (spilled maps are read back from disk)."""
        if int(key) not in self._steps:
            raise EditingStateError(f"no attention maps stored for timestep {key}; stored: {self.keys}")
        maps = {}
        for layer, item in self._steps[int(key)].items():
            tensor = torch.load(item, weights_only=True) if isinstance(item, Path) else item
            maps[layer] = tensor.to(device, non_blocking=True)
        return maps

    def close(self) -> None:
        """Drop every map and delete the spill folder."""
        self._steps.clear()
        self.ram_bytes = self.disk_bytes = 0
        if self._spill is not None:
            shutil.rmtree(self._spill, ignore_errors=True)
            self._spill = None

    def __enter__(self) -> AttentionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
