"""Every bad input to `diffattn generate` / `edit` / `demo` is one clear line (exit 2), before anything heavy runs.

"Before any allocation or model load" is checked by making the loaders fail the test when reached: the
pipeline loader, and for `edit` the sample clip and the video reader.
"""

import argparse
import json

import pytest
import torch

from diffattn.cli import build_parser, edit, generate, main
from diffattn.errors import ConfigError
from diffattn.generation import GenerationSpec, pixel_multiple, save_spec
from diffattn.media.video import write_video


class Reached(ConfigError):
    """Raised by a loader the test says must not (or must) be reached."""


def _reached(*args, **kwargs):
    raise Reached("loader reached")


@pytest.fixture
def no_loading(monkeypatch):
    """Loading a pipeline, making the sample clip or reading a video raises `Reached`."""
    monkeypatch.setattr("diffattn.loading.load_pipeline", _reached)
    monkeypatch.setattr("diffattn.testing.sample_clip", _reached)
    monkeypatch.setattr("diffattn.media.video.read_video", _reached)


def _refused(capsys, args, match):
    """`diffattn *args` exits 2 with one line on stderr containing `match`, before any loader runs."""
    code = main(args)
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("diffattn")]  # not third-party import warnings
    assert code == 2 and len(ours) == 1 and "Traceback" not in err, err
    assert match in ours[0] and "loader reached" not in err, err
    return ours[0]


def _generate(tmp_path, *args):
    return ["generate", *args, "--out", str(tmp_path / "x.mp4")]


def _edit(tmp_path, *args):
    return ["edit", "fatezero", *args, "--out", str(tmp_path / "x.mp4")]


# ------------------------------------------------------------------------------------------ sizes and limits
def test_height_100_width_72_not_a_multiple_of_8_refused_before_loading(tmp_path, capsys, no_loading):
    _refused(capsys, _generate(tmp_path, "--height", "100", "--width", "72"), "height must be a multiple of 8")
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize("flag, value", [("--height", "-8"), ("--width", "-16"), ("--frames", "-1"), ("--steps", "0")])
def test_negative_or_zero_sizes_refused_before_loading(tmp_path, capsys, no_loading, flag, value):
    _refused(capsys, _generate(tmp_path, flag, value), f"{flag[2:]} must be positive; got {value}")


def test_frames_100001_over_the_limit_refused_before_loading(tmp_path, capsys, no_loading):
    _refused(capsys, _generate(tmp_path, "--frames", "100001"), "frames must lie between 1 and 129 by default (--no-limits")


def test_16384_px_over_the_limit_refused_before_loading(tmp_path, capsys, no_loading):
    _refused(capsys, _generate(tmp_path, "--height", "16384", "--width", "16384"), "height must lie between 1 and 2048")


def test_tiny_sd_at_8192_px_refused_before_loading(tmp_path, capsys, no_loading):
    _refused(capsys, _generate(tmp_path, "--model", "tiny:sd", "--height", "8192", "--width", "8192"), "must lie between 1 and 2048")


def test_steps_over_the_limit_refused_before_loading(tmp_path, capsys, no_loading):
    _refused(capsys, _generate(tmp_path, "--steps", "1000"), "steps must lie between 1 and 100")


def test_edit_height_4096_refused_before_the_clip_is_made_or_a_model_loaded(tmp_path, capsys, no_loading):
    _refused(capsys, _edit(tmp_path, "--height", "4096", "--width", "64"), "height must lie between 1 and 2048")


def test_edit_steps_over_the_limit_through_a_method_flag_refused(tmp_path, capsys, no_loading):
    _refused(capsys, _edit(tmp_path, "--fatezero-num-inference-steps", "500"), "steps must lie between 1 and 100")


def test_no_limits_lifts_the_caps_but_not_validity(tmp_path, capsys, no_loading):
    """With --no-limits the run gets as far as the loader; a size no model can take is still refused."""
    assert "loader reached" in _run_err(capsys, _generate(tmp_path, "--no-limits", "--frames", "200", "--height", "4096"))
    assert "loader reached" in _run_err(capsys, _edit(tmp_path, "--no-limits", "--height", "4096", "--width", "4096"))
    _refused(capsys, _generate(tmp_path, "--no-limits", "--height", "4100"), "height must be a multiple of 8")


