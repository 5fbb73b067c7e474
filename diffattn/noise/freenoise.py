"""FreeNoise's model-agnostic parts: noise rescheduling, sliding windows and their weights, per-frame prompts.

- **Noise rescheduling** (`reschedule_noise`): frames `[i, i+S)` for `i = W, W+S, ...` become a random permutation
  of frames `[i−W, i−W+S)` (`shuffle`, FreeNoise's default); `repeat` tiles the first `W` frames; `random` keeps
  independent noise. The first window is never changed.
- **Windows** (`frame_windows`): starts `0, S, 2S, ...` while a window fits, plus a last window ending at the final
  frame when the stride does not land there (diffusers' rule; the original leaves such frames without attention),
  so every frame is covered. `window_weights` gives flat or pyramid (`[1 … W/2, W/2 … 1]`) weights.
- **Per-frame prompts** (`PromptSchedule`): keyframe prompts `{frame: text}` are interpolated linearly frame by
  frame (diffusers' rule; the original's two-prompt split of A for the first 3F/8 frames, a blend, then B for the
  last 3F/8 is the keyframe dict `{0: A, ⌊3F/8⌋−1: A, F−⌊3F/8⌋: B}`). With motion injection (the original's
  multi-prompt sampler), the conditional branch of the *injection layers* (encoder and middle blocks) sees the last
  keyframe's prompt on every frame outside the step range `[a·N, b·N]` (5–15 of 50 in the original), while the
  decoder always sees the per-frame prompts.

These are model-free; the method is `diffattn.pipelines.freenoise.FreeNoiseMethod`: its pipeline part
(rescheduling in `prepare_latents`, prompt dicts in `__call__`) is there, its attention part (window fusion in
temporal attention) in `diffattn.processors.noise`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError

__all__ = [
    "NOISE_TYPES",
    "WEIGHTINGS",
    "frame_windows",
    "window_weights",
    "reschedule_noise",
    "interpolate_keyframes",
    "PromptSchedule",
    "check_keyframes",
]

NOISE_TYPES: tuple[str, ...] = ("shuffle", "repeat", "random")
WEIGHTINGS: tuple[str, ...] = ("pyramid", "flat")


def frame_windows(num_frames: int, length: int, stride: int) -> list[int]:
    """Window starts covering `num_frames` with windows of `length` frames every `stride` frames (one window if short)."""
    if num_frames <= length:
        return [0]
    starts = list(range(0, num_frames - length + 1, stride))
    if starts[-1] != num_frames - length:
        starts.append(num_frames - length)
    return starts


def window_weights(length: int, scheme: str = "pyramid") -> torch.Tensor:
    """Per-frame fusion weights of one window: flat ones, or FreeNoise's pyramid `[1, 2, …, 2, 1]` (float64)."""
    if scheme == "flat":
        return torch.ones(length, dtype=torch.float64)
    if scheme != "pyramid":
        raise ConfigError(f"unknown FreeNoise weighting {scheme!r}; choose one of {', '.join(WEIGHTINGS)}")
    positions = torch.arange(length, dtype=torch.float64)
    return torch.minimum(positions + 1, length - positions)


def _randperm(n: int, generator: Any) -> torch.Tensor:
    if isinstance(generator, (list, tuple)):
        generator = generator[0] if generator else None
    if generator is None:
        return torch.randperm(n)
    return torch.randperm(n, generator=generator, device=generator.device).cpu()


def reschedule_noise(video: torch.Tensor, length: int, stride: int, kind: str = "shuffle", generator: Any = None) -> torch.Tensor:
    """FreeNoise's rescheduled initial noise for `video` latents `[B, C, F, H, W]` (a new tensor).

    `shuffle` copies, for `i = W, W+S, …`, a permutation (drawn from `generator`) of frames `[i−W, i−W+S)` into
    `[i, i+S)` — in order, so each chunk permutes already final frames; `repeat` sets frame `f` to frame `f mod W`;
    `random` returns the noise unchanged.
    """
    if kind not in NOISE_TYPES:
        raise ConfigError(f"unknown FreeNoise noise type {kind!r}; choose one of {', '.join(NOISE_TYPES)}")
    frames = video.shape[2]
    result = video.clone()
    if kind == "random" or frames <= length:
        return result
    if kind == "repeat":
        return result[:, :, torch.arange(frames, device=video.device) % length]
    for start in range(length, frames, stride):
        count = min(stride, frames - start)
        source = start - length + _randperm(stride, generator)[:count]
        result[:, :, start:start + count] = result[:, :, source.to(video.device)]
    return result


