"""FreeSwimPipeline on the tiny Wan model: equal to an independently assembled stock two-stage run when the
window covers the frame, the CLI/runner path, size handling, unsupported models and save/load round trips."""

import json

import pytest
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler, WanVideoToVideoPipeline

from diffattn.cli import main
from diffattn.configs import FreeSwimConfig
from diffattn.errors import ConfigError, UnsupportedModelError
from diffattn.generation import GenerationSpec, generate
from diffattn.pipelines.freeswim import FreeSwimPipeline
from diffattn.testing import tiny_pipeline

BASE, TARGET = (32, 32), (64, 96)
STEPS = 4  # stage 2 runs int(4 * 0.7) = 2 steps
PROMPT, NEGATIVE = "a red fox in the snow", "blurry"
SETTINGS = {"base_height": BASE[0], "base_width": BASE[1], "backend": "reference"}
COVERING = {**SETTINGS, "window_radius": (8, 8), "scale_factor": 1.0}


def call(**overrides):
    settings = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "num_frames": 9, "num_inference_steps": STEPS,
                "guidance_scale": 5.0, "max_sequence_length": 16, "height": TARGET[0], "width": TARGET[1],
                "generator": torch.Generator().manual_seed(0), "output_type": "pt"}
    return {**settings, **overrides}


@pytest.fixture(scope="module")
def wan():
    return tiny_pipeline("wan")


@pytest.fixture(scope="module")
def freeswim(wan):
    return FreeSwimPipeline.from_wan_pipeline(wan)


