"""LiteAttention on attention with locality, and composition by plan intersection (Radial / Sparge / PSA + Lite)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import diffattn
from diffattn.geometry import Grid
from diffattn.processors.sparse import AttentionProbe

from .conftest import MIN_TOKENS, denoiser, forward, inputs, relative_error

GRID = Grid(8, 8, 16)  # 1024 tokens, 8 blocks of 128
COMMON = {"backend": "reference", "min_tokens": MIN_TOKENS}


def local_qkv(grid: Grid, heads: int = 2, dim: int = 32, sharpness: float = 3.0) -> list[torch.Tensor]:
    """q = k = Fourier features of each token's (frame, row, column): logits peak at a token's neighbours."""
    coords = grid.coords().float()
    freqs = torch.linspace(0.15, 1.2, dim // 6)
    angles = coords[:, :, None] * freqs  # [N, 3, F]
    features = torch.cat([angles.cos(), angles.sin()], -1).flatten(1)
    features = F.pad(features, (0, dim - features.shape[1]))
    qk = (sharpness * features).expand(1, heads, -1, -1).contiguous()
    v = torch.randn(1, heads, grid.tokens, dim, generator=torch.Generator().manual_seed(0))
    return [qk, qk.clone(), v]


def run_steps(configs, steps: int, grid: Grid = GRID) -> tuple[AttentionProbe, list[torch.Tensor], list]:
    probe = AttentionProbe(configs, family="wan")
    q, k, v = local_qkv(grid)
    outs = []
    for _ in range(steps):
        probe.start_step()
        outs.append(probe(q, k, v, grid, block=1))
    return probe, outs, F.scaled_dot_product_attention(q, k, v)


# the running max walks each row's blocks upwards: blocks before the row's peak raise it and stay marked
@pytest.mark.parametrize("criterion, density", [("running", 0.85), ("final", 0.8)])
def test_lite_skips_negligible_tiles_from_the_next_step_on(criterion, density, call_spy):
    probe, outs, dense = run_steps([diffattn.LiteAttentionConfig(mark_criterion=criterion, **COMMON)], steps=3)
    masks = [call.plan.to_block_mask() for call in call_spy]
    assert masks[0].all()  # step 0: nothing known yet
    assert not masks[1].all() and torch.equal(masks[1], masks[2])  # marks from step 0, unchanged inputs: stable
    densities = [probe.stats.to_dict()["blocks.1.attn1"][s]["density"] for s in range(3)]
    assert densities[0] == 1.0 and densities[1] < density
    for out in outs:
        # a skipped tile's keys each weigh under 2^-10 of the row's largest weight: the output barely moves
        assert relative_error(out, dense) < 5e-3


def test_lite_marks_restart_with_each_run(call_spy):
    probe, _, _ = run_steps([diffattn.LiteAttentionConfig(**COMMON)], steps=2)
    probe.new_run()
    probe.start_step()
    q, k, v = local_qkv(GRID)
    probe(q, k, v, GRID, block=1)
    assert call_spy[-1].plan.to_block_mask().all()


@pytest.mark.parametrize(
    "first",
    [
        diffattn.RadialConfig(dense_steps=0, dense_layers=(), **COMMON),
        diffattn.SpargeConfig(topk=0.5, **COMMON),
        diffattn.PSAConfig(dense_steps=0, mode="topk", cutoffs=(0.25, 0.5, 0.5, 0.75), **COMMON),
    ],
    ids=["radial", "sparge", "psa"],
)
def test_methods_compose_with_lite_by_intersection(first, call_spy):
    lite = diffattn.LiteAttentionConfig(threshold=-4.0, **COMMON)
    _, combined, _ = run_steps([first, lite], steps=2)
    _, alone, _ = run_steps([first], steps=2)
    composed_plan, own_plan = call_spy[1].plan, call_spy[3].plan  # step 1: with Lite's marks / the method alone
    composed, own = composed_plan.to_level_map(), own_plan.to_level_map()
    assert ((composed > 0) <= (own > 0)).all() and (composed > 0).any(-1).all()
    assert ((composed >= own) | (composed == 0)).all()  # kept blocks keep (at least) the method's pooling level
    assert (composed > 0).sum() < (own > 0).expand_as(composed).sum()  # Lite removed something
    assert torch.equal(combined[0], alone[0])  # step 0: Lite has no marks yet, only the method's plan runs


def test_lite_without_skipping_changes_nothing():
    radial = diffattn.RadialConfig(dense_steps=0, dense_layers=(), **COMMON)
    _, with_lite, _ = run_steps([radial, diffattn.LiteAttentionConfig(threshold=-math.inf, **COMMON)], steps=2)
    _, alone, _ = run_steps([radial], steps=2)
    assert all(torch.equal(a, b) for a, b in zip(with_lite, alone))


def test_radial_and_lite_compose_on_a_model(call_spy):
    model, kwargs = denoiser("wan"), inputs("wan")
    configs = (diffattn.RadialConfig(dense_steps=0, dense_layers=(), **COMMON), diffattn.LiteAttentionConfig(threshold=0.0, **COMMON))
    with diffattn.apply(model, *configs):
        outs = [forward(model, kwargs, t) for t in (900.0, 800.0)]
    with diffattn.apply(model, configs[0]):
        radial = forward(model, kwargs, 900.0)
    assert all(torch.isfinite(out).all() for out in outs)
    assert torch.equal(outs[0], radial)  # first step: Radial's plan alone
    first, second = call_spy[:2], call_spy[2:4]
    for a, b in zip(first, second):  # step 1 runs Radial's plan intersected with step 0's marks
        assert (b.plan.to_block_mask() <= a.plan.to_block_mask()).all()
        assert b.kernel_options["skip_threshold"] == 0.0
