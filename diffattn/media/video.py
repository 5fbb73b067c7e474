"""Video I/O: read MP4/AVI/GIF/a folder of frames, write browser-playable MP4 (H.264, yuv420p), and prepare
frames for a diffusion model (frame sampling, resize, crop to multiples of 8).

Frames travel as float tensors `[frames, 3, height, width]` in `[0, 1]`. Writing goes to a temporary file
that is renamed into place only when complete, so a failure never leaves a half-written video behind.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, VideoReadError

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "check_video_path",
    "crop_to_multiple",
    "prepare_video",
    "read_video",
    "resize_video",
    "sample_frames",
    "to_uint8_frames",
    "write_video",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")


def to_uint8_frames(video: torch.Tensor | np.ndarray | list) -> np.ndarray:
    """`[F, H, W, 3]` uint8 from a float tensor `[F, 3, H, W]` / `[F, H, W, 3]` in [0, 1], or PIL images."""
    if isinstance(video, list):
        video = np.stack([np.asarray(frame) for frame in video])
    if isinstance(video, torch.Tensor):
        video = video.detach().float().cpu().numpy()
    array = np.asarray(video)
    if array.ndim != 4:
        raise ValueError(f"expected a video of 4 dimensions [frames, ...], got shape {array.shape}")
    if array.shape[1] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(0, 2, 3, 1)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return array


def check_video_path(path: str | os.PathLike) -> Path:
    """`path` if it names an MP4 file (what `write_video` writes); else `ConfigError`, so the name never lies
    about the content (`x.png` holding MP4 bytes, `out/` becoming a file named `out`)."""
    if str(path).endswith(("/", os.sep)) or Path(path).suffix.lower() != ".mp4":
        raise ConfigError(f"{os.fspath(path)!r}: videos are written as MP4 (H.264); give a file name ending in .mp4")
    return Path(path)


def _new_file_mode() -> int:
    """The permission bits `open()` gives a new file under the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_video(path: str | os.PathLike, video: torch.Tensor | np.ndarray | list, fps: int = 8) -> Path:
    """Write frames as an H.264 MP4 that browsers play; odd sizes are padded by one edge pixel."""
    import imageio.v2 as imageio

    path = check_video_path(path)
    if not (isinstance(fps, (int, float)) and fps > 0 and np.isfinite(fps)):
        raise ConfigError(f"fps must be a positive number; got {fps!r}")
    frames = to_uint8_frames(video)
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".mp4", dir=path.parent, prefix=f".{path.stem}-")
    os.close(fd)
    try:
        with imageio.get_writer(
            tmp, fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1, quality=8,
            ffmpeg_log_level="error", output_params=["-movflags", "+faststart"],
        ) as writer:
            for frame in frames:
                writer.append_data(frame)
        os.chmod(tmp, _new_file_mode())  # mkstemp creates 0600; the video gets the mode any new file would
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> torch.Tensor:
    """Read a video file or a folder of frames as float `[F, 3, H, W]` in [0, 1].

    Raises `VideoReadError` for a missing, unreadable, corrupt or empty input.
    """
    path = Path(path)
    if not path.exists():
        raise VideoReadError(f"{path} does not exist")
    try:
        frames = _read_folder(path) if path.is_dir() else _read_file(path, max_frames)
    except VideoReadError:
        raise
    except Exception as exc:  # decoders raise many types; one clear error for the user
        raise VideoReadError(
            f"could not read {path} as a video: {_decoder_problem(exc)}; check that it plays in a video player, "
            "or give a folder of frames"
        ) from exc
    if max_frames is not None:
        frames = frames[:max_frames]
    if len(frames) == 0:
        raise VideoReadError(f"{path} holds no frames")
    array = np.stack(frames).astype(np.float32) / 255.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


_FFMPEG_BANNER = ("ffmpeg version", "built with", "configuration:", "lib")
"""How the lines of ffmpeg's version banner start (imageio-ffmpeg puts ffmpeg's whole log in its errors)."""


def _decoder_problem(exc: BaseException) -> str:
    """A decoder error in one line: its own first line and ffmpeg's last diagnostic, never ffmpeg's banner."""
    head, _, log = str(exc).partition("=== stderr ===")
    first = next((line.strip() for line in head.splitlines() if line.strip()), type(exc).__name__)
    diagnostics = [line.strip() for line in log.splitlines() if line.strip() and not line.strip().startswith(_FFMPEG_BANNER)]
    detail = re.sub(r"^\[[^\]]*\]\s*", "", diagnostics[-1]) if diagnostics else ""
    return f"{first} ({detail})" if detail else first


