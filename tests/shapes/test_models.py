"""The shapes-world models: builders, a smoke training run that round-trips offline, learning, loading, evaluation."""

import json
import re
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLWan,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    WanPipeline,
    WanTransformer3DModel,
)

from diffattn.errors import UnsupportedModelError
from diffattn.loading import load_pipeline
from diffattn.shapes import COLOURS, VOCABULARY, Scene, ShapeSpec, parse_caption, render
from diffattn.shapes import models as shapes_models
from diffattn.shapes.evaluate import accuracy, heldout_captions
from diffattn.shapes.models import FLOW_SHIFT, TEXT_LENGTH, build_pipeline, load_trained, sample_kwargs
from diffattn.shapes.train import PRESETS, _CaptionTable, _ddpm_noised, _flow_noised, _unclamped_decode, train


@pytest.mark.parametrize("name", ["shapes-wan", "shapes-sd"])
def test_builders_make_the_real_diffusers_classes_over_the_world_vocabulary(name):
    pipe = build_pipeline(name)
    if name == "shapes-wan":
        assert isinstance(pipe, WanPipeline) and isinstance(pipe.transformer, WanTransformer3DModel)
        assert isinstance(pipe.vae, AutoencoderKLWan) and pipe.vae_scale_factor_spatial == 4
    else:
        assert isinstance(pipe, StableDiffusionPipeline) and isinstance(pipe.unet, UNet2DConditionModel)
        assert isinstance(pipe.vae, AutoencoderKL) and pipe.vae_scale_factor == 4
    for word in VOCABULARY:
        assert len(pipe.tokenizer.tokenize(word)) == 1, word
    caption = "a red circle moving left and a green square bouncing on a striped blue background"
    assert len(pipe.tokenizer.tokenize(caption)) == len(caption.split())
    assert pipe.tokenizer.unk_token not in pipe.tokenizer.tokenize(caption)
    weights = sum(p.numel() for module in (pipe.vae, pipe.text_encoder, getattr(pipe, "transformer", None) or pipe.unet)
                  for p in module.parameters())
    assert weights < 4_000_000  # a few MB in float16 (shapes-wan 3.5 M: its VAE is 2.5 M since it was widened)


@pytest.mark.parametrize("name", ["shapes-wan", "shapes-sd"])
def test_training_caption_table_gives_the_pipelines_own_text_states(name):
    """Training gathers pre-tokenised captions (dropped ones as the empty caption) instead of calling
    ``encode_prompt`` per step; the states must be the pipeline's, at each padded length Wan trains with."""
    pipe = build_pipeline(name)
    captions = ["a red circle moving left on a blue background", "a white square bouncing on a black background",
                "a red circle moving left on a blue background"]
    table = _CaptionTable(pipe, name == "shapes-wan", captions, torch.device("cpu"))
    assert len(table.ids) == 3  # two distinct captions and the empty one
    rows = table.rows(torch.tensor([2, 0, 1, 1]), torch.tensor([False, True, False, False]))
    prompts = [captions[2], "", captions[1], captions[1]]
    with torch.no_grad():
        for length in (TEXT_LENGTH, 512) if name == "shapes-wan" else (None,):
            if name == "shapes-wan":
                expected = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, max_sequence_length=length)[0]
            else:
                expected = pipe.encode_prompt(prompts, "cpu", 1, False)[0]
            assert torch.equal(table.embed(pipe.text_encoder, rows, length), expected)


@pytest.mark.parametrize("name", ["shapes-wan", "shapes-sd"])
def test_captions_differing_only_in_colour_give_different_conditioning(name):
    """Each colour word is its own token (none is unknown), and the untrained text encoder already gives the colour
    token a state that differs by at least 10% of its norm between any two colours, in the embeddings the denoiser
    is trained on (the pipeline's own ``encode_prompt``)."""
    pipe = build_pipeline(name)
    captions = [f"a {colour} circle" for colour in COLOURS]
    tokens = [tuple(pipe.tokenizer.tokenize(caption)) for caption in captions]
    assert len(set(tokens)) == len(COLOURS) and all(len(row) == 3 and pipe.tokenizer.unk_token not in row for row in tokens)
    with torch.no_grad():
        if name == "shapes-wan":
            states = pipe.encode_prompt(captions, do_classifier_free_guidance=False, max_sequence_length=TEXT_LENGTH)[0]
        else:
            states = pipe.encode_prompt(captions, "cpu", 1, False)[0]
    position = 1 if name == "shapes-wan" else 2  # after "a" (and CLIP's start token)
    colour = states[:, position]
    distance = torch.cdist(colour, colour) / colour.norm(dim=-1, keepdim=True)
    assert distance[~torch.eye(len(COLOURS), dtype=torch.bool)].min() > 0.1, distance


