"""Figures for the app: attention density per layer and step, attention time, kernel time against density.

Inputs are plain data (`AttentionStats.to_dict()`: `{layer: {step: {density, time_ms, ...}}}`, and the kernel
benchmark's rows), so the figures can be drawn for a run finished elsewhere. Matplotlib renders off-screen
(Agg); the app shows the figures with `gr.Plot`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["density_heatmap", "timing_plot", "kernel_plot", "message_figure"]

Stats = Mapping[str, Mapping[Any, Mapping[str, Any]]]


def message_figure(text: str) -> Figure:
    """A small empty figure carrying a sentence, for when there is nothing to plot."""
    figure, axes = plt.subplots(figsize=(6, 1.2))
    axes.axis("off")
    axes.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10, color="#555555")
    plt.close(figure)
    return figure


def _steps(stats: Stats) -> list[int]:
    return sorted({int(step) for steps in stats.values() for step in steps})


def _matrix(stats: Stats, key: str) -> tuple[list[str], list[int], np.ndarray]:
    """`[layers, steps]` array of `key` (NaN where a layer did not report it at a step)."""
    layers, steps = list(stats), _steps(stats)
    column = {step: index for index, step in enumerate(steps)}
    values = np.full((len(layers), len(steps)), np.nan)
    for row, layer in enumerate(layers):
        for step, record in stats[layer].items():
            if record.get(key) is not None:
                values[row, column[int(step)]] = float(record[key])
    return layers, steps, values


def density_heatmap(stats: Stats) -> Figure:
    """Fraction of attention computed, per layer (rows) and denoising step (columns); 1 is dense."""
    if not stats:
        return message_figure("No attention statistics: choose an attention method (observe records dense attention).")
    layers, steps, values = _matrix(stats, "density")
    if np.isnan(values).all():
        return message_figure("No layer reported an attention density in this run.")
    height = min(12.0, 2.4 + 0.22 * len(layers))
    figure, axes = plt.subplots(figsize=(9, height), layout="constrained")
    image = axes.imshow(np.ma.masked_invalid(values), aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0,
                        interpolation="nearest")
    axes.set_xticks(range(len(steps)), [str(s) for s in steps])
    axes.set_yticks(range(len(layers)), layers, fontsize=7 if len(layers) > 16 else 9)
    axes.set_xlabel("denoising step")
    axes.set_title("attention density (1 = dense; blank = not reported)")
    figure.colorbar(image, ax=axes, label="density")
    plt.close(figure)
    return figure


def timing_plot(stats: Stats) -> Figure:
    """Attention time per denoising step (all layers) and per layer (all steps)."""
    if not stats:
        return message_figure("No attention timings: choose an attention method to record them.")
    layers, steps, values = _matrix(stats, "time_ms")
    values = np.nan_to_num(values)
    figure, (per_step, per_layer) = plt.subplots(
        1, 2, figsize=(9, max(3.0, min(10.0, 1.4 + 0.2 * len(layers)))), layout="constrained",
        gridspec_kw={"width_ratios": [1, 1.4]},
    )
    per_step.bar([str(s) for s in steps], values.sum(axis=0), color="#4c72b0")
    per_step.set_xlabel("denoising step")
    per_step.set_ylabel("attention time (ms)")
    per_step.set_title("per step")
    per_layer.barh(range(len(layers)), values.sum(axis=1), color="#dd8452")
    per_layer.set_yticks(range(len(layers)), layers, fontsize=7 if len(layers) > 16 else 9)
    per_layer.invert_yaxis()
    per_layer.set_xlabel("attention time (ms)")
    per_layer.set_title("per layer")
    plt.close(figure)
    return figure


def kernel_plot(rows: Sequence[Mapping[str, Any]], title: str) -> Figure:
    """Median time against kept-block density, one line per implementation (rows: implementation, density, ms)."""
    if not rows:
        return message_figure("No kernel measurements.")
    figure, axes = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    for name in dict.fromkeys(row["implementation"] for row in rows):
        points = sorted((row["density"], row["ms"]) for row in rows if row["implementation"] == name)
        densities, times = zip(*points, strict=True)
        axes.plot(densities, times, marker="o", label=name)
    axes.set_xlabel("kept kv blocks (density)")
    axes.set_ylabel("median time (ms)")
    axes.set_xlim(0, 1.05)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    axes.set_title(title, fontsize=10)
    plt.close(figure)
    return figure
