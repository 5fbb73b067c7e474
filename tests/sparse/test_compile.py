"""`torch.compile` with the sparse methods: graphs are per phase, not per step, so a longer run compiles nothing new.

Regional compilation of the tiny Wan's blocks (eager backend). What breaks the graph (measured on torch 2.13): the
processors' routing mode makes `Tensor.unflatten` (its `super().unflatten` call) a graph break in every attention
processor; the kernels' one-time host check of a new plan is one; with stats on, the per-call timers
(`time.perf_counter`) and the density record (a host read) are too. The resulting frames specialise on the layer
and the phase, so the number of graphs settles after the first runs (about 40 here) and stays there.
"""

from __future__ import annotations

import torch
import torch._dynamo
from torch._dynamo.utils import counters

import diffattn
from diffattn.testing import tiny_call_kwargs, tiny_pipeline

COMMON = {"backend": "reference", "min_tokens": 32}  # the tiny call has 3 x 4 x 4 = 48 tokens


def run(pipe, steps: int) -> torch.Tensor:
    return pipe(**tiny_call_kwargs("wan", height=64, width=64, num_inference_steps=steps, output_type="latent")).frames


def test_a_longer_run_compiles_nothing_new():
    torch._dynamo.reset()
    counters.clear()
    pipe = tiny_pipeline("wan")
    configs = (
        diffattn.RadialConfig(dense_steps=1, dense_layers=(), **COMMON),  # a dense phase, then the sparse phase
        diffattn.LiteAttentionConfig(early_steps=2, early_threshold=-20.0, **COMMON),  # two threshold phases
        diffattn.PABConfig(),
    )
    try:
        with diffattn.apply(pipe, *configs) as handle:
            for block in pipe.transformer.blocks:
                block.compile(backend="eager")
            # every phase, both CFG branches, Lite without and with marks; frames resumed after graph breaks meet
            # some combinations only on a later run, so warm up with three
            warm = [run(pipe, 3), run(pipe, 4), run(pipe, 4)]
            graphs = counters["stats"]["unique_graphs"]
            longer = run(pipe, 8)
            assert counters["stats"]["unique_graphs"] == graphs  # twice as many steps, nothing new compiled
            assert handle.stats.summary()["steps"] == 8
        assert all(torch.isfinite(x).all() for x in (*warm, longer))
    finally:
        torch._dynamo.reset()
