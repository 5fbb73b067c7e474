"""FreeInit's building blocks: filters, frequency mixing, re-noising, latent layouts, step counts."""

import itertools
import math

import pytest
import torch
from diffusers import CogVideoXDDIMScheduler, DDIMScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from diffusers.pipelines.free_init_utils import FreeInitMixin

from diffattn.configs import FreeInitConfig
from diffattn.errors import ConfigError, GridError
from diffattn.geometry import Grid
from diffattn.noise import as_video, frequency_mix, from_video, is_flow_matching, low_pass_filter, renoise
from diffattn.noise.freeinit import fast_sampling_steps
from diffattn.noise.renoise import SD_TERMINAL_RATIO, signal_ratio_timestep

KINDS = ("butterworth", "gaussian", "ideal", "box")
SIZES = [(8, 8, 8), (4, 6, 10), (5, 7, 9), (21, 6, 4), (1, 3, 3)]


def _loop_filter(size, kind, d_s, d_t, order=4):
    """Reference: the original triple loop, with frequencies measured from the fftshifted DC bin n // 2."""
    frames, height, width = size
    mask = torch.zeros(size, dtype=torch.float64)
    for t, h, w in itertools.product(range(frames), range(height), range(width)):
        d2 = (
            ((d_s / d_t) * 2 * (t - frames // 2) / frames) ** 2
            + (2 * (h - height // 2) / height) ** 2
            + (2 * (w - width // 2) / width) ** 2
        )
        if kind == "butterworth":
            mask[t, h, w] = 1 / (1 + (d2 / d_s**2) ** order)
        elif kind == "gaussian":
            mask[t, h, w] = math.exp(-d2 / (2 * d_s**2))
        else:
            mask[t, h, w] = 1.0 if d2 <= d_s * 2 else 0.0
    return mask


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", SIZES)
def test_filters_lie_in_unit_interval_and_pass_dc(kind, size):
    mask = low_pass_filter(size, kind, 0.25, 0.4)
    assert mask.shape == size and mask.dtype == torch.float32
    assert mask.min() >= 0 and mask.max() <= 1
    assert mask[size[0] // 2, size[1] // 2, size[2] // 2] == 1.0
    if kind != "ideal" and min(size) > 3:  # a proper low-pass: the highest frequency is damped
        assert mask[0, 0, 0] < 0.5


@pytest.mark.parametrize("kind", ("butterworth", "gaussian", "ideal"))
@pytest.mark.parametrize("size", SIZES)
def test_vectorised_filter_equals_loop_reference(kind, size):
    expected = _loop_filter(size, kind, 0.3, 0.2)
    torch.testing.assert_close(low_pass_filter(size, kind, 0.3, 0.2, dtype=torch.float64), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ("butterworth", "gaussian", "ideal"))
def test_even_sizes_equal_diffusers_freeinit_filter(kind):
    """For even extents our DC-centred frequencies are the original's `2i/n − 1`: same filter as diffusers' loop."""
    shape = (1, 4, 8, 6, 10)
    expected = FreeInitMixin._get_free_init_freq_filter(None, shape, "cpu", kind, 4, 0.25, 0.5)
    torch.testing.assert_close(low_pass_filter(shape[-3:], kind, 0.25, 0.5).expand(shape), expected, rtol=1e-6, atol=1e-7)


def test_box_filter_is_the_originals_cube():
    mask = low_pass_filter((16, 32, 32), "box", 0.25, 0.5)
    cube = torch.zeros(16, 32, 32)
    cube[8 - 4:8 + 4, 16 - 4:16 + 4, 16 - 4:16 + 4] = 1  # half-widths round(16·0.25) = 4 and round(8·0.5) = 4
    assert torch.equal(mask, cube)


@pytest.mark.parametrize("stops", [(0.0, 0.25), (0.25, 0.0), (1.5, 0.25)])
def test_zero_or_out_of_range_cutoff_is_a_clear_error(stops):
    with pytest.raises(ConfigError, match="must lie in \\(0, 1\\]"):
        low_pass_filter((4, 4, 4), "gaussian", *stops)
    with pytest.raises(ConfigError, match="must lie in \\(0, 1\\]"):
        FreeInitConfig(spatial_stop=stops[0], temporal_stop=stops[1])
    with pytest.raises(ConfigError, match="unknown FreeInit filter"):
        low_pass_filter((4, 4, 4), "sharp")


def test_pass_all_returns_the_renoised_latent_and_pass_none_the_fresh_noise():
    generator = torch.Generator().manual_seed(0)
    low, high = torch.randn(2, 3, 4, 6, 5, generator=generator), torch.randn(2, 3, 4, 6, 5, generator=generator)
    torch.testing.assert_close(frequency_mix(low, high, torch.ones(4, 6, 5)), low, rtol=0, atol=1e-5)
    torch.testing.assert_close(frequency_mix(low, high, torch.zeros(4, 6, 5)), high, rtol=0, atol=1e-5)
    lpf = low_pass_filter((4, 6, 5), "gaussian", 0.5, 0.5)
    mixed = frequency_mix(low, high, lpf)  # linear in both inputs, and the two filters sum to one
    parts = frequency_mix(low, torch.zeros_like(high), lpf) + frequency_mix(torch.zeros_like(low), high, lpf)
    torch.testing.assert_close(mixed, parts, rtol=0, atol=1e-5)


def test_mix_equals_diffusers_freeinit_mixing():
    generator = torch.Generator().manual_seed(1)
    low, high = torch.randn(1, 4, 8, 8, 8, generator=generator), torch.randn(1, 4, 8, 8, 8, generator=generator)
    lpf = low_pass_filter((8, 8, 8))
    torch.testing.assert_close(frequency_mix(low, high, lpf), FreeInitMixin._apply_freq_filter(None, low, high, lpf), rtol=0, atol=1e-6)


@pytest.mark.parametrize("steps, iters", [(50, 3), (20, 3), (25, 5), (2, 3), (7, 2)])
def test_fast_sampling_step_counts_follow_the_formula(steps, iters):
    counts = [fast_sampling_steps(steps, iters, i) for i in range(iters)]
    assert counts == [max(1, int(steps / iters * (i + 1))) for i in range(iters)]
    assert counts[-1] == steps and counts == sorted(counts) and min(counts) >= 1
    if (steps, iters) == (50, 3):
        assert counts == [16, 33, 50]


def test_ddpm_renoise_is_add_noise_at_the_last_training_timestep():
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear")
    sample, noise = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 4, 3, 4, 4)
    expected = scheduler.add_noise(sample, noise, torch.full((2,), 999, dtype=torch.long))
    torch.testing.assert_close(renoise(scheduler, sample, noise), expected)
    alpha = scheduler.alphas_cumprod[999]
    torch.testing.assert_close(renoise(scheduler, sample, noise), alpha.sqrt() * sample + (1 - alpha).sqrt() * noise)


def test_zero_terminal_snr_schedules_fall_back_to_sd_signal_ratio():
    scheduler = CogVideoXDDIMScheduler(beta_schedule="scaled_linear", rescale_betas_zero_snr=True, snr_shift_scale=3.0)
    assert scheduler.alphas_cumprod[-1] == 0  # T − 1 would keep nothing of the sample
    sample, noise = torch.randn(1, 3, 2, 4, 4), torch.randn(1, 3, 2, 4, 4)
    out = renoise(scheduler, sample, noise)
    timestep = signal_ratio_timestep(scheduler.alphas_cumprod, SD_TERMINAL_RATIO)
    assert 0 < timestep < 999
    torch.testing.assert_close(out, scheduler.add_noise(sample, noise, torch.tensor([timestep])))
    # i.e. √ᾱ_t·z0 + √(1−ᾱ_t)·ε with a signal-to-noise amplitude ratio close to SD's at t = 999
    coef = torch.linalg.lstsq(torch.stack([sample.flatten(), noise.flatten()], 1).double(), out.flatten().double()[:, None]).solution
    assert abs(float(coef[0] / coef[1]) - SD_TERMINAL_RATIO) < 0.01


def test_flow_matching_renoises_to_a_signal_matched_sigma():
    sample, noise = torch.randn(1, 16, 3, 4, 4), torch.randn(1, 16, 3, 4, 4)
    flow = FlowMatchEulerDiscreteScheduler(shift=7.0)
    flow.set_timesteps(4)
    assert float(flow.sigmas[0]) == 1.0  # why the first inference sigma cannot be used: it keeps nothing
    sigma = 1 / (1 + SD_TERMINAL_RATIO)
    torch.testing.assert_close(renoise(flow, sample, noise), (1 - sigma) * sample + sigma * noise)
    torch.testing.assert_close(renoise(flow, sample, noise, ratio=1.0), 0.5 * sample + 0.5 * noise)
    unipc = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    assert is_flow_matching(flow) and is_flow_matching(unipc) and not is_flow_matching(DDIMScheduler())
    torch.testing.assert_close(renoise(unipc, sample, noise), renoise(flow, sample, noise))


@pytest.mark.parametrize(
    "family, shape", [("wan", (2, 16, 3, 4, 5)), ("unet-motion", (1, 4, 8, 8, 8)), ("cogvideox", (1, 3, 4, 6, 5))]
)
def test_video_views_round_trip(family, shape):
    latents = torch.randn(shape)
    video = as_video(latents, family)
    assert video.shape[2] == (shape[1] if family == "cogvideox" else shape[2])
    assert torch.equal(from_video(video, family), latents)


def test_packed_ltx_latents_unpack_with_their_grid():
    grid = Grid(3, 4, 5)
    video = torch.randn(2, 8, 3, 4, 5)
    packed = video.permute(0, 2, 3, 4, 1).reshape(2, grid.tokens, 8)  # LTX's _pack_latents with patch size 1
    assert torch.equal(as_video(packed, "ltx", grid), video)
    assert torch.equal(from_video(video, "ltx"), packed)
    with pytest.raises(GridError, match="token grid"):
        as_video(packed, "ltx", None)
