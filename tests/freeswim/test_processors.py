"""FreeSwim's processors on the tiny Wan transformer, against references built from the stock model.

References run the unmodified model with every scaled-dot-product-attention call intercepted: self-attention
gets the paper's token-level window mask (or none, for the full branch) and the FreeSwim temperature, and
cross-attention outputs are captured (full branch) or injected (window branch). FreeSwim must equal them.
"""

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import diffattn
from diffattn.config import AttentionConfig
from diffattn.configs import FreeSwimConfig
from diffattn.errors import ConfigError, UnsupportedModelError
from diffattn.geometry import Grid, TileOrder
from diffattn.patterns.windows import attention_temperature, reference_window_mask, window_plan, window_tile_order
from diffattn.plan import BlockPlan
from diffattn.processors.base import AttentionMethod
from diffattn.processors.freeswim import FreeSwimMethod
from diffattn.testing import tiny_call_kwargs, tiny_denoiser, tiny_denoiser_inputs, tiny_pipeline

GRID = Grid(3, 8, 10)  # latent 3 x 16 x 20, patch 2: 240 tokens, with full 8x8 tiles
RADIUS = (1, 1)
FACTOR = attention_temperature(4)  # base 32x32 px = 2x2 tokens
SETTINGS = {"base_height": 32, "base_width": 32, "backend": "reference"}
ATOL = 1e-5


def qkv(args, kwargs):
    """query, key, value of an SDPA call, given positionally or by name."""
    named = dict(zip(("query", "key", "value"), args), **kwargs)
    return named["query"], named["key"], named["value"]


class InterceptSDPA(TorchFunctionMode):
    """Runs the stock model with chosen self-attention masks/scales and captured or injected cross-attention."""

    def __init__(self, mask=None, factor=1.0, inject=None):
        super().__init__()
        self.mask, self.factor = mask, factor  # one mask for every self-attention, or a list: one per call
        self.inject = list(inject) if inject is not None else None
        self.captured = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        q, k, v = qkv(args, kwargs)
        if q.shape[-2] == k.shape[-2]:
            mask = self.mask.pop(0) if isinstance(self.mask, list) else self.mask
            return func(q, k, v, attn_mask=mask, scale=q.shape[-1] ** -0.5 * self.factor)
        out = func(q, k, v) if self.inject is None else self.inject.pop(0)
        self.captured.append(out)
        return out


class CountSDPA(TorchFunctionMode):
    """Counts SDPA calls that reach torch: FreeSwim's dense full-branch and cross-attention calls (the window
    branch runs through the block-sparse kernel and never calls SDPA)."""

    def __init__(self, tokens):
        super().__init__()
        self.tokens, self.full_self, self.cross = tokens, 0, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            q, k, _ = qkv(args, kwargs or {})
            self.full_self += int(q.shape[-2] == k.shape[-2] == self.tokens)
            self.cross += int(k.shape[-2] != q.shape[-2])
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def model():
    return tiny_denoiser("wan")


def inputs(seed=0, batch=1):
    return tiny_denoiser_inputs("wan", batch=batch, frames=GRID.frames, height=2 * GRID.height, width=2 * GRID.width, seed=seed)


def forward(model, kwargs, branch=None, timestep=None):
    kwargs = dict(kwargs, timestep=kwargs["timestep"] if timestep is None else torch.full_like(kwargs["timestep"], timestep))
    with torch.no_grad():
        if branch is None:
            return model(**kwargs, return_dict=False)[0]
        with model.cache_context(branch):
            return model(**kwargs, return_dict=False)[0]


def reference(model, kwargs, mask=None, factor=1.0, inject=None):
    """`(output, captured cross-attention outputs)` of the stock model under `InterceptSDPA`."""
    mode = InterceptSDPA(mask, factor, inject)
    with mode:
        out = forward(model, kwargs)
    return out, mode.captured


WINDOW = reference_window_mask(GRID, RADIUS)


def test_window_only_call_equals_masked_attention(model):
    x = inputs()
    with diffattn.apply(model, FreeSwimConfig(**SETTINGS)):
        out = forward(model, x, "uncond")
    expected, _ = reference(model, x, WINDOW, FACTOR)
    stock = forward(model, x)
    assert (expected - stock).abs().max() > 1e-3  # the window really changes the result
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


def test_dual_call_overrides_cross_attention_with_the_full_branch(model):
    x = inputs(seed=1)
    with diffattn.apply(model, FreeSwimConfig(**SETTINGS)) as handle:
        out = forward(model, x, "cond")
        assert handle.methods[0].controller.counts["full_self_attention"] == 2  # one per block
    _, full_cross = reference(model, x, None, FACTOR)  # the full branch: dense, same temperature
    expected, _ = reference(model, x, WINDOW, FACTOR, inject=full_cross)
    window_only, _ = reference(model, x, WINDOW, FACTOR)
    assert (expected - window_only).abs().max() > 1e-3  # the override matters
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


