"""LiteAttention: skip marks carried across denoising steps (per layer, and per CFG branch unless the config shares
them), intersected with other plans; `must_do`/`must_skip` key tokens pinned."""

from __future__ import annotations

from typing import NamedTuple

import torch

from diffattn.configs.sparse import LiteAttentionConfig
from diffattn.context import RunContext
from diffattn.errors import ConfigError
from diffattn.geometry import Grid
from diffattn.kernels import SparseAttentionOutput
from diffattn.method import Target
from diffattn.plan import BlockPlan

from ..base import AttentionCall
from .common import BlockSparseMethod, SparseLayout, attach_plan, dense_plan, force_text_columns, joint_plan

__all__ = ["LiteAttentionMethod"]

MarkKey = tuple[str, str | None, int, int | None]
"""(layer name, CFG branch or None when branches share marks, SDPA call index, sample part)."""


class _Marks(NamedTuple):
    """Marks written by a call, with the geometry they belong to."""

    plan: BlockPlan
    video: tuple[Grid, int, int, int, int]
    """(token grid, block_q, block_k, batch, heads): marks of another geometry are not reused."""
    text_keys: int


class _Pins(NamedTuple):
    """A view geometry's pinned key blocks and the plan a call runs before any mark exists."""

    must_do: torch.Tensor | None
    """bool `[kv_blocks]`: blocks holding a must-do token (None without `must_do`)."""
    fresh: BlockPlan
    """Every block except those all of whose tokens are must-skip."""


class LiteAttentionMethod(BlockSparseMethod):
    """Runs each call with the tiles still marked significant; the kernel's marks become the next call's plan.

    Double buffering: the plan a call reads (the marks of the call before it with the same key: the previous step,
    or with `mark_scope="layer"` the layer's previous call) and the marks it writes are distinct objects; the write
    replaces the read once the kernel has run. Marks restart empty at each run unless `keep_marks_across_runs`;
    text key blocks and must-do blocks are always kept, must-skip blocks never computed.
    """

    config: LiteAttentionConfig

    def __init__(self, config: LiteAttentionConfig, target: Target) -> None:
        super().__init__(config, target)
        self._marks: dict[MarkKey, _Marks] = {}
        self._pins: dict[tuple, _Pins] = {}
        self._run = -1
        self._early = False
        target.listeners.append(self._on_forward)

    def _on_forward(self, ctx: RunContext) -> None:
        """Per denoiser call, outside the attention layers: a new run clears the marks (unless they are kept
        across runs); pick the step's phase."""
        if ctx.run_index != self._run:
            self._run = ctx.run_index
            if not self.config.keep_marks_across_runs:
                self._marks.clear()
        self._early = ctx.step_index < self.config.early_steps

    def reset_marks(self) -> None:
        """Forget every mark: each layer's next call computes all its tiles again (the fork's `reset_skip_state`)."""
        self._marks.clear()

    @torch.compiler.disable  # per-layer marks in a dict: traced, every layer would be its own recompile
    def refine(self, call: AttentionCall) -> AttentionCall:
        layout: SparseLayout = call.layout
        branch = call.context.cfg_branch if self.config.mark_scope == "branch" else None
        key: MarkKey = (call.layer.name, branch, call.index, layout.part)
        video = (layout.grid, layout.block_q, layout.block_k, *call.query.shape[:2])
        pins = self._pins_for(layout, call.query.device)
        marks = self._read(key, video, layout, pins)
        threshold = self.config.threshold_for(call.layer.block, early=self._early)

        def keep_marks(result: SparseAttentionOutput) -> None:
            kept = result.kept_plan
            level_map = force_text_columns(kept.to_level_map(), layout)
            if pins.must_do is not None:
                level_map = torch.where(pins.must_do, 1, level_map)
            plan = BlockPlan.sync_free(level_map, kept.block_q, kept.block_k, kept.levels)
            self._marks[key] = _Marks(plan, video, layout.text_keys)

        refined = attach_plan(
            call, marks, skip_threshold=threshold, mark_criterion=self.config.mark_criterion, **self.kernel_options()
        )
        return refined.replace(on_kernel_result=[*refined.on_kernel_result, keep_marks])

    def _read(self, key: MarkKey, video: tuple, layout: SparseLayout, pins: _Pins) -> BlockPlan:
        """The marks a call runs: the stored ones when they are of its geometry (their video columns under another
        text length, text columns kept), else the fresh plan."""
        stored = self._marks.get(key)
        if stored is None or stored.video != video:
            return pins.fresh
        if stored.text_keys == layout.text_keys:
            return stored.plan
        video_columns = stored.plan.to_level_map()[..., : layout.video_kv_blocks]
        return joint_plan(video_columns, layout, stored.plan.levels)

    def _pins_for(self, layout: SparseLayout, device: torch.device) -> _Pins:
        """The pinned blocks of a view geometry (built on the host once per geometry and cached)."""
        pin_key = (layout.grid, layout.order, layout.block_q, layout.block_k, layout.text_keys, device)
        if pin_key not in self._pins:
            self._pins[pin_key] = self._new_pins(layout, device)
        return self._pins[pin_key]

    def _new_pins(self, layout: SparseLayout, device: torch.device) -> _Pins:
        must_do, must_skip = self.config.token_ranges()
        fresh = dense_plan(layout.q_blocks, layout.kv_blocks, layout.block_q, layout.block_k, device)
        if must_skip:
            skipped = _key_blocks(must_skip, layout, every=True)
            if bool(skipped.all()):
                raise ConfigError(
                    f"must_skip covers every key block of a call with {layout.video_tokens} video tokens and "
                    f"{layout.text_keys} text keys; leave some key tokens out of must_skip"
                )
            level_map = (~skipped).to(torch.int32).expand(1, 1, layout.q_blocks, -1).to(device)
            fresh = BlockPlan.sync_free(level_map, layout.block_q, layout.block_k)
        do_blocks = _key_blocks(must_do, layout, every=False).to(device) if must_do else None
        return _Pins(do_blocks, fresh)


def _key_blocks(ranges: tuple[tuple[int, int], ...], layout: SparseLayout, *, every: bool) -> torch.Tensor:
    """bool `[kv_blocks]` of the view's key blocks holding any token of `ranges` (video tokens in the model's
    order), or with `every` only the blocks all of whose tokens are in them (a block holding text never is)."""
    tokens = layout.video_tokens
    inside = torch.zeros(tokens, dtype=torch.bool)
    for start, end in ranges:
        inside[start:end] = True  # a range past the call's tokens is cut short
    if layout.order is not None:
        inside = inside[layout.order.perm.cpu()]
    text = torch.full((layout.text_keys,), False)
    past_end = torch.full((layout.kv_blocks * layout.block_k - tokens - layout.text_keys,), every)
    blocks = torch.cat([inside, text, past_end]).view(layout.kv_blocks, layout.block_k)
    return blocks.all(-1) if every else blocks.any(-1)
