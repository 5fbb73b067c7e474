"""`FrescoPipeline`: FRESCO video-to-video translation (Yang et al., CVPR 2024) on SD 1.5 + ControlNet.

Follows the released code's algorithm (reimplemented, not copied: its licence is non-commercial):

1. SDEdit with DDPM sampling: the input frames are encoded and noised to the start of the last `strength` of a
   `DDPMScheduler` schedule made from the pipeline's scheduler config (the pipeline's own scheduler is left as it
   is; stock SD 1.5 carries PNDM, whose schedule would move the start and the step count), all frames with the
   same noise; ControlNet is conditioned on per-frame control images (Canny edges, thresholds 50/100, by default).
   The prompt gets `config.added_prompt` and the negative prompt defaults to `config.negative_prompt`, both the
   released code's.
2. Optical flow between consecutive frames (OpenCV DIS by default; any `FlowEstimator`, e.g. a GMFlow wrapper, can
   be passed) with forward-backward + photometric occlusion.
3. A reference pass on the input frames noised to the last timestep, without ControlNet, records the decoder
   self-attention queries and keys (spatial-guided attention) and the up-block input features (spatial loss Gram
   matrices).
4. Every step: cross-frame attention over frame 0 + occluded tokens, spatial-guided queries in the first
   `num_intraattn_steps`, temporal-guided trajectory attention while `t >= step_interattn_end`, all in the decoder
   (`up_blocks` at levels <= `decoder_max_level`); feature optimisation of the up-block inputs in the first
   `end_opt_step` steps of the schedule.
5. Long videos: keyframes at peaks of frame change (optional) in batches of `batch_size`; each later batch starts
   with the first keyframe and the previous batch's last keyframe, whose latents are overwritten at every step
   with the ones recorded in the earlier batch.

Not included: background smoothing (needs an EGNet saliency model). The original fills non-keyframes with Ebsynth;
here they are propagated from the two nearest edited keyframes along the source flow (occlusion-aware blend), a
simpler substitute. Also different: frames are encoded to the VAE posterior mean (the original samples it) and the
reference pass uses the shared noise (the original draws per-frame noise; at the last timestep it is tiny); AdaIN
after feature optimisation follows the paper by default (see `FrescoConfig.adain_style_epsilon`).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDPMScheduler,
    DiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.schedulers import KarrasDiffusionSchedulers
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from diffattn.api import apply
from diffattn.configs.editing import FrescoConfig
from diffattn.context import RunContext
from diffattn.errors import ConfigError
from diffattn.geometry import Grid
from diffattn.media.flow import (
    FlowEstimator,
    VideoFlow,
    estimate_flow,
    forward_backward_occlusion,
    in_bounds,
    video_flow,
    warp,
)
from diffattn.media.flow import flow_estimator as builtin_flow_estimator
from diffattn.processors.editing.controller import (
    AttentionController,
    EditMode,
    LayerPolicy,
    LayerSlot,
)
from diffattn.processors.editing.frames import SELF, BatchLayout
from diffattn.processors.editing.fresco import (
    FeatureOptimizer,
    OcclusionKV,
    build_trajectories,
    occlusion_keep_mask,
)
from diffattn.processors.editing.source import CapturedSource

from .inversion import (
    VideoEditPipelineOutput,
    check_output_type,
    check_video,
    decode_latents,
    encode_prompts,
    encode_video,
    format_frames,
    phase_bar,
    vae_scale_factor,
)

__all__ = ["FrescoPipeline", "anchored_batches", "canny_control", "propagate_keyframes", "select_keyframes"]


def select_keyframes(frames: torch.Tensor, min_interval: int, max_interval: int) -> list[int]:
    """FRESCO's keyframes: first and last frame, then peaks of blurred-frame change until no gap exceeds `max_interval`.

    A chosen peak blocks `min_interval` frames around it (and at both ends) from being chosen again.
    """
    count = frames.shape[0]
    if count <= 2:
        return list(range(count))
    blurred = F.avg_pool2d(frames.float(), 9, stride=1, padding=4, count_include_pad=False)
    change = torch.zeros(count)
    change[1:] = (blurred[1:] - blurred[:-1]).pow(2).mean(dim=(1, 2, 3))
    change[:min_interval] = -1
    change[count - min_interval :] = -1
    keys = [0, count - 1]
    while max(b - a for a, b in itertools.pairwise(keys)) > max_interval:
        peak = int(change.argmax())
        if change[peak] < 0:
            break
        change[max(0, peak - min_interval) : peak + min_interval] = -1
        keys = sorted(keys + [peak])
    return keys


def anchored_batches(keys: list[int], batch_size: int) -> list[list[int]]:
    """Batches of `batch_size` frames; each later batch starts with the first key and the previous batch's last one."""
    batches = [keys[:batch_size]]
    rest = keys[batch_size:]
    while rest:
        batches.append([keys[0], batches[-1][-1]] + rest[: batch_size - 2])
        rest = rest[batch_size - 2 :]
    return batches


