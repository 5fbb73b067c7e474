"""PSA's block importance: the Triton kernel equals the reference (ragged blocks, q_len != kv_len, block sizes 64
and 128), each sampled query adds probability 1 to its row, and the backend choice and input checks."""

from __future__ import annotations

import warnings

import pytest
import torch

from diffattn.errors import BackendUnavailableError, ConfigError, PlanError
from diffattn.kernels import backends, block_importance
from diffattn.kernels.checks import AttentionInputError
from diffattn.kernels.psa import SAMPLE_STRIDE, block_importance_reference

from ._kernel_testing import rel_err, triton_or_skip
from .test_backends import _cuda_stand_in, triton_runs_on_cuda  # noqa: F401 - a fixture

pytestmark = pytest.mark.usefixtures("kernel_device")  # the GPU when there is one (conftest)

BLOCKS = [(64, 64), (64, 128), (128, 64), (128, 128)]
SHAPES = [(1, 2, 300, 517, 24), (2, 1, 329, 200, 16)]
"""(batch, heads, q_len, kv_len, head_dim): ragged last blocks both ways, q_len above and below kv_len, a padded
head_dim (24 -> 32), several kv tiles and a single partial tile."""


def _qk(batch: int, heads: int, q_len: int, kv_len: int, dim: int, dtype: torch.dtype, seed: int = 0):
    """Random q, k with peaky softmax rows (q scaled up), so block sums spread from ~0 to most of a row."""
    generator = torch.Generator(torch.empty(0).device).manual_seed(seed)  # the kernel_device's own generator
    q = torch.randn(batch, heads, q_len, dim, generator=generator) * 2.0
    k = torch.randn(batch, heads, kv_len, dim, generator=generator)
    return q.to(dtype), k.to(dtype)


