"""The shapes scorer: right on rendered ground truth, wrong captions and noise fail, layouts and masks agree."""

import numpy as np
import pytest
import torch

from diffattn.media.metrics import mask_iou
from diffattn.shapes import COLOURS, SHAPES, Scene, ShapeSpec, dataset, render, sample_scene
from diffattn.shapes.score import as_frames, detect, score_video


@pytest.mark.parametrize("size", [32, 64])
def test_every_rendered_training_scene_scores_correct(size):
    """The scorer's accuracy on ground truth (200 scenes of 1-3 objects): measured 1.0 at 32x32 and at 64x64."""
    results = [score_video(clip.video, clip.scene.caption) for clip in dataset(200, 0, frames=9, height=size, width=size)]
    accuracy = np.mean([r.correct for r in results])
    assert accuracy >= 0.98, accuracy
    assert np.mean([r.background_ok for r in results]) >= 0.98
    assert np.mean([all(o.motion_ok for o in r.objects) for r in results]) >= 0.95


def test_detected_masks_and_centres_match_the_ground_truth():
    for clip in dataset(30, 1, frames=5, height=64, width=64):
        for f in range(5):
            found = {d.colour: d for d in detect(clip.video[f])}
            assert len(found) == len(clip.scene.objects)
            for spec, mask, centre in zip(clip.scene.objects, clip.masks[:, f], clip.centres[:, f]):
                detection = found[spec.colour]
                assert mask_iou(torch.from_numpy(detection.mask), torch.from_numpy(mask)) == 1.0
                if mask.sum() == (render(Scene((spec,), clip.scene.background), frames=5, height=64, width=64).masks[0, f]).sum():
                    assert np.allclose(detection.centre, centre, atol=1.0)  # unoccluded: centroid = centre


def test_a_scene_scored_against_another_caption_fails():
    swapped = 0
    for clip in dataset(60, 2, frames=9, height=32, width=32):
        first = clip.scene.objects[0]
        other_colour = next(c for c in COLOURS if c != clip.scene.background and c not in {o.colour for o in clip.scene.objects})
        other_shape = SHAPES[(SHAPES.index(first.shape) + 1) % len(SHAPES)]
        wrong_colour = Scene((ShapeSpec(first.shape, other_colour, first.motion, first.size, first.start, first.speed),),
                             clip.scene.background)
        result = score_video(clip.video, wrong_colour.caption)
        assert not result.correct and not result.colour_ok
        others = {(o.shape, o.colour) for o in clip.scene.objects[1:]}
        if (other_shape, first.colour) not in others:
            wrong_shape = Scene((ShapeSpec(other_shape, first.colour, first.motion, first.size, first.start, first.speed),),
                                clip.scene.background)
            result = score_video(clip.video, wrong_shape.caption)
            assert not result.correct and result.colour_ok and not result.shape_ok
            swapped += 1
    assert swapped > 40


def test_random_noise_and_empty_backgrounds_fail():
    rng = np.random.default_rng(0)
    for seed in range(30):
        caption = sample_scene(seed).caption
        noise = rng.integers(0, 256, size=(9, 32, 32, 3), dtype=np.uint8)
        assert not score_video(noise, caption).correct
        smooth = np.clip(rng.normal(0.5, 0.25, size=(9, 3, 32, 32)), 0, 1).astype(np.float32)
        assert not score_video(torch.from_numpy(smooth), caption).correct
    clip = render(sample_scene(3), frames=9, height=32, width=32)
    empty = np.broadcast_to(np.array(COLOURS[clip.scene.background], dtype=np.uint8), clip.video.shape)
    result = score_video(empty, clip.scene.caption)
    assert not result.correct and result.objects_per_frame == (0,) * 9 and result.background_ok


def test_wrong_motion_is_reported_but_not_required():
    clip = render(Scene((ShapeSpec("circle", "red", "left", 0.3, (0.7, 0.5), 0.4),), "blue"), frames=9, height=32, width=32)
    assert score_video(clip.video, "a red circle moving left on a blue background").objects[0].motion_ok
    result = score_video(clip.video, "a red circle moving right on a blue background")
    assert result.correct and result.objects[0].motion_ok is False
    assert score_video(clip.video, "a red circle on a green background").background_ok is False
    with pytest.raises(ValueError, match="names no"):
        score_video(clip.video, "a photo of a cat")


def test_layouts_agree():
    clip = render(sample_scene(5), frames=4, height=32, width=32)
    channels_first = torch.from_numpy(clip.video).permute(0, 3, 1, 2).float() / 255
    assert np.array_equal(as_frames(channels_first), clip.video)
    assert np.array_equal(as_frames(clip.video[0]), clip.video[:1])
    assert np.array_equal(as_frames(list(clip.video)), clip.video)
    assert score_video(channels_first[0], clip.scene.image_caption).correct
    with pytest.raises(ValueError):
        as_frames(np.zeros((2, 5, 5)))


def test_mask_iou():
    a = torch.zeros(2, 4, 4, dtype=torch.bool)
    b = a.clone()
    a[:, :2] = True  # 16 pixels
    b[:, 1:3] = True  # 16 pixels, 8 shared
    assert mask_iou(a, b) == pytest.approx(8 / 24)
    assert mask_iou(a, a) == 1.0 and mask_iou(a, ~a) == 0.0
    assert mask_iou(torch.zeros(3, 3), torch.zeros(3, 3)) is None
    with pytest.raises(ValueError):
        mask_iou(a, b[0])