def test_sd_sampling_starts_from_pure_noise_and_inverts_the_training_pairs():
    """The first of the sampler's 20 timesteps is pure noise in training too (zero terminal SNR): with SD's own betas
    it kept 9% of the latent, from which the denoiser read the background colour instead of from the caption, so
    samples took their colours from the starting noise. At every sampled timestep, a denoiser that returns training's
    target exactly makes the scheduler recover the clean latent."""
    scheduler = build_pipeline("shapes-sd").scheduler
    alphas = DDPMScheduler.from_config(scheduler.config).alphas_cumprod
    scheduler.set_timesteps(20)
    generator = torch.Generator().manual_seed(0)
    x0, noise = (torch.randn(2, 4, 16, 16, generator=generator) for _ in range(2))
    kind = scheduler.config.prediction_type
    noised, _ = _ddpm_noised(alphas, x0, noise, scheduler.timesteps[:1].expand(2), kind)
    assert torch.equal(noised, noise)
    for t in scheduler.timesteps:
        noised, target = _ddpm_noised(alphas, x0, noise, t.expand(2), kind)
        assert torch.allclose(scheduler.step(target, t, noised).pred_original_sample, x0, atol=1e-4), int(t)


def test_wan_sampler_follows_the_training_path_from_pure_noise():
    """Euler steps of shapes-wan's scheduler driven by training's target (``e - x0``) start at pure noise, pass through
    training's noised latents at the timesteps training gives them, and end at the clean latent."""
    scheduler = build_pipeline("shapes-wan").scheduler
    scheduler.set_timesteps(20)
    generator = torch.Generator().manual_seed(0)
    x0, noise = (torch.randn(1, 16, 3, 8, 8, generator=generator) for _ in range(2))
    latents = noise
    for t in scheduler.timesteps:
        s = t / 1000
        noised, timestep, target = _flow_noised(x0, noise, (s / (FLOW_SHIFT - (FLOW_SHIFT - 1) * s)).view(1))
        assert torch.allclose(timestep, t.view(1)) and torch.allclose(latents, noised, atol=1e-5), float(t)
        latents = scheduler.step(target, t, latents).prev_sample
    assert float(scheduler.timesteps[0]) == 1000 and torch.allclose(latents, x0, atol=1e-4)


def test_wan_vae_training_sees_the_reconstruction_before_the_clamp():
    """AutoencoderKLWan clamps its output to [-1, 1], which gives no gradient to an overshooting pixel; training's
    reconstruction is the same output unclamped, so such pixels are pulled back."""
    vae = build_pipeline("shapes-wan").vae
    z = 10 * torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # large enough to overshoot
    raw = _unclamped_decode(vae, z)
    assert raw.shape == (1, 3, 9, 32, 32) and (raw.abs() > 1).any()
    assert torch.equal(raw.detach().clamp(-1, 1), vae.decode(z).sample.detach())
    raw.abs().clamp_min(1).sum().backward()  # the overshoot alone
    assert next(vae.decoder.parameters()).grad.abs().sum() > 0


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """One smoke training run of each model (seconds), written to a weights folder laid out like the package's."""
    root = tmp_path_factory.mktemp("weights")
    logs = {name: train(name, root / name, PRESETS["smoke"], seed=0, workers=1) for name in shapes_models.MODELS}
    return root, logs


