"""The frame axis of UNet attention, and where a frame's self-attention takes its keys and values from.

UNet spatial attention folds video frames into the batch; an editing pipeline lays the batch out as *sections*
of `frames` images each (e.g. `("uncond", "cond")` under classifier-free guidance), which `BatchLayout` splits
into `[sections, frames, heads, tokens, head_dim]`.

A K/V source (`FrameKV`) gives each query frame the keys and values of a list of frames, concatenated along the
tokens, as FateZero's / Tune-A-Video's spatial-temporal attention does: `"first"`, `"mid"` (frame
`(F - 1) // 2`), `"last"`, `"all"` (every frame), `"self"`, or an int offset relative to the query frame (clipped
to the video, e.g. `-1` = previous). Sources whose frames do not depend on the query frame (`"first"`, `"mid"`,
`"last"`, `"all"`) are *shared*: all query frames attend to one key set, computed as one attention problem of
`frames * tokens` queries without copying the keys per frame. With one frame, or identical frames, every source
gives plain self-attention (duplicated keys leave the softmax-weighted average unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from diffattn.configs.editing import check_frame_refs

from .errors import EditingStateError

__all__ = [
    "SELF",
    "BatchLayout",
    "FrameKV",
    "KVSource",
    "attention_probs",
    "frame_attention",
    "group_kv",
    "group_query",
    "ungroup",
]

FrameRef = str | int
_SHARED_REFS = ("first", "mid", "middle", "last", "all")


@dataclass(frozen=True)
class BatchLayout:
    """A UNet batch of `len(sections) * frames` images: section after section, frame after frame."""

    sections: tuple[str, ...]
    frames: int

    @property
    def batch(self) -> int:
        return len(self.sections) * self.frames

    def index(self, section: str) -> int:
        if section not in self.sections:
            raise EditingStateError(f"the batch has sections {self.sections}, not {section!r}")
        return self.sections.index(section)

    def rows(self, section: str) -> slice:
        """Batch rows of one section."""
        start = self.index(section) * self.frames
        return slice(start, start + self.frames)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """`[S * F, ...]` -> `[S, F, ...]`."""
        if x.shape[0] != self.batch:
            raise EditingStateError(
                f"attention batch {x.shape[0]} does not match the editing layout {self.sections} x {self.frames} frames"
            )
        return x.reshape(len(self.sections), self.frames, *x.shape[1:])

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """`[S, F, ...]` -> `[S * F, ...]`."""
        return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


class KVSource(Protocol):
    """Where a frame's self-attention keys and values come from."""

    shared: bool
    """One key set for all query frames (`gather` returns `[S, H, M, D]`) or one per frame (`[S, F, H, M, D]`)."""

    @property
    def identity(self) -> bool:
        """True when the source is the frame itself (plain self-attention)."""

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Keys or values `[S, F, H, N, D]` -> the source's `[S, H, M, D]` (shared) or `[S, F, H, M, D]`."""

    def key_count(self, frames: int, tokens: int) -> int:
        """M: keys per query for `frames` frames of `tokens` tokens."""


@dataclass(frozen=True)
class FrameKV:
    """Keys and values from a list of frames (see the module docstring for the references)."""

    refs: tuple[FrameRef, ...] = ("self",)

    def __post_init__(self) -> None:
        check_frame_refs("K/V frames", self.refs)
        if not self.refs:
            object.__setattr__(self, "refs", ("self",))

    @property
    def identity(self) -> bool:
        return all(ref in ("self", 0) for ref in self.refs) and len(self.refs) == 1

    @property
    def shared(self) -> bool:
        return all(ref in _SHARED_REFS for ref in self.refs)

    def _frame_index(self, ref: FrameRef, frames: int) -> int | torch.Tensor:
        """The frame (shared refs) or per-query-frame indices `[F]` that `ref` names."""
        if ref == "first":
            return 0
        if ref in ("mid", "middle"):
            return (frames - 1) // 2
        if ref == "last":
            return frames - 1
        offset = 0 if ref == "self" else int(ref)
        return (torch.arange(frames) + offset).clamp(0, frames - 1)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[1]
        if self.identity:
            return x
        if self.shared:
            parts = []
            for ref in self.refs:
                if ref == "all":
                    parts.append(x.permute(0, 2, 1, 3, 4).flatten(2, 3))
                else:
                    parts.append(x[:, self._frame_index(ref, frames)])
            return torch.cat(parts, dim=2)
        parts = []
        for ref in self.refs:
            index = self._frame_index(ref, frames)
            parts.append(x[:, index] if isinstance(index, torch.Tensor) else x[:, index : index + 1].expand_as(x))
        return torch.cat(parts, dim=3)

    def key_count(self, frames: int, tokens: int) -> int:
        return sum(frames * tokens if ref == "all" else tokens for ref in self.refs)


SELF = FrameKV(("self",))


def group_query(q: torch.Tensor, shared: bool) -> torch.Tensor:
    """Queries `[S, F, H, N, D]` as independent attention problems: `[S, H, F*N, D]` (shared) or `[S*F, H, N, D]`."""
    if shared:
        return q.permute(0, 2, 1, 3, 4).flatten(2, 3)
    return q.flatten(0, 1)


def group_kv(x: torch.Tensor, kv: KVSource) -> torch.Tensor:
    """Keys or values `[S, F, H, N, D]` gathered by `kv`, in the grouping of `group_query`."""
    gathered = kv.gather(x)
    return gathered if kv.shared else gathered.flatten(0, 1)


def ungroup(out: torch.Tensor, sections: int, frames: int, shared: bool) -> torch.Tensor:
    """Inverse of `group_query` for attention outputs: back to `[S, F, H, N, D]`."""
    if shared:
        heads, dim = out.shape[1], out.shape[-1]
        return out.reshape(sections, heads, frames, -1, dim).permute(0, 2, 1, 3, 4)
    return out.reshape(sections, frames, *out.shape[1:])


def attention_probs(query: torch.Tensor, key: torch.Tensor, scale: float | None) -> torch.Tensor:
    """Explicit softmax(q k^T * scale) `[..., Lq, Lk]`, computed in float32 and returned in the query's dtype."""
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale
    return scores.softmax(dim=-1).to(query.dtype)


def frame_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv: KVSource, scale: float | None) -> torch.Tensor:
    """Self-attention of `[S, F, H, N, D]` queries with keys/values from `kv`, through SDPA (no softmax materialised)."""
    sections, frames = q.shape[:2]
    out = F.scaled_dot_product_attention(group_query(q, kv.shared), group_kv(k, kv), group_kv(v, kv), scale=scale)
    return ungroup(out, sections, frames, kv.shared)