def _run_err(capsys, args):
    assert main(args) == 2
    return capsys.readouterr().err


def test_size_not_a_multiple_the_loaded_model_needs_is_one_line(tmp_path, capsys):
    """Multiples of 8 that the tiny CogVideoX cannot take (2x2 patches of 8x latents) failed deep in the model."""
    _refused(capsys, _generate(tmp_path, "--model", "tiny:cogvideox", "--height", "24", "--width", "32"),
             "tiny:cogvideox (CogVideoXPipeline) needs height and width in multiples of 16; height is 24")


def _pipeline(class_name, *, patch=None, **scales):
    """A stand-in pipeline of class `class_name` with VAE scale attributes and a denoiser's patch size."""
    denoiser = argparse.Namespace(config=argparse.Namespace(patch_size=patch))
    return type(class_name, (), {"transformer": denoiser, **scales})()


@pytest.mark.parametrize(
    "pipe, multiple",
    [
        (_pipeline("WanPipeline", patch=(1, 2, 2), vae_scale_factor_spatial=8), 16),
        (_pipeline("MochiPipeline", patch=2, vae_spatial_scale_factor=8), 16),
        (_pipeline("HunyuanVideoPipeline", patch=1, vae_scale_factor_spatial=8), 16),
        (_pipeline("LTXPipeline", patch=1, vae_spatial_compression_ratio=4), 32),
        (_pipeline("StableDiffusionPipeline", vae_scale_factor=8), 8),
    ],
    ids=["wan", "mochi", "hunyuan-pipeline-rule", "ltx-pipeline-rule", "sd"],
)
def test_pixel_multiple_is_vae_scale_times_patch_or_the_pipelines_own_rule(pipe, multiple):
    assert pixel_multiple(pipe) == multiple


# ------------------------------------------------------------------------------------------ output paths
def test_out_in_an_unwritable_location_refused_before_loading(tmp_path, capsys, no_loading):
    (tmp_path / "a_file").write_text("")
    _refused(capsys, ["generate", "--out", str(tmp_path / "a_file" / "x.mp4")], "a_file is a file, not a folder")