@pytest.mark.parametrize("name", ["shapes-wan", "shapes-sd"])
def test_smoke_training_writes_a_folder_that_loads_offline(smoke_runs, name, monkeypatch):
    root, logs = smoke_runs
    log = json.loads((root / name / "train_log.json").read_text())
    assert log == json.loads(json.dumps(logs[name])) and log["status"] == "trained"
    assert [stage["steps_done"] for stage in log["stages"].values()] == [3, 5]
    assert all(len(stage["loss"]) == stage["steps_done"] for stage in log["stages"].values())
    assert 0 < log["size_bytes"] < 8 * 2**20  # shapes-wan 6.8 MiB (its VAE widened to base_dim 32), shapes-sd 2.8 MiB
    assert log["vae_check"]["clips"] == 2 and 0 <= log["vae_check"]["accuracy"] <= 1 and log["vae_check"]["psnr"] > 0
    pipe_class = WanPipeline if name == "shapes-wan" else StableDiffusionPipeline
    pipe = pipe_class.from_pretrained(root / name, local_files_only=True)
    denoiser = pipe.transformer if name == "shapes-wan" else pipe.unet
    assert denoiser.dtype == torch.float32 and pipe.text_encoder.dtype == torch.float32
    if name == "shapes-wan":
        assert pipe.vae.config.latents_std != [1.0] * 16  # the trained latent statistics were saved
    else:
        assert pipe.vae.config.scaling_factor != 0.18215
    monkeypatch.setattr(shapes_models, "WEIGHTS", root)
    loaded = load_pipeline(f"tiny:{name}")
    assert type(loaded) is pipe_class
    assert torch.equal(next(iter(loaded.vae.parameters())), next(iter(pipe.vae.parameters())))
    out = loaded(prompt="a red circle moving left on a blue background", generator=torch.Generator().manual_seed(0),
                 **sample_kwargs(name, num_inference_steps=2))
    frames = out.frames if name == "shapes-wan" else out.images
    assert frames.shape == ((1, 9, 3, 32, 32) if name == "shapes-wan" else (1, 3, 64, 64)) and torch.isfinite(frames).all()


def test_missing_weights_name_the_command_that_trains_them(tmp_path, monkeypatch):
    monkeypatch.setattr(shapes_models, "WEIGHTS", tmp_path)
    with pytest.raises(UnsupportedModelError, match="python -m diffattn.shapes.train shapes-sd --out .* --preset gpu"):
        load_pipeline("tiny:shapes-sd")
    with pytest.raises(UnsupportedModelError, match="shapes-wan"):
        load_pipeline("tiny:nope")
    assert type(load_pipeline("tiny:sd")).__name__ == "StableDiffusionPipeline"  # the random tiny models are unchanged


@pytest.mark.slow
def test_training_reduces_the_loss_on_a_fixed_batch(tmp_path):
    """Two clips, batch 2: every step sees the same clips, so both stages must fit them (30 steps each; the denoiser's
    loss is noisier, its timesteps and text lengths being drawn anew each step)."""
    preset = replace(PRESETS["smoke"], clips=2, vae_steps=30, vae_lr=2e-3, steps=30, lr=2e-3, log_every=5)
    log = train("shapes-wan", tmp_path / "wan", preset, seed=0, workers=1)
    for stage in ("vae", "denoiser"):
        losses = [record["loss"] for record in log["stages"][stage]["loss"]]
        assert len(losses) == 6 and np.mean(losses[-2:]) < 0.85 * losses[0], (stage, losses)


class _Painter:
    """A stand-in pipeline that renders each prompt's scene, with ``colour`` replacing every object's colour if given."""

    transformer = None
    _execution_device = torch.device("cpu")

    def __init__(self, colour=None):
        self.colour = colour

    def __call__(self, prompt, generator, num_frames, height, width, **_):
        videos = []
        for caption in prompt:
            described = parse_caption(caption)
            objects = tuple(ShapeSpec(o.shape, self.colour or o.colour, o.motion, 0.35, (0.5, 0.5), 0.3)
                            for o in described.objects)
            clip = render(Scene(objects, described.background, described.texture), frames=num_frames, height=height, width=width)
            videos.append(clip.frames)
        return SimpleNamespace(frames=torch.stack(videos))


def test_accuracy_scores_each_sample_against_its_caption():
    captions = [c for c in heldout_captions(12, 0) if "white" not in c]
    seeds = list(range(len(captions)))
    right = accuracy(_Painter(), captions, seeds, **sample_kwargs("shapes-wan"))
    assert right.accuracy == 1.0 and [s.caption for s in right.samples] == captions
    wrong = accuracy(_Painter(colour="white"), captions, seeds, **sample_kwargs("shapes-wan"))
    assert wrong.accuracy == 0.0 and wrong.to_dict()["colour_ok"] == 0.0
    assert all(s.frames.shape == (9, 3, 32, 32) for s in wrong.samples)
    assert np.mean([s.score.background_ok for s in right.samples]) == 1.0


