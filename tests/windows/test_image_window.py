"""The `window` method on the tiny image transformers, against references built from the stock model.

References run the unmodified model with every scaled-dot-product-attention call intercepted and computed from its
definition: image queries see the paper's token-level window over the image keys (`reference_window_mask`) and
every text key, at the FreeSwim temperature; text queries see every key at the model's own scale.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import diffattn
from diffattn.configs.window import WindowConfig
from diffattn.errors import ConfigError, IncompatibleMethodsError, UnsupportedModelError
from diffattn.geometry import Grid, TileOrder
from diffattn.patterns.windows import (
    IMAGE_TILE_CANDIDATES,
    attention_temperature,
    reference_window_mask,
    window_plan,
    window_tile_order,
)
from diffattn.processors.window import merge_by_lse
from diffattn.testing import tiny_denoiser, tiny_denoiser_inputs, tiny_pipeline

FAMILIES = ("flux", "flux2", "qwenimage", "sd3")
TEXT_FIRST = {"flux": True, "flux2": True, "qwenimage": True, "sd3": False}
GRID = Grid(1, 8, 10)  # latent 16 x 20 after 2x2 patches
BASE = {"base_height": 64, "base_width": 96}  # 4 x 6 tokens at 16 px per token: radius (2, 3)
RADIUS = (2, 3)
FACTOR = attention_temperature(4 * 6)
COMMON = {"backend": "reference", "min_tokens": 1}
ATOL = 1e-5


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def model(family):
    return tiny_denoiser(family)


def inputs(family, grid=GRID, batch=2, seed=0):
    return tiny_denoiser_inputs(family, batch=batch, height=2 * grid.height, width=2 * grid.width, seed=seed)


def forward(model, kwargs):
    with torch.no_grad():
        return model(**kwargs, return_dict=False)[0]


class WindowReference(TorchFunctionMode):
    """Every joint SDPA call computed from the definition: `window` (image x image, raster order) for image queries,
    at `factor` times the scale; text queries see every key at the model's scale; a key padding mask is honoured."""

    def __init__(self, window, factor, text_first):
        super().__init__()
        self.window, self.factor, self.text_first = window, factor, text_first
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        named = dict(zip(("query", "key", "value", "attn_mask"), args), **kwargs)
        q, k, v, mask = named["query"], named["key"], named["value"], named.get("attn_mask")
        length, tokens = q.shape[-2], self.window.shape[0]
        image = slice(length - tokens, length) if self.text_first else slice(0, tokens)
        visible = torch.ones(length, length, dtype=torch.bool)
        visible[image, image] = self.window
        scale = torch.full((length, 1), named.get("scale") or q.shape[-1] ** -0.5, dtype=torch.float64)
        scale[image] *= self.factor
        logits = (q.double() @ k.double().transpose(-1, -2)) * scale
        logits = logits.masked_fill(~visible, -math.inf)
        if mask is not None:
            logits = logits.masked_fill(~mask, -math.inf)
        self.calls += 1
        return (logits.softmax(-1) @ v.double()).to(q.dtype)


def reference(model, kwargs, family, window, factor):
    mode = WindowReference(window, factor, TEXT_FIRST[family])
    with mode:
        out = forward(model, kwargs)
    assert mode.calls > 0
    return out


# ------------------------------------------------------------------------------------------- equivalences
def test_covering_window_at_unit_temperature_equals_stock(model, family):
    x = inputs(family)
    stock = forward(model, x)
    covering = WindowConfig(**BASE, **COMMON, window_radius=(GRID.height, GRID.width), scale_factor=1.0)
    with diffattn.apply(model, covering) as handle:
        out = forward(model, x)
        methods = handle.stats.summary()["methods"]["window"]
    assert methods["active_calls"] > 0 and not methods["dense_reasons"]  # the window path ran, not a dense fallback
    torch.testing.assert_close(out, stock, atol=ATOL, rtol=0)


