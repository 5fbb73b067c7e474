"""What every block-sparse method shares: the sparse view of an attention call, plan algebra, stats, fallbacks.

The sparse view. A self-attention or joint text+video call is rearranged once per call for the kernels:

- queries are the video tokens only, in the chosen token order (2x8x8 tiles by default, so that compact patterns
  fill whole blocks; see `geometry.TileOrder`);
- keys/values are the same video tokens followed by the call's text tokens (joint attention), with padded text
  tokens dropped (the key padding masks of HunyuanVideo and HunyuanVideo 1.5), so the block-sparse call needs no mask;
- text query rows (joint attention) are computed by the model's own SDPA call over all keys, so they are exactly
  the stock rows; text key columns are always kept in the plan. Text is a few hundred tokens against tens of
  thousands of video tokens, so keeping it dense costs little and keeps prompt conditioning intact.

The first active sparse method of a layer's chain builds the view (with its own token order and block sizes),
attaches its plan and proceeds; later methods see a call whose layout is a `SparseLayout` and intersect their plan
with the one attached (composition). After the chain has run, the view maps the output back to the model's token
order and records the density of the plan that ran. A batch whose samples have different text padding is split
into one view per sample.

Calls that cannot be made sparse run dense through the model's own path: cross-attention by design, and, noted
with the reason in the call's `dense_reasons` (counted in the stats and reported in the handle's one line per
pipeline call), sequences shorter than `min_tokens`, causal or masked calls other than a text key padding mask, and
calls already carrying a plan in another token order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from diffattn.configs.sparse import SPARSE_FAMILIES, BlockSparseConfig
from diffattn.errors import UnsupportedModelError
from diffattn.geometry import Grid, TileOrder
from diffattn.method import Target
from diffattn.plan import BlockPlan

from ..base import AttentionCall, AttentionMethod, Proceed, TokenLayout, kernel_options, merge_kernel_options

__all__ = [
    "SparseLayout",
    "BlockSparseMethod",
    "sparse_attend",
    "sparse_views",
    "attach_plan",
    "joint_plan",
    "force_text_columns",
    "dense_plan",
    "tile_order",
    "config_token_order",
    "OrderFn",
]

_VIDEO_KINDS = ("self", "joint")


# ------------------------------------------------------------------------------------------------ layout
@dataclass(frozen=True)
class SparseLayout(TokenLayout):
    """Layout of a call rearranged for block-sparse attention (kind `"sparse"`).

    Queries are the `grid.tokens` video tokens in `order` (raster when `None`); keys/values are the same video
    tokens followed by `text_keys` text tokens. `plans` collects, in chain order, the plans methods attached (the
    last one is what the kernel runs).
    """

    order: TileOrder | None = None
    text_keys: int = 0
    part: int | None = None
    """Sample index when a batch was split into one view per sample, else `None`."""
    block_q: int = 128
    block_k: int = 128
    plans: list[BlockPlan] = field(default_factory=list, compare=False, repr=False)

    @property
    def video_tokens(self) -> int:
        return self.grid.tokens

    @property
    def q_blocks(self) -> int:
        return math.ceil(self.video_tokens / self.block_q)

    @property
    def kv_blocks(self) -> int:
        return math.ceil((self.video_tokens + self.text_keys) / self.block_k)

    @property
    def video_kv_blocks(self) -> int:
        """Key blocks holding video tokens (the last may also hold text)."""
        return math.ceil(self.video_tokens / self.block_k)

    @property
    def first_text_block(self) -> int:
        """First key block that holds a text token (`kv_blocks` when there is no text)."""
        return self.video_tokens // self.block_k if self.text_keys else self.kv_blocks


_TILE_ORDERS: dict[tuple[Grid, tuple[int, int, int], torch.device], TileOrder] = {}
_DENSE_PLANS: dict[tuple[int, int, int, int, torch.device], BlockPlan] = {}
# plain dicts rather than functools caches: torch.compile traces dict lookups but breaks the graph on lru_cache


def tile_order(grid: Grid, tile: tuple[int, int, int], device: torch.device) -> TileOrder:
    """The (cached) tile permutation of a grid."""
    key = (grid, tile, device)
    if key not in _TILE_ORDERS:
        _TILE_ORDERS[key] = _new_tile_order(grid, tile, device)
    return _TILE_ORDERS[key]


@torch.compiler.disable  # built once per grid: kept out of compiled graphs
def _new_tile_order(grid: Grid, tile: tuple[int, int, int], device: torch.device) -> TileOrder:
    return TileOrder(grid, tile, device)


def _tile_shape(block_q: int) -> tuple[int, int, int]:
    """Tiles as large as a query block: 2x8x8 for 128 tokens, 1x8x8 for 64."""
    return (2, 8, 8) if block_q >= 128 else (1, 8, 8)


# ------------------------------------------------------------------------------------------- plan algebra
def force_text_columns(level_map: torch.Tensor, layout: SparseLayout) -> torch.Tensor:
    """Set every key block holding text to level 1 (text columns are always computed, at full resolution)."""
    if not layout.text_keys:
        return level_map
    text = torch.arange(level_map.shape[-1], device=level_map.device) >= layout.first_text_block
    return torch.where(text, 1, level_map)


def joint_plan(video_levels: torch.Tensor, layout: SparseLayout, levels: tuple[int, ...] = (1,)) -> BlockPlan:
    """The view's plan from a video x video level map (or bool mask) `[B|1, H|1, q_blocks, video_kv_blocks]`."""
    level_map = torch.nn.functional.pad(video_levels.to(torch.int32), (0, layout.kv_blocks - video_levels.shape[-1]))
    return BlockPlan.sync_free(force_text_columns(level_map, layout), layout.block_q, layout.block_k, levels)


