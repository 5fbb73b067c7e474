"""`torch.compile` with the sparse methods over a 50-step run: compiles happen only when a phase changes.

Regional compilation of the tiny Wan's blocks (eager backend, which traces exactly as inductor does). Static plans
and tile orders are built once, outside compiled graphs (a graph break on first use). With stats off and those built,
a block with Sparge, PSA or Radial traces as one graph (`fullgraph=True`) and gives the eager output. LiteAttention
keeps per-layer marks, so it updates them outside the graph (a break per call) rather than recompiling per layer;
stats on break the graph by design (per-call timers, the density record).
"""

from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import diffattn
from diffattn.testing import tiny_call_kwargs, tiny_pipeline

COMMON = {"backend": "reference", "min_tokens": 32}  # the tiny call has 3 x 4 x 4 = 48 tokens


def run(pipe, steps: int, **kwargs) -> torch.Tensor:
    return pipe(**tiny_call_kwargs("wan", height=64, width=64, num_inference_steps=steps, output_type="latent", **kwargs)).frames


LITE = diffattn.LiteAttentionConfig(early_steps=2, early_threshold=-20.0, **COMMON)


@pytest.mark.parametrize(
    "configs",
    [(LITE,), (diffattn.RadialConfig(dense_steps=1, dense_layers=(), **COMMON), LITE, diffattn.PABConfig())],
    ids=["lite", "radial+lite+pab"],
)
def test_a_50_step_run_compiles_only_at_phase_changes(configs):
    """Graphs appear in the first steps, where phases change (Radial's dense step, Lite's 2 early steps, PAB's
    windows), and the remaining steps compile nothing; no frame reaches dynamo's recompile limit (that raises here)."""
    torch._dynamo.reset()
    counters.clear()
    pipe = tiny_pipeline("wan")
    graphs: list[int] = []

    def count(pipe, step, timestep, kwargs):
        graphs.append(counters["stats"]["unique_graphs"])
        return kwargs

    try:
        with mock.patch.object(torch._dynamo.config, "fail_on_recompile_limit_hit", True), \
                diffattn.apply(pipe, *configs) as handle:
            handle.stats.enabled = False
            pipe.transformer.compile_repeated_blocks(backend="eager")
            out = run(pipe, 50, callback_on_step_end=count)
        grew = [step for step in range(1, 50) if graphs[step] != graphs[step - 1]]
        assert len(graphs) == 50 and len(grew) <= 3 and max(grew, default=0) <= 10, (graphs, grew)
        assert torch.isfinite(out).all()
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize(
    "configs",
    [
        (diffattn.SpargeConfig(topk=0.3, dense_steps=0, **COMMON),),
        (diffattn.PSAConfig(dense_steps=0, **COMMON),),
        (diffattn.RadialConfig(dense_steps=0, **COMMON),),
    ],
    ids=["sparge", "psa", "radial"],
)
def test_blocks_compile_without_graph_breaks_and_match_eager(configs):
    """After one eager run has built the static plans, the compiled blocks trace whole (`fullgraph=True` raises on
    any graph break) and match the eager second run."""
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


def test_stats_and_lite_under_compile_match_eager():
    """Stats on and LiteAttention's marks (both outside the graph) give the eager output when compiled."""
    configs = (diffattn.RadialConfig(dense_steps=0, **COMMON), diffattn.LiteAttentionConfig(**COMMON))
    torch._dynamo.reset()
    pipe = tiny_pipeline("wan")
    with diffattn.apply(pipe, *configs) as handle:
        eager, eager_stats = run(pipe, 3), handle.stats.to_dict()
    try:
        with diffattn.apply(pipe, *configs) as handle:
            pipe.transformer.compile_repeated_blocks(backend="eager")
            compiled = run(pipe, 3)
            densities = {layer: {step: record["density"] for step, record in steps.items()}
                         for layer, steps in handle.stats.to_dict().items()}
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
        assert densities == {layer: {step: record["density"] for step, record in steps.items()}
                             for layer, steps in eager_stats.items()}
    finally:
        torch._dynamo.reset()
