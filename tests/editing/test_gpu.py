"""The editing pipelines on CUDA in bfloat16 (tiny models): finite results, store and online modes agree."""

import pytest
import torch

from diffattn.configs import FateZeroConfig, FrescoConfig, RealCraftConfig
from diffattn.pipelines.fatezero import FateZeroPipeline
from diffattn.pipelines.fresco import FrescoPipeline
from diffattn.pipelines.realcraft import RealCraftPipeline
from diffattn.testing import sample_clip, tiny_pipeline

pytestmark = pytest.mark.gpu

SOURCE = "a red sun moving over colorful waves"
TARGET = "a blue moon moving over colorful waves"


def _on_gpu(cls, family):
    pipe = cls.from_pipe(tiny_pipeline(family, dtype=torch.bfloat16, device="cuda"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_fatezero_and_realcraft_on_cuda():
    clip = sample_clip(4, 64, 64)
    fatezero = _on_gpu(FateZeroPipeline, "sd")
    outputs = {mode: fatezero(clip, SOURCE, TARGET, FateZeroConfig(num_inference_steps=3, attention_store=mode, blend_words=("red",)),
                              output_type="latent").frames for mode in ("ram", "online")}
    assert all(torch.isfinite(o).all() for o in outputs.values())
    assert (outputs["ram"].float() - outputs["online"].float()).abs().max() < 0.1  # fp16 maps vs bf16 recomputation
    realcraft = _on_gpu(RealCraftPipeline, "sd")
    out = realcraft(clip, SOURCE, TARGET, RealCraftConfig(num_inference_steps=3))
    assert torch.isfinite(out.frames).all() and out.masks is not None


def test_fresco_on_cuda():
    fresco = _on_gpu(FrescoPipeline, "sd-controlnet")
    out = fresco(sample_clip(4, 64, 64), TARGET, FrescoConfig(num_inference_steps=4, step_interattn_end=0),
                 generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.frames).all() and out.info["optimization_loss_ratio"] < 1
