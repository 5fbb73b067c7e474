"""The editing pipelines on tiny SD models: inversion, FateZero, RealCraft, FRESCO, long-video handling, bad input."""

import itertools
import shutil
from collections import namedtuple

import pytest
import torch
from diffusers import DDIMScheduler
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from diffattn.configs import FateZeroConfig, FrescoConfig, RealCraftConfig
from diffattn.errors import ConfigError, VideoReadError
from diffattn.media.flow import VideoFlow
from diffattn.pipelines.fatezero import FateZeroPipeline
from diffattn.pipelines.fresco import (
    FrescoPipeline,
    anchored_batches,
    propagate_keyframes,
    select_keyframes,
)
from diffattn.pipelines.inversion import ddim_invert, encode_video, predicted_noise
from diffattn.pipelines.realcraft import RealCraftPipeline
from diffattn.processors.editing.errors import MemoryBudgetError, PromptWordError
from diffattn.processors.editing.fresco import (
    FlowAtResolution,
    build_trajectories,
    optimize_features,
    temporal_loss,
    trajectory_attention,
)
from diffattn.testing import sample_clip

SOURCE = "a red sun moving over colorful waves"
TARGET = "a blue moon moving over colorful waves"
STEPS = 2


@pytest.fixture(scope="module")
def fatezero(sd_pipe):
    pipe = FateZeroPipeline.from_pipe(sd_pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def realcraft(sd_pipe):
    pipe = RealCraftPipeline.from_pipe(sd_pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def fresco(controlnet_pipe):
    pipe = FrescoPipeline.from_pipe(controlnet_pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class ConstantNoise(torch.nn.Module):
    """A denoiser whose implied noise ignores its input: DDIM sampling then inverts DDIM inversion exactly. Its
    output is that noise in the form of `prediction_type` (for `v_prediction` and `sample` it depends on the input
    and the timestep's `alphas_cumprod`)."""

    def __init__(self, noise, alphas=None, prediction_type="epsilon"):
        super().__init__()
        self.noise, self.alphas, self.prediction_type = noise, alphas, prediction_type

    def forward(self, sample, timestep, encoder_hidden_states=None):
        eps = self.noise.expand_as(sample)
        if self.prediction_type == "epsilon":
            return UNet2DConditionOutput(sample=eps)
        a = self.alphas[int(timestep)].to(sample.dtype)
        x0 = (sample - (1 - a).sqrt() * eps) / a.sqrt()
        output = a.sqrt() * eps - (1 - a).sqrt() * x0 if self.prediction_type == "v_prediction" else x0
        return UNet2DConditionOutput(sample=output)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddim_inversion_is_undone_by_ddim_sampling(sd_pipe, prediction_type):
    """For each prediction type the inversion reads the denoiser's output as DDIM's step does (an inversion reading
    a v-prediction as noise, as it once did, misses the clean latent by far more than rounding)."""
    scheduler = DDIMScheduler.from_config(sd_pipe.scheduler.config, prediction_type=prediction_type)
    scheduler.set_timesteps(10)
    clean = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    unet = ConstantNoise(torch.randn(1, 4, 8, 8, dtype=torch.float64), scheduler.alphas_cumprod.double(), prediction_type)
    inversion = ddim_invert(unet, scheduler, clean, None)
    assert len(inversion.latents) == 11 and not torch.allclose(inversion.noise, clean)
    latent = inversion.noise
    for step, timestep in enumerate(scheduler.timesteps):
        latent = scheduler.step(unet(latent, timestep).sample, timestep, latent).prev_sample
        # each edit step lands on its inverted latent (diffusers' DDIM step rounds its alphas to float32)
        assert torch.allclose(latent, inversion.at(step), atol=1e-5)
    assert torch.allclose(latent, clean, atol=1e-5)


def test_fatezero_store_modes_agree(fatezero, clip):
    """RAM, disk and online source give the same edit (float32 maps); the fusion itself matters far more."""
    outputs = {}
    for mode in ("ram", "disk", "online"):
        config = FateZeroConfig(num_inference_steps=STEPS, attention_store=mode, store_dtype="float32", blend_words=("red",),
                                edit_min_level=0)
        out = fatezero(clip, SOURCE, TARGET, config, output_type="latent")
        outputs[mode] = out.frames
        assert out.info["store_mode"] == mode and out.masks.shape == (3, 1, 8, 8)
    unfused = FateZeroConfig(num_inference_steps=STEPS, edit_min_level=0, cross_replace_steps=0, self_replace_steps=0)
    effect = (fatezero(clip, SOURCE, TARGET, unfused, output_type="latent").frames - outputs["ram"]).abs().max()
    assert torch.equal(outputs["ram"], outputs["disk"])
    assert (outputs["ram"] - outputs["online"]).abs().max() < 1e-4
    assert effect > 1e-2
    auto = fatezero(clip, SOURCE, TARGET, FateZeroConfig(num_inference_steps=STEPS, ram_budget_gb=1e-6), output_type="latent")
    assert auto.info["store_mode"] == "online"  # over the budget: recompute instead of storing


def test_fatezero_target_equal_source_reconstructs_like_plain_inversion(fatezero, sd_pipe, clip):
    reference = encode_video(sd_pipe.vae, clip)
    plain = FateZeroConfig(num_inference_steps=STEPS, cross_replace_steps=0, self_replace_steps=0, kv_frames=("self",), guidance_scale=1)
    fused = FateZeroConfig(num_inference_steps=STEPS, guidance_scale=1, edit_min_level=0)
    errors = [float((fatezero(clip, SOURCE, SOURCE, c, output_type="latent").frames - reference).abs().mean()) for c in (plain, fused)]
    assert errors[1] <= errors[0] * 1.05
    edited = fatezero(clip, SOURCE, TARGET, fused, output_type="latent").frames
    assert float((edited - reference).abs().mean()) > errors[1] * 1.001  # a different target does change the result


def test_fatezero_prompt_to_prompt_mode_chunks_and_latent_blend(fatezero, clip):
    config = FateZeroConfig(num_inference_steps=3, use_inversion_attention=False, blend_words=("red", "sun"),
                            target_blend_words=("blue", "moon"), blend_latents=True, blend_latent_steps=(0.0, 1.0))
    out = fatezero(clip, SOURCE, TARGET, config)
    assert out.frames.shape == (1, 3, 3, 64, 64) and out.info["store_mode"] == "online"
    chunked = fatezero(clip, SOURCE, TARGET, FateZeroConfig(num_inference_steps=STEPS, frames_per_chunk=2), output_type="latent")
    whole = fatezero(clip, SOURCE, TARGET, FateZeroConfig(num_inference_steps=STEPS), output_type="latent")
    single = fatezero(clip[2:], SOURCE, TARGET, FateZeroConfig(num_inference_steps=STEPS), output_type="latent")
    assert chunked.info["chunks"] == 2 and torch.allclose(chunked.frames[2:], single.frames, atol=1e-5)
    assert not torch.allclose(chunked.frames, whole.frames, atol=1e-4)


def test_fatezero_bad_input(fatezero, clip, monkeypatch):
    with pytest.raises(PromptWordError, match="'tiger' is not in the prompt"):
        fatezero(clip, SOURCE, TARGET, FateZeroConfig(num_inference_steps=STEPS, blend_words=("tiger",)))
    with pytest.raises(PromptWordError, match="same number of words"):
        fatezero(clip, SOURCE, "watercolor " + SOURCE, FateZeroConfig(num_inference_steps=STEPS, is_replace_controller=True))
    fatezero(clip[:2], SOURCE, "watercolor " + SOURCE, FateZeroConfig(num_inference_steps=1))  # refine handles it
    with pytest.raises(ConfigError, match="multiples of 8"):
        fatezero(clip[..., :60], SOURCE, TARGET)
    with pytest.raises(VideoReadError):
        fatezero(clip[:0], SOURCE, TARGET)
    with pytest.raises(ConfigError, match="source_prompt"):
        fatezero(clip, "  ", TARGET)
    with pytest.raises(ConfigError, match="output_type"):
        fatezero(clip, SOURCE, TARGET, output_type="pil")
    with pytest.raises(ConfigError, match="blend_level=5 selects no attention layer"):
        fatezero(clip, SOURCE, TARGET, FateZeroConfig(num_inference_steps=STEPS, blend_words=("red",), blend_level=5))
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**6, 10**6 - 10, 10))
    with pytest.raises(MemoryBudgetError, match="RAM budget .* free disk"):
        fatezero(clip, SOURCE, TARGET, FateZeroConfig(num_inference_steps=STEPS, attention_store="ram", ram_budget_gb=1e-6))


def test_realcraft_masks_the_changed_object_and_preserves_for_identical_prompts(realcraft, fatezero, clip):
    out = realcraft(clip, SOURCE, TARGET, RealCraftConfig(num_inference_steps=STEPS))
    assert out.info["store_mode"] == "online" and out.masks.shape == (3, 1, 8, 8)
    assert 0 < float(out.masks.mean()) < 1
    same = realcraft(clip, SOURCE, SOURCE, RealCraftConfig(num_inference_steps=STEPS), output_type="latent")
    assert same.masks is None  # no changed word: no object, the source is kept everywhere
    with pytest.raises(PromptWordError, match="object word 'tiger'"):
        realcraft(clip, SOURCE, TARGET, RealCraftConfig(num_inference_steps=STEPS, object_words=("tiger",)))
    with pytest.raises(ConfigError, match="takes a RealCraftConfig"):
        realcraft(clip, SOURCE, TARGET, FateZeroConfig())


def test_realcraft_long_video_bounded_memory(realcraft):
    """Online mode keeps no attention maps, however long the video: only latents and one step's source pass."""
    long_clip = sample_clip(12, 32, 32)
    out = realcraft(long_clip, SOURCE, TARGET, RealCraftConfig(num_inference_steps=1), output_type="latent")
    assert out.frames.shape == (12, 4, 4, 4) and out.info["store_mode"] == "online"


def _flow_of(frames):
    from diffattn.media.flow import video_flow

    return video_flow(frames, cyclic=True)


def test_fresco_feature_optimisation_lowers_the_temporal_loss():
    frames = sample_clip(4, 64, 64)
    flow = FlowAtResolution.from_flow(_flow_of(frames), (16, 16), "cpu")
    features = torch.randn(2 * 4, 8, 16, 16)
    before = float(temporal_loss(features.view(2, 4, 8, 16, 16), flow))
    _, losses = optimize_features(features, 2, flow, None, iterations=20, lr=0.2)
    assert losses[0] == pytest.approx(before, rel=1e-5) and losses[-1] < 0.5 * losses[0]
    assert all(b <= a * 1.05 for a, b in itertools.pairwise(losses))


def test_fresco_identical_frames_leave_features_unchanged():
    frame = sample_clip(1, 64, 64)
    still = VideoFlow(torch.zeros(3, 2, 64, 64), torch.zeros(3, 2, 64, 64), torch.zeros(3, 64, 64), torch.zeros(3, 64, 64), cyclic=True)
    flow = FlowAtResolution.from_flow(still, (16, 16), "cpu")
    features = torch.randn(1, 8, 16, 16).repeat(6, 1, 1, 1)
    from diffattn.processors.editing.fresco import cosine_gram

    optimized, losses = optimize_features(features, 2, flow, cosine_gram(features), iterations=5)
    assert losses[0] == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(optimized, features, atol=1e-5)
    trajectories = build_trajectories(still, frame.repeat(3, 1, 1, 1), (8, 8))  # 3 frames: the cyclic flow's 3 pairs
    assert torch.equal(trajectories.index, torch.arange(64).repeat(3, 1)) and trajectories.attention_mask().all()
    values = torch.randn(2, 1, 2, 64, 16).repeat(1, 3, 1, 1, 1)
    queries = torch.randn(2, 1, 2, 64, 16).repeat(1, 3, 1, 1, 1)
    assert torch.allclose(trajectory_attention(queries, queries, values, trajectories), values, atol=1e-6)


def test_fresco_trajectories_follow_a_moving_clip():
    frames = sample_clip(4, 64, 64)
    trajectories = build_trajectories(_flow_of(frames).consecutive(), frames, (16, 16))
    for index in trajectories.index:
        assert torch.equal(index.sort().values, torch.arange(256))  # a permutation per frame
    background = trajectories.index[:, 0]  # the top-left corner is static background
    assert bool((background == background[0]).all())


def test_fresco_pipeline_runs_and_optimises(fresco, clip):
    config = FrescoConfig(num_inference_steps=4, optimize_iterations=3, step_interattn_end=0)
    out = fresco(clip, TARGET, config, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (1, 3, 3, 64, 64)
    assert out.info["optimizations"] > 0 and out.info["optimization_loss_ratio"] < 1
    again = fresco(clip, TARGET, config, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.frames, again.frames)  # same seed, same result
    unguided = fresco(clip, TARGET, FrescoConfig(num_inference_steps=4, optimize_iterations=3, step_interattn_end=0,
                                                 num_intraattn_steps=0), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(out.frames, unguided.frames, atol=1e-4)  # spatial guidance acts
    with pytest.raises(ConfigError, match="control_frames"):
        fresco(clip, TARGET, config, control_frames=clip[:2])


def test_fresco_keyframes_batches_and_propagation(fresco):
    assert anchored_batches(list(range(10)), 4) == [[0, 1, 2, 3], [0, 3, 4, 5], [0, 5, 6, 7], [0, 7, 8, 9]]
    frames = sample_clip(12, 32, 32)
    frames[6:] = frames[6:].flip(-1)  # a cut: the biggest change is at frame 6
    assert select_keyframes(frames, 2, 11) == [0, 11]
    assert select_keyframes(frames, 2, 10) == [0, 6, 11]  # one key needed: the biggest change
    keys = select_keyframes(frames, 2, 5)
    assert keys[0] == 0 and keys[-1] == 11 and 6 in keys and max(b - a for a, b in itertools.pairwise(keys)) <= 5
    still = frames[:1].repeat(5, 1, 1, 1)
    assert torch.allclose(propagate_keyframes(still, [0, 4], still[[0, 4]]), still, atol=1e-5)
    long_clip = sample_clip(7, 32, 32)
    config = FrescoConfig(num_inference_steps=2, strength=1.0, optimize_iterations=1, batch_size=3, keyframe_interval=(1, 2))
    out = fresco(long_clip, TARGET, config, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (1, 7, 3, 32, 32) and len(out.info["batches"]) > 1
    assert out.info["batches"][1][:2] == [0, out.info["batches"][0][-1]]


def test_save_and_load_round_trip(fatezero, clip, tmp_path):
    fatezero.save_pretrained(tmp_path / "fatezero")
    loaded = FateZeroPipeline.from_pretrained(tmp_path / "fatezero")
    loaded.set_progress_bar_config(disable=True)
    config = FateZeroConfig(num_inference_steps=1)
    assert torch.allclose(loaded(clip, SOURCE, TARGET, config).frames, fatezero(clip, SOURCE, TARGET, config).frames, atol=1e-5)


def test_inversion_refuses_a_prediction_type_it_cannot_read():
    with pytest.raises(ConfigError, match="flow_prediction"):
        predicted_noise(torch.zeros(1), torch.zeros(1), torch.tensor(0.5), "flow_prediction")
