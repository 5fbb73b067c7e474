"""Radial attention: a static block plan from the latent grid, built once per grid and cached."""

from __future__ import annotations

import torch

from diffattn.configs.sparse import RadialConfig
from diffattn.errors import UnsupportedModelError
from diffattn.method import Target
from diffattn.patterns.radial import block_mask_by_density, radial_mask_mod
from diffattn.plan import BlockPlan

from ..base import AttentionCall
from .common import BlockSparseMethod, SparseLayout, attach_plan, joint_plan

__all__ = ["RadialMethod", "radial_video_mask"]


def radial_video_mask(layout: SparseLayout, config: RadialConfig, *, attention_sink: bool, device: torch.device) -> torch.Tensor:
    """bool `[q_blocks, video_kv_blocks]`: Radial attention's block mask over the view's video tokens.

    Each query block also keeps the key block holding its own first token, so no row is ever empty.
    """
    grid, n = layout.grid, layout.video_tokens
    coords = layout.order.coords() if layout.order is not None else grid.coords(device)
    mask_mod = radial_mask_mod(
        grid, coords.to(device), decay_factor=config.decay_factor, attention_sink=attention_sink,
        half_band_next_frame=config.half_band_next_frame,
    )
    blocks = block_mask_by_density(mask_mod, n, n, layout.block_q, layout.block_k, device=device)
    own = torch.arange(layout.q_blocks, device=device) * layout.block_q // layout.block_k
    return blocks | (torch.arange(layout.video_kv_blocks, device=device) == own[:, None])


class RadialMethod(BlockSparseMethod):
    """Attaches Radial attention's static plan; one plan per (grid, token order, blocks, text length, device)."""

    config: RadialConfig

    def __init__(self, config: RadialConfig, target: Target) -> None:
        super().__init__(config, target)
        if target.family.image:
            raise UnsupportedModelError(
                f"radial narrows each frame's band as the temporal distance grows; {type(target.model).__name__} "
                "generates one-frame images, where its mask is fully dense (a 2-D spatial decay is not the published "
                "method). Use sparge or psa on image models"
            )
        self._sink = config.sink_for(target.family.name)
        self._plans: dict[tuple, BlockPlan] = {}

    def refine(self, call: AttentionCall) -> AttentionCall:
        return attach_plan(call, self.plan_for(call.layout, call.query.device), **self.kernel_options())

    def plan_for(self, layout: SparseLayout, device: torch.device) -> BlockPlan:
        """The cached plan of a sparse view."""
        tile = layout.order.tile if layout.order is not None else None
        key = (layout.grid, tile, layout.block_q, layout.block_k, layout.text_keys, device)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._build(layout, device)
        return plan

    @torch.compiler.disable  # once per grid, reads sizes back to the host: never part of a compiled graph
    def _build(self, layout: SparseLayout, device: torch.device) -> BlockPlan:
        video = radial_video_mask(layout, self.config, attention_sink=self._sink, device=device)
        return joint_plan(video[None, None], layout)

    def on_remove(self) -> None:
        self._plans.clear()
