"""Latent geometry: which model family a denoiser is, its latent grid in tokens, and tile token order.

Diffusers' video transformers flatten tokens frame by frame, row by row, and no attention processor is
told the grid. The root hook recovers it from the denoiser's inputs with the functions here, one per family.
`TileOrder` permutes raster-ordered tokens into spatio-temporal tiles so that compact patterns (windows,
radial bands) touch few kv blocks (docs/ARCHITECTURE.md, "Kernels").
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .errors import GridError, UnsupportedModelError

__all__ = [
    "FAMILIES", "Family", "Grid", "TileOrder", "bind_forward_args", "family_of", "gather_keeping_layout", "supported_families",
]


@dataclass(frozen=True)
class Grid:
    """A latent grid in tokens: `frames x height x width` (images have one frame)."""

    frames: int
    height: int
    width: int

    @property
    def tokens(self) -> int:
        return self.frames * self.height * self.width

    @property
    def frame_tokens(self) -> int:
        return self.height * self.width

    def downsampled(self, level: int) -> Grid:
        """The grid after `level` stride-2 spatial downsamplings (UNet resolution levels, ceil like a padded conv)."""
        h, w = self.height, self.width
        for _ in range(level):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        return Grid(self.frames, h, w)

    def coords(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """int32 `[tokens, 3]`: (frame, row, column) of each token in raster order."""
        f, h, w = torch.meshgrid(
            torch.arange(self.frames, device=device),
            torch.arange(self.height, device=device),
            torch.arange(self.width, device=device),
            indexing="ij",
        )
        return torch.stack([f, h, w], dim=-1).reshape(-1, 3).to(torch.int32)


GridFn = Callable[[torch.nn.Module, Mapping[str, Any]], Grid]


@dataclass(frozen=True)
class Family:
    """A supported denoiser family.

    Args:
        name (`str`): short name, e.g. `"wan"`.
        classes (`tuple[str, ...]`): diffusers class names of the root denoiser.
        grid (`Callable`): `(model, bound_forward_args) -> Grid`, the video token grid of one forward call.
        text_first (`bool`): in joint text+video attention, whether text tokens come before video tokens.
        frames_in_batch (`bool`): UNet families fold frames into the batch of spatial attention.
        separate_cfg (`bool`): the family's pipelines run CFG as two calls per step, conditional first.
        image (`bool`): an image transformer (one-frame grid, text and image tokens in one joint attention).
    """

    name: str
    classes: tuple[str, ...]
    grid: GridFn
    text_first: bool = False
    frames_in_batch: bool = False
    separate_cfg: bool = False
    image: bool = False


def _patch(config: Any, name: str, default: int = 1) -> tuple[int, ...]:
    value = getattr(config, name, None)
    if value is None:
        return (default,)
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value),)


def _video_grid(frames_axis: int) -> GridFn:
    """Grid of `hidden_states` shaped `[B, C, F, H, W]` (`frames_axis=2`) or `[B, F, C, H, W]` (`frames_axis=1`)."""

    def grid(model: torch.nn.Module, args: Mapping[str, Any]) -> Grid:
        shape = args["hidden_states"].shape
        if len(shape) != 5:
            raise GridError(f"expected 5-D video latents, got shape {tuple(shape)}")
        frames, height, width = shape[frames_axis], shape[-2], shape[-1]
        config = model.config
        spatial = _patch(config, "patch_size")
        if len(spatial) == 3:  # Wan: (t, h, w)
            pt, ph, pw = spatial
        else:
            pt = _patch(config, "patch_size_t")[0]
            ph = pw = spatial[0]
        return Grid(frames // pt, height // ph, width // pw)

    return grid


def _ltx_grid(model: torch.nn.Module, args: Mapping[str, Any]) -> Grid:
    sizes = [args.get(k) for k in ("num_frames", "height", "width")]
    if any(s is None for s in sizes):
        raise GridError("LTX-Video and LTX-2 transformer calls must pass num_frames, height and width to recover the grid")
    pt, p = _patch(model.config, "patch_size_t")[0], _patch(model.config, "patch_size")[0]
    frames, height, width = (int(s) for s in sizes)
    return Grid(frames // pt, height // p, width // p)


def _unet_grid(model: torch.nn.Module, args: Mapping[str, Any]) -> Grid:
    sample = args["sample"]
    if sample.ndim == 4:
        return Grid(1, sample.shape[-2], sample.shape[-1])
    if sample.ndim == 5:  # UNetMotionModel: [B, C, F, H, W]
        return Grid(sample.shape[2], sample.shape[-2], sample.shape[-1])
    raise GridError(f"expected UNet latents [B, C, H, W] or [B, C, F, H, W], got {tuple(sample.shape)}")


def _image_grid(model: torch.nn.Module, args: Mapping[str, Any]) -> Grid:
    """SD3: latents `[B, C, H, W]` cut into `patch_size` squares."""
    shape = args["hidden_states"].shape
    if len(shape) != 4:
        raise GridError(f"expected 4-D image latents [B, C, H, W], got shape {tuple(shape)}")
    p = _patch(model.config, "patch_size")[0]
    return Grid(1, shape[-2] // p, shape[-1] // p)


def _position_id_grid(model: torch.nn.Module, args: Mapping[str, Any]) -> Grid:
    """Flux 1 and 2: packed 2x2 latent tokens whose `img_ids` rows hold (index, row, column[, layer])."""
    ids = args.get("img_ids")
    if not isinstance(ids, torch.Tensor) or ids.ndim not in (2, 3):
        raise GridError("Flux transformer calls must pass img_ids ([tokens, 3] or [B, tokens, 4]) to recover the grid")
    ids = ids[0] if ids.ndim == 3 else ids
    rows, columns = ids[:, 1], ids[:, 2]
    height, width = int(rows.max() - rows.min()) + 1, int(columns.max() - columns.min()) + 1
    if height * width != ids.shape[0]:
        raise GridError(
            f"img_ids hold {ids.shape[0]} tokens, not one {height}x{width} image: calls with conditioning or "
            "reference image tokens (Kontext, Flux 2 references) are not supported; call without them"
        )
    return Grid(1, height, width)


def _qwenimage_grid(model: torch.nn.Module, args: Mapping[str, Any]) -> Grid:
    """QwenImage: `img_shapes` gives (frames, rows, columns) of the packed tokens, per sample."""
    shapes = args.get("img_shapes")
    if not shapes:
        raise GridError("QwenImage transformer calls must pass img_shapes to recover the grid")
    sample = shapes[0]
    if isinstance(sample, list):
        if len(sample) != 1:
            raise GridError(
                f"img_shapes has {len(sample)} images per sample: edit calls with conditioning images are not "
                "supported; call with the generated image only"
            )
        sample = sample[0]
    frames, height, width = (int(n) for n in sample)
    return Grid(frames, height, width)


FAMILIES: tuple[Family, ...] = (
    # Wan-structured transformers: Conv3d (t, h, w) patches, self-attention over video, text (and CLIP image)
    # tokens only in cross-attention, one call per CFG branch. Wan 2.1/2.2 (T2V, I2V, TI2V-5B), VACE, SkyReels-V2.
    Family(
        "wan",
        ("WanTransformer3DModel", "WanVACETransformer3DModel", "SkyReelsV2Transformer3DModel"),
        _video_grid(frames_axis=2),
        separate_cfg=True,
    ),
    Family("cogvideox", ("CogVideoXTransformer3DModel",), _video_grid(frames_axis=1), text_first=True),
    Family("hunyuanvideo", ("HunyuanVideoTransformer3DModel",), _video_grid(frames_axis=2), separate_cfg=True),
    # HunyuanVideo 1.5: joint attention, video first, then image/ByT5/MLLM text tokens (masks outer products)
    Family("hunyuanvideo15", ("HunyuanVideo15Transformer3DModel",), _video_grid(frames_axis=2), separate_cfg=True),
    Family("ltx", ("LTXVideoTransformer3DModel",), _ltx_grid),
    # LTX-2: packed video tokens as LTX-Video, plus an audio stream whose attention diffattn leaves to the model
    Family("ltx2", ("LTX2VideoTransformer3DModel",), _ltx_grid),
    Family("mochi", ("MochiTransformer3DModel",), _video_grid(frames_axis=2)),
    Family("flux", ("FluxTransformer2DModel",), _position_id_grid, text_first=True, separate_cfg=True, image=True),
    Family("flux2", ("Flux2Transformer2DModel",), _position_id_grid, text_first=True, image=True),
    Family("qwenimage", ("QwenImageTransformer2DModel",), _qwenimage_grid, text_first=True, separate_cfg=True, image=True),
    Family("sd3", ("SD3Transformer2DModel",), _image_grid, image=True),
    Family("unet", ("UNet2DConditionModel",), _unet_grid, frames_in_batch=True),
    Family("unet-motion", ("UNetMotionModel",), _unet_grid, frames_in_batch=True),
)


def supported_families() -> dict[str, tuple[str, ...]]:
    """Family name -> diffusers class names it covers."""
    return {f.name: f.classes for f in FAMILIES}


def family_of(model: torch.nn.Module) -> Family:
    """The family of a root denoiser; raises `UnsupportedModelError` listing the supported ones."""
    names = {cls.__name__ for cls in type(model).__mro__}
    for family in FAMILIES:
        if names.intersection(family.classes):
            return family
    supported = ", ".join(f"{f.name} ({'/'.join(f.classes)})" for f in FAMILIES)
    raise UnsupportedModelError(f"{type(model).__name__} is not a supported denoiser. Supported: {supported}")


@functools.cache
def _forward_signature(cls: type) -> inspect.Signature:
    return inspect.signature(cls.forward)


def bind_forward_args(model: torch.nn.Module, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Map a forward call's positional and keyword arguments to parameter names."""
    bound = _forward_signature(type(model)).bind_partial(model, *args, **kwargs)
    arguments = dict(bound.arguments)
    arguments.pop("self", None)
    extra = arguments.pop("kwargs", None)
    if isinstance(extra, dict):
        arguments.update(extra)
    return arguments


