"""8-bit attention (`precision="int8"` / `"int8-fp8"`): the reference against float64 within the bounds of issue 17,
smoothing as the reason offsets stay within them, the Triton kernel against the reference on every plan kind,
errors, and non-finite inputs."""

from __future__ import annotations

import math
import types

import pytest
import torch

from diffattn.errors import BackendUnavailableError, ConfigError, DiffAttnError
from diffattn.kernels import backends, block_sparse_attention
from diffattn.kernels.reference import reference_attention
from diffattn.plan import BlockPlan

from ._kernel_testing import random_plan, rel_err, triton_or_skip, window_mask

pytestmark = pytest.mark.usefixtures("kernel_device")  # the GPU when there is one (conftest)

L1_BOUND = {"int8": 0.015, "int8-fp8": 0.05}
"""Relative L1 error against float64 that each precision must stay within (issue 17)."""


def rel_l1(out: torch.Tensor, exact: torch.Tensor) -> float:
    out, exact = out.double(), exact.double()
    return float((out - exact).abs().sum() / exact.abs().sum())


def cosine(out: torch.Tensor, exact: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(out.double().flatten(), exact.double().flatten(), 0))


def decaying_qkv(frames: int, height: int, width: int, heads: int, dim: int, sharpness: float = 16.0, seed: int = 0):
    """bf16 q/k whose attention decays with spatio-temporal distance (each head its own widths, local to global).

    q and k share random Fourier features of the token positions (as rotary embeddings make them), so
    `q.k * scale ~ sharpness * exp(-|dp / width|^2 / 2)` plus a little noise from 8 random channels; v random.
    """
    gen = torch.Generator().manual_seed(seed)
    t, y, x = torch.meshgrid(*(torch.arange(n, device="cpu") for n in (frames, height, width)), indexing="ij")
    pos = torch.stack([t, y, x], -1).reshape(-1, 3).float()
    widths = torch.tensor([(1.0, 2.0, 2.0), (2.0, 8.0, 8.0), (4.0, 4.0, 4.0), (8.0, 16.0, 16.0)], device="cpu")
    widths = widths[torch.arange(heads, device="cpu") % len(widths)]
    features = (dim - 8) // 2
    phase = pos[None] @ (_randn(heads, 3, features, generator=gen) / widths[:, :, None])
    fourier = torch.cat([phase.cos(), phase.sin()], -1) * (sharpness * math.sqrt(dim) / features) ** 0.5
    tokens = pos.shape[0]
    q = torch.cat([fourier, 0.5 * _randn(heads, tokens, 8, generator=gen)], -1)
    k = torch.cat([fourier, 0.5 * _randn(heads, tokens, 8, generator=gen)], -1)
    v = _randn(heads, tokens, dim, generator=gen)
    return tuple(t[None].bfloat16().to(_here()) for t in (q, k, v))


def _randn(*shape: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, device="cpu")


def _here() -> torch.device:
    """The device tensors land on by default (the GPU under the `kernel_device` fixture when there is one)."""
    return torch.empty(0).device


