"""Noise initialisation, model-free: the math of FreeInit, FreeNoise and InitNO.

| module | what |
|---|---|
| `filters` | FreeInit's vectorised 3-D low-pass filters (butterworth, gaussian, ideal, box) and frequency mixing |
| `renoise` | re-noising a finished sample for DDPM-style and flow-matching schedulers |
| `latents` | `[B, C, F, H, W]` views of each video family's loop latents |
| `freeinit` | FreeInit's coarse-to-fine step schedule |
| `freenoise` | noise rescheduling, sliding windows and weights, per-frame prompt schedules |
| `initno` | InitNO's scores, the mean/log-variance optimisation with KL projection, rounds, token indices |

Nothing here touches a model or a pipeline. The methods live in `diffattn.pipelines` (`freeinit`, `freenoise`,
`initno`), their attention parts in `diffattn.processors.noise`, and the reversible pipeline wrapping they use in
`diffattn.extension`.
"""

from .filters import FILTER_KINDS, frequency_mix, low_pass_filter
from .freenoise import PromptSchedule, frame_windows, interpolate_keyframes, reschedule_noise, window_weights
from .initno import (
    NoiseScores,
    NoiseSearchResult,
    attention_scores,
    conflict_score,
    kl_divergence,
    optimise_noise,
    reparametrise,
    response_score,
    search_initial_noise,
    subject_token_indices,
)
from .latents import VIDEO_FAMILIES, as_video, from_video
from .renoise import SD_TERMINAL_RATIO, is_flow_matching, renoise

__all__ = [
    "FILTER_KINDS",
    "low_pass_filter",
    "frequency_mix",
    "SD_TERMINAL_RATIO",
    "is_flow_matching",
    "renoise",
    "VIDEO_FAMILIES",
    "as_video",
    "from_video",
    "frame_windows",
    "window_weights",
    "reschedule_noise",
    "interpolate_keyframes",
    "PromptSchedule",
    "NoiseScores",
    "NoiseSearchResult",
    "attention_scores",
    "response_score",
    "conflict_score",
    "kl_divergence",
    "reparametrise",
    "optimise_noise",
    "search_initial_noise",
    "subject_token_indices",
]
