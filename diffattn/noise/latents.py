"""Where the frames are in a pipeline's denoising-loop latents, so noise methods can work on `[B, C, F, H, W]`.

Video pipelines keep their loop latents as `[B, C, F, H, W]` (Wan, HunyuanVideo, Mochi, AnimateDiff),
`[B, F, C, H, W]` (CogVideoX) or packed tokens `[B, F·H·W, C]` (LTX-Video, patch size 1, so tokens are latent
pixels; with larger patches the token grid is used and each patch's sub-positions act as channels).
`as_video` gives a `[B, C, F, H, W]` view of any of them and `from_video` undoes it exactly.
"""

from __future__ import annotations

import torch

from ..errors import GridError, UnsupportedModelError
from ..geometry import Grid

__all__ = ["VIDEO_FAMILIES", "check_video_family", "as_video", "from_video"]

_FRAMES_AXIS = {"wan": 2, "hunyuanvideo": 2, "mochi": 2, "unet-motion": 2, "cogvideox": 1}
_PACKED = ("ltx",)
VIDEO_FAMILIES: tuple[str, ...] = (*_FRAMES_AXIS, *_PACKED)


def check_video_family(family: str, method: str, pipeline: object | None) -> None:
    """Raise `UnsupportedModelError` unless `family` generates video (noise methods act on the frame axis)."""
    if family not in VIDEO_FAMILIES:
        name = type(pipeline).__name__ if pipeline is not None else family
        raise UnsupportedModelError(
            f"{method} needs a video pipeline (AnimateDiff, Wan, CogVideoX, LTX-Video, HunyuanVideo, Mochi); "
            f"{name} ({family}) generates images. For images use InitNO (diffattn.InitNOConfig)"
        )


def as_video(latents: torch.Tensor, family: str, grid: Grid | None = None) -> torch.Tensor:
    """`[B, C, F, H, W]` view of loop latents (`grid` is needed for packed LTX latents)."""
    if family in _PACKED:
        if grid is None or latents.ndim != 3 or latents.shape[1] != grid.tokens:
            raise GridError(
                f"cannot unpack {family} latents of shape {tuple(latents.shape)} without their token grid "
                f"(got {grid}); the grid is known after the transformer's first call"
            )
        batch, _, channels = latents.shape
        return latents.reshape(batch, grid.frames, grid.height, grid.width, channels).permute(0, 4, 1, 2, 3)
    axis = _FRAMES_AXIS.get(family)
    if axis is None:
        raise UnsupportedModelError(f"no video latent layout known for family {family!r}")
    if latents.ndim != 5:
        raise GridError(f"expected 5-D video latents for {family}, got shape {tuple(latents.shape)}")
    return latents if axis == 2 else latents.transpose(1, 2)


def from_video(video: torch.Tensor, family: str) -> torch.Tensor:
    """Inverse of `as_video`: back to the loop layout of `family` (contiguous)."""
    if family in _PACKED:
        batch, channels = video.shape[:2]
        return video.permute(0, 2, 3, 4, 1).reshape(batch, -1, channels).contiguous()
    return (video if _FRAMES_AXIS[family] == 2 else video.transpose(1, 2)).contiguous()