def gather_keeping_layout(x: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """`x.index_select(dim, index)` in x's memory layout: dims are gathered in memory order and the result has x's
    dim order in memory.

    Attention gets `[B, H, S, D]` views of `[B, S, H, D]` memory from diffusers; gathering tokens then copies whole
    `H x D` rows, and the output (the kernels allocate it like q) goes back in the layout the model's
    transpose-and-flatten after attention takes as a view, with no copy.
    """
    dim = dim % x.ndim
    outer_first = sorted(range(x.ndim), key=lambda d: x.stride(d), reverse=True)
    gathered = x.permute(outer_first).index_select(outer_first.index(dim), index)
    return gathered.permute([outer_first.index(d) for d in range(x.ndim)])


class TileOrder:
    """A permutation of raster-ordered video tokens into spatio-temporal tiles, and its inverse.

    Full tiles come first, in tile-raster order, so that with `tile` volume equal to the kernel block size every
    full tile is exactly one block. Tokens of ragged edge tiles follow at the end (still tile by tile), so no
    padding is needed and the permutation is a bijection of `grid.tokens` positions.

    Args:
        grid (`Grid`): the token grid.
        tile (`tuple[int, int, int]`, defaults to `(2, 8, 8)`): tile extent in (frames, rows, columns).
        device: where the index tensors live.
    """

    def __init__(self, grid: Grid, tile: tuple[int, int, int] = (2, 8, 8), device: torch.device | str = "cpu"):
        self.grid, self.tile = grid, tuple(tile)
        coords = grid.coords(device).long()
        tile_idx = coords // torch.tensor(self.tile, device=device)
        tiles_per_axis = [math.ceil(n / t) for n, t in zip((grid.frames, grid.height, grid.width), self.tile)]
        full_per_axis = [n // t for n, t in zip((grid.frames, grid.height, grid.width), self.tile)]
        ragged = (tile_idx >= torch.tensor(full_per_axis, device=device)).any(-1)
        tile_id = (tile_idx[:, 0] * tiles_per_axis[1] + tile_idx[:, 1]) * tiles_per_axis[2] + tile_idx[:, 2]
        inner = coords % torch.tensor(self.tile, device=device)
        inner_id = (inner[:, 0] * self.tile[1] + inner[:, 1]) * self.tile[2] + inner[:, 2]
        volume = self.tile[0] * self.tile[1] * self.tile[2]
        key = (ragged.long() * (tile_id.max() + 1) + tile_id) * volume + inner_id
        self.perm = key.argsort()  # tiled position -> raster index
        self.inverse = torch.empty_like(self.perm)
        self.inverse[self.perm] = torch.arange(grid.tokens, device=device)
        self.num_full_tiles = math.prod(full_per_axis)

    def to_tiles(self, x: torch.Tensor, dim: int = -2) -> torch.Tensor:
        """Reorder raster tokens along `dim` into tile order, keeping x's memory layout (`gather_keeping_layout`)."""
        return gather_keeping_layout(x, dim, self.perm.to(x.device))

    def to_raster(self, x: torch.Tensor, dim: int = -2) -> torch.Tensor:
        """Inverse of `to_tiles`."""
        return gather_keeping_layout(x, dim, self.inverse.to(x.device))

    def coords(self) -> torch.Tensor:
        """int32 `[tokens, 3]`: (frame, row, column) of each token in tile order."""
        return self.grid.coords(self.perm.device)[self.perm]
