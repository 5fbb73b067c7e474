"""Optical flow for video editing and its metrics: OpenCV estimators, forward-backward occlusion, warping.

Flow convention (as GMFlow and RAFT): a flow from frame `a` to frame `b` holds, for every pixel `p` of `a`, the
displacement `(dx, dy)` to where `p` lands in `b`; `warp(b, flow_a_to_b)` therefore resamples `b` onto `a`'s grid.
Flows are float tensors `[N, 2, H, W]` in pixels; occlusion masks are float `[N, H, W]`, 1 where a pixel is
occluded (no trustworthy match). The default estimator is OpenCV's DIS; Farneback is the other built-in. Learned
estimators (GMFlow, RAFT) need downloaded weights, so they are plugins: any callable with `FlowEstimator`'s
signature can be passed wherever an estimator is taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = [
    "FlowEstimator",
    "OpenCVFlow",
    "VideoFlow",
    "estimate_flow",
    "flow_estimator",
    "forward_backward_occlusion",
    "in_bounds",
    "resize_flow",
    "video_flow",
    "warp",
]

OCCLUSION_ALPHA = 0.01
OCCLUSION_BETA = 0.5
PHOTOMETRIC_THRESHOLD = 0.25
"""Defaults of FRESCO's occlusion test: forward-backward inconsistency (alpha, beta) OR a photometric error above
this fraction of the value range."""


class FlowEstimator(Protocol):
    """Estimates the flow from `source` to `target`, both `uint8 [H, W, 3]` RGB; returns `float32 [H, W, 2]`."""

    def __call__(self, source: np.ndarray, target: np.ndarray) -> np.ndarray: ...


_DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}


@dataclass(frozen=True)
class OpenCVFlow:
    """Classical optical flow from OpenCV: DIS (default, preset "medium") or Farneback.

    Args:
        method (`str`, *optional*, defaults to `"dis"`): `"dis"` or `"farneback"`.
        preset (`str`, *optional*, defaults to `"medium"`): DIS preset, `"ultrafast"`, `"fast"` or `"medium"`.
        finest_scale (`int`, *optional*, defaults to `0`): DIS's finest pyramid level. OpenCV's presets stop at
            level 1 (half resolution); level 0 costs about twice as much and cuts the sub-pixel error about
            five-fold (0.04 -> 0.007 px on a shifted texture), which the warp-error metric needs.
    """

    method: str = "dis"
    preset: str = "medium"
    finest_scale: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("dis", "farneback"):
            raise ConfigError(f"flow method must be 'dis' or 'farneback'; got {self.method!r}")
        if self.preset not in _DIS_PRESETS:
            raise ConfigError(f"DIS preset must be one of {', '.join(_DIS_PRESETS)}; got {self.preset!r}")

    def __call__(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        import cv2

        gray_source = cv2.cvtColor(source, cv2.COLOR_RGB2GRAY)
        gray_target = cv2.cvtColor(target, cv2.COLOR_RGB2GRAY)
        if self.method == "dis":
            dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[self.preset])
            dis.setFinestScale(self.finest_scale)
            flow = dis.calc(gray_source, gray_target, None)
        else:
            flow = cv2.calcOpticalFlowFarneback(gray_source, gray_target, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        return flow.astype(np.float32)


def flow_estimator(name: str) -> FlowEstimator:
    """The built-in estimator called `name` (`"dis"` or `"farneback"`)."""
    return OpenCVFlow(method=name)


def _uint8_frame(frame: torch.Tensor) -> np.ndarray:
    """`[3, H, W]` float in [0, 1] -> `uint8 [H, W, 3]`."""
    return (frame.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def estimate_flow(source: torch.Tensor, target: torch.Tensor, estimator: FlowEstimator | None = None) -> torch.Tensor:
    """Flow `[N, 2, H, W]` from each `source[i]` to `target[i]` (frames `[N, 3, H, W]` in [0, 1])."""
    estimator = estimator or OpenCVFlow()
    flows = [estimator(_uint8_frame(s), _uint8_frame(t)) for s, t in zip(source, target)]
    return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous()


def _positions(flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled positions `(x, y)` `[N, H, W]`: each pixel plus its flow."""
    _, _, height, width = flow.shape
    ys, xs = torch.meshgrid(
        torch.arange(height, device=flow.device, dtype=flow.dtype),
        torch.arange(width, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    return xs + flow[:, 0], ys + flow[:, 1]


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: `out[p] = image[p + flow[p]]`, bilinear, zeros outside. `image [N, C, H, W]`, `flow [N, 2, H, W]`.

    Written as a gather of the four neighbours (not `grid_sample`), so integer flows, zero flow included, sample
    exactly: FRESCO's optimisation must see no round-off where frames match.
    """
    batch, channels, height, width = image.shape
    x, y = _positions(flow.to(image.dtype))
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    flat = image.flatten(2)
    out = torch.zeros_like(image)
    for dy, dx, weight in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi <= width - 1) & (yi >= 0) & (yi <= height - 1)
        index = (yi.clamp(0, height - 1) * width + xi.clamp(0, width - 1)).long().flatten(1)
        values = flat.gather(2, index.unsqueeze(1).expand(batch, channels, -1)).view_as(image)
        out = out + values * (weight * inside).unsqueeze(1)
    return out


def in_bounds(flow: torch.Tensor) -> torch.Tensor:
    """Float `[N, H, W]`: 1 where `p + flow[p]` lies inside the frame."""
    _, _, height, width = flow.shape
    x, y = _positions(flow)
    return ((x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)).to(flow.dtype)


def forward_backward_occlusion(
    forward: torch.Tensor, backward: torch.Tensor, alpha: float = OCCLUSION_ALPHA, beta: float = OCCLUSION_BETA
) -> tuple[torch.Tensor, torch.Tensor]:
    """Occlusion by forward-backward inconsistency: `|f + warp(b, f)|^2 > alpha (|f|^2 + |warp(b, f)|^2) + beta`.

    Returns `(forward_occlusion, backward_occlusion)`, float `[N, H, W]`: pixels of the first frame without a
    consistent match in the second, and pixels of the second without one in the first.
    """

    def inconsistent(flow: torch.Tensor, reverse: torch.Tensor) -> torch.Tensor:
        reverse_at_target = warp(reverse, flow)
        error = (flow + reverse_at_target).pow(2).sum(1)
        bound = alpha * (flow.pow(2).sum(1) + reverse_at_target.pow(2).sum(1)) + beta
        return (error > bound).to(flow.dtype)

    return inconsistent(forward, backward), inconsistent(backward, forward)


def resize_flow(flow: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resample a flow field to `height x width`, scaling the displacements with the size."""
    scale_y, scale_x = height / flow.shape[-2], width / flow.shape[-1]
    resized = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
    return torch.stack([resized[:, 0] * scale_x, resized[:, 1] * scale_y], dim=1)


@dataclass
class VideoFlow:
    """Flows between consecutive frames of a video and their occlusion masks (pixel resolution).

    Pair `i` is frames `(i, i + 1)`; with `cyclic=True` a last pair `(F - 1, 0)` closes the loop (FRESCO's
    temporal loss matches every frame with the next, wrapping around).

    Attributes:
        forward (`torch.Tensor`): `[P, 2, H, W]`, flow from frame `i` to frame `i + 1`.
        backward (`torch.Tensor`): `[P, 2, H, W]`, flow from frame `i + 1` to frame `i`.
        forward_occlusion (`torch.Tensor`): `[P, H, W]`, 1 where a pixel of frame `i` is occluded in `i + 1`.
        backward_occlusion (`torch.Tensor`): `[P, H, W]`, 1 where a pixel of frame `i + 1` is occluded in `i`.
        cyclic (`bool`): whether the last pair wraps to frame 0.
    """

    forward: torch.Tensor
    backward: torch.Tensor
    forward_occlusion: torch.Tensor
    backward_occlusion: torch.Tensor
    cyclic: bool = False

    def consecutive(self) -> VideoFlow:
        """Only the pairs `(i, i + 1)` (drops the wrap-around pair of a cyclic flow)."""
        if not self.cyclic:
            return self
        return VideoFlow(self.forward[:-1], self.backward[:-1], self.forward_occlusion[:-1], self.backward_occlusion[:-1])


def video_flow(
    frames: torch.Tensor,
    estimator: FlowEstimator | None = None,
    *,
    cyclic: bool = False,
    alpha: float = OCCLUSION_ALPHA,
    beta: float = OCCLUSION_BETA,
    photometric_threshold: float | None = PHOTOMETRIC_THRESHOLD,
) -> VideoFlow:
    """Bidirectional flow and occlusion between consecutive frames of `frames [F, 3, H, W]` (in [0, 1]).

    Occlusion is FRESCO's rule: forward-backward inconsistency OR, when `photometric_threshold` is set, a mean
    colour error of the warped frame above that fraction of the range. Pixels whose match leaves the frame are
    occluded too.
    """
    frames = frames.detach().float().cpu()
    if frames.shape[0] < 2:
        raise ConfigError(f"optical flow needs at least 2 frames; got {frames.shape[0]}")
    following = list(range(1, frames.shape[0])) + ([0] if cyclic else [])
    first = frames[: len(following)]
    second = frames[following]
    forward = estimate_flow(first, second, estimator)
    backward = estimate_flow(second, first, estimator)
    forward_occ, backward_occ = forward_backward_occlusion(forward, backward, alpha, beta)
    forward_occ = torch.maximum(forward_occ, 1 - in_bounds(forward))
    backward_occ = torch.maximum(backward_occ, 1 - in_bounds(backward))
    if photometric_threshold is not None:
        forward_occ = torch.maximum(forward_occ, _photometric(first, warp(second, forward), photometric_threshold))
        backward_occ = torch.maximum(backward_occ, _photometric(second, warp(first, backward), photometric_threshold))
    return VideoFlow(forward, backward, forward_occ, backward_occ, cyclic)


def _photometric(reference: torch.Tensor, warped: torch.Tensor, threshold: float) -> torch.Tensor:
    return ((reference - warped).abs().mean(1) > threshold).float()
