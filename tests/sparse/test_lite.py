"""LiteAttention's mark bookkeeping on the tiny Wan denoiser: marks per CFG branch or chained through a layer's
calls (cond -> uncond -> next cond), kept across runs until reset, and must-do / must-skip key tokens.

The tiny model's 8 x 8 x 8 latent grid is 512 video tokens: four 128-token blocks in 2x8x8 tile order, block b
holding frames 2b and 2b + 1, i.e. raster tokens [128 b, 128 (b + 1)). Wan's self-attention has no text keys.
The latent is one vector repeated at every position, so tokens differ only by their rotary position embedding and
each query's logits depend on its offset to the key: attention with structure (random latents give diffuse
attention, where every tile holds some row's max).
"""

from __future__ import annotations

import itertools

import pytest
import torch

import diffattn
from diffattn.errors import ConfigError
from diffattn.kernels import block_sparse_attention

from .conftest import MIN_TOKENS, denoiser, forward, inputs

COMMON = {"backend": "reference", "min_tokens": MIN_TOKENS, "threshold": 0.0}
TIMESTEPS = (900.0, 800.0)


def _inputs(family: str = "wan") -> dict:
    kwargs = inputs(family)
    latent = kwargs["hidden_states"]
    return {**kwargs, "hidden_states": latent[:, :, :1, :1, :1].expand_as(latent).contiguous()}


def _steps(model, kwargs, timesteps=TIMESTEPS, branches=("cond", "uncond")) -> None:
    """One denoiser call per CFG branch and step, as Wan's pipeline runs them (conditional first)."""
    uncond = {**kwargs, "encoder_hidden_states": torch.randn_like(kwargs["encoder_hidden_states"])}
    for t in timesteps:
        for branch in branches:
            with model.cache_context(branch):
                forward(model, kwargs if branch == "cond" else uncond, t)


def _by_layer(calls) -> dict[str, list]:
    layers: dict[str, list] = {}
    for call in calls:
        layers.setdefault(call.layer.name, []).append(call)
    return layers


def _marks_of(call) -> torch.Tensor:
    """bool block mask: the marks the call wrote (its kernel inputs replayed through the reference)."""
    result = block_sparse_attention(call.query, call.key, call.value, call.plan, **call.kernel_options)
    return result.kept_plan.to_block_mask()


def test_marks_are_kept_per_cfg_branch_by_default(call_spy):
    model, kwargs = denoiser("wan"), _inputs()
    with diffattn.apply(model, diffattn.LiteAttentionConfig(**COMMON)):
        _steps(model, kwargs)
    for calls in _by_layer(call_spy).values():
        cond0, uncond0, cond1, uncond1 = calls
        assert cond0.plan.to_block_mask().all() and uncond0.plan.to_block_mask().all()  # each branch starts afresh
        assert torch.equal(cond1.plan.to_block_mask(), _marks_of(cond0))
        assert torch.equal(uncond1.plan.to_block_mask(), _marks_of(uncond0))


def test_layer_scope_chains_cond_into_uncond_and_on_to_the_next_step(call_spy):
    model, kwargs = denoiser("wan"), _inputs()
    with diffattn.apply(model, diffattn.LiteAttentionConfig(mark_scope="layer", **COMMON)):
        _steps(model, kwargs)
    for calls in _by_layer(call_spy).values():
        assert calls[0].plan.to_block_mask().all()
        for before, after in itertools.pairwise(calls):  # each call reads the marks the layer's previous call wrote
            assert torch.equal(after.plan.to_block_mask(), _marks_of(before))
            assert (after.plan.to_block_mask() <= before.plan.to_block_mask()).all()  # skips only grow
        assert not calls[1].plan.to_block_mask().all()  # the uncond pass of step 0 already skips


