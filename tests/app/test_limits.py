"""What the app accepts: model sources inside the allowed folders only, uploads within limits, capped sizes."""

from __future__ import annotations

import pytest
from diffattn.app.limits import (
    AppLimits,
    check_kernel_tokens,
    check_model,
    check_sampling,
    check_upload,
)

from diffattn.errors import ConfigError, VideoReadError
from diffattn.testing import sample_clip
from diffattn.video import write_video


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
    limits = AppLimits(max_steps=10, max_frames=5, max_side=64, max_kernel_tokens=512, max_kernel_tokens_cpu=128)
    check_sampling(limits, steps=10, frames=5, height=64, width=None)
    for setting, value in (("steps", 11), ("frames", 0), ("height", 65), ("width", 128)):
        with pytest.raises(ConfigError, match=f"{setting} must lie between 1 and"):
            check_sampling(limits, **{setting: value})
    check_kernel_tokens(512, limits, on_gpu=True)
    with pytest.raises(ConfigError, match="at most 128 tokens on the CPU"):
        check_kernel_tokens(256, limits, on_gpu=False)
