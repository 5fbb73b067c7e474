"""Every (method, model) pair on the tiny video transformers: dense-equivalent settings equal the stock output,
sparse settings give finite, deterministic outputs, and the stats report the densities of the plans that ran."""

from __future__ import annotations

import math

import pytest
import torch

import diffattn
from diffattn.config import Phase
from diffattn.errors import UnsupportedModelError

from .conftest import IMAGE_FAMILIES, MIN_TOKENS, VIDEO_FAMILIES, denoiser, forward, inputs

REF = {"backend": "reference", "min_tokens": MIN_TOKENS}

# Settings under which each method computes every block (Radial: a one-frame grid has only near frames).
DENSE_EQUIVALENT = {
    "sparge": (diffattn.SpargeConfig(topk=1.0, **REF), 8),
    "radial": (diffattn.RadialConfig(dense_steps=0, dense_layers=(), **REF), 1),
    "psa": (diffattn.PSAConfig(dense_steps=0, mode="topk", cutoffs=(1.0, 1.0, 1.0, 1.0), **REF), 8),
    "lite": (diffattn.LiteAttentionConfig(threshold=float("-inf"), **REF), 8),
}
SPARSE = {
    "sparge": (diffattn.SpargeConfig(topk=0.3, **REF),),
    "radial": (diffattn.RadialConfig(dense_steps=0, dense_layers=(), **REF),),
    "psa": (diffattn.PSAConfig(dense_steps=0, **REF),),
    # random weights give diffuse attention where no tile is negligible, so LiteAttention runs over Sparge here;
    # test_compose.py shows it skipping on structured attention
    "lite": (diffattn.SpargeConfig(topk=0.5, **REF), diffattn.LiteAttentionConfig(threshold=0.0, **REF)),
}
TOL = 2e-5
IMAGE_METHODS = ("sparge", "psa", "lite")
"""Methods on image transformers (Radial's band narrows with frame distance: it refuses one-frame images)."""


def _pairs(methods: dict) -> list[tuple[str, str]]:
    """(method, family) pairs: every method on every video family, the image methods on the image families."""
    return [(m, f) for m in sorted(methods) for f in VIDEO_FAMILIES + IMAGE_FAMILIES if f in VIDEO_FAMILIES or m in IMAGE_METHODS]


@pytest.mark.parametrize(("method", "family"), _pairs(DENSE_EQUIVALENT))
def test_dense_equivalent_settings_equal_stock(method, family, call_spy):
    config, frames = DENSE_EQUIVALENT[method]
    model, kwargs = denoiser(family), inputs(family, frames=frames, side=16 if frames == 1 else 8)
    stock = forward(model, kwargs)
    with diffattn.apply(model, config) as handle:
        out = forward(model, kwargs)
        densities = [r["density"] for steps in handle.stats.to_dict().values() for r in steps.values() if r["density"] is not None]
    assert call_spy, "no call went through the block-sparse kernels"
    assert densities and all(d == 1.0 for d in densities)
    assert (out - stock).abs().max() <= TOL * max(1.0, float(stock.abs().max()))