@pytest.fixture(scope="module")
def stock_two_stage(wan):
    """The paper's pipeline without FreeSwim, assembled from diffusers parts only: native size, bilinear upscale,
    SDEdit (strength 0.7) with the flow shift set to 9."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        embeds, negative = wan.encode_prompt(PROMPT, NEGATIVE, max_sequence_length=16)
    text = {"prompt_embeds": embeds, "negative_prompt_embeds": negative, "num_inference_steps": STEPS, "guidance_scale": 5.0}
    base = wan(**text, num_frames=9, height=BASE[0], width=BASE[1], generator=generator, output_type="pt").frames
    video = F.interpolate(base[0], size=TARGET, mode="bilinear", align_corners=False)[None]
    shared = {name: getattr(wan, name) for name in ("tokenizer", "text_encoder", "transformer", "vae")}
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(wan.scheduler.config, shift=9.0)
    refine = WanVideoToVideoPipeline(**shared, scheduler=scheduler)
    refine.set_progress_bar_config(disable=True)
    frames = refine(video=video, **text, height=TARGET[0], width=TARGET[1], strength=0.7, generator=generator,
                    output_type="pt").frames
    return base, frames


@pytest.mark.parametrize("cache_steps", [1, None])
def test_covering_windows_equal_the_stock_two_stage_result(freeswim, stock_two_stage, cache_steps):
    base, expected = stock_two_stage
    out = freeswim(**call(), freeswim=FreeSwimConfig(**COVERING, cache_steps=cache_steps))
    torch.testing.assert_close(out.base_frames, base, atol=1e-6, rtol=0)
    assert out.frames.shape == (1, 9, 3, *TARGET)
    torch.testing.assert_close(out.frames, expected, atol=1e-5, rtol=0)
    full = sum(rec["full_branch_calls"] for steps in out.stats.to_dict().values() for rec in steps.values() if "full_branch_calls" in rec)
    assert full == (2 if cache_steps == 1 else 4) * 2  # refreshes x blocks: FreeSwim really ran


def test_baseline_switch_and_default_windows(freeswim, stock_two_stage):
    _, expected = stock_two_stage
    baseline = freeswim(**call(), freeswim=FreeSwimConfig(**SETTINGS), use_freeswim=False)
    torch.testing.assert_close(baseline.frames, expected, atol=1e-6, rtol=0)
    windowed = freeswim(**call(output_type="latent"), freeswim=FreeSwimConfig(**SETTINGS))
    plain = freeswim(**call(output_type="latent"), freeswim=FreeSwimConfig(**SETTINGS), use_freeswim=False)
    assert (windowed.frames - plain.frames).abs().max() > 1e-3  # 3x3-token windows on a 4x6 grid change the result


def test_sizes_off_the_token_grid_are_rounded_up_with_a_warning(freeswim):
    with pytest.warns(UserWarning, match="generating 64x96 instead"):
        out = freeswim(**call(height=60, width=90, num_inference_steps=2), freeswim=FreeSwimConfig(**SETTINGS))
    assert out.frames.shape[-2:] == TARGET


def test_bad_sizes_and_models_raise_clear_errors(freeswim, wan):
    with pytest.raises(ConfigError, match="smaller than the base"):
        freeswim(**call(height=16, width=96), freeswim=FreeSwimConfig(**SETTINGS))
    with pytest.raises(ConfigError, match="native resolution"):
        freeswim(**call(), freeswim=FreeSwimConfig())  # tiny model: the base must be given
    with pytest.raises(ConfigError, match="no high-resolution step"):
        freeswim(**call(num_inference_steps=1), freeswim=FreeSwimConfig(**SETTINGS))
    with pytest.raises(UnsupportedModelError, match="Wan text-to-video"):
        FreeSwimPipeline.from_wan_pipeline(tiny_pipeline("cogvideox"))
    with pytest.raises(UnsupportedModelError, match="WanPipeline"):
        FreeSwimPipeline.from_wan_pipeline(wan.transformer)


def test_generate_runs_both_stages_through_the_config_runner(tmp_path, capsys):
    spec = GenerationSpec(model="tiny:wan", methods=[FreeSwimConfig(**SETTINGS)], height=TARGET[0], width=TARGET[1], steps=STEPS)
    result = generate(spec)
    assert result.frames.shape == (9, 3, *TARGET)
    assert result.stats_summary["layers"] == 4  # 2 blocks x (self, cross)
    out = tmp_path / "fox.mp4"
    args = ["generate", "--model", "tiny:wan", "--method", "freeswim", "--height", "64", "--width", "96",
            "--freeswim-base-height", "32", "--freeswim-base-width", "32", "--freeswim-cache-steps", "1",
            "--steps", "2", "--out", str(out), "--stats", str(tmp_path / "stats.json")]
    assert main(args) == 0
    assert out.stat().st_size > 0
    assert "96x64" in capsys.readouterr().out
    assert json.loads((tmp_path / "stats.json").read_text())["summary"]["calls"] > 0
    assert main(["generate", "--model", "tiny:wan", "--method", "freeswim", "--height", "64", "--width", "96",
                 "--out", str(out)]) == 2  # no base size for the tiny model: a clear error, not a traceback
    assert "base_height" in capsys.readouterr().err


def test_save_and_load_round_trip(tmp_path, wan, freeswim):
    wan.save_pretrained(tmp_path / "wan")  # a Wan checkpoint (model_index names WanPipeline) loads as FreeSwim
    loaded = FreeSwimPipeline.from_pretrained(tmp_path / "wan")
    loaded.set_progress_bar_config(disable=True)
    settings = call(output_type="latent")
    expected = freeswim(**settings, freeswim=FreeSwimConfig(**SETTINGS)).frames
    out = loaded(**call(output_type="latent"), freeswim=FreeSwimConfig(**SETTINGS)).frames
    assert torch.equal(out, expected)


@pytest.mark.gpu
@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_cpu_offload_and_vae_tiling_keep_the_result(offload):
    pipe = FreeSwimPipeline.from_wan_pipeline(tiny_pipeline("wan"))
    reference = pipe.to("cuda")(**call(generator=torch.Generator("cuda").manual_seed(0)), freeswim=FreeSwimConfig(**SETTINGS)).frames
    pipe = FreeSwimPipeline.from_wan_pipeline(tiny_pipeline("wan"))
    getattr(pipe, f"enable_{offload}_cpu_offload")(device="cuda")
    pipe.enable_vae_tiling()
    out = pipe(**call(generator=torch.Generator("cuda").manual_seed(0)), freeswim=FreeSwimConfig(**SETTINGS)).frames
    torch.testing.assert_close(out.cpu(), reference.cpu(), atol=1e-4, rtol=0)
