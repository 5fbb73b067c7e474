"""What the app accepts: model sources, uploaded files, and a cap on every number, checked before any work starts.

A public demo must not read arbitrary files or run unbounded jobs, so every request passes these checks:
models are built-in tiny ones, hub ids (when allowed) or folders inside the configured model folders;
uploads (videos, tuning files) must be files Gradio received (or lie in an allowed folder), of an accepted type,
within the size (and, for videos, duration) limits; every number of every endpoint, method settings included, is
within a cap (and finite, except where a method declares infinity meaningful). Each violation raises `ConfigError`
with a message that names the field and the cap.
The time a job may take is capped too (`max_job_seconds`, enforced by `app.jobs`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffattn.config import MethodConfig
from diffattn.errors import ConfigError, VideoReadError
from diffattn.limits import DEFAULT_LIMITS
from diffattn.loading import TINY_PREFIX, is_tiny
from diffattn.media.video import VIDEO_SUFFIXES

__all__ = ["AppLimits", "bounded", "check_model", "check_file", "check_upload", "check_sampling",
           "check_kernel_request", "check_settings", "upload_root"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class AppLimits:
    """Limits of one app instance; every cap must be a positive number.

    Args:
        model_dirs: folders local models may be loaded from (a model folder inside one of them is allowed).
        allow_hub: whether Hugging Face hub ids may be loaded (safetensors only, no remote code).
        upload_dirs: folders besides Gradio's upload folder that input files (videos, tuning files) may come from.
        max_upload_mb: largest accepted upload.
        max_video_seconds: longest accepted input video.
        max_steps / max_frames / max_side: caps on denoising steps (the editors' `num_inference_steps` too), frames
            and height or width in pixels; the command line's defaults (`diffattn.limits.DEFAULT_LIMITS`).
        max_guidance / max_seed / max_fps: caps on the guidance scale, the seed and the output frame rate.
        max_kernel_tokens / max_kernel_tokens_cpu: caps on the kernel benchmark's sequence length (GPU / CPU).
        max_kernel_heads / max_kernel_repeats / max_kernel_densities: caps on its heads, timed repeats per
            measurement and number of densities.
        max_setting: largest magnitude of any other number in a method's settings.
        max_job_seconds: time one job may run before it is stopped (checked between denoising steps and between
            timed kernel calls).
    """

    model_dirs: tuple[Path, ...] = ()
    allow_hub: bool = True
    upload_dirs: tuple[Path, ...] = ()
    max_upload_mb: float = 50.0
    max_video_seconds: float = 20.0
    max_steps: int = DEFAULT_LIMITS.max_steps
    max_frames: int = DEFAULT_LIMITS.max_frames
    max_side: int = DEFAULT_LIMITS.max_side
    max_guidance: float = 50.0
    max_seed: int = 2**32 - 1
    max_fps: int = 60
    max_kernel_tokens: int = 131072
    max_kernel_tokens_cpu: int = 4096
    max_kernel_heads: int = 64
    max_kernel_repeats: int = 100
    max_kernel_densities: int = 16
    max_setting: float = 1e6
    max_job_seconds: float = 600.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_dirs", tuple(Path(d).expanduser().resolve() for d in self.model_dirs))
        object.__setattr__(self, "upload_dirs", tuple(Path(d).expanduser().resolve() for d in self.upload_dirs))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.startswith("max_") and not (_is_number(value) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{field.name} must be a positive number; got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def bounded(name: str, value: Any, low: float, high: float, kind: type = int) -> Any:
    """`value` (a number or its text) as `kind` if finite and within `[low, high]`, else `ConfigError` naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number; got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number; got {value!r}")
    if kind is int and not number.is_integer():
        raise ConfigError(f"{name} must be a whole number; got {value!r}")
    if not low <= number <= high:
        raise ConfigError(f"{name} must lie between {_plain(low)} and {_plain(high)} in this app; got {value!r}")
    return int(number) if kind is int else number


def _plain(bound: float) -> str:
    """A bound as written: integers in full (a seed cap of 4294967295), other numbers short (1e+06)."""
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _inside(path: Path, folders: tuple[Path, ...]) -> bool:
    return any(path == folder or folder in path.parents for folder in folders)


def _looks_local(model: str) -> bool:
    """A string diffusers would read from disk: an existing path, or one written like a path."""
    written_like_a_path = model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1
    return written_like_a_path or Path(model).expanduser().exists()


def check_model(model: str, limits: AppLimits) -> str:
    """The cleaned model spec if the limits allow loading it, else `ConfigError` saying what is allowed."""
    from diffattn.shapes.models import MODELS as SHAPES_MODELS
    from diffattn.testing import PROMPT_FAMILIES

    model = model.strip()
    if not model:
        raise ConfigError("no model given: choose a built-in tiny model (tiny:wan, ...) or a hub id / local folder")
    if is_tiny(model):
        family = model[len(TINY_PREFIX):]
        if family not in PROMPT_FAMILIES + SHAPES_MODELS:
            raise ConfigError(f"no built-in tiny model {family!r}; choose one of "
                              f"{', '.join(TINY_PREFIX + name for name in PROMPT_FAMILIES + SHAPES_MODELS)}")
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


def upload_root() -> Path:
    """Gradio's upload folder: files a client sends arrive here."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder())


def _received(path: str | Path | None, limits: AppLimits, root: Path, what: str, suffixes: Collection[str]) -> Path:
    """The resolved path of a file the app received (in `root`, Gradio's upload folder, or in `limits.upload_dirs`)
    with one of `suffixes`; decided from the path alone, so a file outside those folders is never opened."""
    types = ", ".join(suffixes)
    if not path:
        raise ConfigError(f"no {what} uploaded: upload a {types} file first")
    file = Path(os.path.realpath(path))  # not Path.resolve(): that stats the file
    if not _inside(file, (root.resolve(), *limits.upload_dirs)):
        raise ConfigError(f"the {what} must be uploaded through the app; other file paths are not accepted")
    if file.suffix.lower() not in suffixes:
        raise ConfigError(f"{file.name}: unsupported {what} type; upload one of {types}")
    return file


def _check_size(file: Path, limits: AppLimits) -> None:
    megabytes = file.stat().st_size / 2**20
    if megabytes > limits.max_upload_mb:
        raise ConfigError(f"{file.name} is {megabytes:.3g} MB; the limit is {limits.max_upload_mb:g} MB")


def check_file(path: str | Path | None, limits: AppLimits, root: Path, *, what: str, suffixes: Collection[str]) -> Path:
    """The path of an uploaded file (e.g. a tuning file) if the app received it, of an accepted type and size."""
    file = _received(path, limits, root, what, suffixes)
    if not file.is_file():
        raise ConfigError(f"{file.name} is no longer available; upload it again")
    _check_size(file, limits)
    return file


def check_upload(path: str | Path | None, limits: AppLimits, upload_root: Path) -> Path:
    """The uploaded video's path if it is an accepted video within the limits, else a clear error."""
    video = _received(path, limits, upload_root, "video", VIDEO_SUFFIXES)
    if not video.is_file():
        raise VideoReadError(f"{video.name} is no longer available; upload it again")
    _check_size(video, limits)
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


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def check_sampling(limits: AppLimits, *, required: Collection[str] = (), **values: Any) -> dict[str, Any]:
    """Sampling inputs (numbers or their text) as numbers within the app's caps; empty ones stay `None` (the
    model's defaults) unless named in `required`."""
    caps = {"steps": (1, limits.max_steps, int), "frames": (1, limits.max_frames, int),
            "height": (1, limits.max_side, int), "width": (1, limits.max_side, int),
            "guidance": (0, limits.max_guidance, float), "seed": (0, limits.max_seed, int),
            "fps": (1, limits.max_fps, int)}
    checked = {}
    for name, value in values.items():
        if _empty(value) and name not in required:
            checked[name] = None
        elif _empty(value):
            raise ConfigError(f"{name} needs a value")
        else:
            checked[name] = bounded(name, value, *caps[name])
    return checked


def check_kernel_request(limits: AppLimits, on_gpu: bool, *, tokens: Any, heads: Any, head_dim: Any, block: Any,
                         densities: str, repeats: Any) -> dict[str, Any]:
    """The kernel benchmark's inputs as numbers within the app's caps (`KernelBenchSpec` checks the rest)."""
    where, cap = ("a GPU", limits.max_kernel_tokens) if on_gpu else ("the CPU", limits.max_kernel_tokens_cpu)
    parts = [part.strip() for part in str(densities or "").split(",") if part.strip()]
    if not 1 <= len(parts) <= limits.max_kernel_densities:
        raise ConfigError(f"densities must hold between 1 and {limits.max_kernel_densities} values in this app; "
                          f"got {len(parts)}")
    return {"tokens": bounded(f"tokens on {where}", tokens, 1, cap),
            "heads": bounded("heads", heads, 1, limits.max_kernel_heads),
            "head_dim": bounded("head_dim", head_dim, 1, 128), "block": bounded("block", block, 1, 128),
            "repeats": bounded("repeats", repeats, 1, limits.max_kernel_repeats),
            "densities": tuple(bounded("densities", part, 0, 1, float) for part in parts)}


def check_settings(cls: type[MethodConfig], settings: Mapping[str, Any], limits: AppLimits) -> None:
    """Every number in one method's settings (tuples included) is within the app's caps: the denoising steps
    (`num_inference_steps`) within `1..max_steps`, any other number at most `max_setting` in magnitude; NaN never,
    infinity only in the fields the config says it means something (`infinite_ok`, e.g. a threshold of `-inf`)."""
    for field, value in settings.items():
        name = f"{cls.name}: {field}"
        for number in _numbers(value):
            if field == "num_inference_steps":
                bounded(name, number, 1, limits.max_steps)
            elif not (math.isinf(number) and field in cls.infinite_ok):
                bounded(name, number, -limits.max_setting, limits.max_setting, float)


def _numbers(value: Any) -> Iterator[int | float]:
    """The numbers in a setting's value: the value itself or the items of a tuple (booleans are not numbers)."""
    for item in value if isinstance(value, (tuple, list)) else (value,):
        if _is_number(item):
            yield item
