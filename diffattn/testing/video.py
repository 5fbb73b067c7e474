"""A synthetic video with real motion, for optical-flow, editing and noise-initialisation demos."""

from __future__ import annotations

import math

import torch

__all__ = ["sample_clip"]


def _texture(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Smooth coloured stripes, ``[3, H, W]`` in [0.2, 0.8]: enough texture for flow to lock on."""
    y = torch.linspace(0, 1, height).view(height, 1)
    x = torch.linspace(0, 1, width).view(1, width)
    freq = 1 + 3 * torch.rand(3, 2, generator=generator)
    phase = 2 * math.pi * torch.rand(3, generator=generator)
    waves = [torch.sin(2 * math.pi * (fx * x + fy * y) + p) for (fx, fy), p in zip(freq.tolist(), phase.tolist())]
    return 0.5 + 0.3 * torch.stack(waves)


def _disc(height: int, width: int, centre: tuple[float, float], radius: float) -> torch.Tensor:
    """Anti-aliased disc mask ``[1, H, W]`` in [0, 1]; ``centre`` and ``radius`` in pixels."""
    y = torch.arange(height, dtype=torch.float32).view(height, 1)
    x = torch.arange(width, dtype=torch.float32).view(1, width)
    distance = torch.sqrt((y - centre[0]) ** 2 + (x - centre[1]) ** 2)
    return (radius - distance + 0.5).clamp(0, 1).unsqueeze(0)


def sample_clip(num_frames: int = 8, height: int = 64, width: int = 64, *, seed: int = 0) -> torch.Tensor:
    """Synthetic clip ``[F, 3, H, W]`` in [0, 1]: a textured background and a coloured disc moving smoothly.

    The disc crosses the frame left to right on a gentle arc (about ``0.6 * width`` in total), so
    consecutive frames differ and optical flow has a known, smooth answer. Deterministic for a seed.
    """
    generator = torch.Generator().manual_seed(seed)
    background = _texture(height, width, generator)
    colour = (0.1 + 0.9 * torch.rand(3, generator=generator)).view(3, 1, 1)
    radius = max(1.5, 0.15 * min(height, width))
    frames = []
    for t in torch.linspace(0, 1, num_frames).tolist():
        centre = (height * (0.5 - 0.15 * math.sin(math.pi * t)), width * (0.2 + 0.6 * t))
        mask = _disc(height, width, centre, radius)
        frames.append(background * (1 - mask) + colour * mask)
    return torch.stack(frames).clamp(0, 1)
