"""Per-layer, per-step statistics of attention calls: density, skipped tiles and measured time.

Timing uses CUDA events on the GPU (read lazily, so recording never synchronises the device) and a host clock
on the CPU. Methods add what they know about a call (the density their plan had, tiles skipped) with
`AttentionStats.record`. Per run and method, `record_activity` counts the calls a method acted on and the calls it
left dense (with why), so a method that never ran is reported (`idle_report`, `summary()["never_ran"]`) instead
of silently doing nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["AttentionStats", "CallRecord", "MethodActivity", "Timer", "timed"]


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


NOT_APPLICABLE = "not a call the method applies to (e.g. cross-attention)"
"""How `MethodActivity.to_dict` names the calls a method leaves dense by design."""


@dataclass
class MethodActivity:
    """What one method did with the attention calls it saw: calls it acted on, and calls it left dense, by reason."""

    active_calls: int = 0
    dense_steps: dict[str, int] = field(default_factory=dict)
    """Calls in the method's dense steps, by the description of its step settings."""
    fallbacks: dict[str, int] = field(default_factory=dict)
    """Calls of active steps the method left dense, by its reason; `""` when by design (e.g. cross-attention)."""

    def add(self, other: MethodActivity) -> None:
        """Accumulate `other` into this one."""
        self.active_calls += other.active_calls
        for mine, theirs in ((self.dense_steps, other.dense_steps), (self.fallbacks, other.fallbacks)):
            for reason, count in theirs.items():
                mine[reason] = mine.get(reason, 0) + count

    def reasons(self) -> list[str]:
        """The stated reasons for dense calls (dense steps and fallbacks), most frequent first."""
        counts = {**self.dense_steps, **{r: c for r, c in self.fallbacks.items() if r}}
        return sorted(counts, key=lambda r: -counts[r])

    def idle_reason(self) -> str:
        """Why the method acted on no call."""
        return "; ".join(self.reasons()) or f"every call was {NOT_APPLICABLE}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "active_calls": self.active_calls,
            "dense_step_calls": sum(self.dense_steps.values()),
            "fallback_calls": sum(self.fallbacks.values()),
            "dense_reasons": {reason or NOT_APPLICABLE: self.dense_steps.get(reason, 0) + self.fallbacks.get(reason, 0)
                              for reason in {**self.dense_steps, **self.fallbacks}},
        }


class AttentionStats:
    """Statistics of one `Handle`: `stats[layer_name][step] -> CallRecord`, and per run what each method did."""

    def __init__(self) -> None:
        self._records: dict[str, dict[int, CallRecord]] = defaultdict(dict)
        self._activity: dict[int, dict[str, MethodActivity]] = defaultdict(dict)
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

    def record_activity(self, run: int, method: str, dense_reason: str | None, *, dense_step: bool = False) -> None:
        """Count one call of `method` in `run`: acted on (`dense_reason` None), or left dense in one of its dense
        steps (`dense_step`, the reason describing its step settings) or for `dense_reason`."""
        if not self.enabled:
            return
        activity = self._activity[run].setdefault(method, MethodActivity())
        if dense_reason is None:
            activity.active_calls += 1
        else:
            counts = activity.dense_steps if dense_step else activity.fallbacks
            counts[dense_reason] = counts.get(dense_reason, 0) + 1

    def activity(self, run: int | None = None) -> dict[str, MethodActivity]:
        """Per method, what it did in `run` (all runs together when `None`)."""
        runs = [self._activity.get(run, {})] if run is not None else list(self._activity.values())
        total: dict[str, MethodActivity] = {}
        for per_method in runs:
            for name, activity in per_method.items():
                total.setdefault(name, MethodActivity()).add(activity)
        return total

    def never_ran(self, run: int | None = None) -> dict[str, str]:
        """Methods that saw attention calls but acted on none of them (in `run`, or in all runs), with why."""
        return {name: a.idle_reason() for name, a in self.activity(run).items() if not a.active_calls}

    def run_report(self, run: int, steps: int | None = None) -> str | None:
        """One line on `run`: the methods that never ran and why, and those that left some calls of their active
        steps dense for a reason other than design; `None` when every method ran on every call it could."""
        parts = []
        for name, activity in self.activity(run).items():
            fallbacks = {r: c for r, c in activity.fallbacks.items() if r}
            if not activity.active_calls:
                parts.append(f"{name} never ran ({activity.idle_reason()})")
            elif fallbacks:
                seen = activity.active_calls + sum(activity.fallbacks.values())
                parts.append(f"{name} left {sum(fallbacks.values())} of {seen} calls dense ({'; '.join(fallbacks)})")
        if not parts:
            return None
        length = f" ({steps} steps)" if steps is not None else ""
        return f"in this pipeline call{length}, " + "; ".join(parts)

    def clear(self) -> None:
        self._records.clear()
        self._activity.clear()

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
        """Totals over all layers and steps: calls, mean density, skipped-tile fraction, attention time; per method
        its active and dense calls (`methods`), and the methods that acted on no call with why (`never_ran`)."""
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
            "methods": {name: activity.to_dict() for name, activity in self.activity().items()},
            "never_ran": self.never_ran(),
        }

    def format(self) -> str:
        """A readable report: one line of totals, a table with a row per layer and step (calls, density, skipped
        tiles, attention time, and what methods add, e.g. PAB's `reused` calls), and the methods that never ran."""
        s = self.summary()
        density = "n/a" if s["mean_density"] is None else f"{s['mean_density']:.3f}"
        skipped = "n/a" if s["skipped_tile_fraction"] is None else f"{s['skipped_tile_fraction']:.1%}"
        lines = [
            f"{s['calls']} attention calls over {s['layers']} layers x {s['steps']} steps; "
            f"mean density {density}; skipped tiles {skipped}; attention time {s['attention_ms']:.1f} ms"
        ]
        if self._records:
            lines += _table(self._records)
        lines += [f"{name} never ran: {reason}" for name, reason in s["never_ran"].items()]
        return "\n".join(lines)


def _table(records: dict[str, dict[int, CallRecord]]) -> list[str]:
    """Rows `layer, step, calls, density, skipped tiles, time ms, extras...`, aligned, under a header."""
    extras = sorted({key for steps in records.values() for rec in steps.values() for key in rec.extra})
    header = ["layer", "step", "calls", "density", "skipped tiles", "time ms", *extras]
    rows = [
        [
            layer,
            str(step),
            str(rec.calls),
            "-" if rec.density is None else f"{rec.density:.3f}",
            f"{rec.skipped_tiles}/{rec.tiles}" if rec.tiles else "-",
            f"{rec.time_ms:.2f}",
            *(f"{rec.extra.get(key, 0.0):g}" for key in extras),
        ]
        for layer, steps in records.items()
        for step, rec in sorted(steps.items())
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
            for row in (header, *rows)]
