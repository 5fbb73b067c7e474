"""What the app accepts: model sources inside the allowed folders only, uploads within limits, a cap on every number."""

from __future__ import annotations

import math

import pytest

from diffattn.app.limits import (
    AppLimits,
    check_file,
    check_kernel_request,
    check_model,
    check_sampling,
    check_settings,
    check_upload,
)
from diffattn.configs import LiteAttentionConfig, ObserveConfig
from diffattn.errors import ConfigError, VideoReadError
from diffattn.media.video import write_video
from diffattn.testing import sample_clip


@pytest.fixture
def model_root(tmp_path):
    """An allowed model folder holding one pipeline folder (`good`) and one folder that is not a pipeline (`empty`)."""
    root = tmp_path / "models"
    (root / "good").mkdir(parents=True)
    (root / "good" / "model_index.json").write_text("{}")
    (root / "empty").mkdir()
    return root


def test_models_tiny_hub_and_local_folders_inside_the_allowed_ones(model_root, tmp_path):
    limits = AppLimits(model_dirs=(model_root,))
    assert check_model(" tiny:wan ", limits) == "tiny:wan"
    assert check_model("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", limits) == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    assert check_model(str(model_root / "good"), limits) == str((model_root / "good").resolve())
    outside = tmp_path / "elsewhere"
    (outside / "x").mkdir(parents=True)
    for escaped in (str(outside / "x"), str(model_root / "good" / ".." / ".." / "elsewhere" / "x"), "/etc", "~/x"):
        with pytest.raises(ConfigError, match="outside the folders this app may load from"):
            check_model(escaped, limits)
    with pytest.raises(ConfigError, match="no model_index.json"):
        check_model(str(model_root / "empty"), limits)
    with pytest.raises(ConfigError, match="neither tiny:<family>, a hub id"):
        check_model("not a model", limits)
    with pytest.raises(ConfigError, match="does not load models from the hub"):
        check_model("org/name", AppLimits(allow_hub=False))
    with pytest.raises(ConfigError, match="start the app with --model-dir"):
        check_model(str(model_root / "good"), AppLimits())


def test_uploads_must_come_from_the_upload_folder_and_respect_the_limits(tmp_path):
    uploads = tmp_path / "uploads"
    clip = write_video(uploads / "clip.mp4", sample_clip(8, 32, 32), fps=8)  # 1 s
    limits = AppLimits(max_upload_mb=1, max_video_seconds=2)
    assert check_upload(str(clip), limits, uploads) == clip.resolve()
    elsewhere = write_video(tmp_path / "other" / "clip.mp4", sample_clip(4, 32, 32), fps=8)
    with pytest.raises(ConfigError, match="must be uploaded through the app"):
        check_upload(str(elsewhere), limits, uploads)
    with pytest.raises(ConfigError, match="must be uploaded through the app"):
        check_upload(str(uploads / ".." / "other" / "clip.mp4"), limits, uploads)
    assert check_upload(str(elsewhere), AppLimits(upload_dirs=(tmp_path / "other",)), uploads) == elsewhere.resolve()
    text = uploads / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ConfigError, match="unsupported video type"):
        check_upload(str(text), limits, uploads)
    with pytest.raises(ConfigError, match="no video uploaded"):
        check_upload(None, limits, uploads)
    with pytest.raises(VideoReadError, match="no longer available"):
        check_upload(str(uploads / "gone.mp4"), limits, uploads)
    slow = write_video(uploads / "slow.mp4", sample_clip(8, 32, 32), fps=2)  # 4 s
    with pytest.raises(ConfigError, match=r"lasts 4\.0 s; the limit is 2 s"):
        check_upload(str(slow), limits, uploads)
    with pytest.raises(ConfigError, match=r"clip\.mp4 is 0\.00\d+ MB; the limit is 0\.001 MB"):
        check_upload(str(clip), AppLimits(max_upload_mb=0.001), uploads)


def test_sizes_are_capped():
    limits = AppLimits(max_steps=10, max_frames=5, max_side=64)
    assert check_sampling(limits, steps=10, frames="5", height=64.0, width=None, guidance=" ") == {
        "steps": 10, "frames": 5, "height": 64, "width": None, "guidance": None}
    for setting, value in (("steps", 11), ("frames", 0), ("height", 65), ("width", "128")):
        with pytest.raises(ConfigError, match=f"{setting} must lie between 1 and"):
            check_sampling(limits, **{setting: value})


@pytest.mark.parametrize(("values", "message"), [
    ({"guidance": "nan"}, "guidance must be a finite number; got 'nan'"),
    ({"guidance": "inf"}, "guidance must be a finite number"),
    ({"guidance": 51}, "guidance must lie between 0 and 50 in this app"),
    ({"seed": 1e30}, "seed must lie between 0 and 4294967295 in this app"),
    ({"seed": -1}, "seed must lie between 0 and"),
    ({"fps": 1000}, "fps must lie between 1 and 60 in this app"),
    ({"steps": "2.5"}, "steps must be a whole number"),
    ({"steps": "two"}, "steps must be a number"),
    ({"seed": None}, "seed needs a value"),
], ids=["guidance_nan", "guidance_inf", "guidance_above_cap", "seed_huge", "seed_negative", "fps_above_cap",
        "steps_fraction", "steps_text", "seed_missing"])
