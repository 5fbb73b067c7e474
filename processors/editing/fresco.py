"""FRESCO's attention and feature parts (Yang et al., CVPR 2024), written from the paper and its public description.

* Efficient cross-frame attention (`OcclusionKV`): one key/value set shared by all frames of a section: every
  token of frame 0 plus the tokens of frames 1..F-1 occluded with respect to their previous frame (new content),
  from optical-flow occlusion masks at the layer's resolution.
* Spatial-guided attention (`spatial_guidance`): in the first step(s), queries are replaced by
  `softmax(Q_ref (s K_ref)^T) Q` with Q_ref/K_ref from a reference pass on the input frames (s = 0.2), which
  pulls the edit's self-similarity towards the input's.
* Temporal-guided attention (`Trajectories`, `trajectory_attention`; FLATTEN): attention along flow
  trajectories across frames (keys scaled by 0.2, values = the spatial attention output), links broken at
  occlusions; used while the timestep is high.
* Feature optimisation (`FeatureOptimizer`): the input features of the UNet's up blocks are optimised with Adam
  (lr 0.2, 20 iterations) for a temporal loss (2 x L1 between each frame and its flow-warped neighbour, outside
  occlusions, cyclic) plus a spatial loss (100 x L1 between the features' cosine Gram matrix and the reference
  pass's), then AdaIN restores the original feature statistics (epsilon 1e-5 on both sides by default, so
  unchanged features stay unchanged; the released code's AdaIN adds 1 to the original features' variance, which
  `style_eps=1.0` reproduces). Hooks are forward pre-hooks on `unet.up_blocks[i]`
  run under `torch.enable_grad()`; nothing in the UNet is patched.

Not included: FRESCO's background smoothing (it needs an EGNet saliency model) and Ebsynth propagation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffattn.media.flow import VideoFlow, resize_flow, warp

__all__ = [
    "FeatureOptimizer",
    "FlowAtResolution",
    "OcclusionKV",
    "Trajectories",
    "adain",
    "build_trajectories",
    "cosine_gram",
    "occlusion_keep_mask",
    "optimize_features",
    "spatial_guidance",
    "spatial_loss",
    "temporal_loss",
    "trajectory_attention",
]


# ----------------------------------------------------------------------------- cross-frame attention
@dataclass(frozen=True)
class OcclusionKV:
    """Shared keys/values: the tokens where `keep [F, N]` is True (frame 0 entirely, occluded tokens of the rest)."""

    keep: torch.Tensor
    shared: bool = True

    @property
    def identity(self) -> bool:
        return False

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """`[S, F, H, N, D]` -> `[S, H, M, D]` with the kept tokens, frame by frame."""
        keep = self.keep.to(x.device)
        frames_tokens = x.permute(0, 2, 1, 3, 4)  # [S, H, F, N, D]
        return frames_tokens[:, :, keep]

    def key_count(self, frames: int, tokens: int) -> int:
        return int(self.keep.sum())


def occlusion_keep_mask(backward_occlusion: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bool `[F, h*w]`: all of frame 0, and for frame i >= 1 the tokens occluded w.r.t. frame i - 1.

    `backward_occlusion [F-1, H, W]` is pixel-level (`VideoFlow.backward_occlusion` of consecutive pairs); it is
    resized bilinearly to the layer's `size` and thresholded at 0.5, as FRESCO does.
    """
    small = F.interpolate(backward_occlusion[:, None].float(), size=size, mode="bilinear", align_corners=False)
    occluded = (small > 0.5).flatten(1)
    first = torch.ones(1, occluded.shape[1], dtype=torch.bool, device=occluded.device)
    return torch.cat([first, occluded], dim=0)


# ----------------------------------------------------------------------------- spatial guidance
def spatial_guidance(query: torch.Tensor, ref_query: torch.Tensor, ref_key: torch.Tensor, key_scale: float = 0.2) -> torch.Tensor:
    """FRESCO's spatial-guided queries: `softmax(Q_ref (s K_ref)^T / sqrt(d)) Q`, per image (`[B, H, N, D]` each)."""
    return F.scaled_dot_product_attention(ref_query, ref_key * key_scale, query)