def dense_plan(q_blocks: int, kv_blocks: int, block_q: int, block_k: int, device: torch.device) -> BlockPlan:
    """Every block, broadcast over batch and heads (cached: static)."""
    key = (q_blocks, kv_blocks, block_q, block_k, device)
    if key not in _DENSE_PLANS:
        _DENSE_PLANS[key] = BlockPlan.dense(q_blocks * block_q, kv_blocks * block_k, block_q, block_k, device=device)
    return _DENSE_PLANS[key]


def _is_dense_plan(plan: BlockPlan, device: torch.device) -> bool:
    """Whether `plan` is the cached plan of every block (`dense_plan`)."""
    key = (plan.num_q_blocks, plan.num_kv_blocks, plan.block_q, plan.block_k, device)
    return _DENSE_PLANS.get(key) is plan


def attach_plan(call: AttentionCall, plan: BlockPlan, **kernel_options: Any) -> AttentionCall:
    """The call with `plan` attached (intersected with a plan already there) and extra kernel keywords.

    A plan already there that lists every block (`dense_plan`, e.g. the "quantized" method's) is replaced rather
    than intersected: the intersection would be `plan` itself, at the cost of rebuilding it.
    """
    if call.plan is not None and not _is_dense_plan(call.plan, call.query.device):
        plan = call.plan & plan
    call.layout.plans.append(plan)
    return call.replace(plan=plan, kernel_options=merge_kernel_options(call.kernel_options, kernel_options))


# -------------------------------------------------------------------------------------------------- view
class _View(NamedTuple):
    call: AttentionCall
    restore: Callable[[torch.Tensor], torch.Tensor]


def _key_padding(call: AttentionCall) -> torch.Tensor | str | None:
    """The call's valid keys, bool `[B|1, S]`, from a key padding mask; `None` without a mask; else why not usable.

    Two forms are key padding: `[B, 1, 1, S]` (HunyuanVideo) and the `[B, 1, S, S]` outer product of token
    validity with itself (HunyuanVideo 1.5 masks padded query rows too: a padded text query sees nothing). The
    outer product is recognised exactly from reductions: a mask is `rows x columns` of its own row and column
    validity exactly when it holds as many entries as that product.
    """
    mask = call.attn_mask
    if mask is None:
        return None
    seq = call.key.shape[-2]
    shape_ok = mask.dtype == torch.bool and mask.ndim == 4 and mask.shape[1] == 1 and mask.shape[3] == seq
    if not shape_ok or mask.shape[2] not in (1, call.query.shape[-2]):
        return f"attention mask of shape {tuple(mask.shape)} and dtype {mask.dtype} is not a key padding mask"
    if mask.shape[2] == 1:
        valid = mask[:, 0, 0, :]
    else:
        rows, valid = mask[:, 0].any(-1), mask[:, 0].any(-2)
        product = rows.sum(-1) * valid.sum(-1)
        if not bool((mask[:, 0].sum((-2, -1)) == product).all()) or not bool(rows[:, call.layout.video].all()):
            return f"attention mask of shape {tuple(mask.shape)} is not a key padding mask"
    if call.layout.kind != "joint" or not bool(valid[:, call.layout.video].all()):
        return "the attention mask hides video tokens"
    return valid


