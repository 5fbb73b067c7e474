"""diffattn's methods under diffusers' memory features on the tiny Wan denoiser: FP8 weight storage
(`enable_layerwise_casting`), group offloading (leaf level; diffusers refuses `use_stream=True` without a device
that has streams, so streams are left to GPU runs) and the pipeline's model CPU offload.

Under each feature, every method still acts (its stats), and Sparge at its dense-equivalent setting (top-k 1) gives
the output of the same feature without diffattn (the kernel's float rounding apart), restored bitwise by `remove()`.
"""

from __future__ import annotations

import pytest
import torch

import diffattn

from .conftest import COMMON, METHODS, denoise, relative_error
from .test_caches import acted


def fp8_weights(model: torch.nn.Module) -> None:
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)


def leaf_offload(model: torch.nn.Module) -> None:
    model.enable_group_offload(onload_device=torch.device("cpu"), offload_type="leaf_level")


FEATURES = {"fp8 layerwise casting": fp8_weights, "group offload (leaf level)": leaf_offload}


@pytest.mark.parametrize("feature", list(FEATURES))
def test_dense_equivalent_equals_the_feature_alone_and_remove_restores(model, feature):
    FEATURES[feature](model)
    alone = denoise(model)
    with diffattn.apply(model, diffattn.SpargeConfig(topk=1.0, **COMMON)) as handle:
        out = denoise(model)
        assert handle.stats.summary()["mean_density"] == 1.0
    assert relative_error(out, alone) < 2e-5
    assert torch.equal(denoise(model), alone)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("feature", list(FEATURES))
def test_every_method_acts_under_the_feature(model, feature, method):
    FEATURES[feature](model)
    with diffattn.apply(model, METHODS[method]()) as handle:
        denoise(model)
        assert acted(handle, method)


def test_fp8_storage_really_changes_the_weights(model):
    stock = denoise(model)
    fp8_weights(model)
    assert model.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert not torch.equal(denoise(model), stock)


def test_model_cpu_offload_pipeline_keeps_every_part():
    """`pipe.enable_model_cpu_offload(device="cpu")`: accelerate's offload hooks run on the CPU too (same hook path as
    on a GPU, without the transfers); dense-equivalent Sparge equals the offloaded stock run and Sparge acts."""
    from diffattn.testing import tiny_call_kwargs, tiny_pipeline

    pipe = tiny_pipeline("wan")
    pipe.enable_model_cpu_offload(device="cpu")
    size = {"height": 128, "width": 128, "num_frames": 29, "output_type": "latent"}  # 8 x 8 x 8 tokens
    stock = pipe(**tiny_call_kwargs("wan", **size)).frames
    with diffattn.apply(pipe, diffattn.SpargeConfig(topk=1.0, **COMMON)) as handle:
        dense = pipe(**tiny_call_kwargs("wan", **size)).frames
        assert handle.stats.summary()["mean_density"] == 1.0
    assert relative_error(dense, stock) < 1e-4
    with diffattn.apply(pipe, METHODS["sparge"]()) as handle:
        pipe(**tiny_call_kwargs("wan", **size))
        assert acted(handle, "sparge")
    assert torch.equal(pipe(**tiny_call_kwargs("wan", **size)).frames, stock)
