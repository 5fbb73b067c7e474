"""Silent no-ops are reported: a method that never ran in a pipeline call says so in one log line and in the stats;
layer selectors that match no layer are refused at `apply`."""

from __future__ import annotations

import logging

import pytest

import diffattn
from diffattn.errors import ConfigError
from diffattn.testing import tiny_call_kwargs, tiny_pipeline

from .conftest import denoiser, forward, inputs


@pytest.fixture(scope="module")
def wan():
    return tiny_pipeline("wan")


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "diffattn" and r.levelno == logging.WARNING]


def test_dense_steps_at_least_the_step_count_is_reported_once_per_call(wan, caplog):
    with caplog.at_level(logging.WARNING, logger="diffattn"), diffattn.apply(wan, diffattn.RadialConfig(dense_steps=12)) as handle:
        wan(**tiny_call_kwargs("wan"))  # 2 steps < 12 dense steps
        assert len(_warnings(caplog)) == 1  # one line for the call, not one per layer or step
        wan(**tiny_call_kwargs("wan"))
        summary = handle.stats.summary()
    lines = _warnings(caplog)
    assert len(lines) == 2, lines
    assert "in this pipeline call (2 steps), radial never ran (dense steps: dense_steps=12, dense_last_steps=0)" in lines[0]
    assert summary["never_ran"] == {"radial": "dense steps: dense_steps=12, dense_last_steps=0"}
    assert summary["methods"]["radial"]["active_calls"] == 0 and summary["methods"]["radial"]["dense_step_calls"] > 0


def test_every_call_below_min_tokens_is_reported(wan, caplog):
    with caplog.at_level(logging.WARNING, logger="diffattn"), diffattn.apply(wan, diffattn.SpargeConfig()) as handle:
        wan(**tiny_call_kwargs("wan"))  # the tiny call has 12 video tokens
        never_ran = handle.stats.summary()["never_ran"]
    assert never_ran == {"sparge": "12 video tokens are fewer than min_tokens=512"}
    (line,) = _warnings(caplog)
    assert "sparge never ran (12 video tokens are fewer than min_tokens=512)" in line


def test_readme_example_radial_lite_dense_steps_12_is_reported(tmp_path, caplog):
    """`diffattn generate --method radial,lite --radial-dense-steps 12` on the default tiny model (2 steps)."""
    import json

    from diffattn.cli import main

    stats = tmp_path / "stats.json"
    args = ["generate", "--method", "radial,lite", "--radial-dense-steps", "12", "--out", str(tmp_path / "r.mp4"),
            "--stats", str(stats)]
    with caplog.at_level(logging.WARNING, logger="diffattn"):
        assert main(args) == 0
    (line,) = _warnings(caplog)
    assert "radial never ran (dense steps: dense_steps=12" in line and "lite never ran (" in line
    assert set(json.loads(stats.read_text())["summary"]["never_ran"]) == {"radial", "lite"}


def test_a_method_that_ran_is_not_reported(wan, caplog):
    with caplog.at_level(logging.WARNING, logger="diffattn"), diffattn.apply(wan, "observe") as handle:
        wan(**tiny_call_kwargs("wan"))
        summary = handle.stats.summary()
    assert not _warnings(caplog)
    assert summary["never_ran"] == {} and summary["methods"]["observe"]["active_calls"] == summary["calls"] > 0


def test_model_only_runs_are_reported_when_the_next_run_starts_or_on_remove(caplog):
    """Without a pipeline the step count is unknown: a run is reported when the next one starts, the last on remove."""
    model, kwargs = denoiser("wan"), inputs("wan", frames=2, side=4)  # 32 tokens < min_tokens
    with caplog.at_level(logging.WARNING, logger="diffattn"):
        handle = diffattn.apply(model, diffattn.SpargeConfig(backend="reference"))
        forward(model, kwargs, timestep=900.0)
        forward(model, kwargs, timestep=500.0)  # same run, next step
        assert not _warnings(caplog)
        forward(model, kwargs, timestep=900.0)  # the timestep rises: a new run, the first is reported
        assert len(_warnings(caplog)) == 1
        handle.remove()
    lines = _warnings(caplog)
    assert len(lines) == 2 and all("sparge never ran (32 video tokens are fewer than min_tokens=512)" in line for line in lines)


@pytest.mark.parametrize("settings", [{"layers": (7,)}, {"layers": (0, 1), "dense_layers": (0, 1)}])
def test_layer_selectors_matching_no_layer_are_refused_at_apply_and_nothing_installed(wan, settings):
    before = {name: module.processor for name, module in wan.transformer.named_modules() if hasattr(module, "processor")}
    with pytest.raises(ConfigError, match=r"select no attention layer of this WanTransformer3DModel \(its blocks are 0\.\.1\)"):
        diffattn.apply(wan, diffattn.ObserveConfig(**settings))
    after = {name: module.processor for name, module in wan.transformer.named_modules() if hasattr(module, "processor")}
    assert after == before and diffattn.handle_of(wan) is None
    with diffattn.apply(wan, "observe"):  # nothing left behind: applying again works
        pass

