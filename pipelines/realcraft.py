"""`RealCraftPipeline`: object-centric zero-shot video editing in the manner of RealCraft (Jin et al., 2023).

RealCraft's paper (arXiv 2312.12635) has no public code; only its abstract is available. What follows the paper's
description:

* "swapping cross-attention for new feature injection": in the edit's conditional branch, cross-attention takes the
  source's layout (prompt-to-prompt replace when both prompts have as many words, refine otherwise), so the new
  words' features are injected where the old object was;
* "relaxing spatial-temporal attention of the editing object": inside the object's mask the edit's own
  self-attention runs, with keys/values from a wider set of frames;
* strict preservation elsewhere, "directly with Stable Diffusion", "parameter-free", "up to 64 frames".

Our design for what the abstract leaves open:

* the object mask comes automatically from the source's cross-attention to the words the target replaces
  (`prompts.changed_words`, or `object_words`), thresholded per frame by Otsu's method (no threshold to tune);
* outside the mask, self-attention is the source's at every step (`self_preserve_steps`), from DDIM inversion;
* keys/values are the first, previous and own frame outside the object and first + frames t-2..t+2 inside;
* long videos: nothing but the inverted latents is stored; each edit step re-runs the source branch at the inverted
  latent of its timestep (online mode), so memory does not grow with the number of steps, and 64 frames at 512 px
  fit one GPU.

It shares FateZero's inversion and edit loop (`FateZeroPipeline`), with its own policies.
"""

from __future__ import annotations

from diffattn.configs.editing import RealCraftConfig
from diffattn.processors.editing import prompts as P
from diffattn.processors.editing.controller import LayerPolicy, LayerSlot
from diffattn.processors.editing.editors import CrossAttentionEditor
from diffattn.processors.editing.frames import SELF, FrameKV

from .fatezero import EditPlan, FateZeroPipeline, check_levels, default_blend_level

__all__ = ["RealCraftPipeline"]


class RealCraftPipeline(FateZeroPipeline):
    """RealCraft-style editing on a Stable Diffusion 1.x/2.x UNet (see the module docstring for what is ours).

    Build it with `RealCraftPipeline.from_pipe(sd_pipe)`; call it like `FateZeroPipeline` with a `RealCraftConfig`.
    """

    edit_config_class = RealCraftConfig

    def _chunk_size(self, config: RealCraftConfig) -> int | None:
        return None

    def _plan(self, slots: dict[str, LayerSlot], config: RealCraftConfig, source: str, target: str, steps: int,
              text_len: int) -> EditPlan:
        check_levels(slots, "edit_min_level", config.edit_min_level)
        words = config.object_words or tuple(P.changed_words(source, target))
        object_words = P.word_indicator(self.tokenizer, source, words, text_len, role="object word") if words else None
        blend_level = default_blend_level(slots) if config.blend_level is None else config.blend_level
        if object_words is not None:
            check_levels(slots, "blend_level", blend_level, role="cross")
        kv, relaxed = FrameKV(config.kv_frames), FrameKV(config.relaxed_kv_frames)
        policies = []
        for slot in slots.values():
            spatio_temporal = slot.role == "self" and slot.level >= config.kv_min_level
            edit = slot.level >= config.edit_min_level
            policies.append(LayerPolicy(
                slot,
                kv=kv if spatio_temporal else SELF,
                edit=edit,
                blend=object_words is not None and slot.role == "cross" and slot.level == blend_level,
                edit_kv=relaxed if spatio_temporal and edit else None,
            ))
        same_length = len(source.split()) == len(target.split())
        editor = CrossAttentionEditor.from_prompts(
            self.tokenizer, source, target, length=text_len, num_steps=steps,
            mode="replace" if same_length else "refine", replace_steps=config.cross_replace_steps,
        )
        return EditPlan(
            policies=policies,
            cross_editor=editor,
            self_edit_steps=int(config.self_preserve_steps * steps),
            blend_words=object_words,
            blend_threshold="otsu",
            blend_level=blend_level,
            store="online",
        )