def test_cached_cross_attention_is_reused_between_refreshes(model):
    x0, x1 = inputs(seed=2), inputs(seed=3)
    with diffattn.apply(model, FreeSwimConfig(**SETTINGS, cache_steps=2)) as handle:
        forward(model, x0, "cond", timestep=900)  # step 0: refresh, stores the full branch's cross-attention
        forward(model, x0, "uncond", timestep=900)
        out = forward(model, x1, "cond", timestep=800)  # step 1: reuses step 0's cross-attention
        counts = handle.methods[0].controller.counts
    assert counts["cross_attention_computed"] == 2 and counts["cross_attention_reused"] == 2
    step0 = dict(x0, timestep=torch.full_like(x0["timestep"], 900))
    _, stored = reference(model, step0, None, FACTOR)
    step1 = dict(x1, timestep=torch.full_like(x1["timestep"], 800))
    expected, _ = reference(model, step1, WINDOW, FACTOR, inject=stored)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("branch", ["cond", "uncond"])
@pytest.mark.parametrize("cache_steps", [2, None])
def test_covering_windows_at_unit_temperature_equal_stock_attention(model, branch, cache_steps):
    x = inputs(seed=4, batch=2)
    stock = forward(model, x)
    covering = FreeSwimConfig(**SETTINGS, window_radius=(GRID.height, GRID.width), scale_factor=1.0, cache_steps=cache_steps)
    with diffattn.apply(model, covering) as handle:
        out = forward(model, x, branch)
        dual = handle.methods[0].controller.mode.dual
    assert dual == (branch == "cond" or cache_steps is None)
    torch.testing.assert_close(out, stock, atol=ATOL, rtol=0)


@pytest.mark.parametrize("cache_steps", [1, 2, 3, None])
def test_full_branch_calls_follow_cache_steps(cache_steps):
    pipe = tiny_pipeline("wan")
    steps, layers = 5, 2
    counter = CountSDPA(3 * 4 * 6)  # 9 frames at 64x96 px
    with diffattn.apply(pipe, FreeSwimConfig(**SETTINGS, cache_steps=cache_steps)) as handle:
        with counter:
            pipe(**tiny_call_kwargs("wan", height=64, width=96, num_inference_steps=steps))
        counts = handle.methods[0].controller.counts
    refreshes = 2 * steps if cache_steps is None else math.ceil(steps / cache_steps)
    assert counter.full_self == counts["full_self_attention"] == refreshes * layers
    own_uncond = 0 if cache_steps is None else steps * layers  # the unconditional pass keeps its own cross-attention
    assert counter.cross == refreshes * layers + own_uncond
    reused = 0 if cache_steps is None else (steps - refreshes) * layers
    assert counts["cross_attention_reused"] == reused


def test_cache_steps_one_equals_no_cache_on_the_conditional_path():
    pipe = tiny_pipeline("wan")
    kwargs = {"height": 64, "width": 96, "num_inference_steps": 4, "guidance_scale": 1.0, "output_type": "latent"}  # cond only
    outputs = {}
    for cache_steps in (1, None, 2):
        with diffattn.apply(pipe, FreeSwimConfig(**SETTINGS, cache_steps=cache_steps)):
            outputs[cache_steps] = pipe(**tiny_call_kwargs("wan", **kwargs)).frames
    torch.testing.assert_close(outputs[1], outputs[None], atol=1e-6, rtol=0)
    assert (outputs[2] - outputs[1]).abs().max() > 1e-4  # reusing a stale cache does change the result


def test_remove_restores_the_stock_model_bitwise(model):
    x = inputs(seed=5)
    before = forward(model, x, "cond")
    handle = diffattn.apply(model, FreeSwimConfig(**SETTINGS))
    assert forward(model, x, "cond").sub(before).abs().max() > 1e-4
    handle.remove()
    assert torch.equal(forward(model, x, "cond"), before)
    assert all(not block._diffusers_hook._hook_order for block in model.blocks)


# ----------------------------------------------------------------------------------------- composition
@dataclass(frozen=True)
class RasterBlocksConfig(AttentionConfig):
    """A stand-in for a plan-based method that plans on raster tokens: keeps the diagonal 64-token blocks."""

    name = "test-raster-blocks"
    implementation = f"{__name__}:RasterBlocks"


class RasterBlocks(AttentionMethod):
    def attend(self, call, proceed):
        if call.layer.role == "cross":
            return proceed(call)
        blocks = math.ceil(call.query.shape[-2] / 64)
        return proceed(call.replace(plan=BlockPlan.from_block_mask(torch.eye(blocks, dtype=torch.bool)[None, None], 64, 64)))


def test_a_raster_plan_from_an_earlier_method_is_intersected_in_raster_order(model):
    x = inputs(seed=6)
    with diffattn.apply(model, RasterBlocksConfig(), FreeSwimConfig(**SETTINGS)):
        out = forward(model, x, "uncond")
    ids = torch.arange(GRID.tokens) // 64
    expected, _ = reference(model, x, WINDOW & (ids[:, None] == ids[None, :]), FACTOR)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