def test_out_in_a_folder_without_write_permission_refused_before_loading(tmp_path, capsys, no_loading, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("diffattn.cli.options.tempfile.TemporaryFile", denied)
    _refused(capsys, _generate(tmp_path), f"cannot write in {tmp_path} (Permission denied)")


def test_existing_folder_as_out_refused_before_loading(tmp_path, capsys, no_loading):
    _refused(capsys, ["generate", "--out", str(tmp_path)], "is a folder; give a file name inside it")


def test_out_with_a_trailing_slash_refused_and_no_file_named_like_the_folder(tmp_path, capsys, no_loading):
    _refused(capsys, ["generate", "--out", f"{tmp_path / 'dir'}/"], "is a folder")
    assert not (tmp_path / "dir").exists()


def test_out_png_refused_instead_of_writing_mp4_bytes(tmp_path, capsys, no_loading):
    _refused(capsys, ["generate", "--out", str(tmp_path / "x.png")], "give a file name ending in .mp4")
    _refused(capsys, ["edit", "fatezero", "--out", str(tmp_path / "x.png")], "give a file name ending in .mp4")
    with pytest.raises(ConfigError, match="ending in .mp4"):
        write_video(tmp_path / "x.png", torch.rand(2, 3, 8, 8))
    assert not (tmp_path / "x.png").exists()


def test_stats_in_an_unwritable_location_refused_before_loading(tmp_path, capsys, no_loading):
    (tmp_path / "a_file").write_text("")
    _refused(capsys, _generate(tmp_path, "--stats", str(tmp_path / "a_file" / "s.json")), "--stats")


def test_stats_and_save_config_into_missing_folders_are_created(tmp_path, capsys):
    stats, config = tmp_path / "new" / "stats.json", tmp_path / "other" / "run.yaml"
    assert main(_generate(tmp_path, "--method", "observe", "--steps", "1", "--stats", str(stats),
                          "--save-config", str(config))) == 0
    assert json.loads(stats.read_text())["summary"]["calls"] > 0 and config.exists()


@pytest.mark.parametrize("fps", ["0", "-3"])
def test_fps_zero_or_negative_refused_before_loading(tmp_path, capsys, no_loading, fps):
    _refused(capsys, _generate(tmp_path, "--fps", fps), f"fps must be positive; got {fps}")
    _refused(capsys, _edit(tmp_path, "--fps", fps), f"fps must be positive; got {fps}")
    with pytest.raises(ConfigError, match="fps must be a positive number"):
        write_video(tmp_path / "v.mp4", torch.rand(2, 3, 8, 8), fps=int(fps))
    assert not list(tmp_path.iterdir())


def test_demo_out_in_an_unwritable_location_refused(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    _refused(capsys, ["demo", "--out", str(tmp_path / "a_file" / "demo")], "is a file, not a folder")
    _refused(capsys, ["demo", "--out", str(tmp_path / "a_file")], "a_file is a file; give a folder")


def test_demo_only_matching_no_entry_refused(tmp_path, capsys):
    _refused(capsys, ["demo", "--out", str(tmp_path), "--only", "observe-nope"], "'observe-nope' matches no demo entry")
    assert not (tmp_path / "report.md").exists()


# ------------------------------------------------------------------------------------------ --config files
def _config_file(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("command", [["generate"], ["edit", "fatezero"]], ids=["generate", "edit"])
def test_config_missing_file_is_one_line(tmp_path, capsys, no_loading, command):
    _refused(capsys, [*command, "--config", str(tmp_path / "nope.yaml")], "nope.yaml does not exist")


@pytest.mark.parametrize("command", [["generate"], ["edit", "fatezero"]], ids=["generate", "edit"])
def test_config_malformed_yaml_is_one_line(tmp_path, capsys, no_loading, command):
    _refused(capsys, [*command, "--config", _config_file(tmp_path, "frames: [1, 2\nsteps: 3\n")], "run.yaml")


@pytest.mark.parametrize("command", [["generate"], ["edit", "fatezero"]], ids=["generate", "edit"])
def test_config_frames_abc_is_one_line_naming_the_file(tmp_path, capsys, no_loading, command):
    err = _refused(capsys, [*command, "--config", _config_file(tmp_path, 'frames: "abc"\n')], "frames must be a whole number")
    assert "run.yaml: " in err


def test_config_methods_sparge_instead_of_a_list_is_one_line(tmp_path, capsys, no_loading):
    _refused(capsys, ["generate", "--config", _config_file(tmp_path, "methods: sparge\n")],
             "methods must be a list of method settings")


# ------------------------------------------------------------------------------------------ devices and models
def test_device_cuda_without_cuda_refused_before_loading(tmp_path, capsys, no_loading, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    _refused(capsys, _generate(tmp_path, "--device", "cuda"), "device 'cuda' is not available here")
    _refused(capsys, _generate(tmp_path, "--device", "gpu0"), "unknown device 'gpu0'")


def test_method_initno_on_a_video_model_is_one_line(tmp_path, capsys):
    _refused(capsys, _generate(tmp_path, "--model", "tiny:wan", "--method", "initno", "--steps", "1"),
             "InitNO supports Stable Diffusion 1.x/2.x text-to-image")


def test_edit_stride_0_refused_before_reading(tmp_path, capsys, no_loading):
    _refused(capsys, _edit(tmp_path, "--stride", "0"), "stride must be positive; got 0")


# ------------------------------------------------------------------------------------------ flag values
@pytest.mark.parametrize(
    "args, message",
    [
        (["--frames", "abc"], "diffattn generate: error: --frames: expected a whole number, got 'abc'"),
        (["--guidance", "strong"], "--guidance: expected a number, got 'strong'"),
        (["--sparge-topk", "lots"], "--sparge-topk: expected a number or None, got 'lots'"),
        (["--observe-layers", "a,b"], "--observe-layers: expected a list of whole numbers or None, got 'a,b'"),
        (["--sparge-attention-sink", "maybe"], "--sparge-attention-sink: expected true or false, got 'maybe'"),
        (["--sparge-topK", "0.3"], "unrecognized arguments: --sparge-topK 0.3; did you mean --sparge-topk?"),
    ],
    ids=["frames-abc", "guidance-word", "method-float", "method-tuple", "method-bool", "misspelt-flag"],
)
def test_argument_type_errors_name_the_flag_and_type_in_two_lines(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(_generate(tmp_path, *args))
    err = capsys.readouterr().err.splitlines()[-2:]
    assert exit_info.value.code == 2 and message in err[0], err
    assert err[0].startswith("diffattn generate: error: ") and err[1] == "run `diffattn generate --help` to see the flags"
    assert "usage" not in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_and_inf_guidance_refused(tmp_path, capsys, no_loading, value):
    _refused(capsys, _generate(tmp_path, f"--guidance={value}"), "guidance must be a finite number")
    _refused(capsys, _edit(tmp_path, f"--guidance={value}"), "guidance must be a finite number")


def test_nan_in_a_method_float_flag_refused(tmp_path, capsys, no_loading):
    _refused(capsys, _generate(tmp_path, "--method", "sparge", "--sparge-topk", "nan"), "topk must be a finite number")
    _refused(capsys, _edit(tmp_path, "--fatezero-blend-th", "nan"), "blend_th must be a finite number")


@pytest.mark.parametrize("flag, value", [("--method", ""), ("--noise", " , ")])
def test_empty_method_list_refused_instead_of_a_silent_plain_run(tmp_path, capsys, no_loading, flag, value):
    _refused(capsys, _generate(tmp_path, flag, value), f"{flag} {value!r} names no method")


# ------------------------------------------------------------------------------------------ --help
def test_generate_help_shows_each_method_fields_doc_and_default_grouped_per_method(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    sparge = out[out.index("sparge settings:"):]
    assert "--sparge-topk TOPK Fraction of key blocks each query block keeps" in sparge
    assert "(default: 0.5)" in sparge and "--sparge-layers LAYERS Indices of the transformer blocks" in sparge
    assert "--initno-tau-self TAU_SELF Success thresholds on S_CA and S_SA. (default: 0.3)" in out
    assert "last 70% of the steps" in out  # a literal % in a docstring survives argparse's formatting
    assert "--no-limits" in out and "override" in out


def test_field_docs_read_both_docstring_styles_shared_entries_and_the_bases():
    from diffattn.docstrings import field_docs

    class Base:
        """Base.

        Args:
            shared (`int`, defaults to `1`):
                From the base,
                over two lines.
            replaced (`int`): the base's text.
        """

    class Child(Base):
        """Child.

        Args:
            replaced (`tuple[int, ...]`, defaults to `(1, 2)`): the child's text,
                continued.
            low / high (`float`, defaults to `0.2` / `0.3`):
                Both bounds.

        Returns:
            nothing: not a field.
        """

    assert field_docs(Child) == {"shared": "From the base, over two lines.", "replaced": "the child's text, continued.",
                                 "low": "Both bounds.", "high": "Both bounds."}


# ------------------------------------------------------------------------------------------ --config with flags
def _spec(args):
    """The spec a command line would run, without running it."""
    command = {"generate": generate, "edit": edit}[args[0]]
    return command.spec_from_args(build_parser().parse_args(args))


def test_generate_flags_override_the_config_files_values(tmp_path):
    config = tmp_path / "run.yaml"
    save_spec(GenerationSpec(steps=2, seed=5, methods=[_observe(layers=(0,), dense_steps=1)]), config)
    spec = _spec(["generate", "--config", str(config), "--steps", "1", "--observe-dense-steps", "0"])
    assert (spec.steps, spec.seed) == (1, 5)
    assert spec.methods[0].layers == (0,) and spec.methods[0].dense_steps == 0
    replaced = _spec(["generate", "--config", str(config), "--method", "radial"])
    assert [m.name for m in replaced.methods] == ["radial"] and replaced.steps == 2


def _observe(**settings):
    from diffattn.configs import ObserveConfig

    return ObserveConfig(**settings)


def test_edit_flags_override_the_config_files_values(tmp_path):
    spec = _spec(["edit", "fatezero", "--config", "fatezero_shape.yaml", "--steps", "3", "--fatezero-blend-th", "0.5"])
    assert spec.steps == 3 and spec.config().blend_th == 0.5
    assert spec.config().blend_words == ("silver", "jeep")  # kept from the file