def random_qkv(tokens: int = 512, heads: int = 2, dim: int = 64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(_randn(1, heads, tokens, dim, generator=gen).bfloat16().to(_here()) for _ in range(3))


def offset_qkv(tokens: int = 512, heads: int = 2, dim: int = 64, seed: int = 0):
    """Random q/k/v, K with large per-channel offsets (8 sigma) and every 37th query 8x louder (outliers)."""
    q, k, v = (t.float() for t in random_qkv(tokens, heads, dim, seed))
    gen = torch.Generator().manual_seed(seed + 1)
    k = k + 8 * _randn(1, heads, 1, dim, generator=gen).to(k.device)
    q[:, :, ::37] *= 8
    return q.bfloat16(), k.bfloat16(), v.bfloat16()


CASES = {
    "random": (random_qkv, 0.999),
    "decaying": (lambda: decaying_qkv(4, 8, 16, 4, 64), 0.999),
    "offsets": (lambda: offset_qkv(), 0.998),
}
"""Inputs and the cosine bound each must meet against float64."""


def _plans(tokens: int, heads: int) -> dict[str, BlockPlan]:
    torch.manual_seed(0)
    return {"dense": BlockPlan.dense(tokens, tokens, 64, 64), "sparse": random_plan(1, heads, tokens, tokens, 64, 64)}


def _exact(q, k, v, plan):
    return reference_attention(q.double(), k.double(), v.double(), plan, 1 / math.sqrt(q.shape[-1]))


@pytest.mark.parametrize("precision", ["int8", "int8-fp8"])
@pytest.mark.parametrize("plan_kind", ["dense", "sparse"])
@pytest.mark.parametrize("case", list(CASES))
def test_reference_is_within_bounds_of_float64(case, plan_kind, precision):
    make, cos_bound = CASES[case]
    q, k, v = make()
    plan = _plans(q.shape[2], q.shape[1])[plan_kind]
    exact, exact_lse, _ = _exact(q, k, v, plan)
    out, lse, _ = reference_attention(q, k, v, plan, 1 / math.sqrt(q.shape[-1]), precision=precision)
    assert rel_l1(out, exact) <= L1_BOUND[precision]
    assert cosine(out, exact) >= cos_bound
    # smoothing's shift is given back (it is `scale * q . mean`, tens of units for the offsets); outlier queries
    # magnify logit errors 8-fold
    assert (lse - exact_lse).abs().mean() < 0.02 and (lse - exact_lse).abs().max() < 0.25


@pytest.mark.parametrize("precision", ["int8", "int8-fp8"])
def test_without_smoothing_offsets_break_the_bounds(precision):
    q, k, v = offset_qkv()
    plan = _plans(q.shape[2], q.shape[1])["dense"]
    exact = _exact(q, k, v, plan)[0]
    scale = 1 / math.sqrt(q.shape[-1])
    rough = reference_attention(q, k, v, plan, scale, precision=precision, smooth_k=False)[0]
    assert rel_l1(rough, exact) > L1_BOUND[precision] or cosine(rough, exact) < CASES["offsets"][1]
    smooth = reference_attention(q, k, v, plan, scale, precision=precision)[0]
    assert rel_l1(smooth, exact) < 0.6 * rel_l1(rough, exact)


def _kernel_cases():
    """(name, plan builder, block_sparse_attention keywords): every plan kind the kernel walks."""
    window = window_mask(8, 32, (2, 6))
    return {
        "dense": (lambda n, h: BlockPlan.dense(n, n, 64, 64), {}),
        "level1": (lambda n, h: random_plan(1, h, n, n, 64, 64), {"return_lse": True}),
        "pooled": (lambda n, h: random_plan(1, h, n, n, 64, 64, levels=(1, 2, 4, 8)), {"return_lse": True}),
        "window": (lambda n, h: BlockPlan.from_mask_mod(window.mask_mod, 1, 1, n, n, 64, 64, token_mask=window), {}),
        "pv": (lambda n, h: random_plan(1, h, n, n, 64, 64), {"pv_threshold": 4.0}),
        "marks": (lambda n, h: random_plan(1, h, n, n, 64, 64), {"skip_threshold": -2.0}),
        "marks_final": (lambda n, h: random_plan(1, h, n, n, 64, 64, levels=(1, 4)),
                        {"skip_threshold": -3.0, "mark_criterion": "final"}),
    }


@pytest.mark.parametrize("precision", ["int8", "int8-fp8"])
@pytest.mark.parametrize("kind", list(_kernel_cases()))
def test_triton_matches_the_reference_on_every_plan_kind(kind, precision):
    """Same quantised operands, so int8 Q.K agrees to float32 rounding (marks and skips exactly); FP8 P is rounded
    against the running max after each tile (the reference: after each slot, the same here as tiles are whole
    blocks) and may land on the other side of a rounding boundary, so int8-fp8 agrees to FP8 rounding: its error
    against float64 stays that of the reference."""
    triton_or_skip()
    build, kwargs = _kernel_cases()[kind]
    q, k, v = decaying_qkv(2, 8, 16, 2, 64, seed=1)
    plan = build(q.shape[2], q.shape[1]).to(q.device)
    tri = block_sparse_attention(q, k, v, plan, backend="triton", precision=precision, **kwargs)
    ref = block_sparse_attention(q, k, v, plan, backend="reference", precision=precision, **kwargs)
    exact = block_sparse_attention(q.double(), k.double(), v.double(), plan, backend="reference", **kwargs)
    if isinstance(tri, torch.Tensor):
        tri, ref, exact = (types.SimpleNamespace(out=o, lse=None, kept_plan=None) for o in (tri, ref, exact))
    assert tri.out.dtype == q.dtype and torch.isfinite(tri.out).all()
    if precision == "int8":
        assert rel_err(tri.out, ref.out) < 1e-2  # the bf16 P.V rounding of the 16-bit kernel
    else:
        assert rel_err(tri.out, ref.out) < 0.04
        assert rel_l1(tri.out, exact.out) < 1.2 * rel_l1(ref.out, exact.out) + 2e-3
    if tri.lse is not None:
        # pooled keys: the kernel pools in Triton, the reference in torch; a bf16 ulp apart, a key may round to
        # the neighbouring int8 step
        torch.testing.assert_close(tri.lse, ref.lse, atol=5e-2, rtol=2e-3)
        torch.testing.assert_close(tri.lse, exact.lse.float(), atol=5e-2, rtol=1e-3)
    if tri.kept_plan is not None:
        assert torch.equal(tri.kept_plan.to_level_map(), ref.kept_plan.to_level_map())


@pytest.mark.parametrize("precision", ["int8", "int8-fp8"])
@pytest.mark.parametrize("dim", [16, 80])
def test_triton_pads_small_and_odd_head_dims(dim, precision):
    """head_dim 16 (padded to the int8 MMA's 32) and 80 (padded to 128), 64x128 blocks, a ragged last block."""
    triton_or_skip()
    q, k, v = random_qkv(200, 2, dim)
    plan = BlockPlan.dense(200, 200, 64, 128).to(q.device)
    tri = block_sparse_attention(q, k, v, plan, backend="triton", precision=precision)
    ref = block_sparse_attention(q, k, v, plan, backend="reference", precision=precision)
    assert rel_err(tri, ref) < (1e-2 if precision == "int8" else 0.04)


def test_fused_quantisation_gives_the_torch_values_bit_for_bit():
    """The Triton pre-pass (one read, one write) against `quantize.py`'s definition, strided input, non-finite rows."""
    triton_or_skip()
    from diffattn.kernels import quantize, triton_quantize

    base = offset_qkv(200, 3, 80)[1].transpose(1, 2).contiguous().transpose(1, 2)  # [B, S, H, D] storage
    base[0, 1, 7, 2] = float("inf")
    base[0, 2, 9, 5] = float("nan")
    mean = base.float().mean(2)
    for m in (None, mean):
        fused, fused_scale = triton_quantize.quantize_rows(base, m)
        torch_q, torch_scale = quantize.quantize_rows(base, m)
        assert torch.equal(fused, torch_q) and torch.equal(fused_scale.isnan(), torch_scale.isnan())
        assert torch.equal(fused_scale.nan_to_num(), torch_scale.nan_to_num())
    scale = quantize.value_scales(base)
    fused = triton_quantize.quantize_values(base, scale)
    assert fused.stride(2) == 1 and fused.stride(3) % 16 == 0  # K-major, channel rows 16-byte aligned
    assert torch.equal(fused.view(torch.uint8), quantize.quantize_values(base, scale).view(torch.uint8))


def test_unknown_precision_and_float64_are_refused():
    q, k, v = random_qkv(128, 1)
    plan = BlockPlan.dense(128, 128, 64, 64).to(q.device)
    with pytest.raises(ConfigError, match="precision must be one of"):
        block_sparse_attention(q, k, v, plan, precision="fp4")
    with pytest.raises(DiffAttnError, match="float64"):
        block_sparse_attention(q.double(), k.double(), v.double(), plan, precision="int8")


def test_triton_refuses_float32_and_flex_hands_8_bits_to_the_reference():
    q, k, v = (t.float() for t in random_qkv(128, 1))
    plan = BlockPlan.dense(128, 128, 64, 64).to(q.device)
    if backends.available_backends()["triton"] is True:
        with pytest.raises(BackendUnavailableError, match="dtype torch.float32"):
            block_sparse_attention(q, k, v, plan, backend="triton", precision="int8")
    if q.device.type == "cuda":  # flex runs on CUDA only
        with pytest.warns(UserWarning, match="precision 'int8'"):
            flex = block_sparse_attention(q, k, v, plan, backend="flex", precision="int8")
        assert torch.equal(flex, block_sparse_attention(q, k, v, plan, backend="reference", precision="int8"))


def test_fp8_is_refused_below_sm89_with_the_reason(monkeypatch):
    """The refusal a pre-Ada GPU gives (a stand-in CUDA q: no GPU needed); "int8" is still taken there."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    q = types.SimpleNamespace(dtype=torch.bfloat16, shape=(1, 1, 128, 64), device=torch.device("cuda"))
    plan = BlockPlan.dense(128, 128, 64, 64)
    refusal = backends._triton_refuses(backends.Request("attention", q, plan, precision="int8-fp8"))
    assert refusal is not None and "8.9" in refusal.reason and "8.0" in refusal.reason
    assert backends._triton_refuses(backends.Request("attention", q, plan, precision="int8")) is None


@pytest.mark.parametrize("precision", ["int8", "int8-fp8"])
def test_non_finite_inputs_come_out_non_finite(precision):
    """An inf query row, a NaN value channel, an inf key: never finite garbage where they reach."""
    q, k, v = random_qkv(192, 2)
    plan = BlockPlan.dense(192, 192, 64, 64).to(q.device)
    q[0, 0, 5, 3] = float("inf")
    v[0, 1, 7, 11] = float("nan")
    k_bad = k.clone()
    k_bad[0, 0, 9, 0] = float("inf")
    names = ["reference"] + (["triton"] if backends.available_backends()["triton"] is True else [])
    for name in names:
        out = block_sparse_attention(q, k, v, plan, backend=name, precision=precision)
        assert out[0, 0, 5].isnan().all(), name  # the inf query's row
        assert out[0, 1, :, 11].isnan().all(), name  # every row reads the NaN value's channel
        finite = torch.ones_like(out, dtype=torch.bool)
        finite[0, 0, 5] = False
        finite[0, 1, :, 11] = False
        assert torch.isfinite(out[finite]).all(), name  # nothing else is touched
        out = block_sparse_attention(q, k_bad, v, plan, backend=name, precision=precision)
        assert out[0, 0].isnan().all(), name  # K's mean carries the inf to the whole head: NaN, not finite


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["int8", "int8-fp8"])
def test_gpu_kernel_at_head_dim_128_within_bounds(precision):
    """Compiled kernel, 128-token blocks and head_dim 128 (the video models' shape): bounds against float64."""
    q, k, v = (t.cuda() for t in decaying_qkv(4, 16, 32, 4, 128))  # 2048 tokens
    plan = BlockPlan.dense(q.shape[2], q.shape[2], 128, 128).to("cuda")
    out = block_sparse_attention(q, k, v, plan, backend="triton", precision=precision)
    exact = block_sparse_attention(q.double(), k.double(), v.double(), plan, backend="reference")
    assert rel_l1(out, exact) <= L1_BOUND[precision] and cosine(out, exact) >= 0.999
