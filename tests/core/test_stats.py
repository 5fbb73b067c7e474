"""`AttentionStats`: the per-layer, per-step table of `format()`, per-method activity and what never ran."""

from __future__ import annotations

import json

from diffattn.stats import AttentionStats


def _stats() -> AttentionStats:
    stats = AttentionStats()
    for step in (0, 1):
        stats.record("blocks.0.attn1", step, count_call=True, density=0.25, tiles=64, skipped_tiles=48)
        stats.record("blocks.0.attn2", step, count_call=True)
    stats.record("blocks.0.attn2", 1, reused=1.0)
    for _ in range(4):
        stats.record_activity(0, "sparge", None)
        stats.record_activity(0, "radial", "dense steps: dense_steps=12, dense_last_steps=0", dense_step=True)
    stats.record_activity(0, "sparge", "")
    return stats


def test_format_is_a_per_layer_per_step_table():
    lines = _stats().format().splitlines()
    assert lines[0].startswith("4 attention calls over 2 layers x 2 steps; mean density 0.250; skipped tiles 75.0%")
    assert lines[1].split() == ["layer", "step", "calls", "density", "skipped", "tiles", "time", "ms", "reused"]
    rows = [line.split() for line in lines[2:6]]
    assert [row[:5] for row in rows] == [
        ["blocks.0.attn1", "0", "1", "0.250", "48/64"],
        ["blocks.0.attn1", "1", "1", "0.250", "48/64"],
        ["blocks.0.attn2", "0", "1", "-", "-"],
        ["blocks.0.attn2", "1", "1", "-", "-"],
    ]
    assert [row[-1] for row in rows] == ["0", "0", "0", "1"]  # PAB's reused calls, a column of their own
    assert lines[6:] == ["radial never ran: dense steps: dense_steps=12, dense_last_steps=0"]
    assert len({len(line) for line in lines[1:6]}) == 1  # aligned columns


def test_summary_carries_active_calls_per_method_and_never_ran():
    summary = _stats().summary()
    assert summary["methods"]["sparge"] == {
        "active_calls": 4, "dense_step_calls": 0, "fallback_calls": 1,
        "dense_reasons": {"not a call the method applies to (e.g. cross-attention)": 1},
    }
    assert summary["methods"]["radial"]["active_calls"] == 0
    assert summary["never_ran"] == {"radial": "dense steps: dense_steps=12, dense_last_steps=0"}
    json.dumps(summary, allow_nan=False)


def test_run_report_names_only_what_never_ran_or_fell_back():
    stats = _stats()
    assert stats.run_report(0, 2) == (
        "in this pipeline call (2 steps), radial never ran (dense steps: dense_steps=12, dense_last_steps=0)"
    )
    stats.record_activity(1, "lite", None)
    stats.record_activity(1, "lite", "causal or dropout attention is not supported by the block-sparse kernels")
    assert stats.run_report(1) == (
        "in this pipeline call, lite left 1 of 2 calls dense (causal or dropout attention is not supported by the "
        "block-sparse kernels)"
    )
    stats.record_activity(2, "observe", None)
    assert stats.run_report(2) is None
