"""The image pipelines end to end: observe leaves every output bit for bit, and each call's CFG branch and text
layout are the ones the family's pipeline really uses (true CFG as a conditional then an unconditional call on Flux,
Flux 2 Klein and QwenImage, one batched call on SD3)."""

import pytest
import torch

import diffattn
import diffattn.processors.base as base
from diffattn.testing import tiny_call_kwargs, tiny_pipeline

# family -> (CFG branch of each forward within a step, batch of each forward)
CFG = {
    "flux": (["cond", "uncond"], 1),
    "flux2": (["cond", "uncond"], 1),
    "qwenimage": (["cond", "uncond"], 1),
    "sd3": (["batched"], 2),
}


@pytest.mark.parametrize("family", sorted(CFG))
def test_observe_is_stock_and_sees_the_cfg_calls_of_the_pipeline(family, monkeypatch):
    pipe = tiny_pipeline(family)
    stock = pipe(**tiny_call_kwargs(family)).images
    seen = []
    real = base.execute

    def spy(call):
        ctx = call.context
        seen.append((ctx.step_index, ctx.forward_index, ctx.cfg_branch, call.query.shape[0], call.layout.kind, ctx.text_len))
        return real(call)

    monkeypatch.setattr(base, "execute", spy)
    with diffattn.apply(pipe, "observe"):
        observed = pipe(**tiny_call_kwargs(family)).images
    assert torch.equal(observed, stock)

    branches, batch = CFG[family]
    forwards = {}
    for step, forward, branch, size, kind, text in seen:
        forwards.setdefault(forward, (step, branch, size, kind, text))
        assert kind == "joint" and size == batch
    steps = tiny_call_kwargs(family)["num_inference_steps"]
    assert [branch for _, branch, *_ in forwards.values()] == branches * steps
    assert [step for step, *_ in forwards.values()] == [s for s in range(steps) for _ in branches]
    assert all(text and text > 0 for *_, text in forwards.values())
