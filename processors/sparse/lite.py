"""LiteAttention: skip marks carried across denoising steps, per layer and CFG branch, intersected with other plans."""

from __future__ import annotations

from typing import Any

import torch

from diffattn.configs.sparse import LiteAttentionConfig
from diffattn.context import RunContext
from diffattn.kernels import SparseAttentionOutput
from diffattn.plan import BlockPlan

from ..base import AttentionCall
from .common import BlockSparseMethod, SparseLayout, attach_plan, dense_plan, force_text_columns

__all__ = ["LiteAttentionMethod"]

MarkKey = tuple[str, str | None, int, int | None]
"""(layer name, CFG branch, SDPA call index, sample part): one mark set per distinct attention computation."""


class LiteAttentionMethod(BlockSparseMethod):
    """Runs each call with the tiles still marked significant; the kernel's marks become the next step's plan.

    Double buffering: the plan a call reads (the previous step's marks) and the marks it writes are distinct
    objects; the write replaces the read once the kernel has run. Marks restart empty at each run; text key blocks
    are always kept.
    """

    config: LiteAttentionConfig

    def __init__(self, config: LiteAttentionConfig, target: Any) -> None:
        super().__init__(config, target)
        self._marks: dict[MarkKey, BlockPlan] = {}
        self._run = -1
        self._early = False
        target.listeners.append(self._on_forward)

    def _on_forward(self, ctx: RunContext) -> None:
        """Per denoiser call, outside the attention layers: start a new mark set per run, pick the step's phase."""
        if ctx.run_index != self._run:
            self._run = ctx.run_index
            self._marks.clear()
        self._early = ctx.step_index < self.config.early_steps

    @torch.compiler.disable  # per-layer marks in a dict: traced, every layer would be its own recompile
    def refine(self, call: AttentionCall) -> AttentionCall:
        layout: SparseLayout = call.layout
        key: MarkKey = (call.layer.name, call.context.cfg_branch, call.index, layout.part)
        marks = self._marks.get(key)
        if marks is None or (marks.num_q_blocks, marks.num_kv_blocks, marks.block_q, marks.block_k) != (
            layout.q_blocks, layout.kv_blocks, layout.block_q, layout.block_k,
        ):
            marks = dense_plan(layout.q_blocks, layout.kv_blocks, layout.block_q, layout.block_k, call.query.device)
        threshold = self.config.threshold_for(call.layer.block, early=self._early)

        def keep_marks(result: SparseAttentionOutput) -> None:
            kept = result.kept_plan
            level_map = force_text_columns(kept.to_level_map(), layout)
            self._marks[key] = BlockPlan.sync_free(level_map, kept.block_q, kept.block_k, kept.levels)

        refined = attach_plan(call, marks, skip_threshold=threshold, **self.kernel_options())
        return refined.replace(on_kernel_result=[*refined.on_kernel_result, keep_marks])

    def on_remove(self) -> None:
        self._marks.clear()
