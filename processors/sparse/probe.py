"""Run block-sparse methods on raw q/k/v tensors, outside any model: for benchmarks, tests and captured attention.

    probe = AttentionProbe([RadialConfig(dense_steps=0), LiteAttentionConfig()], family="wan")
    probe.start_step()
    out = probe(q, k, v, Grid(21, 30, 52), block=5)   # q/k/v [B, H, tokens, head_dim], tokens in raster order
    probe.stats.summary()

The call goes through exactly the code a model's attention layer uses (sparse view, method chain, kernels); the
probe stands in for the denoiser hook by publishing the grid and stepping the run context.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diffattn.configs.sparse import BlockSparseConfig
from diffattn.context import LayerInfo, RunContext
from diffattn.errors import ConfigError
from diffattn.geometry import FAMILIES, Grid
from diffattn.method import Target, implementation_of
from diffattn.stats import AttentionStats

from ..base import AttentionCall, AttentionMethod, account, chain_for, run_chain, token_layout

__all__ = ["AttentionProbe"]


class AttentionProbe:
    """A chain of block-sparse methods applied to raw attention inputs laid out like one family's calls.

    Args:
        configs (`Sequence[BlockSparseConfig]`): the methods, in chain order (e.g. Radial then LiteAttention;
            `quantized` always last).
        family (`str`, defaults to `"wan"`): whose conventions apply (text before video, per-model mask rules).
    """

    def __init__(self, configs: Sequence[BlockSparseConfig], family: str = "wan") -> None:
        if not configs or not all(isinstance(c, BlockSparseConfig) for c in configs):
            raise ConfigError("AttentionProbe takes one or more block-sparse method configs (sparge, radial, psa, lite, quantized)")
        self.configs = tuple(configs)
        self.family = next((f for f in FAMILIES if f.name == family), None)
        if self.family is None:
            raise ConfigError(f"unknown family {family!r}; choose one of {[f.name for f in FAMILIES]}")
        self.context = RunContext(family=family)
        self.stats = AttentionStats()
        self.target = Target(None, self.family, None, self.context, self.stats, [])
        self.methods: tuple[AttentionMethod, ...] = tuple(implementation_of(c)(c, self.target) for c in self.configs)
        self.new_run()

    def new_run(self) -> None:
        """Start a new run (LiteAttention's marks restart); the next `start_step` is step 0."""
        self.context.start_run()

    def start_step(self, timestep: float | None = None) -> None:
        """Advance to the next denoising step (phases and per-step state follow, as before a denoiser call)."""
        ctx = self.context
        ctx.step_index += 1
        ctx.timestep = timestep
        ctx.phases = {c.name: c.phase(ctx.step_index, ctx.num_steps) for c in self.configs}
        for listener in self.target.listeners:
            listener(ctx)

    def __call__(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        grid: Grid,
        *,
        attn_mask: torch.Tensor | None = None,
        scale: float | None = None,
        block: int | None = None,
    ) -> torch.Tensor:
        """Attention of `[B, H, S, D]` inputs through the chain: `S = grid.tokens` (self-attention) or the video
        tokens plus text tokens in the family's order (joint attention, e.g. HunyuanVideo's key padding mask).

        `block` is the transformer block the call stands for (layer selectors such as `dense_layers` apply to it;
        stats are recorded under `blocks.<block>.attn1`); `None` is a call outside any block (`"attn"`).
        """
        if self.context.step_index < 0:
            self.start_step()
        self.context.grid = grid
        name = "attn" if block is None else f"blocks.{block}.attn1"
        layer = LayerInfo(name, block or 0, block, "self")
        layout = token_layout(self.context, layer, query.shape[-2], key.shape[-2], self.family.text_first, False)
        call = AttentionCall(
            query, key, value, attn_mask, 0.0, False, scale, False, layer, self.context, layout, self.stats
        )
        chain = chain_for(self.methods, layer)
        out = run_chain(chain, call)
        if self.stats.enabled:
            account(chain, self.context, call.dense_reasons, self.stats)
        return out
