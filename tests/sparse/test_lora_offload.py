"""The model's own processor stays in charge: a PEFT LoRA and diffusers' group offloading keep working."""

from __future__ import annotations

import pytest
import torch

import diffattn
from diffattn.testing import tiny_denoiser

from .conftest import MIN_TOKENS, forward, inputs, relative_error

DENSE = diffattn.SpargeConfig(topk=1.0, backend="reference", min_tokens=MIN_TOKENS)
SPARSE = diffattn.RadialConfig(dense_steps=0, dense_layers=(), backend="reference", min_tokens=MIN_TOKENS)


def test_peft_lora_is_applied_under_the_sparse_methods():
    from peft import LoraConfig  # in the test extra: pip install -e ".[test]"

    model, kwargs = tiny_denoiser("wan"), inputs("wan")
    base = forward(model, kwargs)
    model.add_adapter(LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with_lora = forward(model, kwargs)
    assert relative_error(with_lora, base) > 1e-3  # the adapter changes the output
    with diffattn.apply(model, DENSE):
        assert relative_error(forward(model, kwargs), with_lora) < 2e-5  # ... and still does through diffattn
        halved = forward(model, {**kwargs, "attention_kwargs": {"scale": 0.5}})
    half_stock = forward(model, {**kwargs, "attention_kwargs": {"scale": 0.5}})
    assert relative_error(halved, half_stock) < 2e-5  # the LoRA scale reaches the adapter
    with diffattn.apply(model, SPARSE):
        assert torch.isfinite(forward(model, kwargs)).all()


def test_group_offloading_hooks_keep_working():
    model, kwargs = tiny_denoiser("wan"), inputs("wan")
    stock = forward(model, kwargs)
    model.enable_group_offload(onload_device=torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1)
    with diffattn.apply(model, DENSE) as handle:
        out = forward(model, kwargs)
        assert handle.stats.summary()["mean_density"] == 1.0
    assert relative_error(out, stock) < 2e-5
    assert torch.equal(forward(model, kwargs), stock)


@pytest.mark.gpu
def test_model_cpu_offload_keeps_working():
    from diffattn.testing import tiny_call_kwargs, tiny_pipeline

    pipe = tiny_pipeline("wan")
    pipe.enable_model_cpu_offload()
    call = tiny_call_kwargs("wan", height=128, width=128, num_frames=29, output_type="latent")
    stock = pipe(**call).frames
    with diffattn.apply(pipe, diffattn.SpargeConfig(topk=1.0, backend="reference", min_tokens=MIN_TOKENS)) as handle:
        out = pipe(**tiny_call_kwargs("wan", height=128, width=128, num_frames=29, output_type="latent")).frames
        assert handle.stats.summary()["mean_density"] == 1.0
    assert relative_error(out, stock) < 1e-4