def test_bad_sampling_inputs_name_the_field_and_the_cap(values, message):
    with pytest.raises(ConfigError, match=message):
        check_sampling(AppLimits(), required=("seed",), **values)


KERNEL = {"tokens": 128, "heads": 1, "head_dim": 32, "block": 32, "densities": "0.5, 1", "repeats": 1}


def test_kernel_request_within_the_caps_becomes_numbers():
    assert check_kernel_request(AppLimits(), False, **KERNEL | {"heads": 2.0}) == {
        "tokens": 128, "heads": 2, "head_dim": 32, "block": 32, "repeats": 1, "densities": (0.5, 1.0)}


@pytest.mark.parametrize(("change", "message"), [
    ({"repeats": 100000}, "repeats must lie between 1 and 100 in this app; got 100000"),
    ({"tokens": 8192}, "tokens on the CPU must lie between 1 and 4096 in this app"),
    ({"heads": 10**6}, "heads must lie between 1 and 64 in this app"),
    ({"heads": "nan"}, "heads must be a finite number"),
    ({"densities": ", ".join(["0.5"] * 17)}, "densities must hold between 1 and 16 values in this app; got 17"),
    ({"densities": "nan"}, "densities must be a finite number"),
    ({"densities": "half"}, "densities must be a number; got 'half'"),
], ids=["repeats_100000", "tokens_above_cpu_cap", "heads_above_cap", "heads_nan", "too_many_densities",
        "density_nan", "density_text"])
def test_bad_kernel_inputs_name_the_field_and_the_cap(change, message):
    with pytest.raises(ConfigError, match=message):
        check_kernel_request(AppLimits(), False, **KERNEL | change)
    assert check_kernel_request(AppLimits(max_kernel_tokens=8192), True, **KERNEL | {"tokens": 8192})["tokens"] == 8192


@pytest.mark.parametrize(("settings", "message"), [
    ({"dense_steps": 10**9}, "observe: dense_steps must lie between -1e\\+06 and 1e\\+06 in this app"),
    ({"dense_layers": (0, 10**9)}, "observe: dense_layers must lie between"),
], ids=["setting_above_cap", "setting_in_tuple_above_cap"])
def test_method_settings_are_capped(settings, message):
    with pytest.raises(ConfigError, match=message):
        check_settings(ObserveConfig, settings, AppLimits())


def test_method_settings_refuse_nan_and_infinity_except_where_the_config_allows_it():
    check_settings(LiteAttentionConfig, {"threshold": -math.inf, "early_steps": 3}, AppLimits())  # -inf: never skip
    with pytest.raises(ConfigError, match="lite: threshold must be a finite number"):
        check_settings(LiteAttentionConfig, {"threshold": math.nan}, AppLimits())
    with pytest.raises(ConfigError, match="lite: min_tokens must be a finite number"):
        check_settings(LiteAttentionConfig, {"min_tokens": math.inf}, AppLimits())


def test_editor_steps_are_capped_like_the_sampling_steps():
    from diffattn.registry import get_method

    fatezero = get_method("fatezero")
    check_settings(fatezero, {"num_inference_steps": 100}, AppLimits())
    with pytest.raises(ConfigError, match="fatezero: num_inference_steps must lie between 1 and 100 in this app"):
        check_settings(fatezero, {"num_inference_steps": 1000}, AppLimits())


@pytest.mark.parametrize("field", ["max_upload_mb", "max_job_seconds", "max_steps", "max_kernel_repeats"])
@pytest.mark.parametrize("value", [-1, 0, math.nan, math.inf])
def test_limits_must_be_positive_numbers(field, value):
    with pytest.raises(ConfigError, match=f"{field} must be a positive number"):
        AppLimits(**{field: value})


def test_tuning_file_outside_the_allowed_folders_is_refused_unopened(tmp_path, touches):
    secret = tmp_path / "home" / "tuning.json"
    secret.parent.mkdir()
    secret.write_text("{}")
    uploads, allowed = tmp_path / "uploads", tmp_path / "allowed"
    touches.clear()
    for path in (str(secret), str(uploads / ".." / "home" / "tuning.json")):
        with pytest.raises(ConfigError, match="the tuning file must be uploaded through the app"):
            check_file(path, AppLimits(), uploads, what="tuning file", suffixes=(".json",))
    assert touches.of(secret) == []
    allowed.mkdir()
    inside = allowed / "tuning.json"
    inside.write_text("{}")
    assert check_file(str(inside), AppLimits(upload_dirs=(allowed,)), uploads, what="tuning file",
                      suffixes=(".json",)) == inside.resolve()
    with pytest.raises(ConfigError, match="unsupported tuning file type; upload one of .json"):
        check_file(str(allowed / "notes.txt"), AppLimits(upload_dirs=(allowed,)), uploads, what="tuning file",
                   suffixes=(".json",))
