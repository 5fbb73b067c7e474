"""`InitNOPipeline`: Stable Diffusion 1.x/2.x with InitNO's initial-noise optimisation (Guo et al., CVPR 2024).

A `StableDiffusionPipeline` subclass, so `InitNOPipeline.from_pipe(sd_pipe)` reuses a loaded pipeline's weights.
A call (1) finds the subject tokens (`words` or `token_indices`), (2) searches the initial noise with InitNO's
rounds (`diffattn.noise.initno`) on conditional UNet passes at the first timestep, the attention maps coming from
diffattn's attention store at the configured resolution, and (3) samples with classifier-free guidance, applying
Attend-and-Excite style gradient updates of the latents on S_CA during the first `max_iter_to_alter` steps
(iterative refinement at `refinement_steps` with the loss `S_CA + S_SA + 0.1·clean + 0.1·alignment`, the
alignment being the L1 distance to an exponential average (α = 0.9) of earlier maps), as InitNO's run script does.

`diffattn.apply(sd_pipe, InitNOConfig(...))` builds `InitNOMethod`, whose two parts install the attention store
(`diffattn.processors.noise.InitNOAttentionStore`) on `sd_pipe`'s UNet and route `sd_pipe(...)` through this
pipeline (`InitNORedirect`); `diffattn generate --noise initno` uses `run_initno`. Only one prompt and one image per
call are supported (InitNO's own optimisation conditions on the first prompt only).
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput

from diffattn.api import apply, handle_of
from diffattn.config import MethodConfig
from diffattn.configs.initno import InitNOConfig
from diffattn.errors import AlreadyAppliedError, ConfigError, UnsupportedModelError
from diffattn.extension import PipelineExtension, Proceed
from diffattn.method import Method, Part, Target
from diffattn.noise.initno import NoiseScores, attention_scores, search_initial_noise, subject_token_indices
from diffattn.notices import quiet_library_notices
from diffattn.processors.noise import InitNOAttentionStore
from diffattn.stats import AttentionStats

__all__ = [
    "InitNOPipeline", "InitNOPipelineOutput", "InitNOMethod", "InitNORedirect", "run_initno", "attention_resolutions",
]

_EMA = 0.9
"""Decay of the cached cross-attention maps in the refinement's alignment term (InitNO's code)."""


def attention_resolutions(unet: torch.nn.Module, latent_size: tuple[int, int]) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """Resolutions of a `UNet2DConditionModel`'s cross-attention blocks at `latent_size`, and InitNO's default.

    Down block `i` works at the latent size halved `i` times (ceil), the mid block at the last level, up block `j`
    at level `n − 1 − j`. The default is the coarsest down/up resolution: 16×16 for SD 1.x at 512 px (InitNO's
    `attn_res`), 24×24 for SD 2.x at 768 px (Attend-and-Excite's `ceil(size/32)`).
    """
    config = unet.config
    down, up = list(config.down_block_types), list(config.up_block_types)

    def level_size(level: int) -> tuple[int, int]:
        h, w = latent_size
        for _ in range(level):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        return h, w

    levels = [i for i, kind in enumerate(down) if "CrossAttn" in kind]
    levels += [len(up) - 1 - j for j, kind in enumerate(up) if "CrossAttn" in kind]
    if "CrossAttn" in str(config.mid_block_type):
        levels.append(len(down) - 1)
    if not levels:
        raise UnsupportedModelError(f"{type(unet).__name__} has no cross-attention blocks; InitNO needs them")
    corner = [i for i, kind in enumerate(down) if "CrossAttn" in kind] or levels
    return sorted({level_size(level) for level in levels}, reverse=True), level_size(max(corner))


@dataclass
class InitNOPipelineOutput(StableDiffusionPipelineOutput):
    """Stable Diffusion output plus `initno`: the noise search's summary (rounds, steps, scores, success)."""

    initno: dict[str, Any] | None = None


class InitNOPipeline(StableDiffusionPipeline):
    """Stable Diffusion 1.x/2.x text-to-image with InitNO initial-noise optimisation.

    Use `InitNOPipeline.from_pipe(pipe)` on a loaded `StableDiffusionPipeline`, or `from_pretrained` as usual. The
    InitNO settings come from `initno=InitNOConfig(...)`, else from an `InitNOConfig` applied with `diffattn.apply`,
    else the defaults; `words` / `token_indices` given to the call replace the config's.
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        words: Sequence[str] | None = None,
        token_indices: Sequence[int] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        negative_prompt: str | None = None,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        clip_skip: int | None = None,
        initno: InitNOConfig | None = None,
    ) -> InitNOPipelineOutput | tuple:
        """Generate one image with InitNO.

        Args:
            prompt (`str`): the text prompt (one).
            words / token_indices: subject words of the prompt or their token positions (SOT = 0).
            initno (`InitNOConfig`, *optional*): InitNO settings (see above for the fallbacks).
            Other arguments are `StableDiffusionPipeline.__call__`'s.

        Returns:
            `InitNOPipelineOutput` (images, NSFW flags, the search summary), or `(images, nsfw, summary)`.

        Raises:
            ConfigError: a word is not in the prompt, no subject tokens, a batch of prompts, or an `attn_res` the
                UNet does not have at this size.
        """
        if not isinstance(prompt, str):
            raise ConfigError("InitNOPipeline takes one prompt string (InitNO optimises the noise for one prompt)")
        with self._attention_store(initno) as store:
            config = self._settings(initno, store, words, token_indices)
            height = height or self.unet.config.sample_size * self.vae_scale_factor
            width = width or self.unet.config.sample_size * self.vae_scale_factor
            self.check_inputs(prompt, height, width, None, negative_prompt)
            indices = subject_token_indices(self.tokenizer, prompt, config.words, config.token_indices)
            self._guidance_scale = guidance_scale
            self._clip_skip = clip_skip
            self._cross_attention_kwargs = cross_attention_kwargs
            self._interrupt = False
            device = self._execution_device
            cfg = guidance_scale > 1.0
            cond, uncond = self.encode_prompt(prompt, device, 1, cfg, negative_prompt, clip_skip=clip_skip)
            self.scheduler.set_timesteps(num_inference_steps, device=device)
            timesteps = self.scheduler.timesteps
            latent_size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
            resolution = self._resolution(config, latent_size)

            def sample_noise() -> torch.Tensor:
                return self.prepare_latents(1, self.unet.config.in_channels, height, width, cond.dtype, device, generator, None)

            def score(noise: torch.Tensor) -> NoiseScores:
                return self._scores(store, resolution, noise, timesteps[0], cond, indices, config.smooth)

            first = self.prepare_latents(1, self.unet.config.in_channels, height, width, cond.dtype, device, generator, latents)
            search = search_initial_noise(
                first, sample_noise, score,
                max_rounds=config.max_rounds, steps_per_round=config.steps_per_round, fallback_steps=config.fallback_steps,
                lr=config.lr, tau_cross=config.tau_cross, tau_self=config.tau_self, kl_threshold=config.kl_threshold,
                kl_max_steps=config.kl_max_steps, progress=not getattr(self, "_progress_bar_config", {}).get("disable", False),
            )
            latents = self._denoise(search.latents, timesteps, cond, uncond, cfg, store, resolution, indices, config, generator, eta)
        summary = search.summary()
        if output_type == "latent":
            image, nsfw = latents, None
        else:
            image = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False, generator=generator)[0]
            image, nsfw = self.run_safety_checker(image, device, cond.dtype)
            denormalize = [True] * image.shape[0] if nsfw is None else [not flag for flag in nsfw]
            image = self.image_processor.postprocess(image, output_type=output_type, do_denormalize=denormalize)
        self.maybe_free_model_hooks()
        if not return_dict:
            return image, nsfw, summary
        return InitNOPipelineOutput(images=image, nsfw_content_detected=nsfw, initno=summary)

    # ----------------------------------------------------------------------------------- settings
    @contextlib.contextmanager
    def _attention_store(self, config: InitNOConfig | None) -> Iterator[InitNOAttentionStore]:
        """The attention store on the UNet: the applied one, or one applied for this call."""
        handle = handle_of(self.unet)
        if handle is not None:
            store = next((m.store for m in handle.methods if isinstance(m, InitNOMethod)), None)
            if store is None:
                raise AlreadyAppliedError(
                    f"diffattn methods ({', '.join(c.name for c in handle.configs)}) are applied to this UNet without "
                    "initno; remove them, or apply them together with InitNOConfig in one diffattn.apply call"
                )
            yield store
            return
        with apply(self.unet, config or InitNOConfig()) as handle:
            yield handle.methods[0].store

    @staticmethod
    def _settings(config: InitNOConfig | None, store: InitNOAttentionStore, words, indices) -> InitNOConfig:
        config = config or store.config
        changes = {k: tuple(v) for k, v in (("words", words), ("token_indices", indices)) if v is not None}
        return InitNOConfig.from_dict({**config.to_dict(), **changes}) if changes else config

    def _resolution(self, config: InitNOConfig, latent_size: tuple[int, int]) -> tuple[int, int]:
        available, default = attention_resolutions(self.unet, latent_size)
        resolution = tuple(config.attn_res) if config.attn_res is not None else default
        if resolution not in available:
            raise ConfigError(
                f"attn_res={resolution} does not exist in this UNet at a {latent_size[0]}x{latent_size[1]} latent; "
                f"its cross-attention resolutions are {available}"
            )
        return resolution

    # ------------------------------------------------------------------------------------ scores
    def _scores(self, store, resolution, latents, timestep, cond, indices, smooth: bool) -> NoiseScores:
        """One conditional UNet pass (differentiable in `latents`) and InitNO's scores of its attention maps."""
        with store.recording(resolution):
            self.unet(latents, timestep, encoder_hidden_states=cond, cross_attention_kwargs=self._cross_attention_kwargs)
            return attention_scores(store.maps("cross")[0], store.maps("self")[0], indices, smooth)

    # --------------------------------------------------------------------------------- sampling
    def _denoise(self, latents, timesteps, cond, uncond, cfg, store, resolution, indices, config, generator, eta):
        """Guided sampling with Attend-and-Excite style updates of the latents (when enabled)."""
        step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        step_sizes = config.scale_factor * np.sqrt(np.linspace(1.0, 0.5, len(timesteps)))
        embeddings = torch.cat([uncond, cond]) if cfg else cond
        refine = _Refiner(self, store, resolution, cond, indices, config)
        with self.progress_bar(total=len(timesteps)) as progress:
            for i, t in enumerate(timesteps):
                if config.attend_and_excite and i < config.max_iter_to_alter:
                    latents = refine.update(latents, t, float(step_sizes[i]), i in config.refinement_steps)
                model_input = self.scheduler.scale_model_input(torch.cat([latents] * 2) if cfg else latents, t)
                noise = self.unet(model_input, t, encoder_hidden_states=embeddings,
                                  cross_attention_kwargs=self._cross_attention_kwargs).sample
                if cfg:
                    noise_uncond, noise_cond = noise.chunk(2)
                    noise = noise_uncond + self._guidance_scale * (noise_cond - noise_uncond)
                latents = self.scheduler.step(noise, t, latents, **step_kwargs).prev_sample
                progress.update()
        return latents


class _Refiner:
    """Attend-and-Excite style latent updates during sampling, as InitNO's pipeline applies them."""

    def __init__(self, pipe: InitNOPipeline, store, resolution, cond, indices, config: InitNOConfig) -> None:
        self.pipe, self.store, self.resolution, self.cond, self.indices, self.config = pipe, store, resolution, cond, indices, config
        self.cached_maps: torch.Tensor | None = None

    def _evaluate(self, latents: torch.Tensor, t) -> tuple[NoiseScores, torch.Tensor]:
        """Scores at `latents` and the refinement loss `S_CA + S_SA + 0.1·clean + 0.1·alignment` (updates the cache)."""
        scores = self.pipe._scores(self.store, self.resolution, latents, t, self.cond, self.indices, self.config.smooth)
        maps = scores.maps.detach()
        self.cached_maps = maps if self.cached_maps is None else _EMA * self.cached_maps + (1 - _EMA) * maps
        alignment = (scores.maps - self.cached_maps).abs().flatten(1).mean(-1).sum()
        return scores, scores.cross + scores.self_ + 0.1 * scores.clean + 0.1 * alignment

    def _met(self, scores: NoiseScores) -> bool:
        """Refinement target: `S_CA ≤ τ_CA` and `S_SA ≤ τ_SA` (0.2 and 0.3 in InitNO)."""
        cross, self_ = scores.values
        return cross <= self.config.tau_cross and self_ <= self.config.tau_self

    def update(self, latents: torch.Tensor, t, step_size: float, refine: bool) -> torch.Tensor:
        """One sampling step's update: refinement while the targets are missed (when `refine`), then a step on S_CA.

        The refinement stops as soon as the targets are met; InitNO's loop re-evaluates its starting point once
        and takes one more step after meeting them.
        """
        with torch.enable_grad():
            latents = latents.detach().requires_grad_(True)
            scores, loss = self._evaluate(latents, t)
            if refine and not self._met(scores):
                for _ in range(self.config.max_refinement_steps):
                    if float(loss.detach()) != 0:
                        latents = _descend(latents, loss, step_size)
                    latents = latents.detach().requires_grad_(True)
                    scores, loss = self._evaluate(latents, t)
                    if self._met(scores):
                        break
            if scores.values[0] != 0:
                latents = _descend(latents, scores.cross, step_size)
        return latents.detach()


def _descend(latents: torch.Tensor, loss: torch.Tensor, step_size: float) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss, [latents])
    return latents - step_size * grad


