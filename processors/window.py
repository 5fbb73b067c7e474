"""The `window` method: FreeSwim's inward sliding window on the joint attention of image transformers.

Each joint text+image call is taken apart on the sparse view of `processors.sparse` (image queries in a 2-D tile
order chosen for the window, keys = image tokens then valid text tokens, text query rows the model's own SDPA
call), and the image queries' attention over the union of their window's image keys and every text key is computed
exactly in two parts merged by their log-sum-exps:

- image keys: `block_sparse_attention` with the window plan (`diffattn.patterns.windows`, exact token edges) through
  the rest of the layer's chain, so block-sparse methods applied with the window intersect their plans with it;
- text keys (a few hundred): every block, in one more kernel call (same backend; always in the model's dtype, as
  text query rows are: an 8-bit `precision` applies to the image-key tiles);
- softmax over the union = `out_i * exp(lse_i - lse) + out_t * exp(lse_t - lse)`, `lse = logaddexp(lse_i, lse_t)`.

Both parts use the same logit scale, the model's times FreeSwim's temperature.
"""

from __future__ import annotations

from typing import Any

import torch

from diffattn.configs.window import IMAGE_BASE_SIZES, WindowConfig
from diffattn.errors import ConfigError, GridError, UnsupportedModelError
from diffattn.geometry import Grid, TileOrder
from diffattn.kernels import SparseAttentionOutput
from diffattn.method import Target
from diffattn.patterns.windows import WindowTileOrders, attention_temperature, window_plan, window_radius_from_base
from diffattn.plan import BlockPlan

from .base import AttentionCall, Proceed, execute, merge_kernel_options
from .sparse.common import BlockSparseMethod, SparseLayout, dense_plan, sparse_attend

__all__ = ["WindowMethod", "image_pixels_per_token", "merge_by_lse"]

_PACKED_BY_PIPELINE = {"flux": 2, "flux2": 2}
"""Families whose pipelines pack 2x2 latent pixels into one token before the transformer (its `patch_size` is 1)."""
_DEFAULT_VAE_SCALE = 8
"""The VAE downscale of all four image families (their pipelines' own fallback when no VAE is loaded)."""


def image_pixels_per_token(model: torch.nn.Module, family: str, pipeline: Any | None = None) -> int:
    """Pixels per image token on each axis: the pipeline's VAE downscale times the transformer's patch (or the 2x2
    packing the Flux pipelines do themselves)."""
    vae = getattr(pipeline, "vae_scale_factor", None)
    vae = vae if isinstance(vae, int) else _DEFAULT_VAE_SCALE
    patch = _PACKED_BY_PIPELINE.get(family) or int(getattr(model.config, "patch_size", 1) or 1)
    return vae * patch