def canny_control(frames: torch.Tensor, low: int = 50, high: int = 100) -> torch.Tensor:
    """Canny edge maps `[F, 3, H, W]` in [0, 1] of frames `[F, 3, H, W]` (ControlNet's canny input), from the colour
    frames with FRESCO's thresholds 50/100."""
    import cv2

    edges = []
    for frame in frames:
        image = (frame.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        edges.append(cv2.Canny(image, low, high))
    return torch.from_numpy(np.stack(edges)).float().div(255).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def propagate_keyframes(source: torch.Tensor, keys: list[int], edited_keys: torch.Tensor,
                        estimator: FlowEstimator | None = None) -> torch.Tensor:
    """All frames from edited keyframes: each other frame blends its two neighbouring keys warped along the source flow.

    Weights fall linearly with the distance to each key; where one key's warp is occluded or leaves the frame the
    other is used (the nearer key when both fail).
    """
    out = torch.empty_like(source)
    out[keys] = edited_keys
    for (a, b), (edit_a, edit_b) in zip(itertools.pairwise(keys), itertools.pairwise(edited_keys)):
        for t in range(a + 1, b):
            current = source[t : t + 1]
            warped, valid = [], []
            for key, edit in ((a, edit_a), (b, edit_b)):
                to_key = estimate_flow(current, source[key : key + 1], estimator)
                back = estimate_flow(source[key : key + 1], current, estimator)
                occluded, _ = forward_backward_occlusion(to_key, back)
                warped.append(warp(edit[None].float(), to_key)[0])
                valid.append((1 - occluded[0]) * in_bounds(to_key)[0])
            weight_a = (b - t) / (b - a)
            w_a, w_b = weight_a * valid[0], (1 - weight_a) * valid[1]
            total = w_a + w_b
            nearest = warped[0] if weight_a >= 0.5 else warped[1]
            blended = (w_a * warped[0] + w_b * warped[1]) / total.clamp_min(1e-6)
            out[t] = torch.where(total > 0, blended, nearest)
    return out


class FrescoPipeline(DiffusionPipeline):
    """FRESCO on Stable Diffusion 1.5 + ControlNet (see the module docstring).

    Build it from a `StableDiffusionControlNetPipeline` with `FrescoPipeline.from_pipe(pipe)`. Call it with the
    video (`[F, 3, H, W]` in [0, 1], sizes multiples of 8) and the prompt of the result.
    """

    model_cpu_offload_seq = "text_encoder->controlnet->unet->vae"
    is_video_editing_pipeline = True
    edit_config_class = FrescoConfig

    def __init__(self, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 unet: UNet2DConditionModel, controlnet: ControlNetModel, scheduler: KarrasDiffusionSchedulers) -> None:
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, controlnet=controlnet,
                              scheduler=scheduler)

    @property
    def vae_scale_factor(self) -> int:
        return vae_scale_factor(self.vae)

    @torch.no_grad()
    def __call__(
        self,
        video: Any,
        prompt: str,
        config: FrescoConfig | None = None,
        *,
        control_frames: Any = None,
        negative_prompt: str | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        strength: float | None = None,
        generator: torch.Generator | None = None,
        flow_estimator: FlowEstimator | None = None,
        output_type: str = "pt",
        return_dict: bool = True,
    ) -> VideoEditPipelineOutput | tuple:
        """Translate `video` to `prompt`.

        Args:
            video: frames `[F, 3, H, W]` in [0, 1]; H, W multiples of 8.
            prompt: describes the result (`config.added_prompt` is appended).
            negative_prompt: unconditional prompt of classifier-free guidance; `config.negative_prompt` when `None`.
            config: a `FrescoConfig` (defaults when `None`); num_inference_steps / guidance_scale / strength override it.
            control_frames: ControlNet images `[F, 3, H, W]` in [0, 1] (HED, depth, ...); from `config.control` otherwise.
            generator: seeds the shared noise and the DDPM steps' noise.
            flow_estimator: a `FlowEstimator` (e.g. GMFlow) instead of `config.flow`.
            output_type: `"pt"`, `"np"` or `"latent"`.
        """
        config = FrescoConfig() if config is None else config
        if not isinstance(config, FrescoConfig):
            raise ConfigError(f"FrescoPipeline takes a FrescoConfig; got {type(config).__name__}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(f"prompt must be a non-empty string; got {prompt!r}")
        check_output_type(output_type)
        frames = check_video(video, self.vae_scale_factor)
        control = self._control(frames, control_frames, config)
        estimator = flow_estimator or builtin_flow_estimator(config.flow)
        steps = num_inference_steps or config.num_inference_steps
        guidance = config.guidance_scale if guidance_scale is None else guidance_scale
        strength = config.strength if strength is None else strength
        keys = select_keyframes(frames, *config.keyframe_interval) if config.keyframe_interval else list(range(frames.shape[0]))
        batches = anchored_batches(keys, config.batch_size)
        device = self._execution_device
        negative = config.negative_prompt if negative_prompt is None else negative_prompt
        texts = [negative, prompt + config.added_prompt]
        negative_emb, prompt_emb = encode_prompts(self.tokenizer, self.text_encoder, texts, device).chunk(2)
        latent_size = (frames.shape[-2] // self.vae_scale_factor, frames.shape[-1] // self.vae_scale_factor)
        noise = torch.randn((1, self.unet.config.in_channels, *latent_size), generator=generator,
                            device=generator.device if generator is not None else "cpu").to(device, self.unet.dtype)
        edited: dict[int, torch.Tensor] = {}
        recorded: list[torch.Tensor] = []
        losses: list[list[float]] = []
        handle = apply(self.unet, config)
        try:
            controller: AttentionController = handle.methods[0].controller
            for index, batch in enumerate(tqdm(batches, desc="batches", disable=len(batches) == 1, leave=False)):
                latents, batch_losses = self._translate(
                    controller, handle.context, frames[batch], control[batch] if control is not None else None,
                    (negative_emb, prompt_emb), noise, recorded, index > 0, config, estimator, steps, guidance, strength,
                    generator,
                )
                losses += batch_losses
                for frame, latent in zip(batch, latents):
                    edited.setdefault(frame, latent)
        finally:
            handle.remove()
        latents = torch.stack([edited[k] for k in keys])
        info = {"frames": frames.shape[0], "keyframes": keys, "batches": batches, "steps": steps, "strength": strength,
                "optimizations": len(losses),
                "optimization_loss_ratio": float(np.mean([run[-1] / run[0] for run in losses if run and run[0] > 0]))
                if losses else None}
        if output_type == "latent":
            result = latents
        else:
            decoded = decode_latents(self.vae, latents)
            if len(keys) < frames.shape[0]:
                decoded = propagate_keyframes(frames, keys, decoded, estimator)
            result = format_frames(decoded, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (result, None, info)
        return VideoEditPipelineOutput(frames=result, masks=None, info=info)

    # --------------------------------------------------------------------------------------- parts
    def _control(self, frames: torch.Tensor, control_frames: Any, config: FrescoConfig) -> torch.Tensor | None:
        if control_frames is not None:
            control = check_video(control_frames, self.vae_scale_factor)
            if control.shape != frames.shape:
                raise ConfigError(f"control_frames {tuple(control.shape)} must match the video {tuple(frames.shape)}")
            return control
        return canny_control(frames) if config.control == "canny" else None

    def _policies(self, slots: dict[str, LayerSlot], config: FrescoConfig, frames: torch.Tensor, flow: VideoFlow | None,
                  latent_size: tuple[int, int]) -> list[LayerPolicy]:
        """FRESCO attention in the decoder's self-attention at levels <= `decoder_max_level`."""
        policies, per_level = [], {}
        for slot in slots.values():
            if slot.role != "self" or slot.place != "up" or slot.level > config.decoder_max_level:
                continue
            if slot.level not in per_level:  # one occlusion mask and one set of trajectories per resolution
                grid = Grid(1, *latent_size).downsampled(slot.level)
                size = (grid.height, grid.width)
                per_level[slot.level] = (
                    OcclusionKV(occlusion_keep_mask(flow.backward_occlusion, size)) if flow is not None else SELF,
                    build_trajectories(flow, frames, size) if flow is not None else None,
                )
            kv, trajectories = per_level[slot.level]
            policies.append(LayerPolicy(slot, kv=kv, guided=config.num_intraattn_steps > 0, trajectories=trajectories))
        if not policies:
            levels = sorted({s.level for s in slots.values() if s.place == "up" and s.role == "self"})
            raise ConfigError(f"decoder_max_level={config.decoder_max_level} selects no up-block self-attention; levels: {levels}")
        return policies

    def _denoiser(self, latents: torch.Tensor, timestep: torch.Tensor, condition: torch.Tensor, control: torch.Tensor | None,
                  scale: float) -> torch.Tensor:
        """UNet noise prediction with ControlNet residuals (when there is a control image)."""
        residuals: dict[str, Any] = {}
        if control is not None:
            down, mid = self.controlnet(latents, timestep, encoder_hidden_states=condition, controlnet_cond=control,
                                        conditioning_scale=scale, guess_mode=False, return_dict=False)
            residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        return self.unet(latents, timestep, encoder_hidden_states=condition, **residuals).sample

    def _translate(self, controller: AttentionController, context: RunContext, frames: torch.Tensor,
                   control: torch.Tensor | None, embeds: tuple[torch.Tensor, torch.Tensor], noise: torch.Tensor,
                   recorded: list[torch.Tensor], anchored: bool, config: FrescoConfig, estimator: FlowEstimator,
                   steps: int, guidance: float, strength: float,
                   generator: torch.Generator | None) -> tuple[torch.Tensor, list[list[float]]]:
        """One batch of frames through FRESCO; returns its latents and the loss curve of every feature optimisation."""
        device = self._execution_device
        count = frames.shape[0]
        flow = video_flow(frames, estimator, cyclic=True) if count > 1 else None
        latents = encode_video(self.vae, frames).to(self.unet.dtype)
        cfg = guidance > 1
        layout = BatchLayout(("uncond", "cond") if cfg else ("cond",), count)
        condition = torch.cat([e.expand(count, -1, -1) for e in (embeds if cfg else embeds[1:])])
        control_input = None if control is None else torch.cat([control] * len(layout.sections)).to(device, self.controlnet.dtype)
        controller.reset()
        policies = self._policies(controller.slots, config, frames, flow.consecutive() if flow else None, tuple(latents.shape[-2:]))
        scheduler = DDPMScheduler.from_config(self.scheduler.config)  # FRESCO samples with DDPM, whatever the pipeline carries
        scheduler.set_timesteps(steps, device=device)
        schedule = scheduler.timesteps
        start = steps - min(int(steps * strength), steps)
        run = schedule[start:]
        optimized = {int(t) for t in schedule[: config.end_opt_step]}
        shared_noise = noise.expand(count, -1, -1, -1)
        optimizer = FeatureOptimizer(self.unet, config.optimize_blocks, len(layout.sections), flow,
                                     iterations=config.optimize_iterations, lr=config.optimize_lr,
                                     spatial_weight=config.spatial_weight, adain_style_eps=config.adain_style_epsilon)
        with optimizer:
            # reference pass with plain attention and no ControlNet (as the original): the input frames at the least
            # noisy timestep give the spatial guidance's queries/keys and the spatial loss's Gram matrices
            controller.set_policies([LayerPolicy(p.slot, guided=p.guided) for p in policies])
            controller.mode, controller.layout = EditMode.CAPTURE, layout
            controller.capture = CapturedSource(count)
            optimizer.mode = "record"
            reference = scheduler.add_noise(latents, shared_noise, schedule[-1:])
            self._denoiser(torch.cat([reference] * len(layout.sections)), schedule[-1], condition, None,
                           config.controlnet_conditioning_scale)
            controller.reference, controller.capture = controller.capture, None
            controller.set_policies(policies)
            controller.guide_steps, controller.guide_key_scale = config.num_intraattn_steps, config.intraattn_scale
            controller.trajectory_min_timestep, controller.trajectory_key_scale = config.step_interattn_end, config.interattn_scale
            latent = scheduler.add_noise(latents, shared_noise, run[:1])
            context.start_run(len(run))
            with phase_bar(self, "translate")(total=len(run)) as progress:
                for step, timestep in enumerate(run):
                    if anchored:
                        latent[:2] = recorded[step]
                        recorded[step] = latent[[0, -1]].clone()
                    else:
                        recorded.append(latent[[0, -1]].clone())
                    controller.mode = EditMode.PLAIN
                    optimizer.mode = "optimize" if int(timestep) in optimized else "off"
                    noise_pred = self._denoiser(torch.cat([latent] * len(layout.sections)), timestep, condition, control_input,
                                                config.controlnet_conditioning_scale)
                    if cfg:
                        uncond, cond = noise_pred.chunk(2)
                        noise_pred = uncond + guidance * (cond - uncond)
                    latent = scheduler.step(noise_pred, timestep, latent, generator=generator).prev_sample
                    progress.update()
        controller.reset()
        return latent, optimizer.history

