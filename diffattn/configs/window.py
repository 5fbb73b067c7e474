"""`window`: FreeSwim's inward sliding window on the joint text+image attention of image transformers."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import register_method
from .freeswim import check_window_settings
from .sparse import BlockSparseConfig

__all__ = ["WindowConfig", "IMAGE_BASE_SIZES"]

IMAGE_BASE_SIZES: dict[str, tuple[int, int]] = {
    "flux": (1024, 1024),
    "flux2": (1024, 1024),
    "sd3": (1024, 1024),
    "qwenimage": (1328, 1328),
}
"""Training (base) size in pixels, (height, width), per image family: what `WindowConfig` derives its window and
temperature from unless `base_height` / `base_width` are given."""


@register_method
@dataclass(frozen=True)
class WindowConfig(BlockSparseConfig):
    """Inward sliding-window attention for image transformers above their training resolution (the window branch
    of FreeSwim, arXiv 2511.14712, on joint text+image attention).

    Every image query attends to the image keys inside its inward window, a `(2 * rows + 1) x (2 * columns + 1)`
    token window the size of the model's training grid whose centre is the query's position clamped inside the
    image (so a query near a border keeps a full window), and to every text key, with the softmax sharpened by
    FreeSwim's temperature `sqrt(log(2N) / log(N))` (N: tokens of the training grid). Text query rows stay exactly
    the model's own. Calls whose image is not larger than the training size (in rows or columns) run the model's
    own attention unchanged: the window would cover the whole image there (noted in the stats once per pipeline
    call when the method never acted). For Flux 1 and 2, QwenImage and SD3 transformers; video models (Wan) use
    `freeswim`, which adds FreeSwim's full-attention branch and cross-attention override.

    Training sizes (pixels): Flux 1024x1024, Flux 2 1024x1024, SD3 1024x1024, QwenImage 1328x1328 (radius 32 tokens
    for the first three, 41 for QwenImage, at 16 pixels per token: the VAE's 8 times the 2x2 patch).

    Composition: the window always runs first in its layer's chain; block-sparse methods applied with it (Sparge,
    PSA, LiteAttention, `quantized`) refine its plan inside the window on the image keys, while the text keys stay
    dense. Radial (video only), PAB and FreeSwim do not combine with it.

    Args:
        base_height (`int`, *optional*):
            Training height in pixels that sets the window (radius = base_height / pixels per token / 2) and the
            temperature; by default the family's: 1024 (Flux, Flux 2, SD3) or 1328 (QwenImage). Give it with
            `base_width`.
        base_width (`int`, *optional*):
            Training width in pixels; by default the family's, as `base_height`.
        window_radius (`tuple[int, int]`, *optional*):
            Window radii `(rows, columns)` in tokens (each at least 1), overriding the ones from the base size.
        inward (`bool`, defaults to `True`):
            Clamp the window centre inside the image (FreeSwim); `False` truncates border windows.
        scale_factor (`float`, *optional*):
            Multiplier of the softmax scale of image queries (over image and text keys); by default FreeSwim's
            temperature of the base size (~1.041 for 64x64 tokens, ~1.038 for 83x83).
        min_tokens (`int`, defaults to `512`):
            Calls with fewer image tokens run the model's own attention (noted in the stats).
        token_order (`str`, defaults to `"tiles"`):
            `"tiles"`: image tokens in the 2-D tiles of one kernel block (8x16, 16x8, 4x32 or 32x4 for 128 tokens)
            under which the window touches the fewest key blocks; `"raster"`: the model's row-by-row order.
            Methods composed with the window adopt its order and block sizes.
        query_block (`int`, *optional*):
            Tokens per plan block and tile, 64 or 128 (default).
        precision (`str`, defaults to `"bf16"`):
            Arithmetic of the image-key tiles: `"bf16"` (the model's dtype), `"int8"` (INT8 Q.K, 16-bit P.V) or
            `"int8-fp8"` (also FP8 P.V; `"int8"` on GPUs without FP8). The text keys and text query rows stay in
            the model's dtype.
    """

    name = "window"
    description = "FreeSwim-style inward sliding-window attention for image transformers beyond their training size"
    category = "windows"
    implementation = "diffattn.processors.window:WindowMethod"
    tiny_models = ("flux", "flux2", "qwenimage", "sd3")
    tiny_settings = {"base_height": 32, "base_width": 32, "min_tokens": 1}
    incompatible = frozenset({"radial", "pab", "freeswim"})

    base_height: int | None = None
    base_width: int | None = None
    window_radius: tuple[int, int] | None = None
    inward: bool = True
    scale_factor: float | None = None

    def validate(self) -> None:
        super().validate()
        check_window_settings(self, lambda value: value >= 1, "a positive number of pixels")
