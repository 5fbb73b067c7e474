"""FreeNoise: rescheduling, windows, per-window positions against a direct reference, prompts, DiT variant, errors."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from diffusers import AnimateDiffPipeline
from diffusers.pipelines.free_noise_utils import AnimateDiffFreeNoiseMixin
from diffusers.utils.torch_utils import randn_tensor

import diffattn
from diffattn.configs import FreeInitConfig, FreeNoiseConfig
from diffattn.context import LayerInfo, RunContext
from diffattn.errors import ConfigError, UnsupportedModelError
from diffattn.geometry import Grid
from diffattn.noise import frame_windows, interpolate_keyframes, reschedule_noise, window_weights
from diffattn.processors.base import AttentionCall, TokenLayout
from diffattn.processors.noise import FreeNoiseAttention
from diffattn.stats import AttentionStats
from diffattn.testing import tiny_call_kwargs, tiny_denoiser, tiny_denoiser_inputs, tiny_pipeline


@pytest.fixture(scope="module")
def animatediff():
    return tiny_pipeline("animatediff")


# ----------------------------------------------------------------------------------- rescheduling
def test_rescheduled_chunks_are_permutations_of_their_sources_and_the_first_window_is_kept():
    video = torch.randn(2, 3, 37, 2, 2)
    out = reschedule_noise(video, 16, 4, "shuffle", torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :, :16], video[:, :, :16])
    assert not torch.equal(out, video)
    for start in range(16, 37, 4):
        count = min(4, 37 - start)
        source = [out[:, :, start - 16 + j] for j in range(4)]
        picked = [next(j for j in range(4) if torch.equal(out[:, :, start + i], source[j])) for i in range(count)]
        assert len(set(picked)) == count  # distinct source frames: a permutation (truncated at the end)


def test_shuffle_equals_diffusers_freenoise_latents_for_the_same_generator():
    owner = SimpleNamespace(_free_noise_context_length=8, _free_noise_context_stride=3,
                            _free_noise_noise_type="shuffle_context", vae_scale_factor=1)
    expected = AnimateDiffFreeNoiseMixin._prepare_latents_free_noise(
        owner, 1, 4, 23, 5, 6, torch.float32, "cpu", torch.Generator().manual_seed(3)
    )
    generator = torch.Generator().manual_seed(3)
    noise = randn_tensor((1, 4, 23, 5, 6), generator=generator)
    assert torch.equal(reschedule_noise(noise, 8, 3, "shuffle", generator), expected)


def test_repeat_tiles_the_first_window_and_random_keeps_the_noise():
    video = torch.randn(1, 2, 11, 3, 3)
    repeated = reschedule_noise(video, 4, 2, "repeat")
    assert all(torch.equal(repeated[:, :, f], video[:, :, f % 4]) for f in range(11))
    assert torch.equal(reschedule_noise(video, 4, 2, "random"), video)
    assert torch.equal(reschedule_noise(video, 16, 4, "shuffle"), video)  # shorter than a window: unchanged


@pytest.mark.parametrize("frames, length, stride", [(37, 16, 4), (24, 16, 4), (16, 16, 4), (9, 4, 3), (5, 8, 2)])
def test_windows_cover_every_frame_with_symmetric_pyramid_weights(frames, length, stride):
    starts = frame_windows(frames, length, stride)
    span = min(length, frames)
    covered = {s + i for s in starts for i in range(span)}
    assert covered == set(range(frames)) and starts[0] == 0 and starts[-1] + span == frames
    weights = window_weights(length, "pyramid")
    assert torch.equal(weights, weights.flip(0)) and weights.min() == 1 and weights.max() == (length + 1) // 2
    assert torch.equal(window_weights(length, "flat"), torch.ones(length, dtype=torch.float64))


def test_keyframe_interpolation_hits_the_keyframes_and_holds_the_last():
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    frames = interpolate_keyframes({0: a, 4: b}, 8)
    assert torch.equal(frames[0], a) and torch.equal(frames[4], b)
    torch.testing.assert_close(frames[2], (a + b) / 2)
    assert all(torch.equal(frames[f], b) for f in range(5, 8))


# ------------------------------------------------------------------------------------- attention
def test_one_window_is_plain_sampling(animatediff):
    """Eight frames in one window of eight: bitwise the stock video (noise and attention untouched)."""
    stock = animatediff(**tiny_call_kwargs("animatediff")).frames
    with diffattn.apply(animatediff, FreeNoiseConfig(context_length=8)):
        assert torch.equal(animatediff(**tiny_call_kwargs("animatediff")).frames, stock)


def test_window_fusion_equals_running_each_window_with_its_own_positions():
    """Against the definition: each window run through the stock module with positions 0..W-1, pyramid-fused.

    40 frames exceed the motion module's 32 positions, so this also covers the padded position table.
    """
    unet = tiny_denoiser("animatediff")
    inputs = tiny_denoiser_inputs("animatediff", frames=8)
    inputs["sample"] = torch.randn(1, 4, 40, 8, 8, generator=torch.Generator().manual_seed(0))
    inputs["encoder_hidden_states"] = inputs["encoder_hidden_states"][:1].repeat(40, 1, 1)  # one text row per frame
    block = unet.down_blocks[0].motion_modules[0].transformer_blocks[0]
    captured = {}
    hook = block.attn1.register_forward_hook(lambda module, args, out: captured.update(hidden=args[0], out=out))
    with torch.no_grad(), diffattn.apply(unet, FreeNoiseConfig(context_length=8, context_stride=4)) as handle:
        unet(**inputs)
        assert handle.stats.summary()["calls"] > 0
    hook.remove()
    table = F.pad(block.pos_embed.pe[0], (0, 0, 0, 40 - 32))
    plain = captured["hidden"] - table[:40]  # the block's input before positions were added
    weights = window_weights(8).float()
    fused, total = torch.zeros_like(captured["out"]), torch.zeros(40)
    with torch.no_grad():
        for start in frame_windows(40, 8, 4):
            window = block.attn1(plain[:, start:start + 8] + table[:8])
            fused[:, start:start + 8] += window * weights[:, None]
            total[start:start + 8] += weights
    torch.testing.assert_close(captured["out"], fused / total[:, None], rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError):  # removed: the stock 32-position table no longer stretches
        unet(**inputs)


def test_long_video_runs_and_remove_restores_the_pipeline(animatediff):
    stock = animatediff(**tiny_call_kwargs("animatediff")).frames
    with diffattn.apply(animatediff, FreeNoiseConfig(context_length=8, context_stride=4)) as handle:
        video = animatediff(**tiny_call_kwargs("animatediff", num_frames=36)).frames
        assert handle.stats.summary()["calls"] > 0
    assert video.shape[:2] == (1, 36) and torch.isfinite(video).all()
    assert type(animatediff) is AnimateDiffPipeline
    assert "_diffattn_pipeline_extensions" not in vars(animatediff)
    assert torch.equal(animatediff(**tiny_call_kwargs("animatediff")).frames, stock)


def _call(q, k, v, grid, role="self"):
    kind = "temporal" if role == "temporal" else "self"
    layout = TokenLayout(kind, slice(0, q.shape[-2]), grid)
    return AttentionCall(q, k, v, None, 0.0, False, None, False, LayerInfo("blocks.0.attn1", 0, 0, role),
                         RunContext("wan"), layout, AttentionStats())


def test_frame_window_variant_fuses_whole_frames():
    """Wan's experimental variant: windows of whole latent frames (all their tokens), against a direct loop."""
    target = SimpleNamespace(family=SimpleNamespace(name="wan"), pipeline=None, model=None, context=RunContext("wan"))
    method = FreeNoiseAttention(FreeNoiseConfig(context_length=3, context_stride=2, experimental_dit=True), target)
    grid = Grid(6, 2, 3)
    q, k, v = (torch.randn(2, 2, grid.tokens, 16) for _ in range(3))
    out = method.attend(_call(q, k, v, grid), lambda call: call.dense())
    fused, total = torch.zeros_like(q), torch.zeros(grid.tokens)
    weights = window_weights(3).float()
    for start in frame_windows(6, 3, 2):
        tokens = slice(start * 6, (start + 3) * 6)
        window = F.scaled_dot_product_attention(q[:, :, tokens], k[:, :, tokens], v[:, :, tokens])
        w = weights.repeat_interleave(6)
        fused[:, :, tokens] += window * w[:, None]
        total[tokens] += w
    torch.testing.assert_close(out, fused / total[:, None], rtol=1e-5, atol=1e-6)