class WindowMethod(BlockSparseMethod):
    """Inward window over the image keys plus every text key, at FreeSwim's temperature (see the module docstring).

    First in each chain (`chain_first`): it builds the sparse view, and methods after it see the image-key part
    (a `SparseLayout` without text keys, in the window's tile order, with the window plan attached) and intersect.
    """

    config: WindowConfig
    chain_first = True

    def __init__(self, config: WindowConfig, target: Target) -> None:
        family = target.family.name
        if family not in IMAGE_BASE_SIZES:
            raise UnsupportedModelError(
                f"window is for image transformers ({', '.join(IMAGE_BASE_SIZES)}); {type(target.model).__name__} is a "
                f"{family} model. For high-resolution video use 'freeswim' (Wan text-to-video)"
            )
        super().__init__(config, target)
        pixels = image_pixels_per_token(target.model, family, target.pipeline)
        base = (config.base_height, config.base_width) if config.base_height else IMAGE_BASE_SIZES[family]
        self.base_grid = (base[0] // pixels, base[1] // pixels)
        if min(self.base_grid) < 2 and config.window_radius is None:
            raise ConfigError(
                f"window: a base size of {base[0]}x{base[1]} px is {self.base_grid[0]}x{self.base_grid[1]} tokens at "
                f"{pixels} px per token, too small for a window radius of at least 1; give base_height and base_width "
                f"of at least {2 * pixels} px, or window_radius"
            )
        radius = config.window_radius or window_radius_from_base(base[0], base[1], (pixels, pixels))
        self.radius: tuple[int, int] = (radius[0], radius[1])
        self.temperature = config.scale_factor or attention_temperature(self.base_grid[0] * self.base_grid[1])
        self._orders = WindowTileOrders(self.radius, config.block_q, inward=config.inward)
        self._plans: dict[tuple, BlockPlan] = {}

    def on_remove(self) -> None:
        self._orders.clear()
        self._plans.clear()

    # ---------------------------------------------------------------------------------------- attention
    def attend(self, call: AttentionCall, proceed: Proceed) -> torch.Tensor:
        if not self.active(call):
            return proceed(call)
        if isinstance(call.layout, SparseLayout):
            raise GridError(f"{call.layer.name}: the window must build the sparse view itself (it runs first in a chain)")
        grid = call.layout.grid
        if grid is not None and call.layout.kind in ("self", "joint") and not self._beyond_base(grid):
            call.dense_reasons[self.name] = (
                f"the {grid.height}x{grid.width}-token image is not larger than the base size "
                f"({self.base_grid[0]}x{self.base_grid[1]} tokens), where the window covers it: the model's own attention"
            )
            return proceed(call)
        return sparse_attend(self, call, proceed)

    def _beyond_base(self, grid: Grid) -> bool:
        return grid.height > self.base_grid[0] or grid.width > self.base_grid[1]

    def attend_view(self, call: AttentionCall, proceed: Proceed) -> torch.Tensor:
        """Image queries (in the view's order) over their window's image keys and every text key, merged exactly."""
        layout: SparseLayout = call.layout
        grid, tokens = layout.grid, layout.grid.tokens
        scale = (call.scale if call.scale is not None else call.query.shape[-1] ** -0.5) * self.temperature
        options = merge_kernel_options(call.kernel_options, self.kernel_options())
        plan = self._plan(grid, call.query.device, layout.block_q, layout.block_k, layout.order)
        image_layout = SparseLayout("sparse", slice(0, tokens), grid, order=layout.order, part=layout.part,
                                    block_q=layout.block_q, block_k=layout.block_k, plans=[plan])
        image_out, image_lse = _with_lse(proceed, call.replace(
            key=call.key[:, :, :tokens], value=call.value[:, :, :tokens], scale=scale, layout=image_layout, plan=plan,
            kernel_options=options,
        ))
        layout.plans.append(image_layout.plans[-1])  # the plan that ran, for the view's density
        if image_lse is None:
            raise GridError(
                f"{call.layer.name}: the window's image-key attention did not come back from the block-sparse kernel "
                "(a method after it in the chain replaced the kernel call); apply the window without that method"
            )
        if not layout.text_keys:
            return image_out
        text_blocks = -(-layout.text_keys // layout.block_k)
        text_plan = dense_plan(layout.q_blocks, text_blocks, layout.block_q, layout.block_k, call.query.device)
        text_options = {name: value for name, value in options.items() if name != "precision"}  # the model's dtype
        text_out, text_lse = _with_lse(execute, call.replace(
            key=call.key[:, :, tokens:], value=call.value[:, :, tokens:], scale=scale, plan=text_plan,
            kernel_options=text_options, on_kernel_result=[],
        ))
        return merge_by_lse(image_out, image_lse, text_out, text_lse)

    # ------------------------------------------------------------------------------------ static parts
    def view_order(self, grid: Grid, device: torch.device) -> TileOrder | None:
        """The window's tile order (`window_tile_order`: 2-D tiles on images), or raster with `token_order="raster"`."""
        return None if self.config.token_order == "raster" else self._orders(grid, device)

    def _plan(self, grid: Grid, device: torch.device, block_q: int, block_k: int, order: TileOrder | None) -> BlockPlan:
        key = (grid, device, block_q, block_k, None if order is None else order.tile)
        if key not in self._plans:
            self._plans[key] = self._build_plan(grid, block_q, block_k, order)
        return self._plans[key]

    @torch.compiler.disable  # once per grid, reads sizes back to the host: never part of a compiled graph
    def _build_plan(self, grid: Grid, block_q: int, block_k: int, order: TileOrder | None) -> BlockPlan:
        return window_plan(grid, self.radius, inward=self.config.inward, block_q=block_q, block_k=block_k, order=order)


def _with_lse(run: Proceed, call: AttentionCall) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`run(call)` with the kernel asked for its log-sum-exp: the output and the lse (None when no kernel ran)."""
    results: list[SparseAttentionOutput] = []
    out = run(call.replace(kernel_options={**call.kernel_options, "return_lse": True},
                           on_kernel_result=[*call.on_kernel_result, results.append]))
    return out, (results[-1].lse if results else None)


def merge_by_lse(out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor) -> torch.Tensor:
    """Attention over the union of two disjoint key sets from each set's output and natural-log log-sum-exp
    (`[B, H, q]`): the softmax weights of each part rescaled to the union's normaliser, in float32."""
    lse = torch.logaddexp(lse_a, lse_b)
    merged = out_a.float() * torch.exp(lse_a - lse)[..., None] + out_b.float() * torch.exp(lse_b - lse)[..., None]
    return merged.to(out_a.dtype)