def test_layer_scope_chains_through_calls_of_different_text_lengths(call_spy):
    """HunyuanVideo drops padded text keys: a negative prompt of another length changes the keys' text part. The
    chain carries the video columns of the marks over; text columns (key block 4 on) stay computed."""
    model, kwargs = denoiser("hunyuanvideo"), _inputs("hunyuanvideo")
    short = {**kwargs, "encoder_attention_mask": (torch.arange(16) < 5).long()[None]}
    with diffattn.apply(model, diffattn.LiteAttentionConfig(mark_scope="layer", **COMMON)):
        for t in TIMESTEPS:
            for branch, call_kwargs in (("cond", kwargs), ("uncond", short)):
                with model.cache_context(branch):
                    forward(model, call_kwargs, t)
    for calls in _by_layer(call_spy).values():
        assert [call.layout.text_keys for call in calls] == [16, 5, 16, 5]
        for before, after in itertools.pairwise(calls):
            plan = after.plan.to_block_mask()
            assert torch.equal(plan[..., :4], _marks_of(before)[..., :4]) and plan[..., 4:].all()
        assert not calls[1].plan.to_block_mask().all()


def test_marks_kept_across_runs_until_reset(call_spy):
    model, kwargs = denoiser("wan"), _inputs()
    config = diffattn.LiteAttentionConfig(keep_marks_across_runs=True, **COMMON)
    with diffattn.apply(model, config) as handle:
        _steps(model, kwargs, branches=("cond",))
        handle.context.start_run()
        _steps(model, kwargs, timesteps=TIMESTEPS[:1], branches=("cond",))
        handle.methods[0].reset_marks()
        handle.context.start_run()
        _steps(model, kwargs, timesteps=TIMESTEPS[:1], branches=("cond",))
    for calls in _by_layer(call_spy).values():
        first_run, carried, after_reset = calls[:2], calls[2], calls[3]
        assert torch.equal(carried.plan.to_block_mask(), _marks_of(first_run[-1]))
        assert not carried.plan.to_block_mask().all()
        assert after_reset.plan.to_block_mask().all()


def test_must_skip_blocks_never_run_and_must_do_blocks_always_do(call_spy):
    model, kwargs = denoiser("wan"), _inputs()
    # frames 0-1 are kv block 0 (never computed); block 3 keeps one must-do token (frame 7's last one)
    config = diffattn.LiteAttentionConfig(must_skip=(0, 128), must_do=(511, 512), **COMMON)
    with diffattn.apply(model, config):
        _steps(model, kwargs, timesteps=(900.0, 800.0, 700.0), branches=("cond",))
    plans = [call.plan.to_block_mask() for call in call_spy]
    assert all(not plan[..., 0].any() and plan[..., 3].all() for plan in plans)
    assert not all(plan[..., 1:3].all() for plan in plans)  # the marks do skip elsewhere
    call_spy.clear()
    with diffattn.apply(model, diffattn.LiteAttentionConfig(**COMMON)):  # without must_do, block 3 gets skipped
        _steps(model, kwargs, timesteps=(900.0, 800.0, 700.0), branches=("cond",))
    assert not all(call.plan.to_block_mask()[..., 3].all() for call in call_spy)


def test_must_skip_takes_only_whole_blocks(call_spy):
    model, kwargs = denoiser("wan"), _inputs()
    with diffattn.apply(model, diffattn.LiteAttentionConfig(must_skip=(0, 100), **COMMON)):
        _steps(model, kwargs, timesteps=TIMESTEPS[:1], branches=("cond",))
    assert all(call.plan.to_block_mask().all() for call in call_spy)  # block 0 keeps 28 tokens: computed


def test_must_skip_of_every_key_is_a_config_error():
    model, kwargs = denoiser("wan"), _inputs()
    with diffattn.apply(model, diffattn.LiteAttentionConfig(must_skip=(0, 4096), **COMMON)), \
            pytest.raises(ConfigError, match="must_skip covers every key block"):
        forward(model, kwargs)
