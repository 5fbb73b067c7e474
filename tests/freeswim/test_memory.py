"""FreeSwim's memory knobs on the tiny Wan model: each leaves the two-stage output equal to the default run
(bitwise where the arithmetic is unchanged, to rounding where feed-forward chunks change the products' shapes), the
`memory` preset expands to them, bad values raise."""

import pytest
import torch

from diffattn.cli import build_parser
from diffattn.cli.generate import configs_from_args
from diffattn.configs import FreeSwimConfig
from diffattn.configs.freeswim import MEMORY_PRESETS, FreeSwimMemory
from diffattn.errors import ConfigError
from diffattn.pipelines.freeswim import FreeSwimPipeline
from diffattn.processors.freeswim import CrossAttentionCache
from diffattn.testing import tiny_pipeline

SETTINGS = {"base_height": 32, "base_width": 32, "backend": "reference", "cache_steps": 2}
# stage 2 runs int(6 * 0.7) = 4 steps: refresh, reuse, refresh, reuse (every cached path runs, twice)
CALL = {"prompt": "a red fox in the snow", "negative_prompt": "blurry", "num_frames": 9, "num_inference_steps": 6,
        "guidance_scale": 5.0, "max_sequence_length": 16, "height": 64, "width": 96, "output_type": "pt"}


@pytest.fixture(scope="module")
def freeswim():
    pipe = FreeSwimPipeline.from_wan_pipeline(tiny_pipeline("wan"))
    vae = pipe.vae  # tiles small enough that the tiny 64x96 video really is decoded in overlapping tiles
    vae.tile_sample_min_height, vae.tile_sample_min_width = 32, 32
    vae.tile_sample_stride_height, vae.tile_sample_stride_width = 24, 24
    return pipe


def assert_equal_to_rounding(chunked: torch.Tensor, whole: torch.Tensor) -> None:
    """Feed-forward chunks compute the same sums as one product, but the BLAS may pick another kernel for a 7-row
    product and round differently (on an AMD EPYC: 1.8e-7 apart; elsewhere bitwise equal)."""
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)


def run(pipe, **knobs):
    return pipe(**CALL, generator=torch.Generator().manual_seed(0), freeswim=FreeSwimConfig(**{**SETTINGS, **knobs}))


@pytest.fixture(scope="module")
def default(freeswim):
    return run(freeswim)


@pytest.mark.parametrize("knobs", [
    {"sequential_branches": True},
    {"offload_cache": True},
    {"offload_text_encoder": True},
])
def test_knobs_that_keep_the_arithmetic_leave_the_output_bitwise_equal(freeswim, default, knobs):
    out = run(freeswim, **knobs)
    assert torch.equal(out.frames, default.frames)
    assert torch.equal(out.base_frames, default.base_frames)
    assert out.stats.to_dict().keys() == default.stats.to_dict().keys()


def test_sequential_branches_in_no_cache_mode_leave_the_output_bitwise_equal(freeswim):
    """Every call dual (conditional and unconditional), nothing stored: the window rows wait for nothing but the
    full branch's cross-attention of the same block."""
    batches: list[int] = []
    attention = freeswim.transformer.blocks[0].attn1
    handle = attention.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        sequential = run(freeswim, cache_steps=None, sequential_branches=True).frames
        seen_sequential, batches[:] = set(batches), []
        batched = run(freeswim, cache_steps=None).frames
    finally:
        handle.remove()
    assert seen_sequential == {1} and set(batches) == {1, 2}  # stage 1 runs batch 1; stage 2's dual calls 2 or 1 + 1
    assert torch.equal(sequential, batched)


