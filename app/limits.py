"""What the app accepts: model sources, uploaded videos and sampling sizes, checked before any work starts.

A public demo must not read arbitrary files or run unbounded jobs, so every request passes these checks:
models are built-in tiny ones, hub ids (when allowed) or folders inside the configured model folders;
uploads must be files Gradio received (or lie in an allowed folder), of a video type, within the size and
duration limits; frames, steps and resolution are capped. Each violation raises `ConfigError` with a message
that says what to change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from diffattn.errors import ConfigError, VideoReadError
from diffattn.loading import is_tiny
from diffattn.video import VIDEO_SUFFIXES

__all__ = ["AppLimits", "check_model", "check_upload", "check_sampling", "check_kernel_tokens"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class AppLimits:
    """Limits of one app instance.

    Args:
        model_dirs: folders local models may be loaded from (a model folder inside one of them is allowed).
        allow_hub: whether Hugging Face hub ids may be loaded (safetensors only, no remote code).
        upload_dirs: folders besides Gradio's upload folder that input videos may come from.
        max_upload_mb: largest accepted upload.
        max_video_seconds: longest accepted input video.
        max_steps / max_frames / max_side: caps on denoising steps, frames and height or width in pixels.
        max_kernel_tokens / max_kernel_tokens_cpu: caps on the kernel benchmark's sequence length (GPU / CPU).
    """

    model_dirs: tuple[Path, ...] = ()
    allow_hub: bool = True
    upload_dirs: tuple[Path, ...] = ()
    max_upload_mb: float = 50.0
    max_video_seconds: float = 20.0
    max_steps: int = 100
    max_frames: int = 129
    max_side: int = 2048
    max_kernel_tokens: int = 131072
    max_kernel_tokens_cpu: int = 4096

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_dirs", tuple(Path(d).expanduser().resolve() for d in self.model_dirs))
        object.__setattr__(self, "upload_dirs", tuple(Path(d).expanduser().resolve() for d in self.upload_dirs))


def _inside(path: Path, folders: tuple[Path, ...]) -> bool:
    return any(path == folder or folder in path.parents for folder in folders)


def _looks_local(model: str) -> bool:
    """A string diffusers would read from disk: an existing path, or one written like a path."""
    written_like_a_path = model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1
    return written_like_a_path or Path(model).expanduser().exists()


def check_model(model: str, limits: AppLimits) -> str:
    """The cleaned model spec if the limits allow loading it, else `ConfigError` saying what is allowed."""
    model = model.strip()
    if not model:
        raise ConfigError("no model given: choose a built-in tiny model (tiny:wan, ...) or a hub id / local folder")
    if is_tiny(model):
        return model
    if _looks_local(model):
        folder = Path(model).expanduser().resolve()
        if not limits.model_dirs or not _inside(folder, limits.model_dirs):
            allowed = ", ".join(str(d) for d in limits.model_dirs) or "none (start the app with --model-dir DIR)"
            raise ConfigError(f"the model folder {model!r} is outside the folders this app may load from: {allowed}")
        if not (folder / "model_index.json").is_file():
            raise ConfigError(f"{model!r} is not a diffusers pipeline folder (no model_index.json in it)")
        return str(folder)
    if not _HUB_ID.match(model) or ".." in model:
        raise ConfigError(f"{model!r} is neither tiny:<family>, a hub id like 'org/name', nor a local folder")
    if not limits.allow_hub:
        raise ConfigError(f"this app does not load models from the hub ({model!r}); use a built-in tiny model")
    return model


def check_upload(path: str | Path | None, limits: AppLimits, upload_root: Path) -> Path:
    """The uploaded video's path if it is an accepted video within the limits, else a clear error."""
    if not path:
        raise ConfigError("no video uploaded: upload an MP4 (or AVI, MOV, MKV, WEBM, GIF) first")
    video = Path(path).resolve()
    if not _inside(video, (upload_root.resolve(), *limits.upload_dirs)):
        raise ConfigError("the video must be uploaded through the app; other file paths are not accepted")
    if video.suffix.lower() not in VIDEO_SUFFIXES:
        raise ConfigError(f"{video.name}: unsupported video type; upload one of {', '.join(VIDEO_SUFFIXES)}")
    if not video.is_file():
        raise VideoReadError(f"{video.name} is no longer available; upload it again")
    megabytes = video.stat().st_size / 2**20
    if megabytes > limits.max_upload_mb:
        raise ConfigError(f"{video.name} is {megabytes:.3g} MB; the limit is {limits.max_upload_mb:g} MB")
    seconds = _duration_seconds(video)
    if seconds > limits.max_video_seconds:
        raise ConfigError(f"{video.name} lasts {seconds:.1f} s; the limit is {limits.max_video_seconds:g} s, "
                          "trim it first")
    return video


def _duration_seconds(video: Path) -> float:
    """Duration by decoding with ffmpeg (container metadata can be missing or wrong)."""
    import imageio_ffmpeg

    try:
        _, seconds = imageio_ffmpeg.count_frames_and_secs(str(video))
    except (RuntimeError, OSError) as exc:
        reason = next((line for line in reversed(str(exc).splitlines()) if line.strip()), "unknown format")
        raise VideoReadError(f"{video.name} could not be read as a video ({reason.strip()})") from exc
    return float(seconds)


def check_sampling(limits: AppLimits, *, steps: int | None = None, frames: int | None = None,
                   height: int | None = None, width: int | None = None) -> None:
    """Reject sizes beyond the app's caps (values left empty keep the model's defaults and pass)."""
    caps = (("steps", steps, limits.max_steps), ("frames", frames, limits.max_frames),
            ("height", height, limits.max_side), ("width", width, limits.max_side))
    for name, value, cap in caps:
        if value is not None and not 1 <= value <= cap:
            raise ConfigError(f"{name} must lie between 1 and {cap} in this app; got {value}")


def check_kernel_tokens(tokens: int, limits: AppLimits, on_gpu: bool) -> None:
    """Reject kernel benchmark sizes beyond the cap of this device kind."""
    cap = limits.max_kernel_tokens if on_gpu else limits.max_kernel_tokens_cpu
    if tokens > cap:
        where = "a GPU" if on_gpu else "the CPU"
        raise ConfigError(f"at most {cap} tokens on {where} in this app; got {tokens}")