# ----------------------------------------------------------------------------- temporal guidance
@dataclass(frozen=True)
class Trajectories:
    """Token trajectories through a video at one resolution.

    Attributes:
        index (`torch.Tensor`): long `[F, N]`, the token of frame f on trajectory slot s (a permutation per frame).
        segment (`torch.Tensor`): long `[F, N]`, the frame where slot s's current unbroken run began; two frames of
            a slot attend to each other only within one run.
    """

    index: torch.Tensor
    segment: torch.Tensor

    def attention_mask(self) -> torch.Tensor:
        """Bool `[N, 1, F, F]`: which frames of each slot may attend to which."""
        runs = self.segment.T  # [N, F]
        return (runs[:, :, None] == runs[:, None, :]).unsqueeze(1)


def _link_pair(
    flow_back: torch.Tensor, occluded: torch.Tensor, before: torch.Tensor, after: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Match tokens of a frame to tokens of the previous one by rounded backward flow.

    Returns `(targets, sources)`: tokens of the later frame and the unique earlier-frame tokens they continue;
    when several claim one earlier token, the closest in colour wins (as FRESCO's mapping does).
    """
    _, height, width = flow_back.shape
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    x = torch.round(xs + flow_back[0]).long()
    y = torch.round(ys + flow_back[1]).long()
    valid = ((x >= 0) & (x < width) & (y >= 0) & (y < height) & ~occluded).flatten()
    source = (y.clamp(0, height - 1) * width + x.clamp(0, width - 1)).flatten()
    colour_error = (after.flatten(1) - before.flatten(1)[:, source]).pow(2).mean(0)
    candidates = valid.nonzero().squeeze(1)
    by_error = candidates[colour_error[candidates].argsort(stable=True)]
    by_source = by_error[source[by_error].argsort(stable=True)]
    sorted_sources = source[by_source]
    first = torch.ones_like(sorted_sources, dtype=torch.bool)
    first[1:] = sorted_sources[1:] != sorted_sources[:-1]
    return by_source[first], sorted_sources[first]


def build_trajectories(flow: VideoFlow, frames: torch.Tensor, size: tuple[int, int]) -> Trajectories:
    """Trajectories at token grid `size` from consecutive-frame flow and the (pixel) frames `[F, 3, H, W]`."""
    flow = flow.consecutive()
    height, width = size
    tokens = height * width
    back = resize_flow(flow.backward.float().cpu(), height, width)
    occluded = F.interpolate(flow.backward_occlusion[:, None].float().cpu(), size=size, mode="bilinear", align_corners=False)[:, 0] > 0.5
    small = F.interpolate(frames.float().cpu(), size=size, mode="bilinear", align_corners=False, antialias=True)
    index = [torch.arange(tokens)]
    segment = [torch.zeros(tokens, dtype=torch.long)]
    for i in range(frames.shape[0] - 1):
        targets, sources = _link_pair(back[i], occluded[i], small[i], small[i + 1])
        slot_of = torch.empty(tokens, dtype=torch.long)
        slot_of[index[-1]] = torch.arange(tokens)
        slots = slot_of[sources]
        next_index = torch.full((tokens,), -1, dtype=torch.long)
        next_index[slots] = targets
        unlinked = torch.ones(tokens, dtype=torch.bool)
        unlinked[targets] = False
        free = next_index < 0
        next_index[free] = unlinked.nonzero().squeeze(1)
        index.append(next_index)
        segment.append(torch.where(free, torch.full_like(segment[-1], i + 1), segment[-1]))
    return Trajectories(torch.stack(index), torch.stack(segment))


def trajectory_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, trajectories: Trajectories,
                         key_scale: float = 0.2) -> torch.Tensor:
    """Attention along trajectories across frames; inputs and output `[S, F, H, N, D]` (value: spatial output)."""
    sections, frames, heads, tokens, dim = query.shape
    index = trajectories.index.to(query.device)[None, :, None, :, None].expand(sections, frames, heads, tokens, dim)

    def along(x: torch.Tensor) -> torch.Tensor:  # [S, F, H, N, D] -> [S*N, H, F, D]
        return x.gather(3, index).permute(0, 3, 2, 1, 4).reshape(sections * tokens, heads, frames, dim)

    mask = trajectories.attention_mask().to(query.device)
    mask = mask.unsqueeze(0).expand(sections, -1, -1, -1, -1).reshape(sections * tokens, 1, frames, frames)
    out = F.scaled_dot_product_attention(along(query), along(key) * key_scale, along(value), attn_mask=mask)
    out = out.reshape(sections, tokens, heads, frames, dim).permute(0, 3, 2, 1, 4)
    return torch.empty_like(value).scatter_(3, index, out)


# ----------------------------------------------------------------------------- feature optimisation
def cosine_gram(features: torch.Tensor) -> torch.Tensor:
    """`[B, h*w, h*w]` cosine similarities between the feature vectors of `features [B, C, h, w]`."""
    vectors = F.normalize(features.flatten(2).transpose(1, 2), dim=-1)
    return torch.bmm(vectors, vectors.transpose(1, 2))


@dataclass(frozen=True)
class FlowAtResolution:
    """Cyclic consecutive-frame flow resampled to a feature resolution (FRESCO's temporal loss inputs)."""

    forward: torch.Tensor
    backward: torch.Tensor
    forward_valid: torch.Tensor
    backward_valid: torch.Tensor

    @classmethod
    def from_flow(cls, flow: VideoFlow, size: tuple[int, int], device: torch.device | str) -> FlowAtResolution:
        """Flows resized with their displacements scaled; occlusion max-pooled (a pixel occluded anywhere counts)."""
        def valid(occlusion: torch.Tensor) -> torch.Tensor:
            return 1 - F.adaptive_max_pool2d(occlusion[:, None].float(), size)

        return cls(
            resize_flow(flow.forward.float(), *size).to(device),
            resize_flow(flow.backward.float(), *size).to(device),
            valid(flow.forward_occlusion).to(device),
            valid(flow.backward_occlusion).to(device),
        )


def temporal_loss(features: torch.Tensor, flow: FlowAtResolution) -> torch.Tensor:
    """FRESCO's temporal loss for `features [S, F, C, h, w]`: 2 x mean L1 to the flow-warped neighbours (cyclic)."""
    sections, frames = features.shape[:2]
    following = list(range(1, frames)) + [0]
    current, nxt = features.flatten(0, 1), features[:, following].flatten(0, 1)

    def tile(x: torch.Tensor) -> torch.Tensor:
        return x.repeat(sections, 1, 1, 1)

    to_next = warp(current, tile(flow.backward))  # frame i resampled onto frame i+1
    to_current = warp(nxt, tile(flow.forward))  # frame i+1 resampled onto frame i
    error = (nxt - to_next).abs() * tile(flow.backward_valid) + (current - to_current).abs() * tile(flow.forward_valid)
    return 2 * error.mean()


def spatial_loss(features: torch.Tensor, reference_gram: torch.Tensor) -> torch.Tensor:
    """FRESCO's spatial loss (before its weight): L1 between the features' cosine Gram and the reference's."""
    return F.l1_loss(cosine_gram(features.flatten(0, 1)), reference_gram)


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5, style_eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance normalisation: `content [B, C, h, w]` with `style`'s per-sample, per-channel mean and std
    (`eps` / `style_eps` added to each one's variance)."""
    def stats(x: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.flatten(2)
        variance = flat.var(-1, unbiased=flat.shape[-1] > 1)  # a 1x1 map (tiny latents) has no sample variance
        return flat.mean(-1)[..., None, None], (variance + epsilon).sqrt()[..., None, None]

    content_mean, content_std = stats(content, eps)
    style_mean, style_std = stats(style, style_eps)
    return (content - content_mean) / content_std * style_std + style_mean


def optimize_features(
    features: torch.Tensor,
    sections: int,
    flow: FlowAtResolution | None,
    reference_gram: torch.Tensor | None,
    *,
    iterations: int = 20,
    lr: float = 0.2,
    spatial_weight: float = 100.0,
    adain_style_eps: float = 1e-5,
) -> tuple[torch.Tensor, list[float]]:
    """FRESCO's feature optimisation of `features [S*F, C, h, w]`; returns the AdaIN-ed result and the loss per iteration."""
    frames = features.shape[0] // sections
    original = features.float()
    param = original.detach().clone().reshape(sections, frames, *features.shape[1:]).requires_grad_(True)
    optimizer = torch.optim.Adam([param], lr=lr)
    losses = []
    with torch.enable_grad():
        for _ in range(iterations):
            optimizer.zero_grad()
            loss = param.new_zeros(())
            if flow is not None and frames > 1:
                loss = loss + temporal_loss(param, flow)
            if reference_gram is not None and spatial_weight > 0:
                loss = loss + spatial_weight * spatial_loss(param, reference_gram)
            if not loss.requires_grad:
                break
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    result = adain(param.detach().reshape_as(original), original, style_eps=adain_style_eps)
    return result.to(features.dtype), losses


class FeatureOptimizer:
    """Forward pre-hooks on `unet.up_blocks[i]` that record (reference pass) or optimise (edit steps) their inputs.

    Args:
        unet: the UNet.
        blocks (`tuple[int, ...]`): up-block indices (FRESCO: `(0, 1, 2, 3)`; indices beyond the UNet are skipped).
        sections (`int`): CFG sections in the batch (frames per section = batch / sections).
        flow (`VideoFlow`, *optional*): cyclic consecutive-frame flow of the input frames (pixel resolution).
        iterations, lr, spatial_weight: optimisation settings (FRESCO: 20, 0.2, 100).
        adain_style_eps: AdaIN's epsilon on the original features' variance (see `adain`).
    """

    def __init__(self, unet: torch.nn.Module, blocks: tuple[int, ...], sections: int, flow: VideoFlow | None, *,
                 iterations: int = 20, lr: float = 0.2, spatial_weight: float = 100.0,
                 adain_style_eps: float = 1e-5) -> None:
        self.unet = unet
        self.blocks = tuple(i for i in blocks if i < len(unet.up_blocks))
        self.sections = sections
        self.flow = flow
        self.iterations, self.lr, self.spatial_weight = iterations, lr, spatial_weight
        self.adain_style_eps = adain_style_eps
        self.mode = "off"
        self.grams: dict[int, torch.Tensor] = {}
        self.history: list[list[float]] = []
        """Loss per iteration of every optimisation so far."""
        self._flows: dict[tuple[int, int], FlowAtResolution] = {}
        self._handles: list = []

    def install(self) -> FeatureOptimizer:
        for index in self.blocks:
            hook = functools.partial(self._pre_hook, index)
            self._handles.append(self.unet.up_blocks[index].register_forward_pre_hook(hook, with_kwargs=True))
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> FeatureOptimizer:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _flow_at(self, size: tuple[int, int], device: torch.device) -> FlowAtResolution | None:
        if self.flow is None:
            return None
        if size not in self._flows:
            self._flows[size] = FlowAtResolution.from_flow(self.flow, size, device)
        return self._flows[size]

    def _pre_hook(self, index: int, module: torch.nn.Module, args: tuple, kwargs: dict):
        if self.mode == "off":
            return None
        in_kwargs = "hidden_states" in kwargs
        features = kwargs["hidden_states"] if in_kwargs else args[0]
        if self.mode == "record":
            self.grams[index] = cosine_gram(features.float()).detach()
            return None
        optimized, losses = optimize_features(
            features, self.sections, self._flow_at(tuple(features.shape[-2:]), features.device), self.grams.get(index),
            iterations=self.iterations, lr=self.lr, spatial_weight=self.spatial_weight, adain_style_eps=self.adain_style_eps,
        )
        self.history.append(losses)
        if in_kwargs:
            return args, {**kwargs, "hidden_states": optimized}
        return (optimized, *args[1:]), kwargs
