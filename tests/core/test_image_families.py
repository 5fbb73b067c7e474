"""Image transformers (Flux, Flux 2, QwenImage, SD3): the grid and text layout recovered from each call, observe
equal to stock bit for bit, conditioning-image calls refused, and the video-only methods refusing image pipelines."""

import pytest
import torch

import diffattn
import diffattn.processors.base as base
from diffattn.errors import DiffAttnError, GridError
from diffattn.registry import methods
from diffattn.testing import tiny_call_kwargs, tiny_denoiser, tiny_denoiser_inputs, tiny_pipeline

IMAGE_FAMILIES = ("flux", "flux2", "qwenimage", "sd3")
TEXT_FIRST = {"flux": True, "flux2": True, "qwenimage": True, "sd3": False}
LATENT = (8, 10)  # latent height x width: a 4 x 5 token grid after the 2x2 patches


def _forward(model, inputs):
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_grid_text_layout_and_observe_equal_stock(family, monkeypatch):
    model = tiny_denoiser(family)
    inputs = tiny_denoiser_inputs(family, batch=2, height=LATENT[0], width=LATENT[1])
    stock = _forward(model, inputs)
    layouts = []
    real = base.execute
    monkeypatch.setattr(base, "execute", lambda call: layouts.append((call.query.shape[-2], call.layout)) or real(call))
    with diffattn.apply(model, "observe") as handle:
        observed = _forward(model, inputs)
        summary = handle.context.summary()
    assert torch.equal(observed, stock)
    text = inputs["encoder_hidden_states"].shape[1]
    assert summary["grid"] == (1, 4, 5) and summary["text_len"] == text
    assert layouts and all(layout.kind == "joint" for _, layout in layouts)  # every call attends text + image jointly
    for length, layout in layouts:
        image = slice(length - 20, length) if TEXT_FIRST[family] else slice(0, 20)
        assert layout.video == image and layout.grid.tokens == 20
        assert length - 20 == text
    assert torch.equal(_forward(model, inputs), stock)


def test_flux_conditioning_image_tokens_are_refused():
    """Kontext appends the reference image's tokens (index 1) to the sequence: no single grid holds them."""
    model = tiny_denoiser("flux")
    inputs = tiny_denoiser_inputs("flux")
    reference = inputs["img_ids"].clone()
    reference[:, 0] = 1
    inputs = {**inputs, "hidden_states": inputs["hidden_states"].repeat(1, 2, 1), "img_ids": torch.cat([inputs["img_ids"], reference])}
    with diffattn.apply(model, "observe"), pytest.raises(GridError, match="conditioning or reference image tokens"):
        _forward(model, inputs)


def test_qwenimage_edit_shapes_are_refused():
    model = tiny_denoiser("qwenimage")
    inputs = tiny_denoiser_inputs("qwenimage")
    shape = inputs["img_shapes"][0][0]
    inputs = {**inputs, "hidden_states": inputs["hidden_states"].repeat(1, 2, 1), "img_shapes": [[shape, shape]]}
    with diffattn.apply(model, "observe"), pytest.raises(GridError, match="2 images per sample"):
        _forward(model, inputs)


# What each refusal names: noise methods need frames, FreeSwim Wan's transformer, InitNO a UNet; editors run their pipeline.
OWN_PIPELINE = "edits an existing video with its own pipeline"
VIDEO_ONLY = {"freeinit": "needs a video pipeline", "freenoise": "needs a video pipeline", "freeswim": "needs a Wan",
              "initno": "Stable Diffusion 1.x/2.x", "fatezero": OWN_PIPELINE, "realcraft": OWN_PIPELINE, "fresco": OWN_PIPELINE}


@pytest.mark.parametrize("name", sorted(VIDEO_ONLY))
@pytest.mark.parametrize("family", ("flux", "sd3"))
def test_video_and_unet_methods_refuse_image_transformer_pipelines(name, family):
    pipe = tiny_pipeline(family)
    config = methods()[name].from_dict(dict(methods()[name].tiny_settings))
    cls, processors = type(pipe), [module.processor for _, module in base.find_attention_modules(pipe.transformer)]
    with pytest.raises(DiffAttnError, match=VIDEO_ONLY[name]):
        diffattn.apply(pipe, config)
    assert [module.processor for _, module in base.find_attention_modules(pipe.transformer)] == processors
    assert type(pipe) is cls  # refused before anything was installed


CFG_BRANCHES = {"flux": ["cond", "uncond"], "flux2": ["cond", "uncond"], "qwenimage": ["cond", "uncond"], "sd3": ["batched"]}
"""Branch of each denoiser call in one step: true CFG runs two named calls, SD3 one batched `[uncond, cond]` call."""


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_cfg_call_pattern_and_steps(family):
    pipe = tiny_pipeline(family)
    seen = []
    with diffattn.apply(pipe, "observe") as handle:
        hook = pipe.transformer.register_forward_hook(
            lambda *_: seen.append((handle.context.step_index, handle.context.cfg_branch))
        )
        pipe(**tiny_call_kwargs(family))
        hook.remove()
    assert seen == [(step, branch) for step in (0, 1) for branch in CFG_BRANCHES[family]]
