"""Prompt-to-prompt token logic, cross-attention editors and blend masks (tensor level, no UNet)."""

import tempfile

import pytest
import torch

from diffattn.processors.editing import prompts as P
from diffattn.processors.editing.blend import BlendMask, otsu_threshold, word_map
from diffattn.processors.editing.editors import CrossAttentionEditor
from diffattn.processors.editing.errors import PromptWordError
from diffattn.testing.text import write_clip_tokenizer

L = 77
SOURCE = "a silver jeep driving down a road,"
TARGET = "a red car driving down a road,"


@pytest.fixture(scope="module")
def tokenizer():
    with tempfile.TemporaryDirectory() as folder:
        return write_clip_tokenizer(folder)


def _probs(*shape):
    return torch.rand(*shape).softmax(-1)


def test_word_positions_follow_the_encoded_prompt(tokenizer):
    ids = tokenizer(SOURCE).input_ids
    spans = dict(P.word_spans(tokenizer, SOURCE))
    assert len(spans["jeep"]) > 1  # not in the tiny vocabulary: several byte-level tokens
    for word, span in P.word_spans(tokenizer, SOURCE):
        assert tokenizer.decode([ids[i] for i in span]).replace(" ", "") == word.lower()
    assert P.word_positions(tokenizer, SOURCE, ["road"]) == P.word_positions(tokenizer, SOURCE, ["Road."])
    with pytest.raises(PromptWordError, match="'tiger' is not in the prompt"):
        P.word_positions(tokenizer, SOURCE, ["silver", "tiger"], role="blend word")


def test_replace_needs_equal_word_counts_and_refine_aligns(tokenizer):
    with pytest.raises(PromptWordError, match="same number of words.*refine"):
        P.replacement_mapper(tokenizer, SOURCE, "watercolor painting of " + SOURCE, L)
    index, aligned = P.refinement_mapper(tokenizer, SOURCE, "watercolor painting of " + SOURCE, L)
    target_jeep = P.word_positions(tokenizer, "watercolor painting of " + SOURCE, ["jeep"])
    source_jeep = P.word_positions(tokenizer, SOURCE, ["jeep"])
    assert index[target_jeep].tolist() == source_jeep and aligned[target_jeep].eq(1).all()
    new = P.word_positions(tokenizer, "watercolor painting of " + SOURCE, ["watercolor", "painting", "of"])
    assert aligned[new].eq(0).all()


def test_replacement_mapper_moves_a_words_attention_and_keeps_its_mass(tokenizer):
    mapper = P.replacement_mapper(tokenizer, SOURCE, TARGET, L)
    probs = _probs(2, 5, L)
    mapped = probs @ mapper
    source_jeep = P.word_positions(tokenizer, SOURCE, ["jeep"])
    target_car = P.word_positions(tokenizer, TARGET, ["car"])
    assert torch.allclose(mapped[..., target_car].sum(-1), probs[..., source_jeep].sum(-1), atol=1e-6)
    assert torch.allclose(mapped[..., P.word_positions(tokenizer, TARGET, ["driving"])],
                          probs[..., P.word_positions(tokenizer, SOURCE, ["driving"])])


def test_editors_are_identities_for_identical_prompts(tokenizer):
    own = _probs(3, 2, 16, L)
    for mode in ("replace", "refine"):
        editor = CrossAttentionEditor.from_prompts(tokenizer, SOURCE, SOURCE, length=L, num_steps=4, mode=mode,
                                                   replace_steps=1.0, reweight={"jeep": 1.0})
        assert torch.equal(editor(own, own, 0), own)
    fused = CrossAttentionEditor.from_prompts(tokenizer, SOURCE, SOURCE, length=L, num_steps=4, mode="refine",
                                              replace_steps=1.0)(_probs(3, 2, 16, L), own, 0)
    assert not torch.equal(fused, own)  # a different source map is taken over


def test_reweight_and_per_word_schedule(tokenizer):
    editor = CrossAttentionEditor.from_prompts(tokenizer, SOURCE, TARGET, length=L, num_steps=10, mode="replace",
                                               replace_steps=0.5, word_steps={"car": 0.2}, reweight={"red": 4.0})
    source, own = _probs(1, 2, 8, L), _probs(1, 2, 8, L)
    red = P.word_positions(tokenizer, TARGET, ["red"])
    car = P.word_positions(tokenizer, TARGET, ["car"])
    road = P.word_positions(tokenizer, TARGET, ["road"])
    early, middle, late = editor(source, own, 0), editor(source, own, 3), editor(source, own, 7)
    mapped = source @ editor.replace
    assert torch.allclose(early[..., red], 4 * mapped[..., red])
    assert torch.allclose(middle[..., car], own[..., car]) and torch.allclose(early[..., car], mapped[..., car])
    assert torch.allclose(middle[..., road], mapped[..., road]) and torch.allclose(late, own)
    assert editor.active(3) and not editor.active(7)


def test_changed_words():
    assert P.changed_words(SOURCE, TARGET) == ["silver", "jeep"]
    assert P.changed_words(SOURCE, "watercolor painting of " + SOURCE) == []


def test_blend_threshold_extremes_and_monotone_area():
    maps = [_probs(2, 2, 16, L), _probs(2, 2, 16, L)]
    words = torch.zeros(L)
    words[[3, 4]] = 1
    values = word_map(maps, words)
    assert torch.allclose(values, sum((m * words).sum(-1).mean(1) for m in maps) / 2)
    assert BlendMask(values, (4, 4), 1.0).at(8, 8).sum() == 0
    assert BlendMask(values, (4, 4), 2.0).at(8, 8).sum() == 0
    assert BlendMask(values, (4, 4), -0.1).at(8, 8).eq(1).all()
    areas = [float(BlendMask(values, (4, 4), th, pool=False).at(4, 4).sum()) for th in (0.2, 0.5, 0.8)]
    assert areas[0] >= areas[1] >= areas[2] > 0


def test_otsu_separates_a_bimodal_map():
    values = torch.full((1, 64), 0.1)
    values[0, 40:] = 0.9
    values += 0.02 * torch.rand(1, 64)
    threshold = otsu_threshold(values)
    assert 0.12 < float(threshold) < 0.9
    mask = BlendMask(values.view(1, 64), (8, 8), "otsu", pool=False).tokens(8, 8)
    assert mask[0, 40:].eq(1).all() and mask[0, :40].eq(0).all()
    assert otsu_threshold(torch.full((1, 10), 0.5)).item() == 1.0  # no contrast: nothing selected
