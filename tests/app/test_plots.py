"""The figures draw what the stats say: density per (layer, step), time per step and layer, kernel lines."""

from __future__ import annotations

import numpy as np

from diffattn.app.plots import density_heatmap, kernel_plot, timing_plot

STATS = {
    "blocks.0.attn1": {0: {"density": 1.0, "time_ms": 2.0}, 1: {"density": 0.25, "time_ms": 1.0}},
    "blocks.0.attn2": {0: {"density": None, "time_ms": 0.5}, 1: {"density": None, "time_ms": 0.5}},
    "blocks.1.attn1": {1: {"density": 0.5, "time_ms": 3.0}},
}


def test_density_heatmap_has_one_cell_per_layer_and_step_and_blanks_unreported_ones():
    figure = density_heatmap(STATS)
    image = figure.axes[0].images[0]
    cells = image.get_array()
    assert cells.shape == (3, 2)
    assert np.ma.getmaskarray(cells).tolist() == [[False, False], [True, True], [True, False]]
    assert cells[0].tolist() == [1.0, 0.25] and cells[2, 1] == 0.5
    assert image.get_clim() == (0.0, 1.0)
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == list(STATS)


def test_timing_plot_sums_per_step_and_per_layer():
    per_step, per_layer = timing_plot(STATS).axes[:2]
    assert [bar.get_height() for bar in per_step.patches] == [2.5, 4.5]
    assert [bar.get_width() for bar in per_layer.patches] == [3.0, 1.0, 3.0]


def test_empty_stats_say_why_there_is_no_plot():
    for draw in (density_heatmap, timing_plot):
        texts = [t.get_text() for t in draw({}).axes[0].texts]
        assert any("choose an attention method" in t for t in texts)


def test_kernel_plot_draws_one_line_per_implementation_sorted_by_density():
    measured = [("dense SDPA", 0.5, 4.0), ("ours", 0.5, 2.0), ("dense SDPA", 0.1, 4.0), ("ours", 0.1, 0.5)]
    rows = [{"implementation": name, "density": d, "ms": ms} for name, d, ms in measured]
    lines = kernel_plot(rows, "CPU").axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["dense SDPA", "ours"]
    assert lines[1].get_xydata().tolist() == [[0.1, 0.5], [0.5, 2.0]]


def test_density_heatmap_says_so_when_no_layer_reported_a_density():
    figure = density_heatmap({"blocks.0.attn1": {0: {"density": None, "time_ms": 1.0}}})
    assert [t.get_text() for t in figure.axes[0].texts] == ["No layer reported an attention density in this run."]
