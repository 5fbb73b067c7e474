"""`diffattn generate --noise ...` and the noise demo entries, through the registry-generated flags."""

import json
import re

import pytest
import torch

import diffattn
from diffattn.cli import main
from diffattn.configs import FreeInitConfig, FreeNoiseConfig
from diffattn.generation import GenerationSpec, generate, load_spec
from diffattn.media.video import read_video
from diffattn.testing import tiny_call_kwargs, tiny_pipeline

PROMPT = "a painting of a squirrel eating a burger"


def test_generate_with_freeinit_and_freenoise_flags_equals_the_python_api(tmp_path):
    config = tmp_path / "run.json"
    args = ["generate", "--model", "tiny:animatediff", "--noise", "freeinit,freenoise", "--freeinit-num-iters", "2",
            "--freenoise-context-length", "8", "--frames", "12", "--steps", "2", "--out", str(tmp_path / "v.mp4"),
            "--save-config", str(config)]
    assert main(args) == 0
    assert read_video(tmp_path / "v.mp4").shape[0] == 12
    spec = load_spec(config)
    assert [m.name for m in spec.methods] == ["freeinit", "freenoise"] and spec.methods[1].context_length == 8
    frames = generate(spec).frames
    pipe = tiny_pipeline("animatediff")
    kwargs = tiny_call_kwargs("animatediff", prompt=spec.prompt, num_frames=12)
    with diffattn.apply(pipe, FreeInitConfig(num_iters=2), FreeNoiseConfig(context_length=8)):
        expected = pipe(**kwargs).frames[0].float()
    torch.testing.assert_close(frames, expected.clamp(0, 1), rtol=0, atol=1e-6)
    assert not torch.equal(frames, generate(GenerationSpec(model=spec.model, prompt=spec.prompt, frames=12, steps=2)).frames)


def test_generate_with_initno_uses_its_runner(tmp_path):
    stats = tmp_path / "stats.json"
    args = ["generate", "--model", "tiny:sd", "--noise", "initno", "--initno-words", "squirrel,burger",
            "--initno-max-rounds", "1", "--initno-steps-per-round", "2", "--initno-fallback-steps", "1",
            "--prompt", PROMPT, "--steps", "2", "--out", str(tmp_path / "i.mp4"), "--stats", str(stats)]
    assert main(args) == 0
    assert read_video(tmp_path / "i.mp4").shape[0] == 1
    assert json.loads(stats.read_text())["summary"]["calls"] > 0  # the runner reports the store's attention calls


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "tiny:sd", "--noise", "initno", "--initno-words", "dog", "--prompt", PROMPT], "'dog' is not in the prompt"),
        (["--model", "tiny:sd", "--noise", "freeinit"], "FreeInit needs a video pipeline"),
        (["--model", "tiny:sd", "--noise", "freenoise"], "FreeNoise needs a video pipeline"),
        (["--model", "tiny:wan", "--noise", "freeinit", "--freeinit-temporal-stop", "0"], "temporal_stop must lie in \\(0, 1\\]"),
    ],
)
def test_bad_noise_input_gives_one_clear_line(args, message, capsys, tmp_path):
    assert main(["generate", *args, "--steps", "1", "--out", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err
    assert not (tmp_path / "x.mp4").exists()


def test_noise_demo_entries_pass_their_checks(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--only", "freeinit-*", "--only", "freenoise-*", "--only", "initno-*"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report) == {"freeinit-animatediff", "freeinit-wan", "freenoise-animatediff", "initno-sd"}
    assert report["freeinit-animatediff"]["max_abs_diff_vs_diffusers_freeinit"] <= 1e-5
    assert report["freenoise-animatediff"]["one_window_equals_stock"] and report["freenoise-animatediff"]["frames"] == 24
    assert report["initno-sd"]["optimiser_steps"] <= 100
    assert all(entry["ok"] for entry in report.values())
