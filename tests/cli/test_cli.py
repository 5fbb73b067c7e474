"""The `diffattn` command: info, demo, generate (with config replay), and clear errors."""

import json

import pytest
import torch

from diffattn.cli import main
from diffattn.generation import generate, load_spec, save_spec
from diffattn.media.video import read_video


def test_info_reports_backends_methods_and_families(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["device"]["type"] in ("cpu", "cuda")
    assert "observe" in info["methods"]
    assert "wan" in info["families"] and "unet-motion" in info["families"]
    assert info["backends"]["xformers"]  # a reason or "ok", never empty
    assert set(info["precisions"]) == {"bf16", "int8", "int8-fp8"}
    if info["device"]["type"] == "cpu":  # 8 bits on the CPU: the reference arithmetic, said so
        assert all("PyTorch reference" in info["precisions"][p] for p in ("int8", "int8-fp8"))
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "methods:" in text and "precisions:" in text


def test_demo_writes_videos_and_a_report(tmp_path, capsys):
    status = main(["demo", "--out", str(tmp_path), "--only", "sample-clip", "--only", "observe-wan", "--only", "observe-sd"])
    assert status == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report) == {"sample-clip", "observe-wan", "observe-sd"}
    assert all(entry["ok"] for entry in report.values())
    assert report["observe-wan"]["max_abs_diff_vs_stock"] <= 1e-6
    clip = read_video(tmp_path / "sample_clip.mp4")
    assert clip.shape[0] == report["sample-clip"]["frames"]
    assert read_video(tmp_path / "observe_wan.mp4").shape[1] == 3
    assert "observe-wan" in (tmp_path / "report.md").read_text()


def test_generate_writes_video_stats_and_a_replayable_config(tmp_path, capsys):
    out, stats, config = tmp_path / "fox.mp4", tmp_path / "stats.json", tmp_path / "run.json"
    args = ["generate", "--model", "tiny:wan", "--method", "observe", "--observe-layers", "0,1", "--steps", "2",
            "--out", str(out), "--stats", str(stats), "--save-config", str(config)]
    assert main(args) == 0
    assert read_video(out).shape[0] > 1
    assert json.loads(stats.read_text())["summary"]["calls"] > 0
    spec = load_spec(config)
    assert spec.methods[0].to_dict()["layers"] == [0, 1] and spec.steps == 2
    first, again = generate(spec), generate(load_spec(save_spec(spec, tmp_path / "again.json")))
    assert torch.equal(first.frames, again.frames)


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "--method", "obsrve"], "Did you mean 'observe'"),
        (["generate", "--observe-dense-steps", "2"], "not among the chosen methods"),
        (["generate", "--method", "observe", "--observe-dense-steps", "-1"], "dense_steps must lie"),
        (["generate", "--model", "tiny:nope"], "no built-in tiny model"),
        (["generate", "--model", "tiny:wan-i2v"], "no built-in tiny model 'wan-i2v' that generates from a prompt"),
    ],
)
def test_generate_bad_input_gives_one_clear_line(args, message, capsys, tmp_path):
    assert main([*args, "--out", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.mp4").exists()


def test_generate_loads_real_weights_from_a_local_folder(tmp_path):
    """The real loading path (`from_pretrained`, safetensors only) on a saved tiny pipeline."""
    from diffattn.testing import tiny_pipeline

    folder = tmp_path / "tiny-sd"
    tiny_pipeline("sd").save_pretrained(folder, safe_serialization=True)
    assert main(["generate", "--model", str(folder), "--method", "observe", "--steps", "2", "--height", "32",
                 "--width", "32", "--out", str(tmp_path / "img.mp4")]) == 0
    assert read_video(tmp_path / "img.mp4").shape[0] == 1  # an image pipeline gives one frame


def test_generate_refuses_a_folder_without_a_pipeline(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path), "--out", str(tmp_path / "x.mp4")]) == 2
    assert "could not load a diffusers pipeline" in capsys.readouterr().err


def test_bench_times_the_kernel_flex_and_dense_on_this_device(capsys):
    assert main(["bench", "--tokens", "256", "--heads", "1", "--block", "64", "--densities", "0.25,1.0",
                 "--repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    implementations = {row["implementation"] for row in result["rows"]}
    assert "dense SDPA" in implementations and any(name.startswith("diffattn kernel") for name in implementations)
    assert {row["density"] for row in result["rows"]} == {0.25, 1.0}
    assert all(row["ms"] > 0 for row in result["rows"])


def test_bench_rejects_bad_sizes(capsys):
    assert main(["bench", "--tokens", "100", "--block", "64"]) == 2
    assert "multiple of the block size" in capsys.readouterr().err
