"""8-bit attention at the method level: the `quantized` method and the `precision` field of every attention config.

Equivalences: a method at a precision computes exactly `block_sparse_attention(..., precision)` over the plan it
would run in 16 bits; `quantized` composes order-independently (it joins the end of each chain) and lowers the
precision of another method's plan without changing the plan; a chain runs at the lowest precision asked for.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
import torch.nn.functional as F

import diffattn
from diffattn.errors import ConfigError
from diffattn.geometry import Grid
from diffattn.kernels import block_sparse_attention
from diffattn.plan import BlockPlan
from diffattn.precision import lowest_precision, runnable_precision
from diffattn.processors.sparse import AttentionProbe

from .conftest import MIN_TOKENS, denoiser, forward, inputs

REF = {"backend": "reference", "min_tokens": MIN_TOKENS}
GRID = Grid(4, 8, 16)  # 512 tokens


def _qkv(seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 2, GRID.tokens, 32, generator=generator).to(dtype) for _ in range(3)]


def _probe(*configs, qkv=None) -> tuple[torch.Tensor, list]:
    """One self-attention call through the chain; returns the output and the calls that reached the kernels."""
    probe = AttentionProbe(configs)
    seen = []
    import diffattn.processors.base as base

    real = base.execute

    def spy(call):
        seen.append(call)
        return real(call)

    base.execute = spy
    try:
        out = probe(*(qkv or _qkv()), GRID, block=1)
    finally:
        base.execute = real
    return out, seen


@pytest.mark.parametrize("precision", ["int8", "int8-fp8"])
def test_quantized_alone_is_the_dense_plan_at_its_precision(precision):
    q, k, v = _qkv()
    out, seen = _probe(diffattn.QuantizedConfig(precision=precision, **REF))
    plan = BlockPlan.dense(GRID.tokens, GRID.tokens, 128, 128)
    expected = block_sparse_attention(q, k, v, plan, precision=precision, backend="reference")
    assert [call.kernel_options["precision"] for call in seen] == [precision]
    assert torch.equal(out, expected)
    # and it is 8-bit arithmetic, not the 16-bit path: close to dense attention, but not equal to it
    dense = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    error = float((out.float() - dense).abs().mean() / dense.abs().mean())
    assert 1e-4 < error < (0.015 if precision == "int8" else 0.05)


@pytest.mark.parametrize("precision", ["int8", "int8-fp8"])
def test_quantized_with_sparge_is_sparges_plan_at_8_bits_in_either_order(precision):
    sparge = diffattn.SpargeConfig(topk=0.3, **REF)
    quantized = diffattn.QuantizedConfig(precision=precision, **REF)
    after, seen_after = _probe(sparge, quantized)
    before, seen_before = _probe(quantized, sparge)
    alone, seen_alone = _probe(diffattn.SpargeConfig(topk=0.3, precision=precision, **REF))
    assert torch.equal(after, alone) and torch.equal(before, alone)
    for seen in (seen_after, seen_before):
        assert torch.equal(seen[0].plan.to_block_mask(), seen_alone[0].plan.to_block_mask())
        assert seen[0].plan.density() < 0.5  # Sparge's plan, not the dense one
        assert seen[0].kernel_options["precision"] == precision


@pytest.mark.parametrize("config", [
    diffattn.RadialConfig(dense_steps=0, dense_layers=(), **REF),
    diffattn.PSAConfig(dense_steps=0, mode="topk", cutoffs=(0.25, 0.5, 0.5, 0.75), **REF),
    diffattn.LiteAttentionConfig(threshold=0.0, must_skip=(0, 128), **REF),
], ids=lambda config: config.name)
def test_every_sparse_methods_precision_field_runs_its_own_plan_in_8_bits(config):
    bf16, seen_bf16 = _probe(config)
    field, seen_field = _probe(dataclasses.replace(config, precision="int8"))
    composed, _ = _probe(config, diffattn.QuantizedConfig(precision="int8", **REF))
    assert torch.equal(field, composed)
    assert torch.equal(seen_field[0].plan.to_level_map(), seen_bf16[0].plan.to_level_map())
    assert seen_field[0].kernel_options["precision"] == "int8"
    error = float((field.float() - bf16.float()).abs().mean() / bf16.float().abs().mean())
    assert 1e-4 < error < 0.015


def test_a_chain_runs_at_the_lowest_precision_any_method_asks_for():
    assert lowest_precision("bf16", "int8-fp8", "int8") == "int8-fp8"
    assert lowest_precision() == "bf16"
    mixed, seen = _probe(diffattn.SpargeConfig(topk=0.3, precision="int8", **REF),
                         diffattn.QuantizedConfig(precision="int8-fp8", **REF))
    lowest, _ = _probe(diffattn.SpargeConfig(topk=0.3, precision="int8-fp8", **REF))
    assert seen[0].kernel_options["precision"] == "int8-fp8"
    assert torch.equal(mixed, lowest)


def test_bf16_methods_pass_no_precision_to_the_kernels():
    _, seen = _probe(diffattn.SpargeConfig(topk=0.3, **REF))
    assert "precision" not in seen[0].kernel_options


@pytest.mark.parametrize("precision", ["int8", "int8-fp8"])
def test_non_finite_inputs_give_nan_never_finite_garbage(precision):
    q, k, v = _qkv()
    q[0, 0, 5, 3] = float("inf")
    v[0, 1, 7, 0] = float("nan")
    out, _ = _probe(diffattn.QuantizedConfig(precision=precision, **REF), qkv=[q, k, v])
    assert torch.isnan(out[0, 0, 5]).all()  # the query row holding inf
    assert torch.isnan(out[0, 1, :, 0]).all()  # every row reads the NaN value channel
    assert torch.isfinite(out[0, 0, :5]).all()  # untouched rows of the other head stay exact


def test_quantized_on_a_model_quantizes_self_attention_only_and_removes_exactly(call_spy):
    model, kwargs = denoiser("wan"), inputs("wan")
    stock = forward(model, kwargs)
    with diffattn.apply(model, diffattn.QuantizedConfig(precision="int8", **REF)) as handle:
        out = forward(model, kwargs)
        densities = {r["density"] for steps in handle.stats.to_dict().values() for r in steps.values()} - {None}
    assert call_spy and all(call.kernel_options["precision"] == "int8" for call in call_spy)
    assert {call.layer.role for call in call_spy} == {"self"}  # cross-attention stays in the model's dtype
    assert densities == {1.0}
    error = float((out - stock).abs().mean() / stock.abs().mean())
    assert 0 < error < 0.015
    assert torch.equal(forward(model, kwargs), stock)


def test_precision_is_validated():
    with pytest.raises(ConfigError, match="precision must be one of 'bf16', 'int8', 'int8-fp8'"):
        diffattn.SpargeConfig(precision="fp4")
    with pytest.raises(ConfigError, match="quantized computes attention in 8 bits"):
        diffattn.QuantizedConfig(precision="bf16")
    with pytest.raises(ConfigError, match="precision must be one of"):
        diffattn.FreeSwimConfig(precision="int4")


def test_precision_fallbacks_are_announced_once(monkeypatch, caplog):
    from diffattn import precision as module

    monkeypatch.setattr(module, "_RUNNABLE", {})
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with caplog.at_level(logging.WARNING, logger="diffattn"):
        assert runnable_precision("int8-fp8", torch.device("cuda")) == "int8"
        assert runnable_precision("int8-fp8", torch.device("cuda")) == "int8"
        assert runnable_precision("int8", torch.device("cuda")) == "int8"
        assert runnable_precision("int8-fp8", torch.device("cpu")) == "int8-fp8"
        assert runnable_precision("int8-fp8", torch.device("cpu")) == "int8-fp8"
        assert runnable_precision("bf16", torch.device("cpu")) == "bf16"
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "compute capability 8.9+" in messages[0] and "8.0" in messages[0]
    assert "PyTorch reference of the 8-bit arithmetic" in messages[1]


def test_the_cli_takes_each_methods_precision():
    from diffattn.cli import build_parser
    from diffattn.cli.generate import configs_from_args

    args = build_parser().parse_args(["generate", "--method", "sparge", "--method", "quantized",
                                      "--sparge-precision", "int8", "--quantized-precision", "int8"])
    sparge, quantized = configs_from_args(args, ["sparge", "quantized"], {})
    assert (sparge.precision, quantized.precision) == ("int8", "int8")
    args = build_parser().parse_args(["generate", "--method", "freeswim", "--freeswim-precision", "fp4"])
    with pytest.raises(ConfigError, match="precision must be one of"):
        configs_from_args(args, ["freeswim"], {})
