"""InitNO: scores, the optimisation and its budget, the attention store, the pipeline and `apply` redirect."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

import diffattn
from diffattn.configs import InitNOConfig, ObserveConfig
from diffattn.errors import ConfigError, UnsupportedModelError
from diffattn.noise.initno import (
    NoiseScores,
    clean_score,
    conflict_score,
    kl_divergence,
    optimise_noise,
    otsu_foreground,
    otsu_levels,
    peak_components,
    reparametrise,
    response_score,
    search_initial_noise,
    subject_token_indices,
)
from diffattn.pipelines.initno import InitNOPipeline, attention_resolutions
from diffattn.testing import tiny_call_kwargs, tiny_denoiser, tiny_denoiser_inputs, tiny_pipeline

PROMPT = "a painting of a squirrel eating a burger"  # the tiny SD call's prompt; SOT = 0, squirrel = 5, burger = 8
QUICK = dict(words=("squirrel", "burger"), max_rounds=2, steps_per_round=2, fallback_steps=2, max_iter_to_alter=1)


@pytest.fixture(scope="module")
def sd():
    return tiny_pipeline("sd")


# ----------------------------------------------------------------------------------------- scores
def test_response_score_is_zero_for_a_peak_of_one_and_tracks_the_weakest_token():
    maps = torch.zeros(2, 4, 4)
    maps[0, 1, 2] = maps[1, 3, 0] = 1.0
    assert response_score(maps) == 0
    maps[1, 3, 0] = 0.3
    torch.testing.assert_close(response_score(maps), torch.tensor(0.7))


def test_conflict_score_is_zero_for_disjoint_and_half_for_identical_maps():
    self_maps = torch.zeros(4, 4, 16)
    self_maps[0, 0, :8] = 1.0 / 8  # token 1's peak row attends to the top half
    self_maps[3, 3, 8:] = 1.0 / 8  # token 2's to the bottom half
    self_maps[1, 1, :8] = 1.0 / 8
    assert conflict_score(self_maps, torch.tensor([[0, 0], [3, 3]]), smooth=False) == 0
    score = conflict_score(self_maps, torch.tensor([[0, 0], [1, 1]]), smooth=False)
    torch.testing.assert_close(score, torch.tensor(0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(conflict_score(self_maps, torch.tensor([[0, 0], [1, 1]]), smooth=True), torch.tensor(0.5), atol=1e-5, rtol=0)
    assert conflict_score(self_maps, torch.tensor([[0, 0]])) == 0  # one subject: nothing to conflict with


def test_reparametrisation_is_the_identity_and_kl_zero_at_initialisation():
    noise = torch.randn(1, 4, 8, 8)
    zeros = torch.zeros_like(noise)
    assert torch.equal(reparametrise(noise, zeros, zeros), noise)
    assert kl_divergence(zeros, zeros) == 0
    assert kl_divergence(zeros + 0.1, zeros) > 0 and kl_divergence(zeros, zeros + 0.1) > 0


def test_otsu_threshold_equals_opencv():
    generator = torch.Generator().manual_seed(0)
    maps = torch.cat([torch.rand(3, 16, 16, generator=generator), torch.rand(3, 16, 16, generator=generator) ** 4])
    maps[0, :4, :4] += 0.5
    maps = maps.clamp(0, 1)
    foreground = otsu_foreground(maps)
    for index, level in enumerate(otsu_levels(maps)):
        grey = (maps[index].numpy() * 255).astype(np.uint8)
        expected, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        assert int(level) == expected
        assert np.array_equal(foreground[index].numpy(), binary > 0)


def test_clean_term_penalises_a_second_blob_outside_the_peak():
    one = torch.full((1, 8, 8), 0.05)
    one[0, 1:3, 1:3] = 0.9
    peak = torch.tensor([[1, 1]])
    assert torch.equal(peak_components(one >= 0.5, peak)[0], one[0] >= 0.5)
    assert clean_score(one, peak) == 0
    two = one.clone()
    two[0, 5:7, 5:7] = 0.7  # a separate blob: background by InitNO's rule ...
    assert not peak_components(two >= 0.5, peak)[0, 5, 5]
    assert clean_score(two, peak) == 0  # ... but dimmer than every pixel of the peak's blob
    two[0, 2, 2] = 0.6  # now the peak's blob has a pixel below the other blob's maximum
    torch.testing.assert_close(clean_score(two, peak), torch.tensor(0.7))


def test_token_indices_from_words_and_raw_positions(sd):
    assert subject_token_indices(sd.tokenizer, PROMPT, ("squirrel", "burger")) == [5, 8]
    assert subject_token_indices(sd.tokenizer, PROMPT, ("Burger",), (2,)) == [2, 8]
    with pytest.raises(ConfigError, match="'dog' is not in the prompt"):
        subject_token_indices(sd.tokenizer, PROMPT, ("dog",))
    with pytest.raises(ConfigError, match="not a prompt token"):
        subject_token_indices(sd.tokenizer, PROMPT, (), (9,))
    with pytest.raises(ConfigError, match="needs the subject tokens"):
        subject_token_indices(sd.tokenizer, PROMPT)


# ----------------------------------------------------------------------------------- optimisation
def _scores(cross: torch.Tensor, self_: float = 0.1) -> NoiseScores:
    return NoiseScores(cross, cross * 0 + self_, cross * 0, torch.zeros(1, 2, 2))


def test_search_respects_the_default_step_budget():
    """Never succeeding: 5 rounds x 10 steps, then the 50-step fallback from the best round's noise."""
    config = InitNOConfig()
    calls, resampled = [], []

    def score(latents):
        calls.append(1)
        return _scores(0.9 + 0.01 * torch.tanh(latents.mean()))

    def sample():
        resampled.append(torch.full((1, 4, 2, 2), float(len(resampled) + 1)))
        return resampled[-1]

    result = search_initial_noise(torch.zeros(1, 4, 2, 2), sample, score, progress=False, max_rounds=config.max_rounds,
                                  steps_per_round=config.steps_per_round, fallback_steps=config.fallback_steps)
    assert not result.succeeded and len(result.rounds) == 5 and result.fallback is not None
    assert result.optimiser_steps == config.optimiser_budget == 5 * 10 + 50 == len(calls)
    best = min(result.rounds, key=lambda r: r.score)
    assert torch.equal(result.fallback.initial, best.initial)
    assert len(resampled) == 5  # fresh noise after every failed round, as InitNO's loop draws it


