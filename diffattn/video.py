"""Video I/O: read MP4/AVI/GIF/a folder of frames, write browser-playable MP4 (H.264, yuv420p).

Frames travel as float tensors `[frames, 3, height, width]` in `[0, 1]`. Writing goes to a temporary file
that is renamed into place only when complete, so a failure never leaves a half-written video behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import VideoReadError

__all__ = ["read_video", "write_video", "to_uint8_frames", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES"]

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


def write_video(path: str | os.PathLike, video: torch.Tensor | np.ndarray | list, fps: int = 8) -> Path:
    """Write frames as an H.264 MP4 that browsers play; odd sizes are padded by one edge pixel."""
    import imageio.v2 as imageio

    frames = to_uint8_frames(video)
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    path = Path(path)
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
        raise VideoReadError(f"could not read {path}: {exc}") from exc
    if max_frames is not None:
        frames = frames[:max_frames]
    if len(frames) == 0:
        raise VideoReadError(f"{path} holds no frames")
    array = np.stack(frames).astype(np.float32) / 255.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


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