def interpolate_keyframes(keyframes: dict[int, torch.Tensor], num_frames: int) -> torch.Tensor:
    """`[num_frames, ...]`: linear interpolation between keyframe tensors, the last one held to the final frame."""
    frames = sorted(keyframes)
    values = [keyframes[f] for f in frames]
    if frames[-1] != num_frames - 1:
        frames.append(num_frames - 1)
        values.append(values[-1])
    out = values[0].new_empty((num_frames, *values[0].shape))
    out[frames[0]] = values[0]
    for (a, va), (b, vb) in zip(zip(frames, values), zip(frames[1:], values[1:])):
        alpha = torch.linspace(0.0, 1.0, b - a + 1, dtype=va.dtype, device=va.device)
        alpha = alpha.view(-1, *([1] * va.ndim))
        out[a:b + 1] = torch.lerp(va.expand_as(out[a:b + 1]), vb.expand_as(out[a:b + 1]), alpha)  # exact at both ends
    return out


def check_keyframes(name: str, prompts: dict, num_frames: int) -> None:
    """Raise `ConfigError` unless `prompts` is a `{frame: text}` dict with frame 0 and every frame in range."""
    if not prompts or not all(isinstance(k, int) and not isinstance(k, bool) for k in prompts):
        raise ConfigError(f"FreeNoise {name} dict needs integer frame keys, e.g. {{0: 'a cat', 8: 'a dog'}}; got {list(prompts)}")
    if not all(isinstance(v, str) for v in prompts.values()):
        raise ConfigError(f"FreeNoise {name} dict values must be strings")
    if 0 not in prompts:
        raise ConfigError(f"FreeNoise {name} dict must have a prompt for frame 0; got frames {sorted(prompts)}")
    if max(prompts) >= num_frames or min(prompts) < 0:
        raise ConfigError(f"FreeNoise {name} frames must lie in [0, {num_frames - 1}]; got {sorted(prompts)}")


@dataclass(frozen=True)
class PromptSchedule:
    """Per-frame text conditioning of one call.

    Args:
        per_frame (`torch.Tensor`): `[F, L, D]` interpolated prompt embeddings.
        injected (`torch.Tensor`): `[F, L, D]` the last keyframe's embedding on every frame (motion injection).
        negative (`torch.Tensor`, *optional*): `[F, L, D]` interpolated negative embeddings, when given as a dict.
        per_frame_steps (`tuple[float, float]`): fractions `(a, b)` of the steps in which every layer sees
            `per_frame`; `None` disables injection (every layer always sees `per_frame`).
    """

    per_frame: torch.Tensor
    injected: torch.Tensor
    negative: torch.Tensor | None
    per_frame_steps: tuple[float, float] | None

    @property
    def num_frames(self) -> int:
        return self.per_frame.shape[0]

    def injects(self, step: int, num_steps: int | None) -> bool:
        """Whether injection layers see `injected` at this step (outside the per-frame step range)."""
        if self.per_frame_steps is None or num_steps is None:
            return False
        low, high = self.per_frame_steps
        return not low * num_steps <= step <= high * num_steps

    def conditioning(self, rows: torch.Tensor, injection_layer: bool, step: int, num_steps: int | None) -> torch.Tensor:
        """Replace the frame rows of encoder states `rows` (`[F]` cond or `[2F]` uncond + cond, frames in batch)."""
        frames = self.num_frames
        if rows.shape[0] not in (frames, 2 * frames):
            raise ConfigError(
                f"per-frame prompts need one video per call (batch of {frames} or {2 * frames} frame rows); got "
                f"{rows.shape[0]} rows. Use num_videos_per_prompt=1"
            )
        cond = self.injected if injection_layer and self.injects(step, num_steps) else self.per_frame
        cond = cond.to(device=rows.device, dtype=rows.dtype)
        if rows.shape[0] == frames:
            return cond
        negative = rows[:frames] if self.negative is None else self.negative.to(device=rows.device, dtype=rows.dtype)
        return torch.cat([negative, cond])