def test_vae_tiling_is_diffusers_tiled_vae_and_the_low_preset_changes_nothing_else(freeswim, default):
    """The knob switches on the VAE's own tiling for the run (encode of the upscaled video and decode), so its
    reference is the same run with `enable_vae_tiling()` called by hand; every other knob of the low preset is
    bitwise neutral, so the preset equals tiling alone. Tiling does change pixels: on this tiny random VAE with
    32-pixel tiles and an 8-pixel overlap by up to ~0.16 (of [0, 1]); real VAEs with the default 256-pixel tiles
    are not measured here."""
    tiled = run(freeswim, vae_tiling=True)
    assert not freeswim.vae.use_tiling  # switched back off after the run
    freeswim.enable_vae_tiling()
    try:
        by_hand = run(freeswim)
    finally:
        freeswim.disable_vae_tiling()
    assert torch.equal(tiled.frames, by_hand.frames)
    assert not torch.equal(tiled.frames, default.frames)  # the tiles really were used
    assert_equal_to_rounding(run(freeswim, memory="low", ffn_chunk_tokens=7).frames, tiled.frames)


def test_offloaded_cache_prefetches_the_next_block_and_wraps_around():
    cache = CrossAttentionCache(offload=True)
    outputs = {("block", i): torch.randn(1, 2, 5, 3) for i in range(3)}
    for key, value in outputs.items():
        cache.store(key, value)
    assert all(torch.equal(cache.load(key, torch.device("cpu")), value) for key, value in outputs.items())
    assert cache.prefetch_hits == 2  # blocks 1 and 2 were fetched ahead; block 0 is now, for the next step
    fresh = torch.randn(1, 2, 5, 3)
    cache.store(("block", 0), fresh)  # a refresh drops the stale copy fetched ahead
    assert torch.equal(cache.load(("block", 0), torch.device("cpu")), fresh)
    assert cache.prefetch_hits == 2


def test_the_memory_preset_expands_and_explicit_knobs_win():
    assert FreeSwimConfig().memory_plan == FreeSwimMemory() == MEMORY_PRESETS["default"]
    low = FreeSwimConfig(memory="low").memory_plan
    assert low == FreeSwimMemory(sequential_branches=True, ffn_chunk_tokens=16384, offload_cache=True,
                                 vae_tiling=True, offload_text_encoder=True)
    assert FreeSwimConfig(memory="low", offload_cache=False, ffn_chunk_tokens=0).memory_plan == FreeSwimMemory(
        sequential_branches=True, vae_tiling=True, offload_text_encoder=True)
    assert FreeSwimConfig(vae_tiling=True).memory_plan == FreeSwimMemory(vae_tiling=True)


@pytest.mark.parametrize(("settings", "message"), [
    ({"memory": "tiny"}, "memory must be one of"),
    ({"ffn_chunk_tokens": -1}, "ffn_chunk_tokens must be"),
])
def test_bad_memory_settings_raise_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        FreeSwimConfig(**settings)


def test_the_cli_exposes_the_preset_and_each_knob():
    args = build_parser().parse_args(["generate", "--method", "freeswim", "--freeswim-memory", "low",
                                      "--freeswim-offload-cache", "false", "--freeswim-ffn-chunk-tokens", "4096"])
    (config,) = configs_from_args(args, ["freeswim"], {})
    assert config.memory_plan == FreeSwimMemory(sequential_branches=True, ffn_chunk_tokens=4096, offload_cache=False,
                                                vae_tiling=True, offload_text_encoder=True)


def test_ffn_chunks_reach_the_feed_forward(freeswim, default):
    tokens: list[int] = []
    inner = freeswim.transformer.blocks[0].ffn.net[0]
    handle = inner.register_forward_pre_hook(lambda module, args: tokens.append(args[0].shape[1]))
    try:
        out = run(freeswim, ffn_chunk_tokens=7)
    finally:
        handle.remove()
    # stage 1 (no FreeSwim) runs its 3 x 2 x 2 = 12 tokens whole; stage 2 its 3 x 4 x 6 = 72 in chunks of 7 and 2
    assert set(tokens) == {12, 7, 2}
    assert_equal_to_rounding(out.frames, default.frames)
