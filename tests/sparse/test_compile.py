"""`torch.compile` with the sparse methods: whole blocks trace as one graph, and graphs are per phase, not per step.

Regional compilation of the tiny Wan's blocks (eager backend, which traces exactly as inductor does). Static plans
and tile orders are built once, outside compiled graphs (a graph break on first use). With stats off and those built,
a block with Sparge, PSA or Radial + LiteAttention compiles with `fullgraph=True` (no graph break) and gives the
eager output. With stats on, the per-call timers (`time.perf_counter`) and the density record (a host read) break
the graph by design; the number of graphs still settles after the first runs, so a longer run compiles nothing new.
"""

from __future__ import annotations

import pytest
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


@pytest.mark.parametrize(
    "configs",
    [
        (diffattn.SpargeConfig(topk=0.3, dense_steps=0, **COMMON),),
        (diffattn.PSAConfig(dense_steps=0, **COMMON),),
        (diffattn.RadialConfig(dense_steps=0, **COMMON), diffattn.LiteAttentionConfig(**COMMON)),
    ],
    ids=["sparge", "psa", "radial+lite"],
)
def test_blocks_compile_without_graph_breaks_and_match_eager(configs):
    """Static plans and tile orders are built on first use outside compiled graphs, so after one eager run the
    compiled blocks trace whole (`fullgraph=True` raises on any graph break) and match the eager second run."""
    torch._dynamo.reset()
    pipe = tiny_pipeline("wan")
    with diffattn.apply(pipe, *configs) as handle:
        handle.stats.enabled = False
        run(pipe, 3)
        eager = run(pipe, 3)
    try:
        with diffattn.apply(pipe, *configs) as handle:
            handle.stats.enabled = False
            run(pipe, 3)
            for block in pipe.transformer.blocks:
                block.compile(backend="eager", fullgraph=True)
            compiled = run(pipe, 3)
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    finally:
        torch._dynamo.reset()
