"""The shapes world: determinism, exact ground truth, captions that parse back, a disjoint held-out split."""

import numpy as np
import pytest

from diffattn.shapes import (
    COLOURS,
    HELDOUT_TRIPLES,
    MOTIONS,
    SHAPES,
    VOCABULARY,
    Scene,
    ShapeSpec,
    dataset,
    parse_caption,
    render,
    sample_scene,
    split_of,
)


def test_same_seed_is_bitwise_equal_and_seeds_differ():
    first = list(dataset(5, 3, frames=9, height=32, width=32))
    second = list(dataset(5, 3, frames=9, height=32, width=32))
    for a, b in zip(first, second):
        assert a.scene == b.scene
        assert np.array_equal(a.video, b.video) and np.array_equal(a.masks, b.masks)
        assert np.array_equal(a.centres, b.centres)
    other = list(dataset(5, 4, frames=9, height=32, width=32))
    assert [c.scene for c in other] != [c.scene for c in first]


@pytest.mark.parametrize("size", [32, 64])
def test_masks_are_exactly_the_pixels_of_each_colour(size):
    for clip in dataset(40, 0, frames=9, height=size, width=size):
        assert clip.video.shape == (9, size, size, 3) and clip.video.dtype == np.uint8
        assert clip.masks.shape == (len(clip.scene.objects), 9, size, size)
        assert not (clip.masks.sum(0) > 1).any(), "visible masks overlap"
        for spec, mask in zip(clip.scene.objects, clip.masks):
            colour_pixels = (clip.video == np.array(COLOURS[spec.colour], dtype=np.uint8)).all(-1)
            assert np.array_equal(mask, colour_pixels)
            assert mask.any(1).any(1).all(), "an object vanished from a frame"
        pixels = clip.video[~clip.masks.any(0)].astype(int)
        palette = np.array(list(COLOURS.values()))
        nearest = np.argmin(((pixels[:, None] - palette[None]) ** 2).sum(-1), axis=1)
        assert (nearest == list(COLOURS).index(clip.scene.background)).all()
        exact = (pixels == COLOURS[clip.scene.background]).all(-1)
        assert exact.all() == (clip.scene.texture == "plain")


def test_motion_follows_the_caption_and_bouncing_stays_inside():
    for clip in dataset(60, 1, frames=17, height=32, width=32):
        for spec, centres in zip(clip.scene.objects, clip.centres):
            step = centres[-1] - centres[0]
            expected = {"left": (step[0] < -3), "right": (step[0] > 3), "up": (step[1] < -3), "down": (step[1] > 3)}
            if spec.motion == "bouncing":
                half = spec.size * 32 / 2
                assert (centres >= half - 1e-9).all() and (centres <= 32 - half + 1e-9).all()
            else:
                assert expected[spec.motion], (spec, step)


def test_bouncing_reflects_at_the_border():
    spec = ShapeSpec("circle", "red", "bouncing", 0.2, (0.5, 0.5), 1.0, heading=0.0)
    x = spec.centres(np.linspace(0, 1, 101))[:, 0]
    assert x.max() == pytest.approx(0.9) and x[-1] == pytest.approx(0.3)
    assert np.allclose(spec.centres(np.linspace(0, 1, 101))[:, 1], 0.5)


def test_captions_parse_back_and_use_only_the_vocabulary():
    for seed in range(200):
        scene = sample_scene(seed)
        assert parse_caption(scene.caption) == scene.description
        assert set(scene.caption.split()) <= set(VOCABULARY)
        image = parse_caption(scene.image_caption)
        assert [(o.shape, o.colour, o.motion) for o in image.objects] == [(o.shape, o.colour, None) for o in scene.objects]
    two = parse_caption("A red circle moving left and a green square bouncing on a striped blue background")
    assert [(o.shape, o.colour, o.motion) for o in two.objects] == [("circle", "red", "left"), ("square", "green", "bouncing")]
    assert (two.background, two.texture) == ("blue", "striped")
    assert parse_caption("a purple cat").objects == () and parse_caption("a purple cat").background is None


def test_scene_rules():
    with pytest.raises(ValueError):
        Scene((ShapeSpec("square", "red", "left", 0.3, (0.5, 0.5), 0.2),), background="red")
    for seed in range(100):
        scene = sample_scene(seed)
        colours = [o.colour for o in scene.objects]
        assert len(set(colours)) == len(colours) and scene.background not in colours and 1 <= len(colours) <= 3


def test_heldout_split_is_disjoint_from_train_and_covers_every_word():
    assert len(HELDOUT_TRIPLES) == len(SHAPES) * len(COLOURS)
    train_triples = set()
    for seed in range(300):
        scene = sample_scene(seed)
        assert split_of(scene) == "train"
        train_triples |= {(o.shape, o.colour, o.motion) for o in scene.objects}
    assert not train_triples & HELDOUT_TRIPLES
    assert {t[:2] for t in train_triples} == {(s, c) for s in SHAPES for c in COLOURS}
    assert {t[2] for t in train_triples} == set(MOTIONS)
    for seed in range(50):
        held = sample_scene(seed, split="heldout")
        assert split_of(held) == "heldout" and split_of(parse_caption(held.caption)) == "heldout"
        assert any((o.shape, o.colour, o.motion) in HELDOUT_TRIPLES for o in held.objects)
    train_captions = {sample_scene(s).caption for s in range(300)}
    assert not train_captions & {sample_scene(s, split="heldout").caption for s in range(300)}


def test_one_scene_renders_the_same_layout_at_any_size_and_frame_count():
    scene = sample_scene(7, max_objects=1)
    small, large = render(scene, frames=9, height=32, width=32), render(scene, frames=17, height=64, width=64)
    assert np.allclose(large.centres[:, ::2], 2 * small.centres)
    coverage = small.masks.mean((2, 3)), large.masks[:, ::2].mean((2, 3))
    assert np.allclose(*coverage, atol=0.02)
    with pytest.raises(ValueError):
        render(scene, frames=0, height=32, width=32)


def test_dataset_slices_agree_with_the_whole():
    whole = list(dataset(6, 9, frames=3, height=16, width=16))
    tail = list(dataset(2, 9, frames=3, height=16, width=16, start=4))
    assert [c.scene for c in tail] == [c.scene for c in whole[4:]]
    assert all(np.array_equal(a.video, b.video) for a, b in zip(tail, whole[4:]))
