"""`diffattn edit`: defaults on the tiny models, YAML configs, flags, bad input (clear errors, no output file)."""

import json

import pytest
import torch
import yaml

from diffattn.cli import main
from diffattn.errors import ConfigError
from diffattn.media.metrics import PSNR_CAP_DB
from diffattn.media.video import read_video, write_video
from diffattn.pipelines.edit_job import EXAMPLE_CONFIGS, EditSpec, load_edit_spec

FAST = ["--steps", "2", "--frames", "3"]


def _edit(tmp_path, *args):
    out = tmp_path / "edited.mp4"
    return main(["edit", *args, "--out", str(out)]), out


@pytest.mark.parametrize("editor", ["fatezero", "realcraft", "fresco"])
def test_defaults_edit_the_sample_clip_on_the_tiny_model(tmp_path, capsys, editor):
    code, out = _edit(tmp_path, editor, *FAST)
    assert code == 0, capsys.readouterr().err
    assert read_video(out).shape == (3, 3, 64, 64)
    assert f"with {editor} on tiny:sd" in capsys.readouterr().out


def _not_json(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


def test_video_file_flags_and_metrics(tmp_path, capsys):
    from diffattn.testing import sample_clip

    source = write_video(tmp_path / "input.mp4", sample_clip(6, 72, 80))
    code, out = _edit(tmp_path, "fatezero", "--video", str(source), "--frames", "3", "--stride", "2", "--steps", "2",
                      "--source-prompt", "a red sun over waves", "--target-prompt", "a blue sun over waves",
                      "--blend-words", "red,sun", "--fatezero-self-replace-steps", "0.5", "--metrics",
                      "--save-config", str(tmp_path / "run.yaml"))
    assert code == 0, capsys.readouterr().err
    assert read_video(out).shape == (3, 3, 72, 80)
    printed = capsys.readouterr().out
    metrics = json.loads(printed.split("metrics: ")[1].splitlines()[0], parse_constant=_not_json)
    assert {"warp_error_source", "warp_error_edit"} <= set(metrics)
    # PSNR outside the mask is finite (capped for identical pixels), left out when the mask covers every pixel
    assert metrics.get("psnr_outside_mask", 0.0) <= PSNR_CAP_DB
    saved = load_edit_spec(tmp_path / "run.yaml")
    assert saved.config().blend_words == ("red", "sun") and saved.config().self_replace_steps == 0.5
    assert saved.stride == 2 and saved.steps == 2 and saved.video == str(source)


def test_every_example_config_is_valid_and_one_runs(tmp_path, capsys):
    examples = sorted(EXAMPLE_CONFIGS.glob("*.yaml"))
    assert {p.stem for p in examples} >= {"fatezero_style", "fatezero_shape", "fatezero_attribute", "realcraft_object", "fresco_style"}
    for path in examples:
        spec = load_edit_spec(path)
        assert spec.editor == yaml.safe_load(path.read_text())["editor"]
        spec.config()
    shape = load_edit_spec("fatezero_shape.yaml").config()
    assert shape.blend_words == ("silver", "jeep") and shape.target_blend_words == ("Porsche", "car") and shape.is_replace_controller
    code, _ = _edit(tmp_path, "fatezero", "--config", "fatezero_shape.yaml", *FAST, "--height", "64", "--width", "64")
    assert code == 0, capsys.readouterr().err


def _refused(tmp_path, capsys, *args, match):
    code, out = _edit(tmp_path, *args)
    err = capsys.readouterr().err
    assert code == 2 and not out.exists(), err
    assert match in err, err
    assert not list(tmp_path.glob(".edited*"))  # no temporary leftovers


def test_bad_input_gives_clear_errors_and_no_output(tmp_path, capsys):
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00garbage" * 100)
    (tmp_path / "empty.gif").write_bytes(b"")
    long_video = write_video(tmp_path / "long.mp4", torch.rand(12, 3, 16, 16))
    _refused(tmp_path, capsys, "fatezero", "--video", str(tmp_path / "missing.mp4"), match="does not exist")
    _refused(tmp_path, capsys, "fatezero", "--video", str(tmp_path / "corrupt.mp4"), match="could not read")
    _refused(tmp_path, capsys, "realcraft", "--video", str(tmp_path / "empty.gif"), match="is empty")
    _refused(tmp_path, capsys, "fatezero", "--video", str(long_video), "--max-frames", "8", match="more than 8 frames")
    _refused(tmp_path, capsys, "fatezero", *FAST, "--blend-words", "tiger", match="blend word 'tiger' is not in the prompt")
    _refused(tmp_path, capsys, "fatezero", *FAST, "--target-prompt", "a watercolor painting of a blue moon over the waves",
             "--fatezero-is-replace-controller", "true", match="same number of words")
    _refused(tmp_path, capsys, "fresco", *FAST, "--blend-words", "red", match="no blend words")
    _refused(tmp_path, capsys, "fatezero", *FAST, "--realcraft-object-words", "red", match="is a realcraft setting")
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses a malformed number itself, in one line
        _edit(tmp_path, "fatezero", *FAST, "--fatezero-blend-th", "oops")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--fatezero-blend-th: expected a number, got 'oops'" in err
    assert len(err.splitlines()) == 2 and "usage" not in err


def test_generate_points_editing_methods_to_edit(tmp_path, capsys):
    code = main(["generate", "--model", "tiny:sd", "--method", "fatezero", "--out", str(tmp_path / "x.mp4")])
    assert code == 2 and "diffattn edit fatezero --video" in capsys.readouterr().err


def test_spec_validation():
    with pytest.raises(ConfigError, match="unknown editor"):
        EditSpec(editor="tokenflow")
    with pytest.raises(ConfigError, match="unknown edit setting"):
        EditSpec.from_dict({"editor": "fatezero", "prompt": "x"})
    with pytest.raises(ConfigError, match="unknown fatezero setting"):
        EditSpec.from_dict({"editor": "fatezero", "fatezero": {"blend_threshold": 0.3}})
    spec = EditSpec.from_dict({"editor": "realcraft", "realcraft": {"object_words": ["sun"]}, "steps": 3})
    assert EditSpec.from_dict(spec.to_dict()) == spec and spec.config().num_inference_steps == 3