def _dense_reason(call: AttentionCall, config: BlockSparseConfig) -> str | None:
    """Why this call stays dense: `None` if it can be made sparse, `""` when that is by design (no log line)."""
    layout = call.layout
    if layout.kind not in _VIDEO_KINDS or layout.grid is None or layout.frames_in_batch:
        return ""
    if call.plan is not None:
        return "a call already carries a block plan in another token order"
    if call.is_causal or call.dropout_p:
        return "causal or dropout attention is not supported by the block-sparse kernels"
    if layout.grid.tokens < config.min_tokens:
        return f"{layout.grid.tokens} video tokens are fewer than min_tokens={config.min_tokens}"
    return None


def _split_samples(call: AttentionCall, valid: torch.Tensor) -> list[AttentionCall] | None:
    """One call per sample when samples pad their text differently, else `None`."""
    if valid.shape[0] == 1 or bool((valid == valid[:1]).all()):
        return None
    return [
        call.replace(
            query=call.query[b : b + 1],
            key=call.key[b : b + 1],
            value=call.value[b : b + 1],
            attn_mask=call.attn_mask[b : b + 1],
        )
        for b in range(valid.shape[0])
    ]


def config_token_order(config: BlockSparseConfig, grid: Grid, device: torch.device) -> TileOrder | None:
    """The token order a config asks for: raster (`None`) or tiles as large as its query block."""
    return None if config.token_order == "raster" else tile_order(grid, _tile_shape(config.block_q), device)


OrderFn = Callable[[Grid, torch.device], TileOrder | None]
"""`(grid, device) -> token order of a view` (`None`: raster)."""


def _build_view(call: AttentionCall, config: BlockSparseConfig, valid: torch.Tensor | None, part: int | None,
                order_of: OrderFn | None) -> _View:
    """The sparse view of `call`; `valid` marks its valid keys (key padding mask) or is `None`; `order_of` picks the
    token order (by default the config's, `config_token_order`)."""
    layout = call.layout
    grid, video, text = layout.grid, layout.video, layout.text
    device = call.query.device
    order = order_of(grid, device) if order_of is not None else config_token_order(config, grid, device)

    def video_part(x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, video]
        return order.to_tiles(x) if order is not None else x

    key, value = video_part(call.key), video_part(call.value)
    text_keys = 0
    if text is not None:
        positions = torch.arange(call.key.shape[-2], device=device)[text]
        if valid is not None:
            positions = positions[valid[0, text]]
        text_keys = positions.numel()
        key = torch.cat([key, call.key.index_select(2, positions)], 2)
        value = torch.cat([value, call.value.index_select(2, positions)], 2)
    sparse_layout = SparseLayout(
        "sparse", slice(0, grid.tokens), grid, order=order, text_keys=text_keys, part=part,
        block_q=config.block_q, block_k=config.block_k,
    )
    sparse_call = call.replace(query=video_part(call.query), key=key, value=value, attn_mask=None, layout=sparse_layout)

    def restore(out: torch.Tensor) -> torch.Tensor:
        out = order.to_raster(out) if order is not None else out
        if text is None:
            return out
        rows = call if call.attn_mask is None or call.attn_mask.shape[-2] == 1 else call.replace(attn_mask=call.attn_mask[:, :, text])
        text_out = rows.dense(query=call.query[:, :, text])
        return torch.cat([text_out, out] if video.start > 0 else [out, text_out], 2)

    return _View(sparse_call, restore)