@pytest.mark.parametrize(("method", "family"), _pairs(SPARSE))
def test_sparse_settings_are_finite_deterministic_and_report_their_plans(method, family, call_spy):
    model, kwargs = denoiser(family), inputs(family)
    with diffattn.apply(model, *SPARSE[method]) as handle:
        # two calls of one run (falling timestep), so LiteAttention's second call uses the first call's marks
        first = [forward(model, kwargs, timestep=900.0), forward(model, kwargs, timestep=800.0)]
        handle.context.start_run()
        second = [forward(model, kwargs, timestep=900.0), forward(model, kwargs, timestep=800.0)]
        stats = handle.stats.to_dict()
    for a, b in zip(first, second):
        assert torch.isfinite(a).all()
        assert torch.equal(a, b)
    # the recorded density of each (layer, step) is the mean density of the plans the kernels ran there
    plans = [(call.layer.name, call.plan) for call in call_spy]
    calls = len(plans) // 2  # two runs
    ran: dict[tuple[str, int], list[float]] = {}
    per_step = calls // 2
    for index, (layer, plan) in enumerate(plans[:calls]):
        ran.setdefault((layer, index // per_step), []).append(plan.density())
    assert ran
    for (layer, step), values in ran.items():
        recorded = stats[layer][step]
        assert math.isclose(recorded["density"], sum(values) / len(values), rel_tol=1e-6)
        assert recorded["skipped_tiles"] == round(recorded["tiles"] * (1 - recorded["density"]))
    # some block was skipped or (PSA) pooled: not every block ran at full resolution
    assert any(bool((plan.to_level_map() != 1).any()) for _, plan in plans), "every block ran at full resolution"


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_radial_refuses_image_transformers(family):
    model = denoiser(family)
    with pytest.raises(UnsupportedModelError, match="one-frame images.*sparge or psa"):
        diffattn.apply(model, diffattn.RadialConfig(**REF))
    assert not hasattr(model, "_diffattn_handle")


def test_dense_steps_are_bitwise_stock():
    """In a dense step the call takes the model's own path: identical to the stock output, bit for bit."""
    model, kwargs = denoiser("wan"), inputs("wan")
    stock = forward(model, kwargs)
    with diffattn.apply(model, diffattn.RadialConfig(**REF)) as handle:  # default: the first 12 steps dense
        out = forward(model, kwargs)
        assert handle.context.phases["radial"] is Phase.DENSE
    assert torch.equal(out, stock)


# --- Wan variants: I2V (a second SDPA call per cross-attention, over the image keys) and Wan2.2 (per-token timesteps)
def _wan_i2v() -> torch.nn.Module:
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=64, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        image_dim=24, added_kv_proj_dim=32, rope_max_seq_len=32,
    ).eval()


def _i2v_inputs() -> dict:
    kwargs = inputs("wan")
    kwargs["encoder_hidden_states_image"] = torch.randn(1, 8, 24, generator=torch.Generator().manual_seed(1))
    return kwargs


def test_wan_i2v_sparse_self_attention_and_pab_over_both_cross_attention_calls(call_spy):
    from diffusers import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast

    model, kwargs = _wan_i2v(), _i2v_inputs()
    stock = forward(model, kwargs)
    with diffattn.apply(model, diffattn.SpargeConfig(topk=1.0, **REF)):
        assert (forward(model, kwargs) - stock).abs().max() <= TOL * float(stock.abs().max())
    assert {c.layer.name for c in call_spy} == {"blocks.0.attn1", "blocks.1.attn1"}  # cross-attention stays dense

    timesteps = (900.0, 800.0, 700.0, 600.0)
    window = (0.0, 1000.0)
    current = [None]
    theirs_model = _wan_i2v()
    apply_pyramid_attention_broadcast(theirs_model, PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2, cross_attention_block_skip_range=3, spatial_attention_timestep_skip_range=window,
        cross_attention_timestep_skip_range=window, current_timestep_callback=lambda: current[0],
    ))
    theirs = []
    for t in timesteps:
        current[0] = t
        theirs.append(forward(theirs_model, kwargs, t))
    config = diffattn.PABConfig(preset="none", spatial_skip_range=2, cross_skip_range=3,
                                spatial_timestep_range=window, cross_timestep_range=window)
    with diffattn.apply(model, config) as handle:
        ours = [forward(model, kwargs, t) for t in timesteps]
        reused = handle.stats.to_dict()["blocks.0.attn2"][1]["reused"]
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert reused == 2  # both SDPA calls of the I2V cross-attention (image keys, text keys) came from the cache


