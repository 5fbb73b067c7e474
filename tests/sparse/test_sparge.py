"""SpargeAttn fidelity: TopCdf keeps SpargeAttn's block count in every backend, each API's similarity default,
no sink unless tuned, and SpargeAttn's own tuned parameter files."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import diffattn
from diffattn.geometry import Grid
from diffattn.kernels import available_backends, sparge_plan
from diffattn.kernels.reference import block_stats_reference
from diffattn.processors.sparse import AttentionProbe
from diffattn.processors.sparse.sparge import load_spargeattn_parameters
from diffattn.processors.sparse.sparge_tuning import SpargeLayerSettings, SpargeTuning
from diffattn.testing import tiny_pipeline

from .test_compose import local_qkv

BACKENDS = ["reference", "triton"]


def spargeattn_topcdf_mask(q: torch.Tensor, k: torch.Tensor, block: int, tau: float) -> torch.Tensor:
    """SpargeAttn's TopCdf selection written out as its `get_block_map_meansim` does (every block self-similar,
    no sink): sort each row's pooled softmax, `searchsorted(cdf, tau, right=True)` blocks, at least one."""
    pool_q, _ = block_stats_reference(q, None, block)
    pool_k, _ = block_stats_reference(k, k.mean(2, dtype=torch.float32), block)
    probs = (pool_q @ pool_k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)
    ordered = probs.sort(-1, descending=True)
    cdf = ordered.values.cumsum(-1)
    count = torch.searchsorted(cdf, torch.full((*cdf.shape[:-1], 1), tau), right=True).clamp(min=1)
    keep_sorted = torch.arange(cdf.shape[-1]) < count
    return torch.zeros_like(keep_sorted).scatter(-1, ordered.indices, keep_sorted)


@pytest.mark.parametrize("backend", BACKENDS)
def test_topcdf_keeps_spargeattns_block_count(backend):
    """Thresholds tuned with SpargeAttn select the same blocks here: the count is the number of sorted blocks
    whose cumulative probability is at most tau (one block fewer than 'reach tau' whenever tau falls inside a block)."""
    if backend == "triton" and available_backends()["triton"] is not True:
        pytest.skip(f"Triton unavailable here: {available_backends()['triton']}")
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 512, 32, generator=generator) * 3
    k = torch.randn(1, 2, 1024, 32, generator=generator) * 3
    for tau in (0.05, 0.3, 0.62, 0.9):
        plan = sparge_plan(q, k, block_q=64, block_k=64, cdf_threshold=tau, sim_threshold=-1.0,
                           attention_sink=False, backend=backend)
        assert torch.equal(plan.to_block_mask(), spargeattn_topcdf_mask(q, k, 64, tau)), tau


def test_topcdf_at_a_block_boundary_stops_at_it():
    """Probabilities (0.5, 0.3, 0.2): tau 0.7 keeps 1 block (cdf 0.5 <= 0.7 < 0.8), tau 0.8 keeps 2, tau 0 keeps 1."""
    from diffattn.kernels.sparge import _select

    probs = torch.tensor([[0.3, 0.5, 0.2]])
    assert _select(probs, None, 0.7).tolist() == [[False, True, False]]
    assert _select(probs, None, 0.81).tolist() == [[True, True, False]]
    assert _select(probs, None, 0.0).tolist() == [[False, True, False]]


def test_similarity_and_sink_defaults_follow_spargeattns_apis():
    topk = diffattn.SpargeConfig()
    cdf = diffattn.SpargeConfig(topk=None, cdf_threshold=0.98)
    assert (topk.similarity_threshold, cdf.similarity_threshold) == (-0.1, 0.6)
    assert diffattn.SpargeConfig(topk=None, cdf_threshold=0.9, sim_threshold=0.2).similarity_threshold == 0.2
    assert not topk.attention_sink and not cdf.attention_sink


