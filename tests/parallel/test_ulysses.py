"""Under diffusers' Ulysses context parallelism (2 gloo ranks on the CPU), every method equals one process."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

import diffattn
from diffattn.errors import BackendUnavailableError

from .ulysses_worker import LATENT, run_methods, worker

# Every attention method, at settings where it really acts on the 3 x 8 x 8-token test grid (the single-process
# run is the reference): no dense warm-up, 64-token query blocks, the PyTorch reference kernels.
_SPARSE = dict(min_tokens=1, query_block=64, backend="reference")
METHODS = [
    diffattn.ObserveConfig(),
    diffattn.SpargeConfig(topk=0.5, **_SPARSE),
    diffattn.RadialConfig(dense_layers=(), dense_steps=0, decay_factor=0.05, **_SPARSE),
    diffattn.PSAConfig(dense_steps=0, **_SPARSE),
    diffattn.LiteAttentionConfig(threshold=-1.0, **_SPARSE),
    diffattn.PABConfig(spatial_skip_range=2, spatial_timestep_range=(0.0, 1000.0)),
    diffattn.FreeSwimConfig(base_height=64, base_width=64, cache_steps=None, backend="reference"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_every_method_under_ulysses_equals_single_process():
    from diffattn.testing import tiny_denoiser, tiny_denoiser_inputs

    expected = run_methods(METHODS, lambda: tiny_denoiser("wan"), tiny_denoiser_inputs("wan", **LATENT))
    for name, outputs in expected.items():  # each method really acts here, so the comparison below means something
        if name != "observe":
            assert any(not torch.allclose(o, d) for o, d in zip(outputs, expected["observe"])), f"{name} ran dense"
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

    from diffattn.context import LayerInfo
    from diffattn.processors.base import _refuse_ring_attention

    ring = SimpleNamespace(context_parallel_config=SimpleNamespace(ring_degree=2, ulysses_degree=1))
    with pytest.raises(BackendUnavailableError, match="ulysses_degree"):
        _refuse_ring_attention(ring, LayerInfo("blocks.0.attn1", 0, 0, "self"))
    _refuse_ring_attention(SimpleNamespace(context_parallel_config=SimpleNamespace(ring_degree=1)), LayerInfo("x", 0, 0, "self"))
