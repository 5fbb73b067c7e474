"""Noise initialisation: FreeInit, FreeNoise and InitNO."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import MethodConfig, check, check_range
from ..noise.filters import check_filter_settings
from ..noise.freenoise import NOISE_TYPES, WEIGHTINGS
from ..registry import register_method

__all__ = ["FreeInitConfig", "FreeNoiseConfig", "InitNOConfig"]


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


@register_method
@dataclass(frozen=True)
class InitNOConfig(MethodConfig):
    """InitNO (Guo et al., CVPR 2024): optimises the initial noise of Stable Diffusion 1.x/2.x before sampling.

    Subject tokens (from `words` or raw `token_indices`, SOT counted as 0) must each get a strong cross-attention
    response (`S_CA < tau_cross`) without their self-attention maps overlapping (`S_SA < tau_self`). The noise is
    reparametrised by a mean and log-variance, optimised with Adam and projected back towards N(0, I) by a KL
    inner loop; failed rounds resample the noise, and the best round gets a longer fallback run. Sampling then uses
    Attend-and-Excite style latent updates (as InitNO's run script). Runs through
    `diffattn.pipelines.InitNOPipeline` (`diffattn.apply(sd_pipe, InitNOConfig(...))` routes `sd_pipe(...)` there).

    Args:
        words (`tuple[str, ...]`, defaults to `()`):
            Subject words of the prompt (their first token is used).
        token_indices (`tuple[int, ...]`, defaults to `()`):
            Subject token positions (SOT = 0), used in addition to `words`.
        attn_res (`tuple[int, int]`, *optional*):
            Resolution of the attention maps. `None`: the coarsest attention resolution of the UNet's down and up
            blocks at the call's size (16×16 for SD 1.x at 512 px, as InitNO; 8×8 for the tiny test UNet).
        max_rounds (`int`, defaults to `5`):
            Rounds of optimisation, each from fresh noise after a failure.
        steps_per_round (`int`, defaults to `10`):
            Optimiser steps per round.
        fallback_steps (`int`, defaults to `50`):
            Optimiser steps of the fallback run from the best round's noise when no round succeeded.
        lr (`float`, defaults to `1e-2`):
            Adam learning rate (eps 1e-3).
        tau_cross / tau_self (`float`, defaults to `0.2` / `0.3`):
            Success thresholds on S_CA and S_SA.
        kl_threshold (`float`, defaults to `1e-3`):
            The KL inner loop runs until the KL term is at most this.
        kl_max_steps (`int`, defaults to `1000`):
            Bound on KL steps after one optimiser step (the original has none).
        smooth (`bool`, defaults to `True`):
            3×3 Gaussian smoothing (σ = 0.5) of the maps.
        attend_and_excite (`bool`, defaults to `True`):
            Gradient updates of the latents on S_CA during the first `max_iter_to_alter` steps, with iterative
            refinement at `refinement_steps`.
        max_iter_to_alter (`int`, defaults to `25`):
            Denoising steps with updates.
        scale_factor (`float`, defaults to `20.0`):
            Update step size `scale_factor · sqrt(linspace(1, 0.5, N))[i]`.
        refinement_steps (`tuple[int, ...]`, defaults to `(10, 20)`):
            Steps with iterative refinement while `S_CA > 0.2` or `S_SA > 0.3`.
        max_refinement_steps (`int`, defaults to `20`):
            Iterations of one refinement.
    """

    name = "initno"
    description = "InitNO: initial-noise optimisation on cross-/self-attention scores (Stable Diffusion 1.x/2.x)"
    category = "noise"
    implementation = "diffattn.pipelines.initno:InitNOMethod"
    runner = "diffattn.pipelines.initno:run_initno"
    scope = "pipeline"
    tiny_models = ("sd",)
    tiny_settings = {"words": ("squirrel", "burger"), "max_rounds": 1, "steps_per_round": 1, "fallback_steps": 1}

    words: tuple[str, ...] = ()
    token_indices: tuple[int, ...] = ()
    attn_res: tuple[int, int] | None = None
    max_rounds: int = 5
    steps_per_round: int = 10
    fallback_steps: int = 50
    lr: float = 1e-2
    tau_cross: float = 0.2
    tau_self: float = 0.3
    kl_threshold: float = 1e-3
    kl_max_steps: int = 1000
    smooth: bool = True
    attend_and_excite: bool = True
    max_iter_to_alter: int = 25
    scale_factor: float = 20.0
    refinement_steps: tuple[int, ...] = (10, 20)
    max_refinement_steps: int = 20

    def validate(self) -> None:
        super().validate()
        check(all(isinstance(w, str) and w.strip() for w in self.words), f"words must be non-empty strings; got {self.words!r}")
        check(all(isinstance(i, int) and i >= 1 for i in self.token_indices),
              f"token_indices must be positive token positions (SOT is 0); got {self.token_indices!r}")
        if self.attn_res is not None:
            check(len(self.attn_res) == 2 and min(self.attn_res) >= 1, f"attn_res must be (height, width); got {self.attn_res!r}")
        for name in ("max_rounds", "steps_per_round"):
            check_range(name, getattr(self, name), 1)
        for name in ("fallback_steps", "max_iter_to_alter", "max_refinement_steps", "kl_max_steps"):
            check_range(name, getattr(self, name), 0)
        for name in ("lr", "kl_threshold", "scale_factor"):
            check(getattr(self, name) > 0, f"{name} must be positive; got {getattr(self, name)!r}")
        check_range("tau_cross", self.tau_cross, 0.0, 1.0)
        check_range("tau_self", self.tau_self, 0.0, 1.0)

    @property
    def optimiser_budget(self) -> int:
        """Most optimiser steps on the attention loss: `max_rounds · steps_per_round + fallback_steps`."""
        return self.max_rounds * self.steps_per_round + self.fallback_steps