def test_the_time_bound_and_failures_still_write_the_folder_and_log(tmp_path, monkeypatch):
    bounded = train("shapes-sd", tmp_path / "bounded", replace(PRESETS["smoke"], steps=10**6, max_minutes=0.04), workers=1)
    assert bounded["status"] == "trained" and bounded["stages"]["denoiser"]["stopped_early"]
    assert 0 < bounded["stages"]["denoiser"]["steps_done"] < 10**6 and bounded["seconds"] < 10
    assert StableDiffusionPipeline.from_pretrained(tmp_path / "bounded", local_files_only=True).unet is not None

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr("diffattn.shapes.train._train_denoiser", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        train("shapes-sd", tmp_path / "failed", PRESETS["smoke"], workers=1)
    log = json.loads((tmp_path / "failed" / "train_log.json").read_text())
    assert log["status"].startswith("failed: RuntimeError") and log["stages"]["vae"]["steps_done"] == 3
    assert (tmp_path / "failed" / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_evaluate_cli_prints_the_heldout_accuracy(smoke_runs, capsys, tmp_path):
    from diffattn.shapes.evaluate import main

    root, _ = smoke_runs
    assert main([str(root / "shapes-sd"), "--n", "2", "--steps", "1", "--grid", str(tmp_path / "grid.png")]) == 0
    assert re.search(r"^shapes-sd: \d+\.\d% of 2 held-out captions drawn correctly", capsys.readouterr().out, re.M)
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_a_run_split_in_two_trains_the_vae_alone_then_the_denoiser_from_it(tmp_path):
    """``steps=0`` trains only the VAE (no denoiser steps, no evaluation); ``init_from`` with ``vae_steps=0`` starts
    the next run from that folder without a stage 1: the folder it writes carries the same VAE weights with its own
    latent statistics, and its log keeps the first run's."""
    vae_only = train("shapes-wan", tmp_path / "vae", replace(PRESETS["smoke"], steps=0), workers=1)
    assert vae_only["stages"]["vae"]["steps_done"] == 3 and vae_only["stages"]["denoiser"]["steps_done"] == 0
    assert "eval" not in vae_only
    second = train("shapes-wan", tmp_path / "second", replace(PRESETS["smoke"], vae_steps=0), seed=1, workers=1,
                   init_from=tmp_path / "vae")
    assert "vae" not in second["stages"] and second["init_from"] == str(tmp_path / "vae")
    assert second["init_log"]["stages"]["vae"]["steps_done"] == 3
    assert second["stages"]["denoiser"]["steps_done"] == PRESETS["smoke"].steps
    first_vae, second_vae = (WanPipeline.from_pretrained(tmp_path / d, local_files_only=True).vae for d in ("vae", "second"))
    for a, b in zip(first_vae.parameters(), second_vae.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_run_continues_training_the_weights_it_starts_from(tmp_path):
    """``init_from`` with both stages: the run starts from the earlier folder's VAE and denoiser (not a fresh draw
    under its seed) and trains both further."""
    first = tmp_path / "first"
    train("shapes-wan", first, PRESETS["smoke"], workers=1)
    train("shapes-wan", tmp_path / "again", PRESETS["smoke"], workers=1, init_from=first)
    fresh = build_pipeline("shapes-wan", seed=0)
    earlier, again = (load_trained("shapes-wan", folder=tmp_path / d) for d in ("first", "again"))
    for module in ("vae", "transformer"):
        with torch.no_grad():
            distance = {k: sum(float((a - b).abs().sum()) for a, b in zip(getattr(again, module).parameters(),
                                                                           getattr(x, module).parameters(), strict=True))
                        for k, x in (("earlier", earlier), ("fresh", fresh))}
        assert 0 < distance["earlier"] < distance["fresh"], (module, distance)


def test_training_cli_overrides_the_preset_sizes(tmp_path, capsys):
    from diffattn.shapes.train import main

    out = tmp_path / "run"
    assert main(["shapes-sd", "--out", str(out), "--preset", "smoke", "--steps", "2", "--vae-steps", "1",
                 "--batch", "3", "--vae-batch", "1"]) == 0
    log = json.loads((out / "train_log.json").read_text())
    sizes = {key: log["preset"][key] for key in ("steps", "vae_steps", "batch", "vae_batch")}
    assert sizes == {"steps": 2, "vae_steps": 1, "batch": 3, "vae_batch": 1}
    assert log["stages"]["vae"]["steps_done"] == 1 and log["stages"]["denoiser"]["steps_done"] == 2
    assert "shapes-sd: trained" in capsys.readouterr().out
