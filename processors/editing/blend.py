"""Blend masks: where an edit may depart from the source, found from the source's cross-attention to some words.

FateZero's blender: take the cross-attention maps of the layers at one resolution (16x16 at 512 px in the
original), sum over the tokens of the chosen words, average over heads and layers, max-pool 3x3, resize (nearest)
to the resolution where the mask is used, normalise each frame by its maximum and threshold at `blend_th`.
Mask value 1 keeps the edit's own attention (or latent), 0 takes the source's. A threshold at or above 1 gives a
mask of 0 everywhere (full source attention, FateZero's default `blend_th: [2, 2]`), a negative one 1 everywhere.

`threshold="otsu"` picks each frame's threshold by Otsu's method instead (no setting to tune; RealCraft here).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["BlendMask", "otsu_threshold", "word_map"]

_OTSU_BINS = 64


def word_map(maps: Sequence[torch.Tensor], token_weights: torch.Tensor) -> torch.Tensor:
    """`[F, N]`: cross-attention `[F, H, N, L]` summed over the weighted tokens, averaged over heads and layers."""
    if not maps:
        raise ValueError("word_map needs at least one cross-attention map")
    total = None
    for probs in maps:
        weights = token_weights.to(probs.device, torch.float32)
        layer = (probs.float() * weights).sum(-1).mean(1)
        total = layer if total is None else total + layer
    return total / len(maps)


def otsu_threshold(values: torch.Tensor) -> torch.Tensor:
    """Per-row Otsu threshold of `values [R, X]` in [0, 1] (`[R, 1]`); rows without contrast get 1 (nothing selected)."""
    thresholds = []
    centres = (torch.arange(_OTSU_BINS, dtype=torch.float32) + 0.5) / _OTSU_BINS
    for row in values.float().cpu():
        if float(row.max() - row.min()) < 1e-6:
            thresholds.append(1.0)
            continue
        hist = torch.histc(row, bins=_OTSU_BINS, min=0.0, max=1.0)
        weight_low = hist.cumsum(0)
        weight_high = hist.sum() - weight_low
        mass_low = (hist * centres).cumsum(0)
        mean_low = mass_low / weight_low.clamp_min(1e-12)
        mean_high = (mass_low[-1] - mass_low) / weight_high.clamp_min(1e-12)
        between = weight_low * weight_high * (mean_low - mean_high) ** 2
        thresholds.append(float((int(between.argmax()) + 1) / _OTSU_BINS))
    return torch.tensor(thresholds, device=values.device).unsqueeze(1)


class BlendMask:
    """A per-frame mask from a word map at one resolution, thresholded at any resolution it is asked for.

    Args:
        word_map (`torch.Tensor`): `[F, h * w]` from `word_map`.
        size (`tuple[int, int]`): `(h, w)` of that map.
        threshold (`float` or `"otsu"`): normalised-map threshold (mask = map > threshold).
        pool (`bool`, *optional*, defaults to `True`): max-pool 3x3 first (FateZero does).
    """

    def __init__(self, word_map: torch.Tensor, size: tuple[int, int], threshold: float | str, pool: bool = True) -> None:
        frames = word_map.shape[0]
        maps = word_map.float().reshape(frames, 1, *size)
        self.map = F.max_pool2d(maps, 3, stride=1, padding=1) if pool else maps
        self.threshold = threshold
        self._cache: dict[tuple[int, int], torch.Tensor] = {}

    def at(self, height: int, width: int) -> torch.Tensor:
        """Float `[F, 1, height, width]` mask of 0/1."""
        if (height, width) not in self._cache:
            resized = F.interpolate(self.map, size=(height, width), mode="nearest")
            normalised = resized / resized.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
            flat = normalised.flatten(1)
            threshold = otsu_threshold(flat) if self.threshold == "otsu" else float(self.threshold)
            self._cache[(height, width)] = (flat > threshold).float().reshape_as(normalised)
        return self._cache[(height, width)]

    def tokens(self, height: int, width: int) -> torch.Tensor:
        """The mask as `[F, height * width]` token weights."""
        return self.at(height, width).flatten(1)

    def union(self, other: BlendMask, height: int, width: int) -> torch.Tensor:
        """Float `[F, 1, height, width]`: 1 where either mask is 1."""
        return torch.maximum(self.at(height, width), other.at(height, width))