def test_wan22_per_token_timesteps(call_spy):
    """Wan2.2 TI2V passes one timestep per token ([B, tokens]); the run context and the methods take it."""
    model, kwargs = denoiser("wan"), inputs("wan")
    per_token = {**kwargs, "timestep": torch.full((1, 512), 500.0)}
    stock = forward(model, per_token)
    with diffattn.apply(model, diffattn.SpargeConfig(topk=1.0, **REF)) as handle:
        out = forward(model, per_token)
        assert handle.context.timestep == 500.0
    assert call_spy and (out - stock).abs().max() <= TOL * float(stock.abs().max())


@pytest.mark.parametrize(("family", "text_keys"), [("hunyuanvideo", [10, 16]), ("mochi", [10, 16]), ("hunyuanvideo15", [18, 24])])
def test_padded_prompts_of_different_lengths(family, text_keys, call_spy):
    """HunyuanVideo masks padded text keys (one sparse view per sample here), HunyuanVideo 1.5 padded text queries
    and keys (its 8 ByT5 tokens are valid, its 9 zero image tokens are not); Mochi drops them per sample itself."""
    model, kwargs = denoiser(family), inputs(family, batch=2)
    kwargs["encoder_attention_mask"] = (torch.arange(16)[None] < torch.tensor([[10], [16]])).long()
    stock = forward(model, kwargs)
    with diffattn.apply(model, diffattn.SpargeConfig(topk=1.0, **REF)):
        out = forward(model, kwargs)
    assert (out - stock).abs().max() <= TOL * max(1.0, float(stock.abs().max()))
    assert sorted({c.layout.text_keys for c in call_spy}) == text_keys  # padded text keys never reach the kernels


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_pab_recomputing_every_call_is_stock(family):
    """PAB with ranges of 1 recomputes every call: the model's own attention, bit for bit."""
    model, kwargs = denoiser(family), inputs(family)
    stock = [forward(model, kwargs, t) for t in (900.0, 800.0)]
    config = diffattn.PABConfig(preset="none", spatial_skip_range=1, temporal_skip_range=1, cross_skip_range=1)
    with diffattn.apply(model, config):
        assert all(torch.equal(forward(model, kwargs, t), s) for t, s in zip((900.0, 800.0), stock))


@pytest.mark.gpu
@pytest.mark.parametrize("method", sorted(SPARSE))
def test_triton_kernels_match_the_reference_on_a_model(method):
    """On CUDA (bf16), the Triton path of each method gives the reference backend's output."""
    from diffattn.testing import tiny_denoiser

    model = tiny_denoiser("wan").to("cuda", torch.bfloat16)
    kwargs = {k: v.to("cuda", torch.bfloat16) if v.is_floating_point() else v.to("cuda") for k, v in inputs("wan").items()}
    outs = {}
    for backend in ("reference", "triton"):
        configs = [type(c).from_dict({**c.to_dict(), "backend": backend}) for c in SPARSE[method]]
        with diffattn.apply(model, *configs):
            outs[backend] = forward(model, kwargs, 900.0).float()
    assert (outs["triton"] - outs["reference"]).abs().max() <= 3e-2 * float(outs["reference"].abs().max())


def test_skyreels_diffusion_forcing_frame_causal_mask_stays_dense(call_spy):
    """SkyReels-V2 with frame blocks masks attention frame-causally: no key padding, so the calls stay dense (stock
    output) and the reason is counted."""
    from diffusers import SkyReelsV2Transformer3DModel

    torch.manual_seed(0)
    model = SkyReelsV2Transformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16, text_dim=32,
        freq_dim=256, ffn_dim=64, num_layers=2, qk_norm="rms_norm_across_heads", rope_max_seq_len=32, num_frame_per_block=2,
    ).eval()
    kwargs = inputs("skyreels-v2")
    stock = forward(model, kwargs)
    with diffattn.apply(model, diffattn.SpargeConfig(topk=0.3, **REF)) as handle:
        out = forward(model, kwargs)
        fallbacks = handle.stats.activity(0)["sparge"].fallbacks
    assert torch.equal(out, stock) and not call_spy
    assert [reason for reason in fallbacks if reason] == ["attention mask of shape (1, 1, 512, 512) is not a key padding mask"]
