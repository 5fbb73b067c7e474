"""Default caps on the size of one run, shared by the command line and the app.

A typo such as `--frames 100001` or `--height 16384` would otherwise allocate (or compute) for hours before
failing; the caps refuse it at once. The command line lifts them with `--no-limits`; the app's `AppLimits`
starts from the same values.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["SizeLimits", "DEFAULT_LIMITS"]


@dataclass(frozen=True)
class SizeLimits:
    """Caps on one sampling run.

    Args:
        max_steps (`int`, defaults to `100`): denoising steps.
        max_frames (`int`, defaults to `129`): frames of a video.
        max_side (`int`, defaults to `2048`): height or width in pixels.
    """

    max_steps: int = 100
    max_frames: int = 129
    max_side: int = 2048

    def check(self, *, steps: int | None = None, frames: int | None = None, height: int | None = None,
              width: int | None = None, where: str = "") -> None:
        """Raise `ConfigError` for a value outside `1..cap` (`None` keeps the model's default and passes);
        `where` ends the message, saying whose limits they are and how to lift them."""
        caps = (("steps", steps, self.max_steps), ("frames", frames, self.max_frames),
                ("height", height, self.max_side), ("width", width, self.max_side))
        for name, value, cap in caps:
            if value is not None and not 1 <= value <= cap:
                raise ConfigError(f"{name} must lie between 1 and {cap}{where}; got {value}")


DEFAULT_LIMITS = SizeLimits()
"""The caps `diffattn generate` / `diffattn edit` apply unless `--no-limits` is given."""