def test_wan_needs_the_experimental_flag_and_one_window_is_stock():
    wan = tiny_pipeline("wan")
    with pytest.raises(UnsupportedModelError, match="experimental"):
        diffattn.apply(wan, FreeNoiseConfig())
    stock = wan(**tiny_call_kwargs("wan")).frames
    with diffattn.apply(wan, FreeNoiseConfig(context_length=3, context_stride=1, experimental_dit=True)):
        assert torch.equal(wan(**tiny_call_kwargs("wan")).frames, stock)  # 3 latent frames, one window
    with diffattn.apply(wan, FreeNoiseConfig(context_length=2, context_stride=1, experimental_dit=True)) as handle:
        windowed = wan(**tiny_call_kwargs("wan")).frames
        assert handle.stats.summary()["calls"] > 0
    assert torch.isfinite(windowed).all() and not torch.equal(windowed, stock)
    with pytest.raises(ConfigError, match="per-frame prompt dicts"):
        with diffattn.apply(wan, FreeNoiseConfig(experimental_dit=True)):
            wan(**tiny_call_kwargs("wan", prompt={0: "a cat", 4: "a dog"}))


@pytest.mark.parametrize(
    "family, error, message",
    [("sd", UnsupportedModelError, "needs a video pipeline"), ("cogvideox", UnsupportedModelError, "jointly")],
)
def test_unsupported_pipelines_are_refused(family, error, message):
    pipe = tiny_pipeline(family)
    with pytest.raises(error, match=message):
        diffattn.apply(pipe, FreeNoiseConfig())
    assert diffattn.handle_of(pipe) is None


