"""`freeinit`: FreeInit's settings (the method is `diffattn.pipelines.freeinit`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import MethodConfig, check, check_range
from ..noise.filters import check_filter_settings
from ..registry import register_method

__all__ = ["FreeInitConfig"]


@register_method
@dataclass(frozen=True)
class FreeInitConfig(MethodConfig):
    """FreeInit (Wu et al., 2023): sample, re-noise the result, keep its low frequencies, sample again.

    Works on any video pipeline (AnimateDiff, Wan, CogVideoX, LTX-Video, HunyuanVideo, Mochi): `diffattn.apply`
    makes `pipe(...)` run `num_iters` samplings. DDPM-style schedulers re-noise with `add_noise` at `T − 1`
    (FreeInit's choice; the result equals diffusers' `FreeInitMixin` draw for draw); flow-matching schedulers, whose
    first sigma is 1.0 and would keep nothing, re-noise to the σ with Stable Diffusion's terminal signal ratio
    (0.0685, σ = 0.936); see `diffattn.noise.renoise`. Defaults are the original's (diffusers uses 3 iterations).

    Args:
        num_iters (`int`, defaults to `5`):
            Samplings per call (1 = plain sampling). Each costs a full denoising run.
        fast_sampling (`bool`, defaults to `False`):
            Coarse-to-fine: iteration `i` runs `max(1, int(N / K · (i + 1)))` of the `N` steps.
        filter (`str`, defaults to `"butterworth"`):
            Low-pass filter: `butterworth`, `gaussian` (suggested for models with stronger temporal
            inconsistency), `ideal` or `box`.
        order (`int`, defaults to `4`):
            Butterworth order `n` (large: close to ideal; small: close to Gaussian).
        spatial_stop (`float`, defaults to `0.25`):
            Normalised spatial stop frequency `d_s` in (0, 1].
        temporal_stop (`float`, defaults to `0.25`):
            Normalised temporal stop frequency `d_t` in (0, 1].
        renoise_ratio (`float`, *optional*):
            Signal-to-noise amplitude ratio of the re-noised sample; `None` uses `T − 1` for DDPM-style schedulers
            (falling back to 0.0685 where `T − 1` keeps nothing) and 0.0685 for flow matching.
    """

    name = "freeinit"
    description = "FreeInit: iterative re-noising keeping the low frequencies of the previous sample (any video pipeline)"
    category = "noise"
    implementation = "diffattn.pipelines.freeinit:FreeInit"
    scope = "pipeline"
    tiny_models = ("animatediff", "wan", "cogvideox", "hunyuanvideo", "ltx", "mochi")
    tiny_settings = {"num_iters": 2}

    num_iters: int = 5
    fast_sampling: bool = False
    filter: Literal["butterworth", "gaussian", "ideal", "box"] = "butterworth"
    order: int = 4
    spatial_stop: float = 0.25
    temporal_stop: float = 0.25
    renoise_ratio: float | None = None

    def validate(self) -> None:
        super().validate()
        check_range("num_iters", self.num_iters, 1)
        check_range("order", self.order, 1)
        check_filter_settings(self.filter, self.spatial_stop, self.temporal_stop)
        if self.renoise_ratio is not None:
            check(self.renoise_ratio > 0, f"renoise_ratio must be positive; got {self.renoise_ratio!r}")