# ------------------------------------------------------------------------------ diffattn.apply
class InitNOMethod(Method):
    """Implementation of `InitNOConfig`: the attention store (`store`) on the UNet and, on a Stable Diffusion
    pipeline other than an `InitNOPipeline`, the redirect of its calls (`redirect`)."""

    def __init__(self, config: InitNOConfig, target: Target) -> None:
        super().__init__(config, target)
        pipeline = target.pipeline
        if target.family.name != "unet" or (pipeline is not None and not isinstance(pipeline, StableDiffusionPipeline)):
            raise _not_stable_diffusion(pipeline if pipeline is not None else target.model)
        self.store = InitNOAttentionStore(config, target)
        self.redirect = InitNORedirect(config, target)

    def parts(self) -> tuple[Part, ...]:
        pipeline = self.target.pipeline
        if pipeline is None or isinstance(pipeline, InitNOPipeline):
            return (self.store,)
        return (self.store, self.redirect)


class InitNORedirect(PipelineExtension):
    """InitNO's pipeline part: `pipe(...)` runs `InitNOPipeline.from_pipe(pipe)(..., initno=config)` instead."""

    order = 0
    config: InitNOConfig

    def around_call(self, pipe: Any, proceed: Proceed, arguments: dict[str, Any]) -> Any:
        accepted = set(inspect.signature(InitNOPipeline.__call__).parameters)
        defaults = {n: p.default for n, p in inspect.signature(type(pipe)._diffattn_base_class.__call__).parameters.items()}
        unsupported = sorted(n for n, v in arguments.items() if n not in accepted and not _is_default(v, defaults.get(n)))
        if unsupported:
            raise ConfigError(f"InitNO does not support the Stable Diffusion argument(s) {unsupported}; leave them unset")
        kwargs = {n: v for n, v in arguments.items() if n in accepted}
        return _initno_pipeline(pipe)(**kwargs, initno=self.config)


