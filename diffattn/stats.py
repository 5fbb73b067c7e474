"""Per-layer, per-step statistics of attention calls: density, skipped tiles and measured time.

Timing uses CUDA events on the GPU (read lazily, so recording never synchronises the device) and a host clock
on the CPU. Methods add what they know about a call (the density their plan had, tiles skipped) with
`AttentionStats.record`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["AttentionStats", "CallRecord", "Timer", "timed"]


class Timer:
    """Measures one region: CUDA events on a CUDA device, `perf_counter` elsewhere; `.ms` resolves lazily."""

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        if self._cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()
            self._ms: float | None = None

    def stop(self) -> Timer:
        if self._cuda:
            self._end.record()
        else:
            self._ms = (time.perf_counter() - self._t0) * 1e3
        return self

    @property
    def ms(self) -> float:
        if self._cuda:
            self._end.synchronize()
            return float(self._start.elapsed_time(self._end))
        return float(self._ms or 0.0)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """`(milliseconds, result)` of one call of `fn` (waits for the device: for benchmarks, not hot paths)."""
    timer = Timer(device)
    result = fn()
    return timer.stop().ms, result


@dataclass
class CallRecord:
    """Aggregate over the attention calls of one (layer, step)."""

    calls: int = 0
    density_sum: float = 0.0
    density_calls: int = 0
    tiles: int = 0
    skipped_tiles: int = 0
    timers: list[Timer] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def density(self) -> float | None:
        """Mean density of the calls that reported one (1.0 = dense)."""
        return self.density_sum / self.density_calls if self.density_calls else None

    @property
    def time_ms(self) -> float:
        return sum(t.ms for t in self.timers)


class AttentionStats:
    """Statistics of one `Handle`: `stats[layer_name][step] -> CallRecord`."""

    def __init__(self) -> None:
        self._records: dict[str, dict[int, CallRecord]] = defaultdict(dict)
        self.enabled = True

    def __getitem__(self, layer: str) -> dict[int, CallRecord]:
        return self._records[layer]

    def __len__(self) -> int:
        return sum(len(steps) for steps in self._records.values())

    @property
    def layers(self) -> list[str]:
        return list(self._records)

    def record(
        self,
        layer: str,
        step: int,
        *,
        timer: Timer | None = None,
        density: float | None = None,
        tiles: int = 0,
        skipped_tiles: int = 0,
        count_call: bool = False,
        **extra: float,
    ) -> None:
        """Add to the record of (layer, step); `count_call` marks one attention call."""
        if not self.enabled:
            return
        rec = self._records[layer].setdefault(step, CallRecord())
        rec.calls += int(count_call)
        if timer is not None:
            rec.timers.append(timer)
        if density is not None:
            rec.density_sum += float(density)
            rec.density_calls += 1
        rec.tiles += tiles
        rec.skipped_tiles += skipped_tiles
        for key, value in extra.items():
            rec.extra[key] = rec.extra.get(key, 0.0) + float(value)

    def clear(self) -> None:
        self._records.clear()

    def to_dict(self) -> dict[str, dict[int, dict[str, Any]]]:
        """Plain data: `{layer: {step: {calls, density, tiles, skipped_tiles, time_ms, ...}}}`."""
        return {
            layer: {
                step: {
                    "calls": rec.calls,
                    "density": rec.density,
                    "tiles": rec.tiles,
                    "skipped_tiles": rec.skipped_tiles,
                    "time_ms": rec.time_ms,
                    **rec.extra,
                }
                for step, rec in sorted(steps.items())
            }
            for layer, steps in self._records.items()
        }

    def summary(self) -> dict[str, Any]:
        """Totals over all layers and steps: calls, mean density, skipped-tile fraction, attention time."""
        records = [rec for steps in self._records.values() for rec in steps.values()]
        densities = [rec.density for rec in records if rec.density is not None]
        tiles = sum(rec.tiles for rec in records)
        return {
            "layers": len(self._records),
            "steps": len({step for steps in self._records.values() for step in steps}),
            "calls": sum(rec.calls for rec in records),
            "mean_density": sum(densities) / len(densities) if densities else None,
            "skipped_tile_fraction": sum(rec.skipped_tiles for rec in records) / tiles if tiles else None,
            "attention_ms": sum(rec.time_ms for rec in records),
        }

    def format(self) -> str:
        """A short human-readable summary."""
        s = self.summary()
        density = "n/a" if s["mean_density"] is None else f"{s['mean_density']:.3f}"
        skipped = "n/a" if s["skipped_tile_fraction"] is None else f"{s['skipped_tile_fraction']:.1%}"
        return (
            f"{s['calls']} attention calls over {s['layers']} layers x {s['steps']} steps; "
            f"mean density {density}; skipped tiles {skipped}; attention time {s['attention_ms']:.1f} ms"
        )
