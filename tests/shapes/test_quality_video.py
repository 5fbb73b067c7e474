"""The video quality groups ``freeswim`` and ``noise``: their clip metrics on rendered clips (the world's ground
truth), and their rows on the untrained model (structure and determinism; thresholds on the trained shapes-wan:
test_quality_thresholds_video.py)."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from diffattn.shapes import Scene, ShapeSpec, render
from diffattn.shapes.quality import GROUPS, QualitySettings
from diffattn.shapes.quality import freeswim as freeswim_group
from diffattn.shapes.quality import noise as noise_group
from diffattn.shapes.quality.clips import clip_metrics

FRACTIONS = ("accuracy", "exact_count_frames", "exact_count_samples", "found_frames", "detected_frames",
             "colour_stability", "shape_stability")

RED = ShapeSpec("square", "red", "right", 0.3, (0.3, 0.3), 0.2)
CAPTION = "a red square moving right on a blue background"


def _clip(scene: Scene, frames: int = 9, size: int = 32) -> torch.Tensor:
    return render(scene, frames=frames, height=size, width=size).frames


def test_a_rendered_clip_of_its_caption_scores_perfectly():
    metrics = clip_metrics([_clip(Scene((RED,), "blue"))], [CAPTION])
    assert metrics["accuracy"] == 1 and metrics["found_frames"] == 1 and metrics["detected_frames"] == 1
    assert metrics["objects_per_frame"] == metrics["objects_expected"] == 1
    assert metrics["count_error"] == metrics["extra_objects"] == 0
    assert metrics["exact_count_frames"] == metrics["exact_count_samples"] == 1
    assert metrics["colour_stability"] == metrics["shape_stability"] == 1
    assert 0 <= metrics["warp_error"] < 5  # a rigid shift: the flow explains every frame


def test_a_duplicated_object_counts_as_an_extra_object_and_a_blank_clip_as_a_missing_one():
    twin = replace(RED, start=(0.7, 0.7), speed=0.0)
    duplicated = clip_metrics([_clip(Scene((RED, twin), "blue"))], [CAPTION])
    assert duplicated["objects_per_frame"] == 2 and duplicated["extra_objects"] == 1 and duplicated["count_error"] == 1
    assert duplicated["exact_count_frames"] == 0 and duplicated["accuracy"] == 1  # the scorer still finds the square
    blank = clip_metrics([torch.zeros(9, 3, 32, 32)], [CAPTION])
    assert blank["objects_per_frame"] == 0 and blank["count_error"] == 1 and blank["extra_objects"] == 0
    assert blank["colour_stability"] is None and blank["shape_stability"] is None and blank["detected_frames"] == 0


def test_an_object_that_changes_colour_every_frame_has_no_colour_stability():
    red, green = _clip(Scene((RED,), "blue")), _clip(Scene((replace(RED, colour="green"),), "blue"))
    flicker = torch.stack([(red if frame % 2 == 0 else green)[frame] for frame in range(9)])
    metrics = clip_metrics([flicker], [CAPTION])
    assert metrics["colour_stability"] == 0 and metrics["shape_stability"] == 1
    assert metrics["found_frames"] == pytest.approx(5 / 9) and metrics["accuracy"] == 1
    assert metrics["warp_error"] > clip_metrics([red], [CAPTION])["warp_error"]


def _measured(name):
    """The clip metric a row's metric name reports (without its baseline/reference suffix)."""
    for suffix in ("_baseline", "_native", "_trained_length"):
        name = name.removesuffix(suffix)
    return name


def _check_rows(rows, group, methods, criteria):
    assert [row.method for row in rows] == methods
    for row in rows:
        assert row.group == group and row.model == "shapes-wan" and row.metrics["samples"] == 1
        for name, value in row.metrics.items():
            assert value is None or math.isfinite(value), name
            if _measured(name) in FRACTIONS and value is not None:
                assert 0 <= value <= 1, name
        assert row.metrics["seconds"] > 0 and row.metrics["time_ratio"] == pytest.approx(
            row.metrics["seconds"] / row.metrics["seconds_baseline"])
        assert row.verdict == criteria(row.metrics)


def _without_times(rows):
    return [{k: v for k, v in row.to_dict()["metrics"].items() if "seconds" not in k and k != "time_ratio"} for row in rows]


@pytest.fixture(scope="module")
def untrained():
    """Each group twice on the untrained model, one caption, two steps (FreeSwim's stage 2 needs 0.7 x steps >= 1)."""
    settings = QualitySettings(weights="untrained", samples=1, steps=2)
    return {name: (module.rows(settings), module.rows(settings)) for name, module in
            (("freeswim", freeswim_group), ("noise", noise_group))}


@pytest.mark.slow
def test_freeswim_rows_compare_object_counts_with_both_baselines(untrained):
    first, second = untrained["freeswim"]
    _check_rows(first, "freeswim", ["freeswim", "freeswim"], lambda m: m["count_error"] <= m["count_error_baseline"])
    assert "plain" in first[0].baseline and "without" in first[1].baseline
    for row in first:
        assert {f"{name}{suffix}" for name in freeswim_group.METRICS for suffix in ("", "_baseline", "_native")} <= set(row.metrics)
        assert "64x64" in row.setting and row.metrics["objects_expected"] >= 1 and "reference kernel" in row.note
        assert row.metrics["objects_per_frame"] >= 0 and row.metrics["count_error"] >= 0
    shared = [name for name in first[0].metrics if "baseline" not in name and name != "time_ratio"]
    assert [first[0].metrics[name] for name in shared] == [first[1].metrics[name] for name in shared]  # one FreeSwim run
    assert _without_times(first) == _without_times(second)


@pytest.mark.slow
def test_noise_rows_measure_consistency_against_plain_sampling(untrained):
    first, second = untrained["noise"]
    _check_rows(first, "noise", ["freeinit", "freenoise"], lambda m: (
        m["warp_error"] <= m["warp_error_baseline"] and m["found_frames"] >= m["found_frames_baseline"]))
    freeinit, freenoise = first
    assert {f"{name}{suffix}" for name in noise_group.METRICS for suffix in ("", "_baseline")} <= set(freeinit.metrics)
    assert freeinit.metrics["iterations"] == noise_group.CPU_FREEINIT_ITERS
    assert {f"{name}_trained_length" for name in noise_group.METRICS} <= set(freenoise.metrics)
    # FreeNoise's reference at the trained length is FreeInit's baseline: the same plain clips
    assert all(np.isclose(freenoise.metrics[f"{name}_trained_length"], freeinit.metrics[f"{name}_baseline"], equal_nan=True)
               for name in ("warp_error", "found_frames", "accuracy"))
    assert f"{noise_group.LONG_FRAMES['cpu']} frames" in freenoise.setting and "experimental" in freenoise.note
    assert _without_times(first) == _without_times(second)


def test_groups_are_registered():
    assert GROUPS["freeswim"] == "diffattn.shapes.quality.freeswim:rows"
    assert GROUPS["noise"] == "diffattn.shapes.quality.noise:rows"
