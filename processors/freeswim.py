"""FreeSwim attention for Wan transformers: window branch, full branch, cross-attention override and its cache.

What one denoiser call does is decided just before it by the `FreeSwimController`, from the run context the
root hook publishes (step index, CFG branch, phase); the denoising loop drives it simply by calling the model:

- **window only**: every self-attention is the inward window (`diffattn.patterns.windows`) at the FreeSwim temperature,
  on tile-permuted q/k/v through `diffattn.kernels.block_sparse_attention`; cross-attention is the model's own
  (unconditional pass) or the full branch's cached output (conditional pass between two refreshes);
- **dual**: the block stack runs on a doubled batch `[window rows; full rows]`: the residual stream is copied
  before the first block and only the window rows leave the last one, so callers see their usual batch and the
  latent the scheduler steps is the window branch's, as in the paper. Full rows use dense self-attention at the
  same temperature; cross-attention is computed on the full rows' queries only and given to both halves (and
  stored when it is to be reused).

Faithfulness: this follows the released code (WillWu111/FreeSwim, cache and no-cache modes). Two deliberate
differences, neither changing the output: in cache mode the batch is doubled only on the calls that compute the
full branch (the paper doubles it on every call, but on the others both rows are provably identical), and the
window is evaluated in spatio-temporal tile order with exact token edges instead of a raster FlexAttention mask.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook

from diffattn.config import Phase
from diffattn.configs.freeswim import FreeSwimConfig
from diffattn.context import LayerInfo, RunContext
from diffattn.errors import ConfigError, GridError, UnsupportedModelError
from diffattn.geometry import Grid, TileOrder, bind_forward_args
from diffattn.method import Target
from diffattn.patterns.windows import WindowTileOrders, attention_temperature, window_plan, window_radius_from_base
from diffattn.plan import BlockPlan

from .base import AttentionCall, AttentionMethod, Proceed, kernel_options, merge_kernel_options
from .sparse.common import SparseLayout

__all__ = [
    "NATIVE_BASE_SIZES",
    "CallMode",
    "CrossAttentionCache",
    "FreeSwimController",
    "FreeSwimMethod",
    "check_wan_text_to_video",
    "native_base_size",
    "pixels_per_token",
]

NATIVE_BASE_SIZES: dict[int, tuple[int, int]] = {1536: (480, 832), 5120: (720, 1280)}
"""Native (height, width) in pixels of Wan2.1 text-to-video models, keyed by the transformer's inner dim
(1536: 1.3B, 5120: 14B)."""

_WAN_VAE_SCALE = 8
_DOUBLE_HOOK = "diffattn::freeswim::double-batch"
_KEEP_HOOK = "diffattn::freeswim::keep-window-rows"
_CHUNK_HOOK = "diffattn::freeswim::ffn-chunks"
_PER_BLOCK_ARGS = ("encoder_hidden_states", "temb")


# ------------------------------------------------------------------------------------------ model facts
def check_wan_text_to_video(model: torch.nn.Module) -> None:
    """Raise `UnsupportedModelError` unless `model` is a Wan text-to-video transformer with a block stack."""
    if "WanTransformer3DModel" not in {cls.__name__ for cls in type(model).__mro__}:
        raise UnsupportedModelError(
            f"FreeSwim needs a Wan text-to-video transformer (WanTransformer3DModel); got {type(model).__name__}. "
            "Load a Wan2.1 T2V pipeline, e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
        )
    if getattr(model.config, "added_kv_proj_dim", None) is not None or getattr(model.config, "image_dim", None):
        raise UnsupportedModelError(
            "FreeSwim supports Wan text-to-video transformers; this one takes image conditioning (image-to-video)"
        )
    if not isinstance(getattr(model, "blocks", None), torch.nn.ModuleList) or len(model.blocks) == 0:
        raise UnsupportedModelError(f"{type(model).__name__} has no transformer blocks to run the dual path on")


def native_base_size(model: torch.nn.Module) -> tuple[int, int]:
    """The native (height, width) in pixels of a Wan2.1 transformer; other sizes must be given explicitly."""
    inner = model.config.num_attention_heads * model.config.attention_head_dim
    if inner not in NATIVE_BASE_SIZES:
        raise ConfigError(
            f"FreeSwim does not know the native resolution of this Wan transformer (inner dim {inner}); set "
            "base_height and base_width in pixels, e.g. FreeSwimConfig(base_height=480, base_width=832)"
        )
    return NATIVE_BASE_SIZES[inner]


def pixels_per_token(model: torch.nn.Module, pipeline: Any | None = None) -> tuple[int, int]:
    """Pixels per latent token (rows, columns): the VAE's spatial factor times the transformer's patch."""
    scale = int(getattr(pipeline, "vae_scale_factor_spatial", _WAN_VAE_SCALE))
    _, patch_h, patch_w = model.config.patch_size
    return scale * patch_h, scale * patch_w


# ------------------------------------------------------------------------------------------ cache
class CrossAttentionCache:
    """The full branch's cross-attention outputs kept between steps, one per block, on the device or offloaded.

    Offloaded, each output is copied into a host buffer on a side stream, and reading block `i` starts the copy of
    block `i + 1` back to its device on that stream, so it overlaps block `i`'s compute; the reader's stream waits
    for the copy before using it. Host buffers of CUDA outputs are page-locked in place (`cudaHostRegister`, exactly
    their size: torch's pinned allocator rounds each up to a power of two), made once per block and kept across
    refreshes and runs until `release()`; `pin_seconds` is the time spent making them. On the CPU both copies are
    plain synchronous copies and the prefetch logic is the same. `prefetch_hits` counts reads served by a prefetch.
    """

    def __init__(self, offload: bool) -> None:
        self.offload = offload
        self.prefetch_hits = 0
        self.pin_seconds = 0.0
        self._host: dict[tuple[str, int], torch.Tensor] = {}
        self._registered: set[tuple[str, int]] = set()
        self._stored: dict[tuple[str, int], torch.Tensor] = {}
        self._order: list[tuple[str, int]] = []
        self._ahead: dict[tuple[str, int], tuple[torch.Tensor, Any]] = {}
        self._streams: dict[torch.device, Any] = {}

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._stored

    def _side_stream(self, device: torch.device) -> Any:
        """The copy stream of a CUDA device; None on other devices (copies are synchronous there)."""
        if device.type != "cuda":
            return None
        if device not in self._streams:
            self._streams[device] = torch.cuda.Stream(device)
        return self._streams[device]

    def store(self, key: tuple[str, int], output: torch.Tensor) -> None:
        """Keep `output` (a device tensor the caller may free right after) for the following calls."""
        output = output.detach()
        self._ahead.pop(key, None)
        if key not in self._stored:
            self._order.append(key)
        if not self.offload:
            self._stored[key] = output
            return
        host = self._host.get(key)
        if host is None or host.shape != output.shape or host.dtype != output.dtype:
            self._unpin(key)
            host = self._host[key] = self._new_host_buffer(key, output)
        self._stored[key] = host
        stream = self._side_stream(output.device)
        if stream is None:
            host.copy_(output)
            return
        stream.wait_stream(torch.cuda.current_stream(output.device))
        with torch.cuda.stream(stream):
            host.copy_(output, non_blocking=True)
        output.record_stream(stream)  # the allocator must not reuse it before the copy ends

    def load(self, key: tuple[str, int], device: torch.device) -> torch.Tensor:
        """The output stored under `key`, on `device`; starts the copy of the next block's output."""
        stored = self._stored[key]
        if not self.offload:
            return stored.to(device)
        ahead = self._ahead.pop(key, None)
        if ahead is None:
            stream = self._side_stream(device)
            if stream is not None:  # the copy into the host buffer may still be running on the side stream
                torch.cuda.current_stream(device).wait_stream(stream)
            output = stored.to(device)
        else:
            output, ready = ahead
            self.prefetch_hits += 1
            if ready is not None:
                torch.cuda.current_stream(device).wait_event(ready)
        following = self._order[(self._order.index(key) + 1) % len(self._order)]
        if following != key and following not in self._ahead:
            self._ahead[following] = self._fetch(self._stored[following], device)
        return output

    def _fetch(self, host: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, Any]:
        """Start copying `host` to `device`: the device tensor and the event that marks the copy's end (None: done)."""
        stream = self._side_stream(device)
        if stream is None:
            return host.to(device, copy=True), None
        target = torch.empty(host.shape, dtype=host.dtype, device=device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            target.copy_(host, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(stream)
        target.record_stream(stream)  # dropped early (a refresh replaced it), it must outlive the copy
        return target, ready

    def _new_host_buffer(self, key: tuple[str, int], output: torch.Tensor) -> torch.Tensor:
        if not output.is_cuda:
            return torch.empty(output.shape, dtype=output.dtype)
        started = time.perf_counter()
        host = torch.empty(output.shape, dtype=output.dtype)
        try:
            torch.cuda.check_error(torch.cuda.cudart().cudaHostRegister(host.data_ptr(), host.nbytes, 0))
            self._registered.add(key)
        except RuntimeError:  # registration refused: torch's pinned allocator (rounded up) instead
            host = torch.empty(output.shape, dtype=output.dtype, pin_memory=True)
        self.pin_seconds += time.perf_counter() - started
        return host

    def _unpin(self, key: tuple[str, int]) -> None:
        host = self._host.pop(key, None)
        if host is not None and key in self._registered:
            self._registered.discard(key)
            torch.cuda.synchronize()  # no copy may still use it
            torch.cuda.check_error(torch.cuda.cudart().cudaHostUnregister(host.data_ptr()))

    def clear(self) -> None:
        """Forget the stored outputs (a new run starts); the host buffers stay for the next run."""
        self._stored.clear()
        self._order.clear()
        self._ahead.clear()

    def release(self) -> None:
        """Forget everything and unlock the host buffers (FreeSwim is removed)."""
        self.clear()
        for key in list(self._host):
            self._unpin(key)


# ------------------------------------------------------------------------------------------ controller
@dataclass(frozen=True)
class CallMode:
    """What FreeSwim does in one denoiser call.

    Args:
        active (`bool`): FreeSwim acts at all (False in the config's dense steps).
        dual (`bool`): the block stack runs on `[window rows; full rows]`.
        store (`bool`): the full branch's cross-attention outputs are cached for the next calls.
        reuse (`bool`): cross-attention is replaced by the cached full-branch outputs.
    """

    active: bool = False
    dual: bool = False
    store: bool = False
    reuse: bool = False


def is_conditional(ctx: RunContext) -> bool:
    """Whether this call is the conditional pass: the named CFG branch, else the first call of the step
    (diffusers' Wan pipelines always run the conditional pass first)."""
    if ctx.cfg_branch in ("cond", "uncond"):
        return ctx.cfg_branch == "cond"
    return ctx.call_in_step == 0


class FreeSwimController:
    """Per-call state shared by one transformer's FreeSwim processors, and the cross-attention cache.

    `begin_call(ctx, active)` runs before every denoiser call (a listener of the root hook): a new run clears the
    cache; with `cache_steps` set, the conditional pass refreshes the full branch when `cache_steps` steps have
    passed since the last refresh (steps 0, k, 2k, ... from the first active step) and reuses it otherwise, and
    the unconditional pass is window-only; with `cache_steps=None` every call is dual. `counts` tallies what ran.
    With `sequential` set, a dual call runs each block once per branch (`branch` names the one running: "full",
    then "window"), and the full branch's cross-attention output waits in `pending` for the window branch.
    """

    def __init__(self, cache_steps: int | None, offload_cache: bool = False, sequential: bool = False) -> None:
        self.cache_steps = cache_steps
        self.sequential = sequential
        self.mode = CallMode()
        self.batch = 0
        self.branch: str | None = None
        self.pending: dict[tuple[str, int], torch.Tensor] = {}
        self.counts: Counter[str] = Counter()
        self.cache = CrossAttentionCache(offload_cache)
        self._run: int | None = None
        self._last_refresh: int | None = None

    def begin_call(self, ctx: RunContext, active: bool) -> CallMode:
        """Decide and publish the mode of the denoiser call described by `ctx`."""
        if ctx.run_index != self._run:
            self.reset()
            self._run = ctx.run_index
        self.batch = int(ctx.batch or 0)
        if not active:
            mode = CallMode()
        elif self.cache_steps is None:
            mode = CallMode(active=True, dual=True)
        elif not is_conditional(ctx):
            mode = CallMode(active=True)
        elif self._last_refresh is None or ctx.step_index - self._last_refresh >= self.cache_steps:
            self._last_refresh = ctx.step_index
            mode = CallMode(active=True, dual=True, store=self.cache_steps > 1)
        else:
            mode = CallMode(active=True, reuse=True)
        self.mode = mode
        return mode

    def store(self, key: tuple[str, int], output: torch.Tensor) -> None:
        """Keep a full-branch cross-attention output `[B, H, tokens, D]` for the following calls."""
        self.cache.store(key, output)

    def cached(self, key: tuple[str, int], shape: torch.Size, device: torch.device) -> torch.Tensor:
        """The stored output for `key` on `device`; it must have the `shape` the current call produces."""
        if key not in self.cache:
            raise GridError(
                f"no cached FreeSwim cross-attention for {key[0]}: the conditional pass reuses the output of the last "
                "refresh step, which did not run in this denoising run; start a new run (e.g. call the pipeline again)"
            )
        output = self.cache.load(key, device)
        if output.shape != shape:
            raise GridError(
                f"cached cross-attention of {key[0]} has shape {tuple(output.shape)} but this call needs "
                f"{tuple(shape)}: the latent size or batch changed within one denoising run"
            )
        return output

    def reset(self) -> None:
        """Forget the cache and the refresh schedule (a new run starts)."""
        self.cache.clear()
        self.pending.clear()
        self.branch = None
        self._last_refresh = None
        self.mode = CallMode()


class _DoubleBatch(ModelHook):
    """Before the first block of a dual call the residual stream becomes `[x; x]`. Batched, before each block the
    text and time embeddings it gets do too (the model passes every block the same batch-`B` tensors); sequential,
    each block runs on the full rows, then on the window rows, with the embeddings as they are."""

    def __init__(self, controller: FreeSwimController, first: bool) -> None:
        super().__init__()
        self.controller = controller
        self.first = first

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        if not self.controller.mode.dual:
            return args, kwargs
        names = () if self.controller.sequential else _PER_BLOCK_ARGS
        bound = bind_forward_args(module, args, kwargs)
        for name in ("hidden_states", *names) if self.first else names:
            bound[name] = torch.cat([bound[name], bound[name]])
        return (), bound

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        forward = self.fn_ref.original_forward
        controller = self.controller
        if not (controller.mode.dual and controller.sequential):
            return forward(*args, **kwargs)
        bound = bind_forward_args(module, args, kwargs)
        hidden, rows = bound.pop("hidden_states"), controller.batch
        try:
            controller.branch = "full"
            full = forward(hidden_states=hidden[rows:], **bound)
            controller.branch = "window"
            window = forward(hidden_states=hidden[:rows], **bound)
        finally:
            controller.branch = None
            controller.pending.clear()
        return torch.cat([window, full])


class _TokenChunks(ModelHook):
    """Runs a token-wise module (a block's feed-forward) on chunks of `size` tokens of its `[B, S, D]` input,
    writing into one output tensor: its hidden activations are never held for all tokens at once."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def new_forward(self, module: torch.nn.Module, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        forward = self.fn_ref.original_forward
        tokens = hidden_states.shape[1]
        if tokens <= self.size:
            return forward(hidden_states, *args, **kwargs)
        first = forward(hidden_states[:, : self.size], *args, **kwargs)
        output = first.new_empty((first.shape[0], tokens, *first.shape[2:]))
        output[:, : self.size] = first
        del first
        for start in range(self.size, tokens, self.size):
            output[:, start : start + self.size] = forward(hidden_states[:, start : start + self.size], *args, **kwargs)
        return output


class _KeepWindowRows(ModelHook):
    """After the last block of a dual call: only the window rows go on (the latent the scheduler steps)."""

    def __init__(self, controller: FreeSwimController) -> None:
        super().__init__()
        self.controller = controller

    def post_forward(self, module: torch.nn.Module, output: torch.Tensor) -> torch.Tensor:
        return output[: self.controller.batch] if self.controller.mode.dual else output


def _first_rows(plan: BlockPlan, rows: int) -> BlockPlan:
    """`plan` restricted to the first `rows` batch rows (a per-sample plan built over a dual call's whole batch)."""
    if plan.kv_indices.shape[0] == 1:
        return plan
    return dataclasses.replace(plan, kv_indices=plan.kv_indices[:rows], kv_counts=plan.kv_counts[:rows])


# -------------------------------------------------------------------------------------------- method
class FreeSwimMethod(AttentionMethod):
    """Inward window self-attention, dual-path cross-attention override and its cache (see the module docstring).

    Composes with block-sparse methods (Sparge, LiteAttention, ...) inside the window, by plan intersection on
    the block-sparse view of `processors.sparse` (`SparseLayout`): listed after FreeSwim, they get the window call
    with q/k/v in FreeSwim's tile order and the window plan attached; listed before, FreeSwim builds its window in
    their view's token order and block sizes and intersects. A raster-order plan from any other method is
    intersected with a raster-order window. Exact window edges (the plan's `BoxMask`) survive every intersection.
    The full branch stays dense, as in the paper.
    """

    def __init__(self, config: FreeSwimConfig, target: Target) -> None:
        super().__init__(config, target)
        model = target.model
        check_wan_text_to_video(model)
        self.radius: tuple[int, int]
        self.temperature: float
        if config.window_radius is not None and config.scale_factor is not None:
            self.radius, self.temperature = (config.window_radius[0], config.window_radius[1]), config.scale_factor
        else:
            base = (config.base_height, config.base_width) if config.base_height else native_base_size(model)
            per_token = pixels_per_token(model, target.pipeline)
            radius = config.window_radius if config.window_radius is not None else window_radius_from_base(*base, per_token)
            self.radius = (radius[0], radius[1])
            base_tokens = (base[0] // per_token[0]) * (base[1] // per_token[1])
            self.temperature = config.scale_factor if config.scale_factor is not None else attention_temperature(base_tokens)
        self.memory = config.memory_plan
        self.controller = FreeSwimController(config.cache_steps, self.memory.offload_cache, self.memory.sequential_branches)
        self._kernel_options = kernel_options(config)
        self._orders = WindowTileOrders(self.radius, config.block_size, inward=config.inward)
        self._plans: dict[tuple, tuple[BlockPlan, float]] = {}
        self._hooked: list[tuple[torch.nn.Module, str]] = []

    # ---------------------------------------------------------------------------------- lifecycle
    def on_install(self, layers: list[LayerInfo]) -> None:
        blocks = self.target.model.blocks
        hooks = [(block, _DOUBLE_HOOK, _DoubleBatch(self.controller, first=i == 0)) for i, block in enumerate(blocks)]
        hooks.append((blocks[-1], _KEEP_HOOK, _KeepWindowRows(self.controller)))
        if self.memory.ffn_chunk_tokens:
            hooks += [(block.ffn, _CHUNK_HOOK, _TokenChunks(self.memory.ffn_chunk_tokens)) for block in blocks]
        for module, name, hook in hooks:
            HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
            self._hooked.append((module, name))
        self.target.listeners.append(self._begin_call)

    def on_remove(self) -> None:
        if self._begin_call in self.target.listeners:
            self.target.listeners.remove(self._begin_call)
        for module, name in reversed(self._hooked):
            module._diffusers_hook.remove_hook(name, recurse=False)
        self._hooked.clear()
        self._orders.clear()
        self._plans.clear()
        self.controller.reset()
        self.controller.cache.release()

    def _begin_call(self, ctx: RunContext) -> None:
        self.controller.begin_call(ctx, active=ctx.phase(self.name) is Phase.ACTIVE)

    # ---------------------------------------------------------------------------------- attention
    def attend(self, call: AttentionCall, proceed: Proceed) -> torch.Tensor:
        mode = self.controller.mode
        if not mode.active:
            return proceed(call)
        if call.layer.role == "cross":
            return self._cross_attention(call, proceed, mode)
        if (call.layout.kind == "self" or isinstance(call.layout, SparseLayout)) and call.layout.grid is not None:
            return self._self_attention(call, proceed, mode)
        return proceed(call)

    def _rows(self, call: AttentionCall, mode: CallMode) -> int:
        """How many leading rows of the call are window rows (all of them unless the call is dual; in a sequential
        dual call, all of them on the window branch and none on the full branch)."""
        branch = self.controller.branch
        if not mode.dual or branch == "window":
            return call.query.shape[0]
        if branch == "full":
            return 0
        if call.query.shape[0] != 2 * self.controller.batch:
            raise GridError(
                f"{call.layer.name}: a dual FreeSwim call should hold 2 x {self.controller.batch} rows, got "
                f"{call.query.shape[0]}; another hook changed the batch between the model input and its blocks"
            )
        return self.controller.batch

    def _self_attention(self, call: AttentionCall, proceed: Proceed, mode: CallMode) -> torch.Tensor:
        scale = (call.scale if call.scale is not None else call.query.shape[-1] ** -0.5) * self.temperature
        rows = self._rows(call, mode)
        q, k, v = call.query, call.key, call.value
        parts = []
        if rows:
            parts.append(self._window_attention(call.replace(query=q[:rows], key=k[:rows], value=v[:rows], scale=scale), proceed))
        if rows < q.shape[0]:
            parts.append(call.replace(scale=scale).dense(q[rows:], k[rows:], v[rows:]))
            self.controller.counts["full_self_attention"] += 1
            call.record(full_branch_calls=1)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _window_attention(self, call: AttentionCall, proceed: Proceed) -> torch.Tensor:
        """The window branch; joins a block-sparse view built before FreeSwim, or builds one for later methods."""
        device = call.query.device
        options = merge_kernel_options(self._kernel_options, call.kernel_options)
        self.controller.counts["window_attention"] += 1
        layout = call.layout
        if isinstance(layout, SparseLayout):  # a block-sparse method ran first: its token order, its block sizes
            if layout.text_keys:
                raise GridError(f"{call.layer.name}: FreeSwim windows video-only self-attention; this call has text keys")
            mine, _ = self._plan(layout.grid, device, layout.block_q, layout.block_k, layout.order)
            plan = mine & _first_rows(call.plan, call.query.shape[0]) if call.plan is not None else mine
            layout.plans.append(plan)
            return proceed(call.replace(plan=plan, kernel_options=options))
        grid = layout.grid
        if call.plan is not None:  # a method before FreeSwim planned on raster tokens: intersect in raster order
            mine, density = self._plan(grid, device, call.plan.block_q, call.plan.block_k, None)
            call.record(density=density)
            return proceed(call.replace(plan=mine & call.plan, kernel_options=options))
        size = self.config.block_size
        order = self._orders(grid, device)
        plan, density = self._plan(grid, device, size, size, order)
        view = SparseLayout("sparse", slice(0, grid.tokens), grid, order=order, block_q=size, block_k=size, plans=[plan])
        tiled = call.replace(
            query=order.to_tiles(call.query), key=order.to_tiles(call.key), value=order.to_tiles(call.value),
            layout=view, plan=plan, kernel_options=options,
        )
        out = order.to_raster(proceed(tiled))
        if call.stats.enabled:  # a plan attached after FreeSwim's is dynamic: its density is read on the host
            call.record(density=density if view.plans[-1] is plan else view.plans[-1].density())
        return out

    def _plan(
        self, grid: Grid, device: torch.device, block_q: int, block_k: int, order: TileOrder | None
    ) -> tuple[BlockPlan, float]:
        """The window plan for tokens in `order` (raster when None), built once on the device, and its density."""
        key = (grid, device, block_q, block_k, None if order is None else order.tile)
        if key not in self._plans:
            self._plans[key] = self._build_plan(grid, block_q, block_k, order)
        return self._plans[key]

    @torch.compiler.disable  # once per grid, reads sizes back to the host: never part of a compiled graph
    def _build_plan(self, grid: Grid, block_q: int, block_k: int, order: TileOrder | None) -> tuple[BlockPlan, float]:
        plan = window_plan(grid, self.radius, inward=self.config.inward, block_q=block_q, block_k=block_k, order=order)
        return plan, plan.density()

    def _cross_attention(self, call: AttentionCall, proceed: Proceed, mode: CallMode) -> torch.Tensor:
        key = (call.layer.name, call.index)
        if mode.dual:
            rows = self._rows(call, mode)
            if rows == call.query.shape[0]:  # sequential window branch: the full branch's output of this block
                return self.controller.pending.pop(key)
            full = proceed(call.replace(query=call.query[rows:], key=call.key[rows:], value=call.value[rows:]))
            self.controller.counts["cross_attention_computed"] += 1
            if mode.store:
                pinned = self.controller.cache.pin_seconds
                self.controller.store(key, full)
                if self.controller.cache.pin_seconds > pinned:
                    call.record(cache_pin_ms=(self.controller.cache.pin_seconds - pinned) * 1e3)
            if rows == 0:  # sequential full branch
                self.controller.pending[key] = full
                return full
            return torch.cat([full, full])
        if mode.reuse:
            self.controller.counts["cross_attention_reused"] += 1
            call.record(cross_reused=1)
            return self.controller.cached(key, call.query.shape[:-1] + call.value.shape[-1:], call.query.device)
        return proceed(call)
