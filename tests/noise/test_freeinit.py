"""FreeInit through `diffattn.apply` on real (tiny) pipelines: diffusers equivalence, composition, restore, flow matching."""

import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

import diffattn
from diffattn.configs import FreeInitConfig, ObserveConfig
from diffattn.errors import UnsupportedModelError
from diffattn.noise import frequency_mix, low_pass_filter, renoise
from diffattn.noise.freeinit import fast_sampling_steps
from diffattn.testing import tiny_call_kwargs, tiny_denoiser, tiny_pipeline


@pytest.fixture(scope="module")
def animatediff():
    return tiny_pipeline("animatediff")


@pytest.fixture(scope="module")
def wan():
    return tiny_pipeline("wan")


def _frames(pipe, family, **overrides):
    return pipe(**tiny_call_kwargs(family, **overrides)).frames


@pytest.mark.parametrize(
    "settings",
    [
        dict(num_iters=3),
        dict(num_iters=3, fast_sampling=True),
        dict(num_iters=2, filter="gaussian", spatial_stop=0.4, temporal_stop=0.3),
    ],
)
def test_matches_diffusers_freeinit_mixin(animatediff, settings):
    """Same settings and generator as diffusers' `enable_free_init`: the same video, draw for draw."""
    names = {"num_iters": "num_iters", "fast_sampling": "use_fast_sampling", "filter": "method",
             "spatial_stop": "spatial_stop_frequency", "temporal_stop": "temporal_stop_frequency"}
    animatediff.enable_free_init(**{names[k]: v for k, v in settings.items()})
    try:
        expected = _frames(animatediff, "animatediff", num_inference_steps=3)
    finally:
        animatediff.disable_free_init()
    with diffattn.apply(animatediff, FreeInitConfig(**settings)):
        ours = _frames(animatediff, "animatediff", num_inference_steps=3)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    assert not torch.equal(ours, _frames(animatediff, "animatediff", num_inference_steps=3))  # FreeInit did act


def test_one_iteration_is_plain_sampling_and_remove_restores_exactly(animatediff):
    cls = type(animatediff)
    stock = _frames(animatediff, "animatediff")
    handle = diffattn.apply(animatediff, FreeInitConfig(num_iters=1))
    assert type(animatediff) is not cls and isinstance(animatediff, cls) and type(animatediff).__name__ == cls.__name__
    assert torch.equal(_frames(animatediff, "animatediff"), stock)
    handle.remove()
    assert type(animatediff) is cls and "_diffattn_pipeline_extensions" not in vars(animatediff)
    assert torch.equal(_frames(animatediff, "animatediff"), stock)


def test_composes_with_attention_methods_one_run_per_iteration(animatediff):
    """Each iteration resets the scheduler's timesteps, so the run context counts one run per iteration."""
    config = FreeInitConfig(num_iters=3, fast_sampling=True)
    with diffattn.apply(animatediff, config) as alone:
        expected = _frames(animatediff, "animatediff", num_inference_steps=6)
    with diffattn.apply(animatediff, config, ObserveConfig()) as handle:
        frames = _frames(animatediff, "animatediff", num_inference_steps=6)
        assert handle.context.run_index == 2  # runs 0, 1, 2
        assert handle.context.num_steps == 6 and handle.context.step_index == 5  # the last run: all 6 steps
        assert [r.steps for r in handle.methods[0].history] == [fast_sampling_steps(6, 3, i) for i in range(3)] == [2, 4, 6]
        assert handle.stats.summary()["steps"] == 6 and handle.stats.summary()["calls"] > 0
    assert torch.equal(frames, expected)  # observe is exact dense attention
    assert [r.steps for r in alone.methods[0].history] == [2, 4, 6]


def test_flow_matching_pipeline_restarts_from_the_mixed_latents(wan):
    """Tiny Wan (FlowMatchEuler): run 1 starts from LPF(renoised z0) + HPF(z_rand), z_rand drawn after ε."""
    plain = wan(**tiny_call_kwargs("wan", output_type="latent")).frames  # z0 of iteration 0 (deterministic)
    generator = torch.Generator().manual_seed(0)
    noise = randn_tensor(tuple(plain.shape), generator=generator, dtype=torch.float32)
    fresh = randn_tensor(tuple(plain.shape), generator=generator, dtype=torch.float32)
    expected = frequency_mix(renoise(wan.scheduler, plain, noise), fresh, low_pass_filter(tuple(plain.shape[-3:])))

    seen = []
    hook = wan.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["hidden_states"].clone()), with_kwargs=True
    )
    try:
        with diffattn.apply(wan, FreeInitConfig(num_iters=2)) as handle:
            first = _frames(wan, "wan")
            assert handle.context.run_index == 1
        again = None
        with diffattn.apply(wan, FreeInitConfig(num_iters=2)):
            again = _frames(wan, "wan")
    finally:
        hook.remove()
    steps = tiny_call_kwargs("wan")["num_inference_steps"]
    calls_per_step = len(seen) // (4 * steps)  # two applies x two iterations; CFG runs cond and uncond separately
    torch.testing.assert_close(seen[0], noise)
    torch.testing.assert_close(seen[steps * calls_per_step], expected, rtol=0, atol=1e-5)
    assert torch.equal(first, again)  # deterministic under the generator
    assert not torch.equal(first, _frames(wan, "wan"))


def test_image_pipelines_and_bare_models_are_refused_and_left_untouched():
    sd = tiny_pipeline("sd")
    cls = type(sd)
    with pytest.raises(UnsupportedModelError, match="needs a video pipeline"):
        diffattn.apply(sd, FreeInitConfig())
    assert type(sd) is cls and diffattn.handle_of(sd) is None
    with pytest.raises(UnsupportedModelError, match="apply it to the pipeline"):
        diffattn.apply(tiny_denoiser("animatediff"), FreeInitConfig())


@pytest.mark.parametrize("family", ["cogvideox", "ltx", "hunyuanvideo", "mochi"])
def test_runs_on_every_video_family(family):
    """Zero-terminal-SNR DDIM (CogVideoX), packed latents (LTX), flow matching (HunyuanVideo, Mochi)."""
    pipe = tiny_pipeline(family)
    plain = _frames(pipe, family)
    with diffattn.apply(pipe, FreeInitConfig(num_iters=2)) as handle:
        first, again = _frames(pipe, family), _frames(pipe, family)
        assert handle.context.run_index == 3  # two calls, two runs each
    assert first.shape == plain.shape and torch.isfinite(first).all()
    assert torch.equal(first, again) and not torch.equal(first, plain)
