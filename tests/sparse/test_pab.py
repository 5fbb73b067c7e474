"""PAB: counted per denoising step and cached per CFG branch as the original; with `match_diffusers`, the same
layers, counts, windows and outputs as diffusers' `apply_pyramid_attention_broadcast`."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast

import diffattn
from diffattn.processors.base import find_attention_modules
from diffattn.testing import FAMILIES, tiny_call_kwargs, tiny_denoiser, tiny_denoiser_inputs, tiny_pipeline

from .conftest import VIDEO_FAMILIES

STEPS = 4
WINDOW = (0.0, 1001.0)  # every timestep of the schedules


def run(pipe, family):
    with torch.no_grad():
        return pipe(**tiny_call_kwargs(family, num_inference_steps=STEPS, output_type="latent")).frames


@pytest.mark.parametrize("family", [family for family in VIDEO_FAMILIES if family in FAMILIES])  # with a tiny pipeline
def test_pab_matching_diffusers_equals_diffusers_pab(family):
    """Spatial range 2 and cross range 3 over the whole schedule: with `match_diffusers`, ours and diffusers'
    outputs are identical."""
    theirs_pipe = tiny_pipeline(family)
    stock = run(theirs_pipe, family)
    apply_pyramid_attention_broadcast(
        theirs_pipe.transformer,
        PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2, cross_attention_block_skip_range=3,
            spatial_attention_timestep_skip_range=WINDOW, cross_attention_timestep_skip_range=WINDOW,
            current_timestep_callback=lambda: theirs_pipe.current_timestep,
        ),
    )
    theirs = run(theirs_pipe, family)
    hooked = {
        name for name, module in find_attention_modules(theirs_pipe.transformer)
        if getattr(module, "_diffusers_hook", None) is not None and module._diffusers_hook.get_hook("pyramid_attention_broadcast")
    }

    pipe = tiny_pipeline(family)
    config = diffattn.PABConfig(
        preset="none", spatial_skip_range=2, cross_skip_range=3, spatial_timestep_range=WINDOW, cross_timestep_range=WINDOW,
        match_diffusers=True,
    )
    with diffattn.apply(pipe, config) as handle:
        ours = run(pipe, family)
        reused = {layer for layer, steps in handle.stats.to_dict().items() if any(r.get("reused") for r in steps.values())}
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, stock)  # outputs really were reused
    assert reused == hooked  # the same layers broadcast
    assert torch.equal(run(pipe, family), stock)  # removed: stock again


def test_each_cfg_branch_reuses_its_own_attention_once_per_step():
    """Wan runs cond and uncond as separate calls. The original counts steps and never mixes branches: exactly
    what diffusers' hook gives on two copies of the model, one fed only the conditional calls, one only the
    unconditional ones."""
    model = tiny_denoiser("wan")
    timestep = [None]
    branches = {}
    for branch in ("cond", "uncond"):
        branches[branch] = copy.deepcopy(model)
        apply_pyramid_attention_broadcast(branches[branch], PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2, cross_attention_block_skip_range=3,
            spatial_attention_timestep_skip_range=WINDOW, cross_attention_timestep_skip_range=WINDOW,
            current_timestep_callback=lambda: timestep[0],
        ))
    kwargs = tiny_denoiser_inputs("wan")
    texts = {"cond": kwargs["encoder_hidden_states"], "uncond": torch.randn_like(kwargs["encoder_hidden_states"])}
    config = diffattn.PABConfig(preset="none", spatial_skip_range=2, cross_skip_range=3,
                                spatial_timestep_range=WINDOW, cross_timestep_range=WINDOW)
    generator = torch.Generator().manual_seed(1)
    with diffattn.apply(model, config) as handle, torch.no_grad():
        for t in (900.0, 700.0, 500.0, 300.0):
            timestep[0] = t
            latent = torch.randn(kwargs["hidden_states"].shape, generator=generator)
            for branch, text in texts.items():
                call = {**kwargs, "hidden_states": latent, "timestep": torch.full_like(kwargs["timestep"], t),
                        "encoder_hidden_states": text}
                with model.cache_context(branch):
                    ours = model(**call, return_dict=False)[0]
                theirs = branches[branch](**call, return_dict=False)[0]
                assert torch.equal(ours, theirs), (t, branch)
        stats = handle.stats.to_dict()

    def reused(suffix: str) -> set[int]:
        return {step for name, steps in stats.items() if name.endswith(suffix) for step, r in steps.items() if r.get("reused")}

    assert reused("attn1") == {1, 3} and reused("attn2") == {1, 2}  # spatial range 2, cross range 3, counted in steps


def test_the_unconditional_pass_never_reuses_the_conditional_one():
    """One step: nothing is reused, so the output is stock (matching diffusers, the uncond call reused the cond
    call's attention, computing the unconditional branch with the positive prompt)."""
    pipe = tiny_pipeline("wan")
    one_step = {"num_inference_steps": 1, "output_type": "latent"}
    with torch.no_grad():
        stock = pipe(**tiny_call_kwargs("wan", **one_step)).frames
    settings = dict(preset="none", spatial_skip_range=2, spatial_timestep_range=WINDOW)
    for match_diffusers in (False, True):
        with diffattn.apply(pipe, diffattn.PABConfig(**settings, match_diffusers=match_diffusers)), torch.no_grad():
            out = pipe(**tiny_call_kwargs("wan", **one_step)).frames
        assert torch.equal(out, stock) != match_diffusers


def test_outside_the_window_nothing_is_reused():
    pipe = tiny_pipeline("wan")
    stock = run(pipe, "wan")
    with diffattn.apply(pipe, diffattn.PABConfig(spatial_timestep_range=(0.0, 1.0), cross_timestep_range=(0.0, 1.0))) as handle:
        assert torch.equal(run(pipe, "wan"), stock)
        assert not any(r.get("reused") for steps in handle.stats.to_dict().values() for r in steps.values())


def test_presets_are_the_published_values():
    auto = diffattn.PABConfig()
    # Wan's values come from a third-party Wan port of VideoSys's PAB manager (WanV120PABConfig), not VideoSys
    assert auto.resolve("wan") == {"spatial": (2, (603.0, 976.0)), "temporal": (0, (603.0, 976.0)), "cross": (6, (603.0, 976.0))}
    assert auto.resolve("cogvideox")["spatial"] == (2, (100.0, 850.0))
    assert auto.resolve("ltx") == {"spatial": (2, (100.0, 800.0)), "temporal": (0, (100.0, 800.0)), "cross": (0, (100.0, 800.0))}
    overridden = diffattn.PABConfig(cross_skip_range=0, spatial_timestep_range=(10.0, 20.0)).resolve("wan")
    assert overridden["cross"][0] == 0 and overridden["spatial"] == (2, (10.0, 20.0))
    with pytest.raises(diffattn.ConfigError, match="at least one"):
        diffattn.PABConfig(preset="none")
    with pytest.raises(diffattn.ConfigError, match="low < high"):
        diffattn.PABConfig(spatial_timestep_range=(800.0, 100.0))