def _sampled_per_block(q_len: int, block_q: int) -> torch.Tensor:
    """Sampled queries (tokens at multiples of SAMPLE_STRIDE) in each query block, counted token by token."""
    sampled = (torch.arange(q_len) % SAMPLE_STRIDE == 0).float()
    return torch.nn.functional.pad(sampled, (0, -q_len % block_q)).view(-1, block_q).sum(-1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("blocks", BLOCKS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_equals_the_reference_on_the_same_values(blocks, shape, dtype):
    """Half inputs: the kernel's float32 logits equal the reference run on the same values in float32, far closer
    than the reference in the input dtype (which rounds the logits before the softmax)."""
    triton_or_skip()
    block_q, block_k = blocks
    q, k = _qk(*shape, dtype)
    got = block_importance(q, k, block_q, block_k, backend="triton")
    exact = block_importance(q.float(), k.float(), block_q, block_k, backend="reference")
    rounded = block_importance(q, k, block_q, block_k, backend="reference")
    assert got.dtype == torch.float32 and got.shape == exact.shape == (*shape[:2], -(-shape[2] // block_q),
                                                                       -(-shape[3] // block_k))
    assert torch.allclose(got, exact, rtol=1e-4, atol=1e-5), (got - exact).abs().max()
    assert rel_err(got, exact) < rel_err(rounded, exact)


def test_float32_runs_in_the_interpreter_and_is_refused_on_a_gpu(kernel_device):
    """On CPU tensors (the interpreter) float32 equals the reference tightly; on a GPU, where the kernel would
    multiply in TF32, a named triton backend refuses it and auto runs the reference."""
    q, k = _qk(1, 2, 300, 517, 24, torch.float32)
    if kernel_device.type == "cpu":
        triton_or_skip()
        got = block_importance(q, k, 64, 128, scale=0.3, backend="triton")
        assert torch.allclose(got, block_importance_reference(q, k, 64, 128, 0.3), rtol=1e-5, atol=1e-6)
    else:
        with pytest.raises(BackendUnavailableError, match="float32"):
            block_importance(q, k, 64, 128, backend="triton")
        with pytest.warns(UserWarning, match="float32"):
            auto = block_importance(q, k, 64, 128)
        # index_add_ on CUDA sums with atomics in no fixed order: equal up to float32 reassociation
        torch.testing.assert_close(auto, block_importance(q, k, 64, 128, backend="reference"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("blocks", [(64, 128), (128, 64)])
def test_each_sampled_query_adds_probability_one_to_its_row(blocks):
    """Row sums count the sampled queries of each query block (the ragged last block has fewer)."""
    triton_or_skip()
    block_q, block_k = blocks
    q, k = _qk(2, 2, 301, 450, 32, torch.bfloat16, seed=1)
    expected = _sampled_per_block(301, block_q)
    assert expected[-1] < block_q // SAMPLE_STRIDE  # the last block is ragged
    for backend in ("triton", "reference"):
        rows = block_importance(q, k, block_q, block_k, backend=backend).sum(-1)
        assert torch.allclose(rows, expected.to(rows.device).expand_as(rows), atol=1e-4), backend


def test_a_dominant_key_block_takes_each_rows_mass():
    """Keys equal to the queries' direction in one block draw (nearly) all probability there: the kernel reads the
    right sampled tokens and writes each sum at its own (query block, kv block)."""
    triton_or_skip()
    direction = torch.randn(32)
    q = direction.expand(1, 1, 256, 32).clone().bfloat16()
    k = torch.randn(1, 1, 640, 32) * 0.1
    k[:, :, 384:512] = direction * 4  # kv block 3 of 5 (block_k 128)
    got = block_importance(q, k.bfloat16(), 64, 128, backend="triton")[0, 0]
    assert got.shape == (4, 5)
    assert torch.allclose(got[:, 3], torch.full((4,), 16.0, device=got.device), atol=1e-3)


def test_auto_on_a_cpu_is_the_reference_bit_for_bit():
    q, k = _qk(1, 2, 300, 260, 16, torch.float32)
    assert torch.equal(block_importance(q, k, 128, 64), block_importance_reference(q, k, 128, 64, 0.25))


@pytest.mark.usefixtures("triton_runs_on_cuda")
def test_the_cuda_rules_for_psa_requests():
    """Triton takes half dtypes with the attention kernel's block sizes and head_dim; auto falls back (once,
    with a warning) for anything else, a named triton backend raises the reason."""
    half = backends.Request("psa", _cuda_stand_in(torch.bfloat16, 128), blocks=(128, 128))
    assert backends.select("auto", half) == "triton"
    with pytest.warns(UserWarning, match="triton backend is not used for blocks 32x128"):
        assert backends.select("auto", half._replace(blocks=(32, 128))) == "reference"
    with pytest.raises(PlanError, match="block_q and block_k in"):
        backends.select("triton", half._replace(blocks=(128, 256)))
    with pytest.raises(BackendUnavailableError, match="head_dim 256"):
        backends.select("triton", half._replace(tensor=_cuda_stand_in(torch.bfloat16, 256)))
    with pytest.raises(BackendUnavailableError, match=r"unknown backend 'flex' for psa.*\('triton', 'reference'\)"):
        backends.select("flex", half)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same reason again: silent
        assert backends.select("auto", half._replace(blocks=(32, 128))) == "reference"


@pytest.mark.parametrize(
    ("q_shape", "k_shape", "blocks", "scale", "error", "message"),
    [
        ((1, 2, 64, 16), (1, 2, 64, 8), (64, 64), None, AttentionInputError, "matching batch, heads and head_dim"),
        ((1, 2, 64, 16), (1, 3, 64, 16), (64, 64), None, AttentionInputError, "matching batch, heads and head_dim"),
        ((1, 2, 0, 16), (1, 2, 64, 16), (64, 64), None, AttentionInputError, "at least one token"),
        ((1, 2, 64, 16), (1, 2, 64, 16), (62, 64), None, ConfigError, "block_q must be a positive multiple of 4"),
        ((1, 2, 64, 16), (1, 2, 64, 16), (64, 0), None, ConfigError, "block_k must be a positive multiple of 4"),
        ((1, 2, 64, 16), (1, 2, 64, 16), (64, 64), -1.0, ConfigError, "scale must be a positive finite number"),
    ],
)
def test_bad_inputs_are_refused_before_any_work(q_shape, k_shape, blocks, scale, error, message):
    with pytest.raises(error, match=message):
        block_importance(torch.randn(q_shape), torch.randn(k_shape), *blocks, scale)


def test_mixed_dtypes_and_non_tensors_are_refused():
    with pytest.raises(AttentionInputError, match="one dtype on one device"):
        block_importance(torch.randn(1, 2, 64, 16), torch.randn(1, 2, 64, 16).bfloat16(), 64, 64)
    with pytest.raises(AttentionInputError, match="must be torch.Tensors; got list and Tensor"):
        block_importance([[1.0]], torch.randn(1, 2, 64, 16), 64, 64)