def _as_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    return np.ascontiguousarray(frame[..., :3]).astype(np.uint8)


def _read_folder(folder: Path) -> list[np.ndarray]:
    import imageio.v2 as imageio

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise VideoReadError(f"{folder} holds no image frames ({', '.join(IMAGE_SUFFIXES)})")
    frames = [_as_rgb(imageio.imread(p)) for p in files]
    if len({f.shape for f in frames}) != 1:
        raise VideoReadError(f"the frames in {folder} differ in size")
    return frames


def _read_file(path: Path, max_frames: int | None) -> list[np.ndarray]:
    import imageio.v2 as imageio

    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise VideoReadError(f"{path.name}: unsupported video type; use one of {', '.join(VIDEO_SUFFIXES)} or a folder of frames")
    if path.stat().st_size == 0:
        raise VideoReadError(f"{path} is empty")
    frames = []
    with imageio.get_reader(path) as reader:
        for frame in reader:
            frames.append(_as_rgb(np.asarray(frame)))
            if max_frames is not None and len(frames) >= max_frames:
                break
    return frames


# ------------------------------------------------------------------------------------- preparation
def sample_frames(video: torch.Tensor, num_frames: int | None = None, stride: int = 1, start: int = 0) -> torch.Tensor:
    """Frames `start, start + stride, ...` (at most `num_frames` of them; all that exist when `None`)."""
    if stride < 1 or start < 0:
        raise ConfigError(f"frame sampling needs stride >= 1 and start >= 0; got stride={stride}, start={start}")
    if start >= video.shape[0]:
        raise VideoReadError(f"the video has {video.shape[0]} frames; cannot start at frame {start}")
    picked = video[start::stride]
    return picked if num_frames is None else picked[:num_frames]


def resize_video(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Scale to cover `height x width` (keeping the aspect ratio), then centre-crop to exactly that size."""
    in_h, in_w = video.shape[-2:]
    scale = max(height / in_h, width / in_w)
    scaled_h, scaled_w = max(height, round(in_h * scale)), max(width, round(in_w * scale))
    if (scaled_h, scaled_w) != (in_h, in_w):
        video = torch.nn.functional.interpolate(
            video.float(), size=(scaled_h, scaled_w), mode="bilinear", align_corners=False, antialias=True
        ).clamp(0, 1)
    top, left = (scaled_h - height) // 2, (scaled_w - width) // 2
    return video[..., top : top + height, left : left + width].contiguous()


def crop_to_multiple(video: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    """Centre-crop height and width down to multiples of `multiple` (latent diffusion needs multiples of 8)."""
    height, width = video.shape[-2:]
    new_h, new_w = height - height % multiple, width - width % multiple
    if new_h == 0 or new_w == 0:
        raise VideoReadError(f"frames of {height}x{width} are smaller than {multiple} pixels; use a larger video")
    top, left = (height - new_h) // 2, (width - new_w) // 2
    return video[..., top : top + new_h, left : left + new_w].contiguous()


def prepare_video(
    video: torch.Tensor | str | os.PathLike,
    *,
    num_frames: int | None = None,
    stride: int = 1,
    start: int = 0,
    height: int | None = None,
    width: int | None = None,
    multiple: int = 8,
) -> torch.Tensor:
    """Read (if a path), sample frames, resize and crop: frames `[F, 3, H, W]` in [0, 1] with H, W multiples of `multiple`.

    With `height` and `width` the frames are scaled to cover that size and centre-cropped; with one of them the
    other follows the aspect ratio; with neither the size is kept and cropped down to multiples of `multiple`.
    """
    for name, value in (("height", height), ("width", width)):
        if value is not None and (value <= 0 or value % multiple):
            raise ConfigError(f"{name} must be a positive multiple of {multiple}; got {value}")
    if not isinstance(video, torch.Tensor):
        limit = None if num_frames is None else start + stride * (num_frames - 1) + 1
        video = read_video(video, max_frames=limit)
    if video.ndim != 4 or video.shape[1] != 3 or video.shape[0] == 0:
        raise VideoReadError(f"expected frames [F, 3, H, W] with at least one frame; got shape {tuple(video.shape)}")
    video = sample_frames(video.float(), num_frames, stride, start)
    in_h, in_w = video.shape[-2:]
    if height is not None or width is not None:
        height = height or max(multiple, round(in_h * width / in_w / multiple) * multiple)
        width = width or max(multiple, round(in_w * height / in_h / multiple) * multiple)
        video = resize_video(video, height, width)
    return crop_to_multiple(video, multiple)
