"""The method contract: composition (an attention part and a pipeline part, each through its own installer; no
pipeline part on a bare denoiser) and registration (a registered method is exported, listed and demoed)."""

from __future__ import annotations

import dataclasses
import pkgutil
import sys
import typing

import pytest

import diffattn
from diffattn import configs, registry
from diffattn.api import handle_of
from diffattn.cli.demos import load_entries
from diffattn.config import AttentionConfig, FileSetting
from diffattn.errors import ConfigError, UnsupportedModelError
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
    for given in ((diffattn.FreeInitConfig(), diffattn.FreeNoiseConfig()), (diffattn.FreeNoiseConfig(), diffattn.FreeInitConfig())):
        pipe = tiny_pipeline("animatediff")
        with diffattn.apply(pipe, *given):
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



# ------------------------------------------------------------------------------------------ registration
@dataclasses.dataclass(frozen=True)
class ScratchConfig(AttentionConfig):
    """A method a test registers: observe under another name, with a file setting."""

    name = "scratch"
    description = "observe under another name (test)"
    category = "observe"
    implementation = "diffattn.processors.observe:ObserveMethod"
    tiny_models = ("sd",)

    tuned: typing.Annotated[str | None, FileSetting((".json",))] = None


@dataclasses.dataclass(frozen=True)
class UncategorisedConfig(ScratchConfig):
    """A method with a category that does not exist."""

    category = "caching"


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry that a test may add methods to, and `diffattn` without names it cached from it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry.methods()))
    yield
    vars(diffattn).pop(ScratchConfig.__name__, None)


def test_a_registered_method_needs_a_known_category(scratch_registry):
    with pytest.raises(ValueError, match="UncategorisedConfig.category is 'caching'; set it to one of observe, sparsity"):
        registry.register_method(UncategorisedConfig)
    assert "scratch" not in registry.methods()


def test_a_registered_method_is_exported_listed_and_demoed_without_listing_it_anywhere(scratch_registry, tmp_path):
    registry.register_method(ScratchConfig)
    assert diffattn.ScratchConfig is ScratchConfig and "ScratchConfig" in diffattn.__all__
    entry = load_entries()["method-scratch"]
    assert entry.methods == ("scratch",)
    report = entry.run(tmp_path)
    assert report["ok"] and report["stock_restored_bitwise"] and report["max_abs_diff_vs_stock"] == 0.0
    assert (tmp_path / report["video"]).is_file()


def test_hand_written_demo_entries_name_the_methods_they_show():
    entries = load_entries()
    assert not any(name.startswith("method-") for name in entries)  # every built-in method has its own entry
    assert entries["sparse-tiny-wan"].methods == ("radial", "lite", "sparge", "psa", "pab", "quantized")


def test_a_field_annotated_as_a_file_is_a_file_setting():
    assert ScratchConfig.file_settings() == {"tuned": (".json",)}
    assert ScratchConfig.field_types()["tuned"] == (str | None)  # the annotation does not change parsing
    assert diffattn.SpargeConfig.file_settings() == {"tuned": (".json", ".pt")}
    assert diffattn.RadialConfig.file_settings() == {}


def test_the_configs_package_imports_and_exports_every_module_s_methods():
    modules = [m.name for m in pkgutil.walk_packages(configs.__path__, "diffattn.configs.")]
    assert modules and all(name in sys.modules for name in modules)
    built_in = {cls.__name__ for cls in registry.methods().values() if cls.__module__ in modules}
    assert set(configs.__all__) == built_in and all(getattr(configs, name) for name in built_in)


@dataclasses.dataclass(frozen=True)
class ModellessConfig(ScratchConfig):
    """A method that names no tiny model."""

    name = "modelless"
    tiny_models = ()


def test_a_generated_demo_entry_needs_a_tiny_model(scratch_registry, tmp_path):
    registry.register_method(ModellessConfig)
    with pytest.raises(ConfigError, match=r"ModellessConfig names no tiny model \(tiny_models\)"):
        load_entries()["method-modelless"].run(tmp_path)
