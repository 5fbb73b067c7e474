"""Every (method, model) pair on the tiny video transformers: dense-equivalent settings equal the stock output,
sparse settings give finite, deterministic outputs, and the stats report the densities of the plans that ran."""

from __future__ import annotations

import math

import pytest
import torch

import diffattn
from diffattn.config import Phase

from .conftest import MIN_TOKENS, VIDEO_FAMILIES, denoiser, forward, inputs

REF = {"backend": "reference", "min_tokens": MIN_TOKENS}

# Settings under which each method computes every block (Radial: a one-frame grid has only near frames).
DENSE_EQUIVALENT = {
    "sparge": (diffattn.SpargeConfig(topk=1.0, **REF), 8),
    "radial": (diffattn.RadialConfig(dense_steps=0, dense_layers=(), **REF), 1),
    "psa": (diffattn.PSAConfig(dense_steps=0, mode="topk", cutoffs=(1.0, 1.0, 1.0, 1.0), **REF), 8),
    "lite": (diffattn.LiteAttentionConfig(threshold=float("-inf"), **REF), 8),
}
SPARSE = {
    "sparge": (diffattn.SpargeConfig(topk=0.3, **REF),),
    "radial": (diffattn.RadialConfig(dense_steps=0, dense_layers=(), **REF),),
    "psa": (diffattn.PSAConfig(dense_steps=0, **REF),),
    # random weights give diffuse attention where no tile is negligible, so LiteAttention runs over Sparge here;
    # test_compose.py shows it skipping on structured attention
    "lite": (diffattn.SpargeConfig(topk=0.5, **REF), diffattn.LiteAttentionConfig(threshold=0.0, **REF)),
}
TOL = 2e-5


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
@pytest.mark.parametrize("method", sorted(DENSE_EQUIVALENT))
def test_dense_equivalent_settings_equal_stock(method, family, call_spy):
    config, frames = DENSE_EQUIVALENT[method]
    model, kwargs = denoiser(family), inputs(family, frames=frames, side=16 if frames == 1 else 8)
    stock = forward(model, kwargs)
    with diffattn.apply(model, config) as handle:
        out = forward(model, kwargs)
        densities = [r["density"] for steps in handle.stats.to_dict().values() for r in steps.values() if r["density"] is not None]
    assert call_spy, "no call went through the block-sparse kernels"
    assert densities and all(d == 1.0 for d in densities)
    assert (out - stock).abs().max() <= TOL * max(1.0, float(stock.abs().max()))


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
@pytest.mark.parametrize("method", sorted(SPARSE))
def test_sparse_settings_are_finite_deterministic_and_report_their_plans(method, family, call_spy):
    model, kwargs = denoiser(family), inputs(family)
    with diffattn.apply(model, *SPARSE[method]) as handle:
        # two calls of one run (falling timestep), so LiteAttention's second call uses the first call's marks
        first = [forward(model, kwargs, timestep=900.0), forward(model, kwargs, timestep=800.0)]
        handle.context.start_run()
        second = [forward(model, kwargs, timestep=900.0), forward(model, kwargs, timestep=800.0)]
        stats = handle.stats.to_dict()
    for a, b in zip(first, second):
        assert torch.isfinite(a).all()
        assert torch.equal(a, b)
    # the recorded density of each (layer, step) is the mean density of the plans the kernels ran there
    plans = [(call.layer.name, call.plan) for call in call_spy]
    calls = len(plans) // 2  # two runs
    ran: dict[tuple[str, int], list[float]] = {}
    per_step = calls // 2
    for index, (layer, plan) in enumerate(plans[:calls]):
        ran.setdefault((layer, index // per_step), []).append(plan.density())
    assert ran
    for (layer, step), values in ran.items():
        recorded = stats[layer][step]
        assert math.isclose(recorded["density"], sum(values) / len(values), rel_tol=1e-6)
        assert recorded["skipped_tiles"] == round(recorded["tiles"] * (1 - recorded["density"]))
    # some block was skipped or (PSA) pooled: not every block ran at full resolution
    assert any(bool((plan.to_level_map() != 1).any()) for _, plan in plans), "every block ran at full resolution"


def test_dense_steps_are_bitwise_stock():
    """In a dense step the call takes the model's own path: identical to the stock output, bit for bit."""
    model, kwargs = denoiser("wan"), inputs("wan")
    stock = forward(model, kwargs)
    with diffattn.apply(model, diffattn.RadialConfig(**REF)) as handle:  # default: the first 12 steps dense
        out = forward(model, kwargs)
        assert handle.context.phases["radial"] is Phase.DENSE
    assert torch.equal(out, stock)