@pytest.fixture
def kernel_plans(monkeypatch):
    """The plans the block-sparse kernel receives."""
    plans = []
    kernel = diffattn.kernels.block_sparse_attention

    def spy(q, k, v, plan, **options):
        plans.append(plan)
        return kernel(q, k, v, plan, **options)

    monkeypatch.setattr(diffattn.kernels, "block_sparse_attention", spy)
    return plans


@pytest.mark.parametrize("freeswim_first", [True, False])
def test_composes_with_sparge_inside_the_window(model, kernel_plans, freeswim_first):
    from diffattn.configs.sparse import SpargeConfig

    x = inputs(seed=7)
    sparge = SpargeConfig(min_tokens=1, topk=0.5, backend="reference")
    methods = (FreeSwimConfig(**SETTINGS), sparge) if freeswim_first else (sparge, FreeSwimConfig(**SETTINGS))
    with diffattn.apply(model, *methods):
        out = forward(model, x, "uncond")
    assert len(kernel_plans) == 2  # one window call per block
    # the view's token order: FreeSwim's chosen 128-token tiles, or Sparge's 1x8x8 tiles (its query blocks are 64)
    order = window_tile_order(GRID, RADIUS, 128) if freeswim_first else TileOrder(GRID, (1, 8, 8))
    window_blocks = window_plan(GRID, RADIUS, block_q=kernel_plans[0].block_q, block_k=kernel_plans[0].block_k, order=order)
    masks = []
    for plan in kernel_plans:
        assert plan.token_mask is not None  # exact window edges reach the kernel
        blocks = plan.to_block_mask()
        assert (blocks <= window_blocks.to_block_mask()).all()  # only blocks of the window
        masks.append(plan.to_token_mask(GRID.tokens, GRID.tokens)[0][:, order.inverse][:, :, order.inverse])
    assert all(((m & ~WINDOW) == 0).all() for m in masks)  # nothing outside the window
    assert any((m != WINDOW).any() for m in masks)  # and Sparge dropped blocks inside it
    expected, _ = reference(model, x, masks, FACTOR)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------------------- bad input
def test_unsupported_models_and_settings_raise_clear_errors(model):
    with pytest.raises(UnsupportedModelError, match="Wan text-to-video"):
        diffattn.apply(tiny_denoiser("cogvideox"), FreeSwimConfig(**SETTINGS))
    with pytest.raises(ConfigError, match="native resolution"):
        diffattn.apply(model, FreeSwimConfig())  # the tiny model has no known native size
    assert diffattn.handle_of(model) is None  # nothing stayed installed
    for bad in [{"base_height": 100, "base_width": 64}, {"base_height": 32}, {"cache_steps": 0}, {"block_size": 96},
                {"window_radius": (1,)}, {"scale_factor": 0.0}, {"backend": "cuda"}, {"strength": 0.0}]:
        with pytest.raises(ConfigError):
            FreeSwimConfig(**bad)


def test_window_and_temperature_come_from_the_base_size(model):
    handle = diffattn.apply(model, FreeSwimConfig(base_height=96, base_width=160))
    try:
        method = handle.methods[0]
        assert isinstance(method, FreeSwimMethod)
        assert method.radius == (3, 5)  # 6x10 tokens, halved
        assert method.temperature == pytest.approx(attention_temperature(60))
    finally:
        handle.remove()


class SpyKernelCalls:
    """Records the calls that reach the block-sparse kernels with a plan (at the end of a method chain)."""

    def __init__(self, monkeypatch):
        import diffattn.processors.base as base

        self.calls, real = [], base.execute
        monkeypatch.setattr(base, "execute", lambda call: (call.plan is not None and self.calls.append(call), real(call))[1])

    def precisions(self) -> set[str]:
        return {call.kernel_options.get("precision", "bf16") for call in self.calls}


@pytest.mark.parametrize("configs", [
    [FreeSwimConfig(**SETTINGS, precision="int8")],
    [diffattn.QuantizedConfig(precision="int8", backend="reference"), FreeSwimConfig(**SETTINGS)],
], ids=["precision-field", "with-quantized"])
def test_window_branch_runs_at_8_bits_on_the_same_plan(model, configs, monkeypatch):
    x = inputs()
    spy = SpyKernelCalls(monkeypatch)
    with diffattn.apply(model, FreeSwimConfig(**SETTINGS)):
        bf16 = forward(model, x, "uncond")
    plans = [call.plan.to_block_mask() for call in spy.calls]
    spy.calls.clear()
    with diffattn.apply(model, *configs):
        out = forward(model, x, "uncond")
    assert spy.precisions() == {"int8"}
    assert len(plans) == len(spy.calls) and all(torch.equal(call.plan.to_block_mask(), plan) for call, plan in zip(spy.calls, plans))
    error = float((out - bf16).abs().mean() / bf16.abs().mean())
    assert 0 < error < 0.015