def test_window_equals_the_masked_reference_at_the_base_temperature(model, family):
    x = inputs(family, seed=1)
    with diffattn.apply(model, WindowConfig(**BASE, **COMMON)) as handle:
        out = forward(model, x)
        method = handle.methods[0]
        assert method.radius == RADIUS and method.temperature == pytest.approx(FACTOR)
    expected = reference(model, x, family, reference_window_mask(GRID, RADIUS), FACTOR)
    assert (expected - forward(model, x)).abs().max() > 1e-3  # the window really changes the result
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("settings", [
    {"query_block": 64},
    {"query_block": 64, "token_order": "raster"},
    {"query_block": 64, "inward": False, "window_radius": (3, 2), "scale_factor": 1.2},
], ids=["tiles-64", "raster-64", "truncated-given"])
def test_multi_block_windows_equal_the_reference(settings):
    grid = Grid(1, 16, 20)  # 320 tokens: 5 query blocks of 64
    model, x = tiny_denoiser("flux"), inputs("flux", grid, batch=1, seed=2)
    config = WindowConfig(**BASE, **COMMON, **settings)
    with diffattn.apply(model, config) as handle:
        out = forward(model, x)
        density = handle.stats.summary()["mean_density"]
    radius, factor = settings.get("window_radius", RADIUS), settings.get("scale_factor", FACTOR)
    expected = reference(model, x, "flux", reference_window_mask(grid, radius, inward=settings.get("inward", True)), factor)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    assert density < 1.0  # the plan skipped image key blocks


def test_text_padding_that_differs_per_sample_is_honoured():
    """QwenImage with `encoder_hidden_states_mask`: key padding, one view per sample (they pad differently)."""
    model = tiny_denoiser("qwenimage")
    x = inputs("qwenimage", seed=3)
    text = x["encoder_hidden_states"].shape[1]
    keep = torch.ones(2, text, dtype=torch.bool)
    keep[1, text - 4 :] = False
    x = {**x, "encoder_hidden_states_mask": keep}
    with diffattn.apply(model, WindowConfig(**BASE, **COMMON)):
        out = forward(model, x)
    expected = reference(model, x, "qwenimage", reference_window_mask(GRID, RADIUS), FACTOR)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


