"""`freenoise`: FreeNoise's settings (the method is `diffattn.pipelines.freenoise`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import MethodConfig, check, check_range
from ..noise.freenoise import NOISE_TYPES, WEIGHTINGS
from ..registry import register_method

__all__ = ["FreeNoiseConfig"]


@register_method
@dataclass(frozen=True)
class FreeNoiseConfig(MethodConfig):
    """FreeNoise (Qiu et al., 2023): longer videos by noise rescheduling and window-fused temporal attention.

    On AnimateDiff (`UNetMotionModel`) the motion modules' temporal attention runs in sliding windows of
    `context_length` frames every `context_stride` frames, each window with the positions `0 … W−1` it was trained
    on, and the window outputs are fused per frame with flat or pyramid weights; the initial noise is rescheduled
    (shuffled within windows). Prompts may be `{frame: prompt}` dicts (interpolated per frame) with the original's
    step- and layer-selective motion injection. For Wan (3-D attention) `experimental_dit=True` enables an
    **experimental** frame-window variant: self-attention over windows of whole latent frames, fused the same
    way. diffusers' maintainers report that frame averaging on 3-D attention DiTs disturbs spatial tokens and that
    shuffled noise shows repetition, so treat it as a research tool.

    Args:
        context_length (`int`, defaults to `16`):
            Window length in frames (latent frames for DiTs); at most the motion module's trained positions.
        context_stride (`int`, defaults to `4`):
            Frames between window starts (1 ≤ stride ≤ length).
        weighting (`str`, defaults to `"pyramid"`):
            Fusion weights per window: `pyramid` `[1 … W/2, W/2 … 1]` (the paper's) or `flat`.
        noise_type (`str`, defaults to `"shuffle"`):
            `shuffle` (frames after the first window are permutations of earlier chunks), `repeat` (the first
            window's noise tiled) or `random` (independent noise).
        motion_injection (`bool`, defaults to `True`):
            With per-frame prompts: outside `per_frame_steps`, encoder and middle blocks see the last keyframe's
            prompt on every frame while the decoder sees the per-frame prompts (the original multi-prompt sampler).
        per_frame_steps (`tuple[float, float]`, defaults to `(0.1, 0.3)`):
            Fractions of the steps in which every layer sees per-frame prompts (steps 5–15 of 50 in the original).
        experimental_dit (`bool`, defaults to `False`):
            Allow the frame-window variant on Wan's 3-D attention (see above).
    """

    name = "freenoise"
    description = "FreeNoise: noise rescheduling + window-fused temporal attention + multi-prompt for longer videos"
    category = "noise"
    implementation = "diffattn.pipelines.freenoise:FreeNoiseMethod"
    scope = "pipeline"
    tiny_models = ("animatediff",)
    tiny_settings = {"context_length": 4, "context_stride": 2}

    context_length: int = 16
    context_stride: int = 4
    weighting: Literal["pyramid", "flat"] = "pyramid"
    noise_type: Literal["shuffle", "repeat", "random"] = "shuffle"
    motion_injection: bool = True
    per_frame_steps: tuple[float, float] = (0.1, 0.3)
    experimental_dit: bool = False

    def validate(self) -> None:
        super().validate()
        check_range("context_length", self.context_length, 1)
        check(
            1 <= self.context_stride <= self.context_length,
            f"context_stride must lie in [1, context_length={self.context_length}]; got {self.context_stride!r}",
        )
        check(self.weighting in WEIGHTINGS, f"weighting must be one of {', '.join(WEIGHTINGS)}; got {self.weighting!r}")
        check(self.noise_type in NOISE_TYPES, f"noise_type must be one of {', '.join(NOISE_TYPES)}; got {self.noise_type!r}")
        steps = self.per_frame_steps
        check(
            len(steps) == 2 and 0.0 <= steps[0] <= steps[1] <= 1.0,
            f"per_frame_steps must be two fractions 0 <= a <= b <= 1; got {steps!r}",
        )