def test_search_stops_at_the_first_successful_round():
    def score(latents):  # succeeds only for noise drawn in the second round (mean 2)
        return _scores(torch.where(latents.mean() > 1.5, 0.1, 0.9) + 0 * latents.sum())

    result = search_initial_noise(torch.zeros(1, 4, 2, 2), lambda: torch.full((1, 4, 2, 2), 2.0), score, progress=False)
    assert result.succeeded and len(result.rounds) == 2 and result.fallback is None
    assert result.optimiser_steps == 10 and torch.equal(result.latents, torch.full((1, 4, 2, 2), 2.0))


def test_optimisation_lowers_the_loss_and_keeps_the_noise_near_the_prior():
    target = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))

    def score(latents):  # S_CA falls as the noise moves towards `target`
        return _scores(0.25 + ((latents - target) ** 2).mean() / 10)

    start = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    result = optimise_noise(start, score, max_steps=20, lr=0.05, kl_threshold=0.01)
    assert result.scores[-1][0] < result.scores[0][0]
    assert result.kl_steps > 0  # the projection acted
    assert not torch.equal(result.latents, start)


# ---------------------------------------------------------------------------------- attention store
def test_attention_store_records_maps_at_the_resolution_without_changing_the_output():
    unet = tiny_denoiser("sd")
    inputs = tiny_denoiser_inputs("sd")
    stock = unet(**inputs).sample
    with diffattn.apply(unet, InitNOConfig()) as handle:
        store = handle.methods[0].store
        with store.recording((8, 8)):
            out = unet(**inputs).sample
            cross, self_maps = store.maps("cross"), store.maps("self")
        with store.recording((16, 16)):
            unet(**inputs)
            with pytest.raises(ConfigError, match="no cross-attention maps"):
                store.maps("cross")
    torch.testing.assert_close(out, stock, rtol=1e-5, atol=1e-5)
    assert cross.shape == (1, 8, 8, 77) and self_maps.shape == (1, 8, 8, 64)
    torch.testing.assert_close(cross.sum(-1), torch.ones(1, 8, 8))
    torch.testing.assert_close(self_maps.sum(-1), torch.ones(1, 8, 8))


