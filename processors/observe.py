"""The `observe` method: dense attention, unchanged, with the call recorded in `handle.stats`."""

from __future__ import annotations

import torch

from .base import AttentionCall, AttentionMethod, Proceed

__all__ = ["ObserveMethod"]


class ObserveMethod(AttentionMethod):
    """Passes every call on unchanged and records it as fully dense."""

    def attend(self, call: AttentionCall, proceed: Proceed) -> torch.Tensor:
        call.record(density=1.0)
        return proceed(call)
