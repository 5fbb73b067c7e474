"""Under diffusers' Ulysses context parallelism (2 gloo ranks on the CPU), every method equals one process."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

import diffattn
from diffattn.errors import BackendUnavailableError

from .ulysses_worker import LATENT, run_methods, worker

# Every attention method, at settings where it really acts (the single-process run is the reference).
METHODS = [diffattn.ObserveConfig()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_every_method_under_ulysses_equals_single_process():
    from diffattn.testing import tiny_denoiser, tiny_denoiser_inputs

    expected = run_methods(METHODS, lambda: tiny_denoiser("wan"), tiny_denoiser_inputs("wan", **LATENT))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(rank, 2, port, METHODS, queue)) for rank in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    for rank, result in results.items():
        assert not isinstance(result, str), f"rank {rank} failed:\n{result}"
        for name, outputs in expected.items():
            for step, (got, want) in enumerate(zip(result[name], outputs)):
                torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-5, atol=1e-5, msg=f"{name}, call {step}, rank {rank}")


def test_ring_attention_is_refused_with_a_clear_error():
    from types import SimpleNamespace

    from diffattn.processors.base import _refuse_ring_attention
    from diffattn.context import LayerInfo

    ring = SimpleNamespace(context_parallel_config=SimpleNamespace(ring_degree=2, ulysses_degree=1))
    with pytest.raises(BackendUnavailableError, match="ulysses_degree"):
        _refuse_ring_attention(ring, LayerInfo("blocks.0.attn1", 0, 0, "self"))
    _refuse_ring_attention(SimpleNamespace(context_parallel_config=SimpleNamespace(ring_degree=1)), LayerInfo("x", 0, 0, "self"))
