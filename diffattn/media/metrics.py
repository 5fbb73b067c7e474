"""Video metrics: warp error under the source's flow, PSNR (whole or outside the edit mask), SSIM, mask IoU, CLIP-F and
CLIP-T.

Videos are float tensors `[F, 3, H, W]` in [0, 1]. Warp error follows TokenFlow / Pix2Video: the edited frame
`t` is warped to `t + 1` with the flow estimated on the *source* video and compared, outside occlusions, on a
0-255 scale. CLIP scores need a CLIP model the caller provides (nothing is downloaded): CLIP-F is the mean cosine
similarity of consecutive frames' image embeddings (FateZero's Tem-Con), CLIP-T the mean frame-to-prompt cosine
similarity (edit fidelity).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .flow import FlowEstimator, VideoFlow, video_flow, warp

__all__ = ["CLIP_MEAN", "CLIP_STD", "PSNR_CAP_DB", "clip_scores", "mask_iou", "psnr", "psnr_outside", "ssim", "warp_error"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PSNR_CAP_DB = 100.0
"""PSNR reported for identical pixels (and the most any PSNR reports): finite, so metrics stay valid JSON (a
difference of one 8-bit level everywhere is 48.1 dB, so the cap only ever stands for "identical")."""


def _check_video(video: torch.Tensor, name: str) -> None:
    if video.ndim != 4 or video.shape[1] != 3:
        raise ConfigError(f"{name} must be a video [frames, 3, height, width]; got shape {tuple(video.shape)}")


def warp_error(video: torch.Tensor, flow: VideoFlow | None = None, *, source: torch.Tensor | None = None,
               estimator: FlowEstimator | None = None) -> float:
    """Mean occlusion-masked error `|video[t+1] - warp(video[t], backward flow)|` on a 0-255 scale.

    Args:
        video: the video to score (e.g. an edit).
        flow: consecutive-frame flow of the source video; estimated from `source` (or `video`) when `None`.
        source: the source video, used to estimate the flow when `flow` is not given.
        estimator: the flow estimator for that (OpenCV DIS by default).
    """
    _check_video(video, "video")
    if video.shape[0] < 2:
        return 0.0
    if flow is None:
        flow = video_flow(source if source is not None else video, estimator)
    flow = flow.consecutive()
    video = video.detach().float().cpu()
    if flow.forward.shape[-2:] != video.shape[-2:]:
        raise ConfigError(f"flow size {tuple(flow.forward.shape[-2:])} does not match the video's {tuple(video.shape[-2:])}")
    warped = warp(video[:-1], flow.backward.float())
    valid = 1 - flow.backward_occlusion.float()
    error = (video[1:] - warped).abs().mean(1) * valid
    return float(error.sum() / valid.sum().clamp_min(1) * 255)


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float | None:
    """PSNR in dB of two videos/images in [0, 1], over the pixels where `mask` (broadcastable `[..., H, W]`) is 1.

    Identical pixels give `PSNR_CAP_DB` (never infinity); a mask that selects no pixel gives `None` (nothing to
    compare).
    """
    if a.shape != b.shape:
        raise ConfigError(f"PSNR needs equal shapes; got {tuple(a.shape)} and {tuple(b.shape)}")
    squared = (a.detach().float() - b.detach().float()).pow(2)
    if mask is None:
        mse = float(squared.mean())
    else:
        weight = torch.broadcast_to(mask.float().unsqueeze(-3) if mask.ndim == a.ndim - 1 else mask.float(), squared.shape)
        if not float(weight.sum()):
            return None
        mse = float((squared * weight).sum() / weight.sum())
    return PSNR_CAP_DB if mse <= 10 ** (-PSNR_CAP_DB / 10) else -10 * math.log10(mse)


def psnr_outside(edited: torch.Tensor, source: torch.Tensor, edit_mask: torch.Tensor) -> float | None:
    """Preservation: PSNR to the source over the pixels outside the edit mask (`edit_mask` 1 = edited region).

    `edit_mask` is `[F, H, W]` or `[F, 1, h, w]` at any resolution (resized to the video's, nearest). Identical
    pixels give `PSNR_CAP_DB`; `None` when the mask covers every pixel (nothing outside it to compare).
    """
    mask = edit_mask.detach().float()
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    mask = F.interpolate(mask, size=edited.shape[-2:], mode="nearest")[:, 0]
    return psnr(edited, source, 1 - mask)


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 7, sigma: float = 1.5) -> float:
    """Mean structural similarity of two images/videos `[..., 3, H, W]` in [0, 1] (Wang et al. 2004: a Gaussian window
    of `sigma`, `window` pixels wide, per channel, constants for a data range of 1; valid positions only, so the
    window must fit the frame). 1 means identical."""
    if a.shape != b.shape:
        raise ConfigError(f"SSIM needs equal shapes; got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < window:
        raise ConfigError(f"SSIM's {window}-pixel window does not fit {tuple(a.shape[-2:])} frames")
    x, y = (t.detach().double().reshape(-1, 1, *t.shape[-2:]) for t in (a, b))  # float64: var = E[x²] - E[x]² cancels
    taps = torch.exp(-((torch.arange(window, dtype=torch.float64) - (window - 1) / 2) ** 2) / (2 * sigma**2))
    kernel = torch.outer(taps, taps).div(taps.sum() ** 2)[None, None]
    blur = lambda t: F.conv2d(t, kernel)  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y, cov = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2, blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    index = (2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(index.mean())


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Intersection over union of two boolean (or 0/1) masks of equal shape, over all their elements (a video's
    masks `[F, H, W]` give one IoU for the whole clip); `None` when both are empty (nothing to compare)."""
    if a.shape != b.shape:
        raise ConfigError(f"mask IoU needs equal shapes; got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = torch.as_tensor(a).bool(), torch.as_tensor(b).bool()
    union = int((a | b).sum())
    return None if union == 0 else int((a & b).sum()) / union


def _clip_pixels(video: torch.Tensor, size: int) -> torch.Tensor:
    pixels = F.interpolate(video.float(), size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def _embedding(output: Any) -> torch.Tensor:
    """Projected embeddings from `get_*_features` (a tensor in transformers 4, an output object in 5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def clip_scores(video: torch.Tensor, prompt: str | None, model: Any, tokenizer: Any = None) -> dict[str, float]:
    """CLIP-F (mean cosine of consecutive frames) and, with a prompt and tokenizer, CLIP-T (mean frame-to-prompt cosine).

    Args:
        video: frames `[F, 3, H, W]` in [0, 1].
        prompt: the target prompt for CLIP-T (skipped when `None`).
        model: a `transformers.CLIPModel` (any size; pass one you have locally).
        tokenizer: its tokenizer, needed for CLIP-T.
    """
    _check_video(video, "video")
    device = next(model.parameters()).device
    size = model.config.vision_config.image_size
    images = F.normalize(_embedding(model.get_image_features(pixel_values=_clip_pixels(video.cpu(), size).to(device))).float(), dim=-1)
    scores = {"clip_frame": float((images[1:] * images[:-1]).sum(-1).mean()) if len(images) > 1 else 1.0}
    if prompt is not None and tokenizer is not None:
        tokens = tokenizer([prompt], padding=True, truncation=True, return_tensors="pt").to(device)
        text = F.normalize(_embedding(model.get_text_features(**tokens)).float(), dim=-1)
        scores["clip_text"] = float((images @ text.T).mean())
    return scores
