"""Forward diffusion of a finished sample back to a high noise level, for DDPM-style and flow-matching schedulers.

FreeInit re-noises the sample `z_0` of one iteration with the *same* initial noise `ε` and keeps the low
frequencies of the result. How much of `z_0` survives is the signal-to-noise amplitude ratio
`ρ = signal coefficient / noise coefficient` of the level used:

- DDPM-style schedulers (`alphas_cumprod`): `scheduler.add_noise(z_0, ε, t = T − 1)`, exactly as FreeInit and
  diffusers' `FreeInitMixin` do; `ρ = √(ᾱ/(1 − ᾱ))` is 0.040 for AnimateDiff's linear betas, 0.068 for SD's.
- Flow matching (`FlowMatch*` schedulers, or `use_flow_sigmas` / `prediction_type="flow_prediction"`):
  `z = (1 − σ)·z_0 + σ·ε`, `ρ = (1 − σ)/σ`. The first inference sigma of every diffusers flow schedule is 1.0
  (measured: FlowMatchEuler with and without shift, UniPC with flow sigmas), where nothing of `z_0` survives,
  so σ is chosen for a target ratio instead: by default SD's `ρ = 0.0685`, i.e. σ = 0.936.
- Zero-terminal-SNR DDPM schedules (CogVideoX: `ᾱ_{T−1} = 0`) would also keep nothing at `T − 1`; there the
  timestep whose ratio is closest to the target is used.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import UnsupportedModelError

__all__ = ["SD_TERMINAL_RATIO", "is_flow_matching", "renoise", "signal_ratio_timestep"]

SD_TERMINAL_RATIO = 0.0685
"""`√(ᾱ/(1 − ᾱ))` at t = 999 of Stable Diffusion's scaled-linear betas: what FreeInit keeps of `z_0` there."""

_MIN_RATIO = 1e-2
"""Below this ratio a scheduler's terminal level is treated as keeping nothing (zero terminal SNR)."""


def is_flow_matching(scheduler: Any) -> bool:
    """Whether `scheduler` interpolates linearly between data and noise (rectified flow)."""
    config = getattr(scheduler, "config", {})
    return (
        type(scheduler).__name__.startswith("FlowMatch")
        or bool(config.get("use_flow_sigmas", False))
        or config.get("prediction_type") == "flow_prediction"
    )


def signal_ratio_timestep(alphas_cumprod: torch.Tensor, ratio: float) -> int:
    """The training timestep whose `√(ᾱ/(1 − ᾱ))` is closest to `ratio`."""
    alphas = alphas_cumprod.double().clamp(0.0, 1.0 - 1e-12)
    ratios = (alphas / (1.0 - alphas)).sqrt()
    return int((ratios - ratio).abs().argmin())


def _ddpm_timestep(scheduler: Any, ratio: float | None) -> int:
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is None or not hasattr(scheduler, "add_noise"):
        raise UnsupportedModelError(
            f"{type(scheduler).__name__} has neither alphas_cumprod/add_noise (DDPM-style) nor flow-matching sigmas; "
            "FreeInit cannot re-noise with it. Use a DDIM/DDPM/Euler or a FlowMatch/UniPC-flow scheduler"
        )
    last = int(scheduler.config.num_train_timesteps) - 1
    if ratio is None:
        terminal = float(alphas[last])
        if math.sqrt(terminal / max(1.0 - terminal, 1e-12)) >= _MIN_RATIO:
            return last
        ratio = SD_TERMINAL_RATIO
    return signal_ratio_timestep(alphas, ratio)


def renoise(scheduler: Any, sample: torch.Tensor, noise: torch.Tensor, ratio: float | None = None) -> torch.Tensor:
    """Diffuse `sample` (`z_0`) forward with `noise` to FreeInit's re-noising level; returns float32.

    Args:
        scheduler: the pipeline's scheduler (only read).
        sample / noise: tensors of the same shape, in the denoising loop's layout.
        ratio (`float`, *optional*): target signal-to-noise amplitude ratio. `None`: the scheduler's terminal
            timestep `T − 1` for DDPM-style schedules (FreeInit's choice) unless it keeps nothing, and
            `SD_TERMINAL_RATIO` otherwise and for flow matching.
    """
    if is_flow_matching(scheduler):
        sigma = 1.0 / (1.0 + (SD_TERMINAL_RATIO if ratio is None else ratio))
        return ((1.0 - sigma) * sample.float() + sigma * noise.float()).float()
    timestep = _ddpm_timestep(scheduler, ratio)
    timesteps = torch.full((sample.shape[0],), timestep, dtype=torch.long, device=sample.device)
    return scheduler.add_noise(original_samples=sample, noise=noise, timesteps=timesteps).to(torch.float32)
