"""The method contract's composition: methods with an attention part and a pipeline part install each through its
own installer, and a pipeline part never lands on a bare denoiser."""

from __future__ import annotations

import pytest

import diffattn
from diffattn.api import handle_of
from diffattn.errors import UnsupportedModelError
from diffattn.extension import PipelineExtension, PipelineInstaller, extensions_of
from diffattn.method import Method, Target
from diffattn.pipelines.freenoise import FreeNoiseSampling
from diffattn.pipelines.initno import InitNOPipeline, InitNORedirect
from diffattn.processors.base import AttentionInstaller
from diffattn.processors.noise import FreeNoiseAttention, InitNOAttentionStore
from diffattn.testing import tiny_denoiser, tiny_pipeline


def _installers(handle) -> list[type]:
    return [type(installer) for installer in handle._installers]


def test_freenoise_on_a_pipeline_is_an_attention_part_and_a_sampling_part():
    pipe = tiny_pipeline("animatediff")
    with diffattn.apply(pipe, diffattn.FreeNoiseConfig()) as handle:
        (method,) = handle.methods
        attention, sampling = method.parts()
        assert isinstance(attention, FreeNoiseAttention) and isinstance(sampling, FreeNoiseSampling)
        assert _installers(handle) == [AttentionInstaller, PipelineInstaller]
        assert extensions_of(pipe) == [sampling]
        assert sampling.supports_prompt_schedule  # AnimateDiff conditions frame by frame
    assert extensions_of(pipe) == []


def test_freenoise_on_a_bare_denoiser_installs_only_its_attention_part():
    unet = tiny_denoiser("animatediff")
    with diffattn.apply(unet, diffattn.FreeNoiseConfig()) as handle:
        assert [type(p) for p in handle.methods[0].parts()] == [FreeNoiseAttention]
        assert _installers(handle) == [AttentionInstaller]


def test_initno_redirects_a_stable_diffusion_pipeline_but_not_an_initno_pipeline():
    sd = tiny_pipeline("sd")
    with diffattn.apply(sd, diffattn.InitNOConfig()) as handle:
        method = handle.methods[0]
        assert [type(p) for p in method.parts()] == [InitNOAttentionStore, InitNORedirect]
        assert extensions_of(sd) == [method.redirect]
    initno = InitNOPipeline.from_pipe(tiny_pipeline("sd"))
    with diffattn.apply(initno, diffattn.InitNOConfig()) as handle:
        assert [type(p) for p in handle.methods[0].parts()] == [InitNOAttentionStore]
        assert extensions_of(initno) == []


def test_composition_keeps_the_extension_order_whatever_the_order_given():
    """FreeInit's loop (order 0) wraps FreeNoise's sampling part (order 50) in either order of the configs."""
    for configs in ((diffattn.FreeInitConfig(), diffattn.FreeNoiseConfig()), (diffattn.FreeNoiseConfig(), diffattn.FreeInitConfig())):
        pipe = tiny_pipeline("animatediff")
        with diffattn.apply(pipe, *configs):
            assert [type(e).__name__ for e in extensions_of(pipe)] == ["FreeInit", "FreeNoiseSampling"]


class _Redirect(PipelineExtension):
    """A pipeline part of a test method."""


def test_a_pipeline_part_on_a_bare_denoiser_is_refused_before_anything_is_attached():
    handle = diffattn.apply(tiny_denoiser("sd"), diffattn.ObserveConfig())
    try:
        target: Target = handle.target
        part = _Redirect(diffattn.ObserveConfig(), target)
        with pytest.raises(UnsupportedModelError, match="observe wraps a pipeline's sampling; apply it to the pipeline"):
            PipelineInstaller(target, [part]).install()
    finally:
        handle.remove()
    assert handle_of(handle.model) is None


def test_a_method_is_its_own_single_part_by_default():
    with diffattn.apply(tiny_denoiser("sd"), diffattn.ObserveConfig()) as handle:
        method = Method(diffattn.ObserveConfig(), handle.target)
        assert method.parts() == (method,) and method.name == "observe"
        assert handle.methods[0].parts() == (handle.methods[0],)
