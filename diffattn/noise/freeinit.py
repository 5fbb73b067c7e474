"""FreeInit's step schedule: coarse-to-fine sampling (the filters are in `filters`, the re-noising in `renoise`).

The FreeInit loop itself, which runs these around a pipeline's sampling, is `diffattn.pipelines.freeinit`.
"""

from __future__ import annotations

__all__ = ["fast_sampling_steps"]


def fast_sampling_steps(num_steps: int, num_iters: int, iteration: int) -> int:
    """Steps of `iteration` (0-based) under coarse-to-fine sampling: `max(1, int(N / K · (i + 1)))` (FreeInit's
    formula with diffusers' lower bound)."""
    return max(1, int(num_steps / num_iters * (iteration + 1)))
