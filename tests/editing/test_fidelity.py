"""FRESCO and FateZero details pinned to the released code: DDPM sampling, the reference pass without ControlNet,
Canny 50/100, prompt additions and negative prompt, AdaIN's epsilon, the example presets' K/V frames."""

import cv2
import pytest
import torch
from diffusers import DDPMScheduler, PNDMScheduler

import diffattn.pipelines.fresco as fresco_module
from diffattn.configs import FrescoConfig
from diffattn.errors import ConfigError
from diffattn.pipelines.edit_job import EditSpec, edit_video, load_edit_spec
from diffattn.pipelines.fresco import FrescoPipeline, canny_control
from diffattn.processors.editing.fresco import adain, optimize_features
from diffattn.testing import sample_clip

TARGET = "a blue moon moving over colorful waves"


@pytest.fixture
def fresco(controlnet_pipe):
    pipe = FrescoPipeline.from_pipe(controlnet_pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_fresco_samples_with_ddpm_and_runs_the_reference_pass_without_controlnet(fresco, monkeypatch):
    """Stock SD 1.5 carries PNDM (4 steps: 751, 501, 501, 251, 1); FRESCO runs DDPM's 751, 501, 251, 1 from the
    SDEdit start (strength 0.75: the last 3), after one reference pass at the last timestep that skips ControlNet;
    the pipeline's own scheduler is left untouched."""
    pndm = PNDMScheduler.from_config(fresco.scheduler.config, skip_prk_steps=True)
    fresco.scheduler = pndm
    unet_timesteps, controlnet_calls, ddpm_steps = [], [], []
    real_step = DDPMScheduler.step

    def counted_step(self, model_output, timestep, *args, **kwargs):
        ddpm_steps.append(int(timestep))
        return real_step(self, model_output, timestep, *args, **kwargs)

    monkeypatch.setattr(DDPMScheduler, "step", counted_step)
    hooks = [fresco.unet.register_forward_pre_hook(lambda m, args: unet_timesteps.append(int(args[1]))),
             fresco.controlnet.register_forward_pre_hook(lambda m, args: controlnet_calls.append(int(args[1])))]
    try:
        config = FrescoConfig(num_inference_steps=4, optimize_iterations=1)
        fresco(sample_clip(2, 32, 32), TARGET, config, generator=torch.Generator().manual_seed(0), output_type="latent")
    finally:
        for hook in hooks:
            hook.remove()
    assert unet_timesteps == [1, 501, 251, 1]  # reference pass, then DDPM's schedule from the SDEdit start
    assert controlnet_calls == ddpm_steps == [501, 251, 1]
    assert fresco.scheduler is pndm


def test_canny_control_uses_frescos_thresholds_on_the_colour_frames():
    frames = sample_clip(2, 64, 64)
    edges = canny_control(frames)
    for frame, edge in zip(frames, edges):
        image = (frame.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        expected = torch.from_numpy(cv2.Canny(image, 50, 100)).float() / 255
        assert torch.equal(edge[0], expected) and torch.equal(edge[2], expected)
    assert not torch.equal(edges, canny_control(frames, 100, 200))  # the thresholds matter on this clip


class _Stop(Exception):
    """Ends a run once the prompts are encoded."""


def _encoded_prompts(monkeypatch, run) -> list[str]:
    seen: list[str] = []

    def spy(tokenizer, text_encoder, prompts, device):
        seen.extend(prompts)
        raise _Stop

    monkeypatch.setattr(fresco_module, "encode_prompts", spy)
    with pytest.raises(_Stop):
        run()
    return seen


def test_fresco_adds_the_released_prompt_additions_and_negative_prompt(fresco, monkeypatch):
    clip, config = sample_clip(2, 32, 32), FrescoConfig()
    default = _encoded_prompts(monkeypatch, lambda: fresco(clip, TARGET, config))
    assert default == [config.negative_prompt, TARGET + ", best quality, extremely detailed, "]
    assert config.negative_prompt.startswith("longbody, lowres, bad anatomy")
    assert _encoded_prompts(monkeypatch, lambda: fresco(clip, TARGET, config, negative_prompt=""))[0] == ""
    custom = FrescoConfig(added_prompt="", negative_prompt="blurry")
    assert _encoded_prompts(monkeypatch, lambda: fresco(clip, TARGET, custom)) == ["blurry", TARGET]
    spec = EditSpec(editor="fresco", target_prompt=TARGET, frames=2, height=32, width=32)  # CLI: no --negative-prompt
    assert _encoded_prompts(monkeypatch, lambda: edit_video(spec, fresco))[0] == config.negative_prompt


def test_adain_is_the_identity_on_unchanged_features_unless_the_released_epsilon_is_asked_for():
    features = torch.randn(4, 8, 6, 6) * 0.5 + 1.0
    assert torch.allclose(adain(features, features), features, atol=1e-5)
    released = adain(features, features, style_eps=1.0)
    flat = features.flatten(2)
    mean, var = flat.mean(-1)[..., None, None], flat.var(-1)[..., None, None]
    assert torch.allclose(released, (features - mean) / (var + 1e-5).sqrt() * (var + 1.0).sqrt() + mean, atol=1e-5)
    # the optimiser passes the config's epsilon on: identical frames stay put by default, grow with 1.0
    still = features[:1].repeat(4, 1, 1, 1)
    assert torch.allclose(optimize_features(still, 2, None, None, iterations=1)[0], still, atol=1e-5)
    assert not torch.allclose(optimize_features(still, 2, None, None, iterations=1, adain_style_eps=1.0)[0], still, atol=1e-2)
    assert FrescoConfig().adain_style_epsilon == 1e-5
    with pytest.raises(ConfigError, match="adain_style_epsilon must be above 0"):
        FrescoConfig(adain_style_epsilon=0.0)


def test_fatezero_presets_follow_the_released_configs():
    shape = load_edit_spec("fatezero_shape.yaml").config()
    assert shape.kv_frames == (-1, "first") and shape.kv_min_level == 0  # previous + first frame, every level
    attribute = load_edit_spec("fatezero_attribute.yaml").config()
    assert attribute.eq_params == ()  # no added reweighting
    assert attribute.kv_frames == ("mid",) and attribute.kv_min_level == 1
