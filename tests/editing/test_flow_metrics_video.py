"""Optical flow, warping, occlusion, metrics and video preparation (no diffusion model involved)."""

import numpy as np
import pytest
import torch

from diffattn.errors import ConfigError, VideoReadError
from diffattn.media.flow import (
    OpenCVFlow,
    forward_backward_occlusion,
    in_bounds,
    video_flow,
    warp,
)
from diffattn.media.metrics import PSNR_CAP_DB, clip_scores, psnr, psnr_outside, warp_error
from diffattn.media.video import (
    crop_to_multiple,
    prepare_video,
    read_video,
    resize_video,
    sample_frames,
    write_video,
)

SHIFT = (5, 3)  # content moves 5 px right and 3 px down between the two frames


def _texture(size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random RGB texture `[3, size, size]` in [0, 1] (Gaussian-blurred noise)."""
    import cv2

    noise = np.random.default_rng(seed).random((size, size, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 3)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return torch.from_numpy(smooth).permute(2, 0, 1)


@pytest.fixture(scope="module")
def shifted():
    """Two 128x128 crops of one texture, the second showing the content moved by SHIFT."""
    texture = _texture(200)
    dx, dy = SHIFT
    first = texture[:, 30:158, 30:158]
    second = texture[:, 30 - dy : 158 - dy, 30 - dx : 158 - dx]
    return torch.stack([first, second])


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_flow_recovers_a_synthetic_shift(shifted, method):
    flow = video_flow(shifted, OpenCVFlow(method))
    valid = (1 - flow.forward_occlusion[0]).bool()
    assert abs(float(flow.forward[0, 0][valid].median()) - SHIFT[0]) < 0.1
    assert abs(float(flow.forward[0, 1][valid].median()) - SHIFT[1]) < 0.1
    assert abs(float(flow.backward[0, 0][valid].median()) + SHIFT[0]) < 0.1


def test_warp_error_of_the_source_under_its_own_flow(shifted):
    """The source under its own estimated flow has (almost) no warp error (0-255 scale).

    Away from the frame border DIS recovers the shift to ~1e-5 px and the error is < 0.01; within a DIS patch (8 px)
    of the border its patches leave the frame and a few pixels that pass the occlusion tests are off by up to
    0.7 px, which lifts the whole-frame figure to ~0.04 (still ~500x below the unwarped error).
    """
    dx, dy = SHIFT
    exact_backward = torch.tensor([-float(dx), -float(dy)]).view(1, 2, 1, 1).expand(1, 2, 128, 128)
    exact_error = (shifted[1] - warp(shifted[:1], exact_backward)[0]).abs().mean(0)[dy:, dx:].mean() * 255
    assert exact_error < 0.01
    flow = video_flow(shifted)
    interior_error = (shifted[1] - warp(shifted[:1], flow.backward)[0]).abs().mean(0)[8:-8, 8:-8]
    assert float(interior_error.mean() * 255) < 0.01
    estimated = warp_error(shifted, flow)
    unwarped = float((shifted[1] - shifted[0]).abs().mean() * 255)
    assert estimated < 0.05 < unwarped


def test_pure_translation_has_no_interior_occlusion(shifted):
    flow = video_flow(shifted)
    interior = flow.backward_occlusion[0, 16:-16, 16:-16]
    assert float(interior.sum()) == 0
    assert float(flow.backward_occlusion[0, :, :3].mean()) == 1  # content entering at the left edge: no match


def test_warp_zero_flow_is_identity_and_integer_flow_is_a_shift():
    image = torch.rand(2, 3, 16, 20)
    assert torch.allclose(warp(image, torch.zeros(2, 2, 16, 20)), image, atol=1e-5)  # coordinate round-off only
    shift = torch.zeros(2, 2, 16, 20)
    shift[:, 0] = 2.0  # sample 2 px to the right
    assert torch.allclose(warp(image, shift)[..., :-2], image[..., 2:], atol=1e-5)
    assert float(in_bounds(shift)[:, :, -2:].max()) == 0


def test_forward_backward_occlusion_of_consistent_flows_is_empty():
    forward = torch.full((1, 2, 12, 12), 1.5)
    occluded_forward, occluded_backward = forward_backward_occlusion(forward, -forward)
    assert float(occluded_forward[:, 2:-2, 2:-2].sum()) == 0 and float(occluded_backward[:, 2:-2, 2:-2].sum()) == 0
    inconsistent, _ = forward_backward_occlusion(forward, forward)
    assert float(inconsistent.min()) == 1


def test_static_video_has_zero_warp_error_and_clip_frame_score_one():
    from transformers import CLIPConfig, CLIPModel

    from diffattn.testing.text import write_clip_tokenizer

    video = _texture(64).unsqueeze(0).repeat(4, 1, 1, 1)
    assert warp_error(video) == pytest.approx(0.0, abs=1e-3)  # 0-255 scale; float round-off only
    torch.manual_seed(0)
    text = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 2, "num_hidden_layers": 2, "vocab_size": 2000}
    vision = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 2, "num_hidden_layers": 2,
              "image_size": 32, "patch_size": 8}
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        tokenizer = write_clip_tokenizer(folder)
    scores = clip_scores(video, "a red car", model, tokenizer)
    assert scores["clip_frame"] == pytest.approx(1.0, abs=1e-5)
    assert -1 <= scores["clip_text"] <= 1
    moving = torch.stack([_texture(64, seed) for seed in range(4)])
    assert clip_scores(moving, None, model)["clip_frame"] < 1 - 1e-4


def test_psnr_outside_mask_ignores_the_edited_region():
    source = torch.rand(2, 3, 16, 16)
    edited = source.clone()
    edited[:, :, :8] = 1 - edited[:, :, :8]  # change the top half
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2] = 1  # the top half, at a quarter of the resolution
    assert psnr_outside(edited, source, mask) == PSNR_CAP_DB
    assert psnr(edited, source) < 20
    assert psnr(source + 0.01, source) == pytest.approx(40.0, abs=1e-3)


def test_psnr_outside_mask_of_identical_images_is_finite_json():
    """Identical images report the documented cap, never Infinity (which is not JSON); a mask covering every pixel
    leaves nothing to compare: None (JSON null)."""
    import json

    source = torch.rand(2, 3, 16, 16)
    everything = torch.ones(2, 1, 4, 4)
    metrics = {"identical": psnr_outside(source.clone(), source, torch.zeros(2, 1, 4, 4)),
               "nothing_outside": psnr_outside(1 - source, source, everything)}
    assert metrics == {"identical": PSNR_CAP_DB, "nothing_outside": None}
    assert json.loads(json.dumps(metrics, allow_nan=False)) == metrics
    assert psnr(source, source) == PSNR_CAP_DB and psnr(source + 1e-6, source) == PSNR_CAP_DB
    assert psnr(source + 2e-5, source) < PSNR_CAP_DB


def test_video_preparation(tmp_path):
    video = torch.rand(10, 3, 50, 70)
    assert sample_frames(video, 3, stride=2, start=1).shape[0] == 3
    assert torch.equal(sample_frames(video, 3, stride=2, start=1)[1], video[3])
    assert crop_to_multiple(video).shape[-2:] == (48, 64)
    assert resize_video(video, 32, 32).shape[-2:] == (32, 32)
    assert prepare_video(video, num_frames=4, height=64).shape == (4, 3, 64, 88)
    with pytest.raises(ConfigError, match="multiple of 8"):
        prepare_video(video, height=60)
    with pytest.raises(VideoReadError, match="start at frame"):
        sample_frames(video, start=10)


def test_video_files_round_trip_and_bad_files(tmp_path):
    frames = torch.rand(4, 3, 32, 48)
    path = write_video(tmp_path / "clip.mp4", frames, fps=4)
    back = read_video(path)
    assert back.shape == (4, 3, 32, 48)
    assert float((back - frames).abs().mean()) < 0.2  # lossy H.264 of noise
    folder = tmp_path / "frames"
    folder.mkdir()
    import imageio.v2 as imageio

    for i, frame in enumerate((frames * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()):
        imageio.imwrite(folder / f"{i:03d}.png", frame)
    assert torch.allclose(read_video(folder), (frames * 255).to(torch.uint8).float() / 255)
    assert prepare_video(str(folder), num_frames=2, stride=2).shape == (2, 3, 32, 48)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "corrupt.mp4").write_bytes(b"not a video at all" * 10)
    (tmp_path / "nothing").mkdir()
    for bad, message in (("missing.mp4", "does not exist"), ("empty.mp4", "is empty"), ("corrupt.mp4", "could not read"),
                         ("nothing", "no image frames")):
        with pytest.raises(VideoReadError, match=message):
            prepare_video(tmp_path / bad)


def test_corrupt_video_error_is_one_line_without_the_ffmpeg_banner(tmp_path):
    """imageio-ffmpeg puts ffmpeg's whole log (version banner, build configuration) in its exception; the error keeps
    one line: the decoder's complaint and ffmpeg's last diagnostic."""
    (tmp_path / "corrupt.mp4").write_bytes(b"not a video at all" * 10)
    with pytest.raises(VideoReadError) as info:
        read_video(tmp_path / "corrupt.mp4")
    message = str(info.value)
    assert "\n" not in message and "ffmpeg version" not in message and "configuration:" not in message
    assert message.startswith(f"could not read {tmp_path / 'corrupt.mp4'} as a video: ")
    assert "Invalid data found when processing input" in message


def test_written_video_has_the_mode_of_any_new_file(tmp_path):
    """The atomic write goes through a private temporary file; the video must not stay readable by its owner only."""
    import os

    (tmp_path / "plain").write_bytes(b"")
    path = write_video(tmp_path / "clip.mp4", torch.rand(2, 3, 16, 16), fps=4)
    assert os.stat(path).st_mode & 0o777 == os.stat(tmp_path / "plain").st_mode & 0o777
