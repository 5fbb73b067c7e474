"""The source side of one editing step: the attention an edit is fused with.

Two kinds, one interface (`SourceAttention`):

* `StoredSource`: the probabilities an inversion step wrote to the `AttentionStore` (FateZero's RAM/disk mode).
* `CapturedSource`: one denoiser pass on the source branch, held for the current step only ("online" mode).
  Self-attention is kept as its queries and keys, so the source's attention applied to the edit's values is
  `SDPA(q_source, k_source, v_edit)`: exactly `P_source @ v_edit` without materialising `P_source`, and far
  smaller to hold than `P_source` for long videos. Cross-attention (77 text keys) is kept as probabilities. The
  same capture serves FRESCO's spatial-guided attention, which needs the reference pass's queries and keys.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from .errors import EditingStateError
from .frames import KVSource, group_kv, group_query, ungroup

__all__ = ["CapturedSource", "SourceAttention", "StoredSource"]


class SourceAttention(Protocol):
    """Source attention of the current step, by layer name."""

    def self_output(self, layer: str, kv: KVSource, value: torch.Tensor, scale: float | None) -> torch.Tensor:
        """The source's self-attention applied to `value [1, F, H, N, D]` (keys/values gathered by `kv`)."""

    def cross_probs(self, layer: str) -> torch.Tensor:
        """The source's cross-attention probabilities `[F, H, N, L]`."""


def _missing(kind: str, layer: str, available: dict) -> EditingStateError:
    return EditingStateError(f"no source {kind} for layer {layer}; this step holds {sorted(available)}")


class StoredSource:
    """Source attention read from an `AttentionStore` step (`maps`: layer name -> probabilities)."""

    def __init__(self, maps: dict[str, torch.Tensor]) -> None:
        self.maps = maps

    def _probs(self, layer: str) -> torch.Tensor:
        if layer not in self.maps:
            raise _missing("attention map", layer, self.maps)
        return self.maps[layer]

    def self_output(self, layer: str, kv: KVSource, value: torch.Tensor, scale: float | None) -> torch.Tensor:
        sections, frames = value.shape[:2]
        probs = self._probs(layer).to(value.device, value.dtype)
        return ungroup(torch.matmul(probs, group_kv(value, kv)), sections, frames, kv.shared)

    def cross_probs(self, layer: str) -> torch.Tensor:
        return self._probs(layer)


class CapturedSource:
    """One step's source attention, captured from a denoiser pass in the controller's CAPTURE mode.

    Tensors are kept in the pass's batch layout (`[S * F, H, N, D]` queries/keys, `[S * F, H, N, L]` cross
    probabilities); `section` picks the section the edit reads (0: the pass's first section).
    """

    def __init__(self, frames: int, section: int = 0) -> None:
        self.frames = frames
        self.section = section
        self.queries: dict[str, torch.Tensor] = {}
        self.keys: dict[str, torch.Tensor] = {}
        self.cross: dict[str, torch.Tensor] = {}

    def add_self(self, layer: str, query: torch.Tensor, key: torch.Tensor) -> None:
        self.queries[layer], self.keys[layer] = query, key

    def add_cross(self, layer: str, probs: torch.Tensor) -> None:
        self.cross[layer] = probs

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.section * self.frames : (self.section + 1) * self.frames]

    def query_key(self, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw queries and keys `[S * F, H, N, D]` of every section (FRESCO's reference)."""
        if layer not in self.queries:
            raise _missing("queries/keys", layer, self.queries)
        return self.queries[layer], self.keys[layer]

    def self_output(self, layer: str, kv: KVSource, value: torch.Tensor, scale: float | None) -> torch.Tensor:
        query, key = self.query_key(layer)
        split = (1, self.frames) + tuple(query.shape[1:])
        query, key = self._rows(query).reshape(split), self._rows(key).reshape(split)
        out = F.scaled_dot_product_attention(group_query(query, kv.shared), group_kv(key, kv), group_kv(value, kv), scale=scale)
        return ungroup(out, 1, self.frames, kv.shared)

    def cross_probs(self, layer: str) -> torch.Tensor:
        if layer not in self.cross:
            raise _missing("cross-attention", layer, self.cross)
        return self._rows(self.cross[layer])
