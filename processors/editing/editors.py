"""Prompt-to-prompt cross-attention editors: replace, refine and reweight, mixed in per step and per token.

An edit step fuses the source's cross-attention probabilities (`[..., L]` over the source prompt's tokens) with
the edit's own (over the target prompt's tokens):

    fused = map(source) * weights          replace: source @ M;  refine: source[..., index] where aligned, own elsewhere
    out   = alpha[step] * fused + (1 - alpha[step]) * own

with `alpha` from `prompts.cross_attention_schedule` and `weights` (reweight, not renormalised, as the original)
from `prompts.token_weights`. With identical prompts, all-ones weights and source == own, `out == own`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from . import prompts as P

__all__ = ["CrossAttentionEditor"]


@dataclass
class CrossAttentionEditor:
    """Fuses source and edit cross-attention probabilities (see the module docstring).

    Args:
        schedule (`torch.Tensor`): `[steps, L]` mixing weights alpha.
        replace (`torch.Tensor`, *optional*): `[L, L]` replacement matrix (replace mode).
        refine (`tuple[torch.Tensor, torch.Tensor]`, *optional*): `(index, aligned)` `[L]` each (refine mode).
        weights (`torch.Tensor`, *optional*): `[L]` per-token factors on the fused map (reweight).
    """

    schedule: torch.Tensor
    replace: torch.Tensor | None = None
    refine: tuple[torch.Tensor, torch.Tensor] | None = None
    weights: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.replace is None) == (self.refine is None):
            raise ValueError("CrossAttentionEditor needs exactly one of replace (a matrix) or refine (index, aligned)")

    @classmethod
    def from_prompts(
        cls,
        tokenizer,
        source: str,
        target: str,
        *,
        length: int,
        num_steps: int,
        mode: Literal["replace", "refine"],
        replace_steps: float,
        word_steps: dict[str, float] | None = None,
        reweight: dict[str, float] | None = None,
    ) -> CrossAttentionEditor:
        """The editor for a source/target prompt pair (words of `word_steps` and `reweight` are target words)."""
        schedule = P.cross_attention_schedule(tokenizer, target, num_steps, replace_steps, word_steps or {}, length)
        weights = P.token_weights(tokenizer, target, reweight, length, role="eq_params word") if reweight else None
        if mode == "replace":
            return cls(schedule, replace=P.replacement_mapper(tokenizer, source, target, length), weights=weights)
        return cls(schedule, refine=P.refinement_mapper(tokenizer, source, target, length), weights=weights)

    def active(self, step: int) -> bool:
        """Whether any token is fused at `step`."""
        return bool(self.schedule[min(step, len(self.schedule) - 1)].any())

    def __call__(self, source: torch.Tensor, own: torch.Tensor, step: int) -> torch.Tensor:
        """Fused probabilities for edit step `step` (`source`, `own`: `[..., Q, L]`)."""
        alpha = self.schedule[min(step, len(self.schedule) - 1)].to(own.device, own.dtype)
        source = source.to(own.device, own.dtype)
        if self.replace is not None:
            fused = torch.matmul(source, self.replace.to(own.device, own.dtype))
        else:
            index, aligned = (t.to(own.device) for t in self.refine)
            aligned = aligned.to(own.dtype)
            fused = source.index_select(-1, index) * aligned + own * (1 - aligned)
        if self.weights is not None:
            fused = fused * self.weights.to(own.device, own.dtype)
        return alpha * fused + (1 - alpha) * own