def _not_stable_diffusion(model: Any) -> UnsupportedModelError:
    """The error for a pipeline or denoiser InitNO cannot run on, pointing video models to FreeInit / FreeNoise."""
    return UnsupportedModelError(
        f"InitNO supports Stable Diffusion 1.x/2.x text-to-image (StableDiffusionPipeline, UNet2DConditionModel); "
        f"got {type(model).__name__}. For video pipelines use FreeInit or FreeNoise"
    )


def _initno_pipeline(pipe: Any) -> InitNOPipeline:
    """`pipe` itself or an `InitNOPipeline` sharing its components and progress-bar settings."""
    if isinstance(pipe, InitNOPipeline):
        return pipe
    if not isinstance(pipe, StableDiffusionPipeline):
        raise _not_stable_diffusion(pipe)
    with quiet_library_notices():  # from_pipe casts every model to the pipeline's dtype: an empty notice each
        initno_pipe = InitNOPipeline.from_pipe(pipe)
    initno_pipe.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
    return initno_pipe


def _is_default(value: Any, default: Any) -> bool:
    """Whether a call argument was left at its default (identity, or equality for plain values)."""
    return value is default or (isinstance(value, (bool, int, float, str)) and value == default)


def run_initno(pipe: Any, methods: list[MethodConfig], call_kwargs: dict[str, Any]) -> tuple[InitNOPipelineOutput, AttentionStats]:
    """Runner of `InitNOConfig` for `diffattn generate`: all methods applied to an `InitNOPipeline` of `pipe`."""
    initno_pipe = _initno_pipeline(pipe)
    accepted = set(inspect.signature(InitNOPipeline.__call__).parameters)
    with apply(initno_pipe, *methods) as handle:
        output = initno_pipe(**{k: v for k, v in call_kwargs.items() if k in accepted})
    return output, handle.stats
