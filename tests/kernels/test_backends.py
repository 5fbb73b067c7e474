"""One backend-selection point: each backend's reasons, the priority loop, named backends and what reports status."""

from __future__ import annotations

import dataclasses
import warnings
from types import SimpleNamespace

import pytest
import torch

from diffattn.errors import BackendUnavailableError
from diffattn.kernels import (
    available_backends,
    backends,
    block_sparse_attention,
    pool_kv,
    sparge_plan,
)
from diffattn.kernels_status import backend_status
from diffattn.plan import BlockPlan

from ._kernel_testing import qkv


def _cuda_stand_in(dtype: torch.dtype = torch.float16, head_dim: int = 64) -> SimpleNamespace:
    """What `select` reads of a CUDA q (device, dtype, shape), so the CUDA rules run on a CPU-only machine."""
    return SimpleNamespace(device=torch.device("cuda"), dtype=dtype, shape=(1, 2, 128, head_dim))


@pytest.fixture
def triton_runs_on_cuda(monkeypatch):
    """The registry as on a CUDA machine where the Triton kernels compiled; warnings start afresh."""
    registry = tuple(dataclasses.replace(b, unavailable_on=lambda device: None) if b.name == "triton" else b
                     for b in backends._REGISTRY)
    monkeypatch.setattr(backends, "_REGISTRY", registry)
    monkeypatch.setattr(backends, "_WARNED", set())


@pytest.mark.parametrize("op", ["attention", "pooling", "sparge"])
def test_auto_never_picks_a_gpu_backend_for_cpu_tensors(op):
    q = torch.zeros(1, 2, 128, 64, dtype=torch.bfloat16)
    request = backends.Request(op, q, BlockPlan.dense(128, 128, 64, 64))
    assert backends.select("auto", request) == "reference"


def test_unknown_backends_name_the_operations_own_backends():
    q, k, v = qkv(1, 2, 128, 128, 64)
    with pytest.raises(BackendUnavailableError, match=r"unknown backend 'flex' for pooling.*\('triton', 'reference'\)"):
        pool_kv(k, v, (2,), 64, backend="flex")
    with pytest.raises(BackendUnavailableError, match="unknown backend 'cudnn' for sparge"):
        sparge_plan(q, k, block_q=64, block_k=64, backend="cudnn")


def test_named_flex_with_thresholds_runs_the_reference_and_says_so(monkeypatch):
    monkeypatch.setattr(backends, "_WARNED", set())
    q, k, v = qkv(1, 2, 128, 128, 64)
    plan = BlockPlan.dense(128, 128, 64, 64)
    with pytest.warns(UserWarning, match="backend 'flex' cannot run pv_threshold.*running 'reference' instead"):
        out = block_sparse_attention(q, k, v, plan, pv_threshold=2.0, backend="flex")
    assert torch.equal(out, block_sparse_attention(q, k, v, plan, pv_threshold=2.0, backend="reference"))


def test_auto_on_cuda_warns_once_when_triton_runs_there_but_declines_the_call(triton_runs_on_cuda):
    plan = BlockPlan.dense(128, 128, 64, 64)
    assert backends.select("auto", backends.Request("attention", _cuda_stand_in(), plan)) == "triton"
    with pytest.warns(UserWarning, match="triton backend is not used for dtype torch.float32"):
        chosen = backends.select("auto", backends.Request("attention", _cuda_stand_in(torch.float32), plan))
    assert chosen == "flex"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same reason again, and flex declining thresholds: silent
        thresholds = backends.Request("attention", _cuda_stand_in(torch.float32), plan, thresholds=True)
        assert backends.select("auto", thresholds) == "reference"
    assert backends.select("auto", backends.Request("sparge", _cuda_stand_in())) == "triton"


def test_auto_on_cuda_skips_a_backend_that_cannot_run_there_silently(monkeypatch):
    monkeypatch.setattr(backends, "_WARNED", set())
    registry = tuple(dataclasses.replace(b, unavailable_on=lambda device: "not built") if b.name == "triton" else b
                     for b in backends._REGISTRY)
    monkeypatch.setattr(backends, "_REGISTRY", registry)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = BlockPlan.dense(128, 128, 64, 64)
        assert backends.select("auto", backends.Request("attention", _cuda_stand_in(), plan)) == "flex"
        assert backends.select("auto", backends.Request("pooling", _cuda_stand_in())) == "reference"
    with pytest.raises(BackendUnavailableError, match="backend 'triton' cannot run this call: not built"):
        backends.select("triton", backends.Request("pooling", _cuda_stand_in()))


def test_status_reports_read_the_registry():
    here = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    expected = {b.name: b.unavailable_on(here) or True for b in backends._REGISTRY}
    assert available_backends() == expected
    status = backend_status()
    assert {name: status[name] for name in expected} == {n: "ok" if s is True else s for n, s in expected.items()}
