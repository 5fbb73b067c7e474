"""`apply` / `Handle` on every tiny pipeline: exact observe, bitwise restore, atomicity, clear errors."""

import pytest
import torch

import diffattn
from diffattn.context import CONTEXT_HOOK
from diffattn.errors import AlreadyAppliedError, ConfigError, IncompatibleMethodsError, UnknownMethodError, UnsupportedModelError
from diffattn.generation import pipeline_frames
from diffattn.processors.base import DiffAttnProcessor, describe_layers, find_attention_modules
from diffattn.testing import FAMILIES, tiny_call_kwargs, tiny_pipeline


def run(pipe, family):
    return pipeline_frames(pipe(**tiny_call_kwargs(family)))


def processors_of(pipe):
    model = pipe.transformer if hasattr(pipe, "transformer") else pipe.unet
    return model, [module.processor for _, module in find_attention_modules(model)]


def assert_untouched(model, originals):
    assert [m.processor for _, m in find_attention_modules(model)] == originals
    assert not hasattr(model, "_diffattn_handle")
    registry = getattr(model, "_diffusers_hook", None)
    assert registry is None or registry.get_hook(CONTEXT_HOOK) is None


@pytest.mark.parametrize("family", FAMILIES)
def test_observe_equals_stock_and_remove_restores_bitwise(family):
    pipe = tiny_pipeline(family)
    model, originals = processors_of(pipe)
    stock = run(pipe, family)
    with diffattn.apply(pipe, "observe") as handle:
        modules = find_attention_modules(model)
        layers = describe_layers(modules, joint=family in ("cogvideox", "hunyuanvideo", "mochi"))
        for (_, module), layer in zip(modules, layers):  # every attention layer but text-only ones is routed
            assert isinstance(module.processor, DiffAttnProcessor) == (layer.role != "text")
        observed = run(pipe, family)
        summary = handle.stats.summary()
    assert (observed - stock).abs().max() <= 1e-6
    assert summary["calls"] > 0 and summary["steps"] == 2 and summary["mean_density"] == 1.0
    assert_untouched(model, originals)
    assert torch.equal(run(pipe, family), stock)


def test_apply_accepts_a_model_and_reports_stats_per_layer_and_step():
    pipe = tiny_pipeline("wan")
    handle = diffattn.apply(pipe.transformer, diffattn.ObserveConfig(layers=(0,)))
    try:
        run(pipe, "wan")
        layers = handle.stats.to_dict()
        assert set(layers) == {"blocks.0.attn1", "blocks.0.attn2"}  # only block 0 selected
        for steps in layers.values():
            assert sorted(steps) == [0, 1]
            assert all(record["calls"] == 2 and record["time_ms"] >= 0 for record in steps.values())  # cond + uncond
    finally:
        handle.remove()


def test_apply_is_atomic_when_installation_fails(monkeypatch):
    import diffattn.processors.base as base

    pipe = tiny_pipeline("wan")
    model, originals = processors_of(pipe)
    stock = run(pipe, "wan")
    real = base._set_processor
    calls = []

    def failing(module, processor):
        calls.append(module)
        if len(calls) == 3:
            raise RuntimeError("injected failure")
        real(module, processor)

    monkeypatch.setattr(base, "_set_processor", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        diffattn.apply(pipe, "observe")
    monkeypatch.setattr(base, "_set_processor", real)
    assert_untouched(model, originals)
    assert torch.equal(run(pipe, "wan"), stock)


def test_applying_twice_names_both_and_leaves_the_first():
    pipe = tiny_pipeline("sd")
    with diffattn.apply(pipe, "observe"):
        with pytest.raises(AlreadyAppliedError, match="observe.*remove"):
            diffattn.apply(pipe, "observe")
        assert diffattn.handle_of(pipe) is not None
    assert diffattn.handle_of(pipe) is None


def test_same_method_twice_in_one_call_is_refused():
    with pytest.raises(IncompatibleMethodsError, match="given twice"):
        diffattn.apply(tiny_pipeline("sd"), "observe", diffattn.ObserveConfig())


@pytest.mark.parametrize(
    "target, error, message",
    [
        (42, UnsupportedModelError, "DiffusionPipeline or a denoiser"),
        (torch.nn.Linear(2, 2), UnsupportedModelError, "Supported: wan"),
    ],
)
def test_bad_targets_raise_clear_errors(target, error, message):
    with pytest.raises(error, match=message):
        diffattn.apply(target, "observe")


def test_bad_method_or_settings_leave_the_model_untouched():
    pipe = tiny_pipeline("wan")
    model, originals = processors_of(pipe)
    with pytest.raises(UnknownMethodError, match="Did you mean"):
        diffattn.apply(pipe, "obsreve")
    with pytest.raises(ConfigError):
        diffattn.apply(pipe, "observe", dense_steps=-1)
    assert_untouched(model, originals)


def test_errors_share_one_base_class():
    for error in (UnsupportedModelError, UnknownMethodError, AlreadyAppliedError, ConfigError, IncompatibleMethodsError):
        assert issubclass(error, diffattn.DiffAttnError)


def test_two_expert_pipelines_get_the_methods_on_both_denoisers():
    """Wan 2.2 A14B style: `transformer` runs the high-noise steps, `transformer_2` the low-noise ones."""
    from diffusers import WanPipeline

    from diffattn.testing import tiny_denoiser

    base = tiny_pipeline("wan")
    pipe = WanPipeline(**base.components | {"transformer_2": tiny_denoiser("wan", seed=1)}, boundary_ratio=0.5)
    pipe.set_progress_bar_config(disable=True)
    kwargs = tiny_call_kwargs("wan", num_inference_steps=4)
    stock = pipeline_frames(pipe(**kwargs))
    with diffattn.apply(pipe, "observe") as handle:
        observed = pipeline_frames(pipe(**tiny_call_kwargs("wan", num_inference_steps=4)))
        layers = handle.stats.to_dict()
        assert all(isinstance(m.blocks[0].attn1.processor, DiffAttnProcessor) for m in (pipe.transformer, pipe.transformer_2))
    assert torch.equal(observed, stock)
    first, second = sorted(layers["blocks.0.attn1"]), sorted(layers["transformer_2.blocks.0.attn1"])
    assert first and second and max(first) < min(second)  # one step count across both experts
    assert sorted(first + second) == [0, 1, 2, 3]
    for model in (pipe.transformer, pipe.transformer_2):
        assert not isinstance(model.blocks[0].attn1.processor, DiffAttnProcessor)
        assert not hasattr(model, "_diffattn_handle")
