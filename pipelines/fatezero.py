"""`FateZeroPipeline`: zero-shot video editing by fusing attention from DDIM inversion (Qi et al., ICCV 2023).

1. The video is DDIM-inverted with the source prompt (conditional branch only). In RAM/disk mode the attention
   probabilities of the edit layers (levels >= `edit_min_level`, FateZero's "query length <= 32^2") are stored
   per step; in online mode only the latents are kept and each edit step re-runs the source branch at the
   inverted latent of the same timestep (identical maps, one step held; bounded memory for long videos).
2. Editing starts from the inverted noise with the target prompt and classifier-free guidance. In the
   conditional branch, cross-attention is fused prompt-to-prompt style with the source's (replace / refine,
   reweight, per-word schedules) for the first `cross_replace_steps`, and self-attention is the inversion's for
   the first `self_replace_steps`, except inside the blend mask of `blend_words` (where the edit keeps its own).
   Optional latent blending keeps the inverted latents outside the source and target object masks.
3. Self-attention uses spatial-temporal keys/values (`kv_frames`, FateZero's `['mid']`) at levels >= `kv_min_level`.

Faithful to the released code in the points above, with these differences: the refine alignment is a
longest-matching-blocks alignment (the original uses a global alignment), frames are encoded to the VAE posterior
mean (the original samples the posterior, so its inversion starts from a slightly noisier latent; the mean makes
edits deterministic), the online source mode and chunking are additions for long videos, and the model is any SD
1.x/2.x UNet (the released shape edits use Tune-A-Video fine-tuned checkpoints, which load here as ordinary
diffusers UNets only if converted).

>>> pipe = FateZeroPipeline.from_pipe(StableDiffusionPipeline.from_pretrained("runwayml/stable-diffusion-v1-5"))
>>> out = pipe(frames, "a silver jeep driving down a curvy road", "watercolor painting of a silver jeep driving "
...           "down a curvy road", FateZeroConfig(eq_params=("watercolor:10",)))
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from diffattn.api import apply
from diffattn.configs.editing import FateZeroConfig, parse_word_values
from diffattn.context import RunContext
from diffattn.errors import ConfigError
from diffattn.geometry import Grid
from diffattn.processors.editing import prompts as P
from diffattn.processors.editing.blend import BlendMask, word_map
from diffattn.processors.editing.controller import (
    AttentionController,
    EditMode,
    LayerPolicy,
    LayerSlot,
    WordMapAccumulator,
)
from diffattn.processors.editing.editors import CrossAttentionEditor
from diffattn.processors.editing.errors import MemoryBudgetError
from diffattn.processors.editing.frames import SELF, BatchLayout, FrameKV
from diffattn.processors.editing.source import (
    CapturedSource,
    SourceAttention,
    StoredSource,
)
from diffattn.processors.editing.store import (
    AttentionStore,
    estimate_store_bytes,
    format_bytes,
)

from .inversion import (
    Inversion,
    VideoEditPipelineOutput,
    as_ddim,
    check_output_type,
    check_video,
    ddim_invert,
    decode_latents,
    encode_prompts,
    encode_video,
    format_frames,
    phase_bar,
    vae_scale_factor,
)

__all__ = ["EditPlan", "FateZeroPipeline", "check_levels", "default_blend_level"]

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class EditPlan:
    """What an inversion-based editing pipeline does around the shared inversion and edit loop.

    Args:
        policies: per-layer controller policies.
        cross_editor: prompt-to-prompt editor of the conditional cross-attention (`None`: none).
        self_edit_steps: edit steps `[0, n)` whose self-attention is fused with the source's.
        blend_words: source-token indicator `[L]` of the words whose mask keeps the edit's own self-attention.
        blend_threshold: threshold of the blend map (`"otsu"` for Otsu's method).
        latent_blend: `(source indicator, target indicator)` for latent blending, or `None`.
        latent_blend_steps: blend latents after edit step `c` when `start < c + 1 < end`.
        store: `"auto"`, `"ram"`, `"disk"` or `"online"`; ram_budget: bytes; store_dtype: dtype of stored maps.
        use_inversion_attention: the source branch is the inversion (else a source branch denoised with guidance).
    """

    policies: list[LayerPolicy]
    cross_editor: CrossAttentionEditor | None
    self_edit_steps: int
    blend_words: torch.Tensor | None = None
    blend_threshold: float | str = 0.3
    blend_level: int = 0
    latent_blend: tuple[torch.Tensor, torch.Tensor] | None = None
    latent_blend_steps: tuple[int, int] = (0, 0)
    store: str = "online"
    ram_budget: int = 0
    store_dtype: torch.dtype = torch.float16
    use_inversion_attention: bool = True
    info: dict[str, Any] = field(default_factory=dict)


def default_blend_level(slots: dict[str, LayerSlot]) -> int:
    """The deepest level with cross-attention in the down and up blocks (16x16 at 512 px for SD 1.x)."""
    levels = [s.level for s in slots.values() if s.role == "cross" and s.place in ("down", "up")]
    if not levels:
        raise ConfigError("this UNet has no cross-attention in its down/up blocks to make a blend mask from")
    return max(levels)


def check_levels(slots: dict[str, LayerSlot], setting: str, level: int, role: str | None = None) -> None:
    """Raise `ConfigError` when no attention layer (of `role`) sits at `level` or deeper, naming the UNet's levels."""
    levels = sorted({s.level for s in slots.values() if role is None or s.role == role})
    if not any(found >= level for found in levels):
        raise ConfigError(f"{setting}={level} selects no attention layer; this UNet's levels are {levels}")


class FateZeroPipeline(DiffusionPipeline):
    """FateZero video editing on a Stable Diffusion 1.x/2.x UNet (see the module docstring).

    Build it from an existing SD pipeline's components with `FateZeroPipeline.from_pipe(sd_pipe)` or load it with
    `from_pretrained` from an SD checkpoint. Call it with a video (`[F, 3, H, W]` in [0, 1], sizes multiples of 8;
    see `diffattn.media.video.prepare_video`), the source prompt that describes it and the target prompt.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    is_video_editing_pipeline = True
    edit_config_class = FateZeroConfig

    def __init__(self, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 unet: UNet2DConditionModel, scheduler: KarrasDiffusionSchedulers) -> None:
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        video: Any,
        source_prompt: str,
        target_prompt: str,
        config: Any = None,
        *,
        negative_prompt: str = "",
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        output_type: str = "pt",
        return_dict: bool = True,
    ) -> VideoEditPipelineOutput | tuple:
        """Edit `video` from `source_prompt` to `target_prompt`.

        Args:
            video: frames `[F, 3, H, W]` in [0, 1] (or uint8, `[F, H, W, 3]`, a list of images); H, W multiples of 8.
            source_prompt: describes the video; target_prompt: describes the edit.
            config: the method's config (`FateZeroConfig` here); its defaults when `None`.
            negative_prompt: unconditional prompt of classifier-free guidance.
            num_inference_steps / guidance_scale: override the config's.
            output_type: `"pt"`, `"np"` or `"latent"`.
        """
        config = self.edit_config_class() if config is None else config
        if not isinstance(config, self.edit_config_class):
            raise ConfigError(f"{type(self).__name__} takes a {self.edit_config_class.__name__}; got {type(config).__name__}")
        for name, prompt in (("source_prompt", source_prompt), ("target_prompt", target_prompt)):
            if not isinstance(prompt, str) or not prompt.strip():
                raise ConfigError(f"{name} must be a non-empty string; got {prompt!r}")
        check_output_type(output_type)
        frames = check_video(video, self.vae_scale_factor)
        steps = num_inference_steps or config.num_inference_steps
        guidance = config.guidance_scale if guidance_scale is None else guidance_scale
        chunk = self._chunk_size(config) or frames.shape[0]
        starts = range(0, frames.shape[0], chunk)
        latents, masks, infos = [], [], []
        for start in tqdm(starts, desc="chunks", disable=len(starts) == 1, leave=False):
            edited, mask, info = self._edit_chunk(
                frames[start : start + chunk], source_prompt, target_prompt, negative_prompt, config, steps, guidance
            )
            latents.append(edited)
            masks.append(mask)
            infos.append(info)
        latents = torch.cat(latents)
        info = {**infos[0], "frames": frames.shape[0], "chunks": len(infos), "steps": steps}
        mask = torch.cat(masks) if all(m is not None for m in masks) else None
        result = latents if output_type == "latent" else format_frames(decode_latents(self.vae, latents), output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (result, mask, info)
        return VideoEditPipelineOutput(frames=result, masks=mask, info=info)

    @property
    def vae_scale_factor(self) -> int:
        return vae_scale_factor(self.vae)

    # --------------------------------------------------------------------- method-specific parts
    def _chunk_size(self, config: FateZeroConfig) -> int | None:
        return config.frames_per_chunk

    def _plan(self, slots: dict[str, LayerSlot], config: FateZeroConfig, source: str, target: str, steps: int,
              text_len: int) -> EditPlan:
        """FateZero's policies, editors and masks (validates words before any heavy work)."""
        check_levels(slots, "edit_min_level", config.edit_min_level)
        blend_level = default_blend_level(slots) if config.blend_level is None else config.blend_level
        blending = bool(config.blend_words) and (config.blend_self_attention or config.blend_latents)
        if blending:
            check_levels(slots, "blend_level", blend_level, role="cross")
        kv = FrameKV(config.kv_frames)
        policies = [
            LayerPolicy(
                slot,
                kv=kv if slot.role == "self" and slot.level >= config.kv_min_level else SELF,
                edit=slot.level >= config.edit_min_level,
                blend=blending and slot.role == "cross" and slot.level == blend_level,
            )
            for slot in slots.values()
        ]
        tokenizer = self.tokenizer
        editor = CrossAttentionEditor.from_prompts(
            tokenizer, source, target, length=text_len, num_steps=steps,
            mode="replace" if config.is_replace_controller else "refine",
            replace_steps=config.cross_replace_steps,
            word_steps=parse_word_values(config.cross_replace_words, "cross_replace_words"),
            reweight=parse_word_values(config.eq_params, "eq_params"),
        )
        blend_words = (
            P.word_indicator(tokenizer, source, config.blend_words, text_len, role="blend word")
            if config.blend_words else None
        )
        latent_blend = None
        if config.blend_latents:
            target_words = P.word_indicator(tokenizer, target, config.target_blend_words, text_len, role="target blend word")
            latent_blend = (blend_words, target_words)
        start, end = config.blend_latent_steps
        return EditPlan(
            policies=policies,
            cross_editor=editor,
            self_edit_steps=int(config.self_replace_steps * steps),
            blend_words=blend_words if config.blend_self_attention else None,
            blend_threshold=config.blend_th,
            blend_level=blend_level,
            latent_blend=latent_blend,
            latent_blend_steps=(int(start * steps), int(end * steps)),
            store=config.attention_store if config.use_inversion_attention else "online",
            ram_budget=int(config.ram_budget_gb * 2**30),
            store_dtype=_DTYPES[config.store_dtype],
            use_inversion_attention=config.use_inversion_attention,
        )

    # ----------------------------------------------------------------------------- shared loop
    def _edit_chunk(self, frames: torch.Tensor, source: str, target: str, negative: str, config: Any, steps: int,
                    guidance: float) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
        device = self._execution_device
        count = frames.shape[0]
        embeddings = encode_prompts(self.tokenizer, self.text_encoder, [source, target, negative], device)
        source_emb, target_emb, negative_emb = embeddings.chunk(3)
        text_len = source_emb.shape[1]
        handle = apply(self.unet, config)
        store = None
        try:
            controller: AttentionController = handle.methods[0].controller
            plan = self._plan(controller.slots, config, source, target, steps, text_len)
            controller.set_policies(plan.policies)
            latents = encode_video(self.vae, frames).to(self.unet.dtype)
            scheduler = as_ddim(self.scheduler)
            scheduler.set_timesteps(steps, device=device)
            shapes = controller.store_shapes(count, tuple(latents.shape[-2:]), text_len)
            store, plan.info = self._open_store(plan, shapes, steps)
            embeds = {name: emb.expand(count, -1, -1) for name, emb in
                      (("source", source_emb), ("target", target_emb), ("negative", negative_emb))}
            inversion = self._invert(controller, handle.context, scheduler, latents, embeds["source"], store)
            edited, mask = self._denoise(controller, handle.context, scheduler, plan, inversion, embeds, store, guidance)
        finally:
            handle.remove()
            if store is not None:
                store.close()
        return edited, mask, plan.info

    def _open_store(self, plan: EditPlan, shapes: list[tuple[int, ...]], steps: int) -> tuple[AttentionStore | None, dict]:
        """Choose RAM, disk or online mode from the exact size estimate; refuse what cannot fit, naming the limits."""
        estimate = estimate_store_bytes(shapes, steps, plan.store_dtype)
        mode = plan.store
        if mode == "auto":
            mode = "ram" if estimate <= plan.ram_budget else "online"
        info = {"store_mode": mode, "store_estimate_bytes": estimate, "store_budget_bytes": plan.ram_budget}
        if mode == "online":
            return None, info
        budget = 0 if mode == "disk" else plan.ram_budget
        overflow = estimate - budget
        if overflow > 0:
            free = shutil.disk_usage(tempfile.gettempdir()).free
            if overflow > free:
                raise MemoryBudgetError(
                    f"the attention store needs {format_bytes(estimate)} for this clip, more than the RAM budget "
                    f"({format_bytes(budget)}) plus the free disk ({format_bytes(free)}); use attention_store='online', "
                    "frames_per_chunk, fewer frames or fewer steps"
                )
        return AttentionStore(budget, dtype=plan.store_dtype), info

    def _invert(self, controller: AttentionController, context: RunContext, scheduler, latents: torch.Tensor,
                source_emb: torch.Tensor, store: AttentionStore | None) -> Inversion:
        controller.layout = BatchLayout(("source",), latents.shape[0])
        controller.mode = EditMode.STORE if store is not None else EditMode.PLAIN
        controller.store = store
        return ddim_invert(
            self.unet, scheduler, latents, source_emb, context=context,
            step_context=store.step if store is not None else None, progress_bar=phase_bar(self, "inversion"),
        )

    def _denoise(self, controller: AttentionController, context: RunContext, scheduler, plan: EditPlan,
                 inversion: Inversion, embeds: dict[str, torch.Tensor], store: AttentionStore | None,
                 guidance: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        count = inversion.noise.shape[0]
        cfg = guidance > 1
        layout = BatchLayout(("uncond", "cond") if cfg else ("cond",), count)
        condition = torch.cat([embeds["negative"], embeds["target"]]) if cfg else embeds["target"]
        controller.cross_editor, controller.self_edit_steps = plan.cross_editor, plan.self_edit_steps
        controller.target_maps = WordMapAccumulator(plan.latent_blend[1]) if plan.latent_blend is not None else None
        level_grid = Grid(1, *inversion.noise.shape[-2:]).downsampled(plan.blend_level)
        blend_size = (level_grid.height, level_grid.width)
        latent, source_latent, mask = inversion.noise, inversion.noise, None
        context.start_run(len(scheduler.timesteps))
        with phase_bar(self, "edit")(total=len(scheduler.timesteps)) as progress:
            for step, timestep in enumerate(scheduler.timesteps):
                source, source_latent = self._source_step(
                    controller, plan, store, inversion, step, timestep, source_latent, embeds, scheduler, guidance
                )
                source_mask = self._blend_mask(plan.blend_words, source, plan, blend_size)
                controller.source, controller.blend = source, source_mask
                controller.mode, controller.layout = EditMode.EDIT, layout
                noise = self.unet(torch.cat([latent] * len(layout.sections)), timestep, encoder_hidden_states=condition).sample
                latent = scheduler.step(_guide(noise, guidance, cfg), timestep, latent).prev_sample
                if plan.latent_blend is not None and plan.latent_blend_steps[0] < step + 1 < plan.latent_blend_steps[1]:
                    latent, source_mask = self._blend_latents(controller, plan, source, inversion.at(step), latent, blend_size)
                mask = source_mask.at(*latent.shape[-2:]) if source_mask is not None else None
                progress.update()
        controller.mode = EditMode.OFF
        return latent, mask

    def _source_step(self, controller: AttentionController, plan: EditPlan, store: AttentionStore | None,
                     inversion: Inversion, step: int, timestep: torch.Tensor, source_latent: torch.Tensor,
                     embeds: dict[str, torch.Tensor], scheduler, guidance: float) -> tuple[SourceAttention, torch.Tensor]:
        """The source attention of edit step `step`: stored, or captured from a source pass (online / P2P mode)."""
        if store is not None:
            return StoredSource(store.load(int(timestep), source_latent.device)), source_latent
        count = source_latent.shape[0]
        controller.mode = EditMode.CAPTURE
        if plan.use_inversion_attention:
            controller.layout = BatchLayout(("source",), count)
            controller.capture = CapturedSource(count)
            self.unet(inversion.at(step), timestep, encoder_hidden_states=embeds["source"])
            return controller.capture, source_latent
        cfg = guidance > 1
        controller.layout = BatchLayout(("source_uncond", "source") if cfg else ("source",), count)
        controller.capture = CapturedSource(count, section=controller.layout.index("source"))
        condition = torch.cat([embeds["negative"], embeds["source"]]) if cfg else embeds["source"]
        noise = self.unet(torch.cat([source_latent] * len(controller.layout.sections)), timestep, encoder_hidden_states=condition).sample
        return controller.capture, scheduler.step(_guide(noise, guidance, cfg), timestep, source_latent).prev_sample

    def _blend_mask(self, words: torch.Tensor | None, source: SourceAttention, plan: EditPlan,
                    size: tuple[int, int]) -> BlendMask | None:
        """The source mask of `words` at this step (from the source's cross-attention at the blend layers)."""
        if words is None:
            return None
        maps = [source.cross_probs(p.name) for p in plan.policies if p.blend]
        return BlendMask(word_map(maps, words), size, plan.blend_threshold)

    def _blend_latents(self, controller: AttentionController, plan: EditPlan, source: SourceAttention,
                       inverted: torch.Tensor, latent: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, BlendMask]:
        """FateZero's latent blend: inverted latents outside the union of the source and target object masks."""
        source_mask = self._blend_mask(plan.latent_blend[0], source, plan, size)
        target_mask = BlendMask(controller.target_maps.total, size, plan.blend_threshold)
        mask = source_mask.union(target_mask, *latent.shape[-2:]).to(latent.device, latent.dtype)
        return inverted + mask * (latent - inverted), source_mask


def _guide(noise: torch.Tensor, guidance: float, cfg: bool) -> torch.Tensor:
    if not cfg:
        return noise
    uncond, cond = noise.chunk(2)
    return uncond + guidance * (cond - uncond)

