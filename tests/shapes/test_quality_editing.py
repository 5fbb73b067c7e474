"""Quality groups ``editing`` and ``initno``: their sources and prompts, the edit metrics on known edits, and the
rows' structure on untrained weights (the numbers mean nothing there; the thresholds on the trained weights are in
test_quality_thresholds_editing.py)."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from diffattn.errors import ConfigError
from diffattn.media.metrics import PSNR_CAP_DB
from diffattn.shapes.quality import GROUPS, QualitySettings, captions, run_groups
from diffattn.shapes.quality.common import load_model
from diffattn.shapes.quality.editing import FRAMES, HUE_CHANGED, edit_cases, edit_scores, regeneration_config
from diffattn.shapes.quality.initno import initno_config, subject_indices, two_object_scenes
from diffattn.shapes.world import Scene, ShapeSpec, parse_caption, render

TINY = QualitySettings(weights="untrained", samples=1, steps=2, seed=3)


def test_groups_are_registered():
    assert GROUPS["editing"] == "diffattn.shapes.quality.editing:rows"
    assert GROUPS["initno"] == "diffattn.shapes.quality.initno:rows"


def test_edit_cases_recolour_the_groups_held_out_scenes_fixed_by_the_seed():
    settings = QualitySettings(samples=4, seed=7)
    cases = edit_cases(settings)
    again = edit_cases(settings)
    texts, seeds = captions(settings, image=True)
    assert [c.seed for c in cases] == seeds
    for case, twin, caption in zip(cases, again, texts):
        assert (case.source_prompt, case.target_prompt) == (twin.source_prompt, twin.target_prompt)
        assert np.array_equal(case.clip.video, twin.clip.video)
        scene = case.clip.scene
        assert scene.texture == "plain" and len(scene.objects) == 1
        assert parse_caption(caption).objects == parse_caption(case.source_prompt).objects  # the same scene
        source, target = parse_caption(case.source_prompt), parse_caption(case.target_prompt)
        assert target.objects[0].shape == source.objects[0].shape and target.background == source.background
        assert target.objects[0].colour == case.target_colour not in (source.objects[0].colour, source.background)
        assert case.frames.shape == (FRAMES["cpu"], 3, 64, 64) and case.mask.shape == (FRAMES["cpu"], 64, 64)
        assert case.mask.any(dim=(1, 2)).all()
    other = edit_cases(dataclasses.replace(settings, seed=8))
    assert [c.target_prompt for c in other] != [c.target_prompt for c in cases]


def test_edit_scores_of_a_perfect_edit_of_no_edit_and_of_a_changed_background():
    case = edit_cases(QualitySettings(samples=1, seed=2))[0]
    scene = case.clip.scene
    recoloured = dataclasses.replace(scene, objects=(dataclasses.replace(scene.objects[0], colour=case.target_colour),))
    perfect = render(recoloured, frames=FRAMES["cpu"], height=64, width=64).frames
    assert edit_scores(perfect, case) == {"hue_changed": 1.0, "mask_iou": 1.0, "psnr_outside": PSNR_CAP_DB}
    assert edit_scores(case.frames, case) == {"hue_changed": 0.0, "mask_iou": 0.0, "psnr_outside": PSNR_CAP_DB}
    moved = perfect.roll(8, dims=-1)  # right colour and shape, wrong place
    scores = edit_scores(moved, case)
    assert scores["hue_changed"] == 1.0 and scores["mask_iou"] < 0.6 and scores["psnr_outside"] < 20


def test_the_regeneration_baseline_is_realcraft_with_its_control_off_too():
    """Why the FateZero and RealCraft rows share one baseline run: with fusion off both pipelines compute the same."""
    from diffattn.configs.editing import RealCraftConfig
    from diffattn.pipelines import FateZeroPipeline, RealCraftPipeline

    base = load_model("shapes-sd", TINY)
    case = edit_cases(TINY)[0]
    frames = case.frames[:2]
    off = regeneration_config(1)
    realcraft_off = RealCraftConfig(num_inference_steps=1, guidance_scale=off.guidance_scale, cross_replace_steps=0.0,
                                    self_preserve_steps=0.0, kv_frames=("self",), relaxed_kv_frames=("self",))
    prompts = (case.source_prompt, case.target_prompt)
    ours = FateZeroPipeline.from_pipe(base)(frames, *prompts, off, output_type="latent").frames
    theirs = RealCraftPipeline.from_pipe(base)(frames, *prompts, realcraft_off, output_type="latent").frames
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)  # the attention code paths round differently


def test_editing_refuses_steps_that_leave_fresco_no_step():
    with pytest.raises(ConfigError, match="steps >= 2"):
        run_groups(["editing"], dataclasses.replace(TINY, steps=1))


@pytest.fixture(scope="module")
def editing_rows():
    return run_groups(["editing"], TINY), run_groups(["editing"], TINY)


def test_editing_rows_have_the_metrics_in_range_and_repeat(editing_rows):
    rows, again = editing_rows
    assert [r.method for r in rows] == ["fatezero", "realcraft", "fresco"]
    assert [r.to_dict() for r in rows] == [r.to_dict() for r in again]
    for row in rows:
        assert row.group == "editing" and row.model == "shapes-sd" and row.baseline and row.criterion
        assert row.metrics["clips"] == 1 and row.metrics["frames"] == FRAMES["cpu"]
        for prefix in ("", "baseline_"):
            assert 0 <= row.metrics[f"{prefix}hue_changed"] <= 1
            assert 0 <= row.metrics[f"{prefix}mask_iou"] <= 1
            assert 0 < row.metrics[f"{prefix}psnr_outside"] <= PSNR_CAP_DB
        m = row.metrics
        expected = (m["hue_changed"] > HUE_CHANGED and m["mask_iou"] >= m["baseline_mask_iou"]
                    and m["psnr_outside"] >= m["baseline_psnr_outside"])
        assert row.verdict is expected
    assert rows[0].metrics["baseline_psnr_outside"] == rows[1].metrics["baseline_psnr_outside"]  # one shared baseline
    assert "ControlNet" in rows[2].note


def test_two_object_prompts_are_fixed_by_the_seed_and_name_their_shape_tokens():
    settings = QualitySettings(samples=5, seed=4)
    scenes = two_object_scenes(settings)
    assert [s.image_caption for s in scenes] == [s.image_caption for s in two_object_scenes(settings)]
    assert [s.image_caption for s in scenes] != [s.image_caption for s in two_object_scenes(dataclasses.replace(settings, seed=5))]
    tokenizer = load_model("shapes-sd", TINY).tokenizer
    for scene in scenes:
        assert len(scene.objects) == 2 and len(parse_caption(scene.image_caption).objects) == 2
        indices = subject_indices(tokenizer, scene)
        words = scene.image_caption.split()
        assert [words[i - 1] for i in indices] == [spec.shape for spec in scene.objects]  # SOT is token 0
    twins = Scene(tuple(ShapeSpec("circle", colour, "left", 0.3, (0.5, 0.5), 0.2) for colour in ("red", "blue")), "white")
    assert subject_indices(tokenizer, twins) == (3, 7)  # both circles, not the first one twice
    config = initno_config((3, 7), QualitySettings(steps=20, scale="gpu"))
    assert config.token_indices == (3, 7) and config.max_iter_to_alter == 10 and config.refinement_steps == (4, 8)


def test_initno_rows_have_the_metrics_in_range_and_repeat():
    first, second = run_groups(["initno"], TINY), run_groups(["initno"], TINY)
    (row,) = first
    assert row.group == "initno" and row.method == "initno" and row.model == "shapes-sd"
    metrics = row.metrics
    assert metrics["samples"] == 1
    for name in ("both_found", "baseline_both_found", "objects_found", "baseline_objects_found", "search_succeeded"):
        assert 0 <= metrics[name] <= 1
    assert metrics["both_found"] <= metrics["objects_found"] and math.isfinite(metrics["time_ratio"])
    assert metrics["time_ratio"] > 1  # the noise search alone runs several UNet passes with gradients
    assert row.verdict is (metrics["both_found"] >= metrics["baseline_both_found"])
    untimed = lambda r: {k: v for k, v in r.metrics.items() if k != "time_ratio"}  # noqa: E731
    assert untimed(row) == untimed(second[0])