@torch.compiler.disable
def _record(call: AttentionCall) -> None:
    """Stats of the plan that ran: density, tiles and skipped tiles over batch x heads x blocks.

    Reading the counts synchronises with the device, so under `torch.compile` this runs outside the graph; turn
    stats off (`handle.stats.enabled = False`) for the fastest runs.
    """
    plans = call.layout.plans
    if not plans:
        return
    plan = plans[-1]
    batch, heads = call.query.shape[:2]
    pb, ph = plan.kv_counts.shape[:2]
    tiles = batch * heads * plan.num_q_blocks * plan.num_kv_blocks
    computed = int(plan.block_counts().sum()) * (batch // pb) * (heads // ph)
    call.record(density=computed / tiles, tiles=tiles, skipped_tiles=tiles - computed)


def sparse_views(call: AttentionCall, config: BlockSparseConfig, order_of: OrderFn | None = None) -> list[_View] | str:
    """The sparse views of a call (one per sample when samples pad their text differently), or the reason it
    stays dense (`""` when that is by design, e.g. cross-attention); `order_of` picks their token order (by default
    the config's)."""
    reason = _dense_reason(call, config)
    if reason is not None:
        return reason
    valid = _key_padding(call)
    if isinstance(valid, str):
        return valid
    samples = _split_samples(call, valid) if valid is not None else None
    if samples is None:
        return [_build_view(call, config, valid, None, order_of)]
    return [_build_view(sample, config, valid[b : b + 1], b, order_of) for b, sample in enumerate(samples)]


def sparse_attend(method: BlockSparseMethod, call: AttentionCall, proceed: Proceed) -> torch.Tensor:
    """Run `call` through `method` on its sparse view (see the module docstring), or dense when it cannot be sparse."""
    if isinstance(call.layout, SparseLayout):
        return proceed(method.refine(call))
    views = sparse_views(call, method.config, method.view_order)
    if isinstance(views, str):
        call.dense_reasons[method.name] = views
        return proceed(call)
    # The first view outside any loop: a graph break inside a loop (a static plan built on first use) makes
    # torch.compile give up on the whole frame; only batches split by text padding have more views.
    first, *others = views
    outputs = [_attend_view(method, first, call.stats.enabled, proceed)]
    for view in others:
        outputs.append(_attend_view(method, view, call.stats.enabled, proceed))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, 0)


def _attend_view(method: BlockSparseMethod, view: _View, record: bool, proceed: Proceed) -> torch.Tensor:
    out = method.attend_view(view.call, proceed)
    if record:
        _record(view.call)
    return view.restore(out)


# ------------------------------------------------------------------------------------------------ method
class BlockSparseMethod(AttentionMethod):
    """Base of the block-sparse methods: dense steps pass through; active calls go through `sparse_attend`.

    Subclasses implement `refine(call)`, which receives a call on the sparse view and returns it with their plan
    attached (`attach_plan`), building the plan with the view's block sizes (`call.layout.block_q/block_k`).
    """

    config: BlockSparseConfig

    def __init__(self, config: BlockSparseConfig, target: Target) -> None:
        super().__init__(config, target)
        if target.family.name not in SPARSE_FAMILIES:
            raise UnsupportedModelError(
                f"{config.name} is for diffusion transformers ({', '.join(SPARSE_FAMILIES)}); "
                f"{type(target.model).__name__} is a {target.family.name} model. Use it on one of those families"
            )

    def attend(self, call: AttentionCall, proceed: Proceed) -> torch.Tensor:
        if not self.active(call):
            return proceed(call)
        return sparse_attend(self, call, proceed)

    def refine(self, call: AttentionCall) -> AttentionCall:
        """Attach this method's plan to a call on the sparse view."""
        raise NotImplementedError

    def view_order(self, grid: Grid, device: torch.device) -> TileOrder | None:
        """The token order of the views this method builds (`None`: raster); by default the config's."""
        return config_token_order(self.config, grid, device)

    def attend_view(self, call: AttentionCall, proceed: Proceed) -> torch.Tensor:
        """The attention output of a view this method built (video queries in the view's order): by default the rest
        of the chain on the call with this method's plan attached."""
        return proceed(self.refine(call))

    def kernel_options(self) -> dict[str, Any]:
        """Keywords for `block_sparse_attention` common to every call (backend when named, 8-bit precision)."""
        return kernel_options(self.config)