def test_merge_by_lse_is_softmax_over_the_union():
    q, k, v = (torch.randn(2, 3, 5, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    parts = []
    for keys in (slice(0, 2), slice(2, 5)):
        logits = q @ k[:, :, keys].transpose(-1, -2)
        parts += [logits.softmax(-1) @ v[:, :, keys], logits.logsumexp(-1)]
    torch.testing.assert_close(merge_by_lse(*parts), F.scaled_dot_product_attention(q, k, v, scale=1.0))


@pytest.mark.parametrize("family, side", [("flux", 64), ("flux2", 64), ("sd3", 64), ("qwenimage", 83)])
def test_defaults_come_from_the_family_training_size(family, side):
    """On the tiny pipelines (VAE x8, 2x2 patches or packing: 16 px per token, as the real ones): 1024 px is 64
    tokens a side, QwenImage's 1328 px 83."""
    pipe = tiny_pipeline(family)
    with diffattn.apply(pipe, WindowConfig()) as handle:
        method = handle.methods[0]
        assert method.base_grid == (side, side) and method.radius == (side // 2, side // 2)
        assert method.temperature == pytest.approx(attention_temperature(side * side))


# --------------------------------------------------------------------------------------- dense and remove
def test_images_not_above_the_base_size_run_the_model_own_attention(model, family):
    x = inputs(family, seed=4)
    stock = forward(model, x)
    with diffattn.apply(model, WindowConfig(base_height=128, base_width=160, **COMMON)) as handle:  # 8 x 10 tokens
        out = forward(model, x)
        reasons = handle.stats.summary()["methods"]["window"]["dense_reasons"]
    assert torch.equal(out, stock)
    assert any("not larger than the base size" in reason for reason in reasons)


def test_remove_restores_the_stock_model_bitwise(model, family):
    x = inputs(family, seed=5)
    before = forward(model, x)
    handle = diffattn.apply(model, WindowConfig(**BASE, **COMMON))
    assert (forward(model, x) - before).abs().max() > 1e-4
    handle.remove()
    assert torch.equal(forward(model, x), before)


# ----------------------------------------------------------------------------------------- composition
@pytest.mark.parametrize("window_first", [True, False])
def test_sparge_refines_inside_the_window_in_either_order(window_first):
    model, x = tiny_denoiser("sd3"), inputs("sd3", Grid(1, 16, 20), batch=1, seed=6)
    window = WindowConfig(**BASE, **COMMON)
    with diffattn.apply(model, window) as handle:
        alone, alone_density = forward(model, x), handle.stats.summary()["mean_density"]
    sparge = diffattn.SpargeConfig(topk=0.5, **COMMON)
    with diffattn.apply(model, *((window, sparge) if window_first else (sparge, window))) as handle:
        both, density = forward(model, x), handle.stats.summary()["mean_density"]
    assert density < alone_density  # Sparge dropped blocks inside the window
    assert (both - alone).abs().max() > 1e-5
    if not window_first:
        with diffattn.apply(model, window, sparge):
            torch.testing.assert_close(forward(model, x), both, atol=0, rtol=0)  # the same chain either way


def test_precision_field_equals_composing_with_quantized():
    model, x = tiny_denoiser("flux"), inputs("flux", seed=7)
    with diffattn.apply(model, WindowConfig(**BASE, **COMMON)):
        full = forward(model, x)
    with diffattn.apply(model, WindowConfig(**BASE, **COMMON, precision="int8")):
        field = forward(model, x)
    with diffattn.apply(model, WindowConfig(**BASE, **COMMON), diffattn.QuantizedConfig(precision="int8", backend="reference")):
        composed = forward(model, x)
    torch.testing.assert_close(field, composed, atol=0, rtol=0)
    error = float((field - full).abs().mean() / full.abs().mean())
    assert 0 < error < 0.015


# ------------------------------------------------------------------------------------------ bad inputs
def test_video_models_are_refused_with_a_pointer_to_freeswim():
    model = tiny_denoiser("wan")
    with pytest.raises(UnsupportedModelError, match="freeswim"):
        diffattn.apply(model, WindowConfig())
    assert diffattn.handle_of(model) is None


@pytest.mark.parametrize("bad", [
    {"window_radius": (0, 2)}, {"window_radius": (1,)}, {"base_height": 64}, {"base_height": 0, "base_width": 64},
    {"scale_factor": 0.0}, {"query_block": 96}, {"backend": "cuda"}, {"precision": "fp4"},
])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        WindowConfig(**bad)


def test_a_base_size_under_two_tokens_is_refused_on_apply():
    model = tiny_denoiser("flux")
    with pytest.raises(ConfigError, match="too small"):
        diffattn.apply(model, WindowConfig(base_height=16, base_width=16))
    assert diffattn.handle_of(model) is None


def test_pab_and_freeswim_do_not_combine():
    for other in ("pab", "freeswim"):
        with pytest.raises(IncompatibleMethodsError):
            diffattn.apply(tiny_denoiser("flux"), WindowConfig(), other)


# ----------------------------------------------------------------------------------------------- tiles
@pytest.mark.parametrize("block", sorted(IMAGE_TILE_CANDIDATES))
def test_one_frame_grids_choose_among_two_dimensional_tiles(block):
    grid, radius = Grid(1, 37, 45), (6, 9)  # ragged for every candidate
    reference_mask = reference_window_mask(grid, radius)
    counts = {}
    for tile in IMAGE_TILE_CANDIDATES[block]:
        order = TileOrder(grid, tile)
        plan = window_plan(grid, radius, block_q=block, block_k=block, order=order)
        assert torch.equal(plan.to_token_mask(grid.tokens, grid.tokens)[0, 0][order.inverse][:, order.inverse], reference_mask)
        counts[tile] = int(plan.block_counts().sum())
    chosen = window_tile_order(grid, radius, block)
    assert chosen.tile[0] == 1 and counts[chosen.tile] == min(counts.values())


def test_the_demo_entry_runs_and_checks_its_equivalence(tmp_path):
    from diffattn.cli import main

    assert main(["demo", "--out", str(tmp_path), "--only", "window-tiny-flux"]) == 0


@pytest.mark.parametrize("other", [
    diffattn.PSAConfig(mode="topk", cutoffs=(0.1, 0.1, 0.1, 0.1), dense_steps=0, **COMMON),
    diffattn.LiteAttentionConfig(threshold=-3.0, **COMMON),
    diffattn.QuantizedConfig(precision="int8", backend="reference"),
], ids=lambda config: config.name)
def test_other_block_sparse_methods_run_inside_the_window(other):
    model, x = tiny_denoiser("flux"), inputs("flux", Grid(1, 16, 20), seed=8)
    stock = forward(model, x)
    window = WindowConfig(**BASE, **COMMON)
    with diffattn.apply(model, window) as handle:
        forward(model, x)
        alone = handle.stats.summary()["mean_density"]
    with diffattn.apply(model, other, window) as handle:
        out = forward(model, x)
        assert handle.stats.summary()["mean_density"] <= alone
    assert out.isfinite().all() and (out - stock).abs().max() > 1e-4
    assert torch.equal(forward(model, x), stock)
