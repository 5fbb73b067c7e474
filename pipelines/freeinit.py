"""FreeInit on any video pipeline: sample, re-noise, keep the low frequencies, sample again.

`diffattn.apply(pipe, FreeInitConfig(...))` attaches `FreeInit` to the pipeline (`diffattn.extension`): a call
`pipe(...)` then runs `num_iters` full samplings. Iteration 0 records the initial noise `ε` that the pipeline's own
`prepare_latents` draws. After each non-final iteration (run with `output_type="latent"`, so nothing is decoded),
the sample `z_0` is re-noised with the same `ε` (`diffattn.noise.renoise`: `add_noise` at `T − 1` for DDPM-style schedulers,
linear interpolation at a signal-matched σ for flow matching), fresh noise `z_rand` is drawn from the call's
generator, and the next iteration starts from `Re IFFT(FFT(z_T)·LPF + FFT(z_rand)·(1 − LPF))`: the pipeline's
`prepare_latents` then returns these latents instead of drawing new ones. With the same settings and generator
this reproduces diffusers' `FreeInitMixin` (AnimateDiff) draw for draw.

Coarse-to-fine sampling runs iteration `i` with `diffattn.noise.freeinit.fast_sampling_steps` steps. The
filters, the re-noising and the step schedule are model-free (`diffattn.noise`); this module is the pipeline
part that runs them. The text encoder runs once per iteration (the pipeline's own call is reused whole),
which costs one prompt encoding per iteration on top of FreeInit's K samplings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from diffattn.configs.freeinit import FreeInitConfig
from diffattn.errors import ConfigError, UnsupportedModelError
from diffattn.extension import PipelineExtension, Proceed, first_latents
from diffattn.method import Target
from diffattn.noise.filters import frequency_mix, low_pass_filter
from diffattn.noise.freeinit import fast_sampling_steps
from diffattn.noise.latents import as_video, check_video_family, from_video
from diffattn.noise.renoise import renoise

__all__ = ["FreeInit", "IterationRecord"]


@dataclass
class IterationRecord:
    """One FreeInit iteration: its denoising steps and wall time (including the re-noising after it)."""

    steps: int
    seconds: float


@dataclass
class _Run:
    """State of one FreeInit call."""

    generator: Any
    prepared: Any = None
    """The first `prepare_latents` result (tensor or tuple), reused with new latents in later iterations."""
    noise: torch.Tensor | None = None
    pending: torch.Tensor | None = None
    records: list[IterationRecord] = field(default_factory=list)


def _with_latents(prepared: Any, latents: torch.Tensor) -> Any:
    """`prepared` with its latents replaced (tuple results keep their other members, e.g. I2V conditions)."""
    return (latents, *prepared[1:]) if isinstance(prepared, tuple) else latents


class FreeInit(PipelineExtension):
    """Implementation of `FreeInitConfig`: runs the FreeInit iterations around the pipeline's own sampling.

    Attributes:
        history (`list[IterationRecord]`): steps and seconds of each iteration of the last call.
    """

    order = 0  # outermost: its loop wraps every other extension (e.g. FreeNoise's prompt schedule)
    config: FreeInitConfig

    def __init__(self, config: FreeInitConfig, target: Target) -> None:
        if target.pipeline is None:
            raise UnsupportedModelError(
                "FreeInit repeats a pipeline's sampling loop; apply it to the pipeline, not to its denoiser"
            )
        check_video_family(target.family.name, "FreeInit", target.pipeline)
        super().__init__(config, target)
        self.history: list[IterationRecord] = []
        self._run: _Run | None = None
        self._filters: dict[tuple, torch.Tensor] = {}

    def around_call(self, pipe: Any, proceed: Proceed, arguments: dict[str, Any]) -> Any:
        config = self.config
        steps = arguments.get("num_inference_steps")
        if config.fast_sampling and (not isinstance(steps, int) or any(arguments.get(k) is not None for k in ("timesteps", "sigmas"))):
            raise ConfigError(
                "FreeInit's fast_sampling scales num_inference_steps per iteration; pass num_inference_steps and "
                "no custom timesteps/sigmas, or set fast_sampling=False"
            )
        self._run = run = _Run(generator=arguments.get("generator"))
        disable = getattr(pipe, "_progress_bar_config", {}).get("disable", False)
        try:
            for iteration in tqdm(range(config.num_iters), desc="FreeInit", unit="iter", disable=disable):
                start = time.perf_counter()
                call = dict(arguments)
                if config.fast_sampling:
                    call["num_inference_steps"] = fast_sampling_steps(steps, config.num_iters, iteration)
                final = iteration == config.num_iters - 1
                if not final:
                    call.update(output_type="latent", return_dict=False)
                output = proceed(call)
                if not final:
                    run.pending = self._reinitialise(pipe, output[0], run)
                run.records.append(IterationRecord(call.get("num_inference_steps"), time.perf_counter() - start))
            self.history = run.records
            return output
        finally:
            self._run = None

    def around_prepare_latents(self, pipe: Any, proceed: Proceed, arguments: dict[str, Any]) -> Any:
        run = self._run
        if run is None:
            return proceed(arguments)
        if run.pending is not None:
            return _with_latents(run.prepared, run.pending)
        prepared = proceed(arguments)
        run.prepared = prepared
        run.noise = first_latents(prepared).detach().clone()
        return prepared

    def _reinitialise(self, pipe: Any, sample: torch.Tensor, run: _Run) -> torch.Tensor:
        """Next iteration's initial latents from this iteration's sample (loop layout, the noise's dtype)."""
        if run.noise is None:
            raise UnsupportedModelError(
                f"{type(pipe).__name__} did not draw its initial noise through prepare_latents; FreeInit cannot reach it"
            )
        family, grid = self.target.family.name, self.target.context.grid
        diffused = renoise(pipe.scheduler, sample, run.noise, self.config.renoise_ratio)
        fresh = randn_tensor(tuple(sample.shape), generator=run.generator, device=sample.device, dtype=torch.float32)
        diffused_video, fresh_video = as_video(diffused, family, grid), as_video(fresh, family, grid)
        mixed = frequency_mix(diffused_video, fresh_video, self.low_pass(tuple(diffused_video.shape[-3:]), sample.device))
        return from_video(mixed, family).to(run.noise.dtype)

    def low_pass(self, size: tuple[int, int, int], device: torch.device) -> torch.Tensor:
        """The configured filter for a `[T, H, W]` latent, built once per size and device."""
        key = (size, str(device))
        if key not in self._filters:
            c = self.config
            self._filters[key] = low_pass_filter(size, c.filter, c.spatial_stop, c.temporal_stop, c.order, device)
        return self._filters[key]