def test_windows_longer_than_the_trained_positions_are_refused(animatediff):
    with pytest.raises(ConfigError, match="exceeds the 32 frame positions"):
        diffattn.apply(animatediff, FreeNoiseConfig(context_length=48))
    assert diffattn.handle_of(animatediff) is None and "_diffattn_pipeline_extensions" not in vars(animatediff)


# --------------------------------------------------------------------------------------- prompts
def _text_rows(pipe, names):
    """Records the text rows every listed cross-attention sees (its key projection's input), per call."""
    seen = {name: [] for name in names}
    hooks = [pipe.unet.get_submodule(name).to_k.register_forward_pre_hook(lambda m, args, name=name: seen[name].append(args[0].clone()))
             for name in names]
    return seen, hooks


@pytest.mark.parametrize("injection", [True, False])
def test_per_frame_prompts_with_layer_and_step_selective_injection(animatediff, injection):
    down, up = "down_blocks.0.attentions.0.transformer_blocks.0.attn2", "up_blocks.1.attentions.0.transformer_blocks.0.attn2"
    seen, hooks = _text_rows(animatediff, (down, up))
    prompt, frames, steps = {0: "a red fox", 4: "a blue cat"}, 8, 10
    try:
        with diffattn.apply(animatediff, FreeNoiseConfig(context_length=8, motion_injection=injection), FreeInitConfig(num_iters=1)):
            video = animatediff(**tiny_call_kwargs("animatediff", prompt=prompt, num_inference_steps=steps)).frames
    finally:
        for hook in hooks:
            hook.remove()
    assert torch.isfinite(video).all()
    embeds = animatediff.encode_prompt(["a red fox", "a blue cat"], "cpu", 1, False)[0]
    negative = animatediff.encode_prompt(tiny_call_kwargs("animatediff")["negative_prompt"], "cpu", 1, False)[0]
    per_frame = interpolate_keyframes({0: embeds[0], 4: embeds[1]}, frames)
    for step in range(steps):
        cond_up, cond_down = seen[up][step][frames:], seen[down][step][frames:]  # rows: [uncond x F, cond x F]
        torch.testing.assert_close(cond_up, per_frame)
        injected = injection and not 0.1 * steps <= step <= 0.3 * steps
        torch.testing.assert_close(cond_down, embeds[1].expand(frames, -1, -1) if injected else per_frame)
        for name in (up, down):  # the unconditional rows keep the pipeline's own negative prompt
            torch.testing.assert_close(seen[name][step][:frames], negative.expand(frames, -1, -1))


def test_bad_prompt_dicts_are_clear_errors(animatediff):
    with diffattn.apply(animatediff, FreeNoiseConfig(context_length=8)):
        for prompt, message in [({2: "a cat"}, "frame 0"), ({0: "a cat", 9: "a dog"}, "must lie in \\[0, 7\\]"), ({0: 3}, "strings")]:
            with pytest.raises(ConfigError, match=message):
                animatediff(**tiny_call_kwargs("animatediff", prompt=prompt))