def test_default_attention_resolution_follows_the_unet_geometry():
    available, default = attention_resolutions(tiny_denoiser("sd"), (8, 8))
    assert default == (8, 8) and available == [(8, 8), (4, 4)]  # no 16x16 in the tiny UNet: its coarsest down/up level
    sd15 = SimpleNamespace(config=SimpleNamespace(
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        mid_block_type="UNetMidBlock2DCrossAttn",
    ))
    assert attention_resolutions(sd15, (64, 64)) == ([(64, 64), (32, 32), (16, 16), (8, 8)], (16, 16))
    assert attention_resolutions(sd15, (96, 96))[1] == (24, 24)  # SD 2.x at 768 px: Attend-and-Excite's ceil(768/32)


# --------------------------------------------------------------------------------------- pipeline
def test_initno_with_immediate_success_and_no_updates_equals_stable_diffusion(sd):
    """Thresholds every noise meets: μ = logσ² = 0, so sampling starts from the stock noise."""
    stock = sd(**tiny_call_kwargs("sd")).images
    pipe = InitNOPipeline.from_pipe(sd)
    pipe.set_progress_bar_config(disable=True)
    config = InitNOConfig(words=("squirrel",), tau_cross=1.0, tau_self=1.0, attend_and_excite=False)
    out = pipe(**tiny_call_kwargs("sd"), initno=config)
    assert out.initno["succeeded"] and out.initno["optimiser_steps"] == 0
    torch.testing.assert_close(out.images, stock, rtol=0, atol=1e-6)


def test_initno_pipeline_runs_within_its_budget_and_is_deterministic(sd):
    pipe = InitNOPipeline.from_pipe(sd)
    pipe.set_progress_bar_config(disable=True)
    config = InitNOConfig(**QUICK)
    first = pipe(**tiny_call_kwargs("sd"), initno=config)
    again = pipe(**tiny_call_kwargs("sd"), initno=config)
    assert first.initno["optimiser_steps"] <= config.optimiser_budget == 6
    assert first.images.shape == (1, 3, 64, 64) and torch.isfinite(first.images).all()
    assert torch.equal(first.images, again.images)
    with pytest.raises(ConfigError, match="'dog' is not in the prompt"):
        pipe(**tiny_call_kwargs("sd"), words=("dog",), initno=config)
    with pytest.raises(ConfigError, match="attn_res=\\(16, 16\\) does not exist"):
        pipe(**tiny_call_kwargs("sd"), initno=InitNOConfig(words=("squirrel",), attn_res=(16, 16)))


def test_apply_routes_the_stable_diffusion_pipeline_through_initno_and_restores_it(sd):
    stock = sd(**tiny_call_kwargs("sd")).images
    with diffattn.apply(sd, InitNOConfig(**QUICK), ObserveConfig()) as handle:
        out = sd(**tiny_call_kwargs("sd"))
        assert out.initno["rounds"] >= 1 and handle.stats.summary()["calls"] > 0
        with pytest.raises(ConfigError, match="num_images_per_prompt"):
            sd(**tiny_call_kwargs("sd", num_images_per_prompt=2))
    assert type(sd) is StableDiffusionPipeline and "_diffattn_pipeline_extensions" not in vars(sd)
    assert torch.equal(sd(**tiny_call_kwargs("sd")).images, stock)


def test_initno_refuses_video_pipelines():
    with pytest.raises(UnsupportedModelError, match="Stable Diffusion 1.x/2.x"):
        diffattn.apply(tiny_pipeline("animatediff"), InitNOConfig(words=("cat",)))