def test_topcdf_mode_applies_its_similarity_threshold():
    """Tokens with little mutual similarity: at 0.6 (the TopCdf API's default) no block is self-similar, so every
    row is dense; at the top-k API's -0.1 the same TopCdf threshold leaves blocks out."""
    grid = Grid(4, 8, 16)
    q, k, v = (torch.randn(1, 2, grid.tokens, 32, generator=torch.Generator().manual_seed(i)) for i in range(3))
    densities = []
    for sim in (None, -0.1):
        probe = AttentionProbe([diffattn.SpargeConfig(topk=None, cdf_threshold=0.5, sim_threshold=sim,
                                                      backend="reference", min_tokens=256)])
        probe(q, k, v, grid, block=1)
        densities.append(probe.stats.to_dict()["blocks.1.attn1"][0]["density"])
    assert densities[0] == 1.0 and densities[1] < 1.0


def spargeattn_state_dict(layers: dict[str, SpargeLayerSettings]) -> dict[str, torch.Tensor]:
    """What SpargeAttn's `extract_sparse_attention_state_dict` saves for these settings."""
    state = {}
    for name, s in layers.items():
        prefix = f"{name}.inner_attention."
        state[prefix + "is_sparse"] = ~torch.tensor(s.dense)
        state[prefix + "cdfthreshd"] = torch.tensor(s.cdf_threshold)
        state[prefix + "simthreshd1"] = torch.tensor(s.sim_threshold)
        state[prefix + "simthreshd2"] = torch.zeros(len(s.dense))
        state[prefix + "pvthreshd"] = torch.tensor(s.pv_threshold)
    return state


def test_spargeattn_parameter_files_run_like_our_tuning(tmp_path):
    settings = SpargeLayerSettings(sim_threshold=(0.25, 1.0), cdf_threshold=(0.75, 1.0), pv_threshold=(6.0, 50.0),
                                   sparsity=(0.5, 0.0), dense=(False, True))
    ours = SpargeTuning(0.06, 0.065, 1, {"blocks.1.attn1": settings}).save(tmp_path / "ours.json")
    theirs = tmp_path / "theirs.pt"
    torch.save(spargeattn_state_dict({"blocks.1.self_attn": settings}), theirs)  # Wan's original module name
    loaded = load_spargeattn_parameters(theirs, 64)
    assert set(loaded.layers) == {"blocks.1.attn1"}
    assert loaded.layers["blocks.1.attn1"].cdf_threshold == settings.cdf_threshold
    assert loaded.layers["blocks.1.attn1"].dense == (False, True)

    grid = Grid(4, 8, 16)
    q, k, v = local_qkv(grid)
    outs = []
    for path in (ours, theirs):
        probe = AttentionProbe([diffattn.SpargeConfig(tuned=str(path), backend="reference", min_tokens=256)])
        outs.append(probe(q, k, v, grid, block=1))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], F.scaled_dot_product_attention(q, k, v))  # the tuned head really is sparse


def test_bad_spargeattn_parameter_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(diffattn.ConfigError, match="cannot read SpargeAttn parameter file"):
        load_spargeattn_parameters(garbage, 64)
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(3)}, plain)
    with pytest.raises(diffattn.ConfigError, match="holds no SpargeAttn parameters"):
        load_spargeattn_parameters(plain, 64)
    partial = tmp_path / "partial.pt"
    torch.save({"blocks.0.attn1.inner_attention.cdfthreshd": torch.ones(2)}, partial)
    with pytest.raises(diffattn.ConfigError, match="lacks"):
        load_spargeattn_parameters(partial, 64)
    settings = SpargeLayerSettings((0.0,), (0.9,), (50.0,), (0.5,), (False,))
    elsewhere = tmp_path / "other_model.pt"
    torch.save(spargeattn_state_dict({"transformer_blocks.0.attn1": settings}), elsewhere)
    pipe = tiny_pipeline("wan")
    with pytest.raises(diffattn.ConfigError, match="tunes layers such as"):
        diffattn.apply(pipe, diffattn.SpargeConfig(tuned=str(elsewhere)))
    assert not hasattr(pipe.transformer, "_diffattn_handle")  # nothing left installed
