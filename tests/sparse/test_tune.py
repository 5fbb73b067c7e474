"""SpargeAttn calibration: the search, the per-head choice, and `tune_sparge` -> JSON -> `SpargeConfig(tuned=...)`."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import diffattn
from diffattn.geometry import Grid
from diffattn.processors.sparse import AttentionProbe
from diffattn.processors.sparse.sparge import Candidate, _smallest_passing, select_head_settings
from diffattn.processors.sparse.sparge_tuning import SpargeCalibrationConfig, SpargeTuning
from diffattn.testing import tiny_call_kwargs, tiny_pipeline

from .test_compose import local_qkv


def test_bisection_finds_the_smallest_passing_value_within_tolerance():
    calls = []

    def passes(x):
        calls.append(x)
        return x >= 0.37

    found = _smallest_passing(passes, 0.0, 1.0, 1e-3)
    assert 0.37 <= found < 0.37 + 1e-3 and len(calls) == 10
    assert _smallest_passing(lambda x: False, 0.0, 50.0, 0.1) == 50.0  # never passes: the upper end


def test_head_choice_takes_the_bin_with_most_sparsity_and_its_largest_values():
    candidates = [
        Candidate(-1.0, 0.3, 10.0, 0.5), Candidate(-0.9375, 0.4, 12.0, 0.5),  # bin 0: summed sparsity 1.0
        Candidate(0.0, 0.2, 5.0, 0.45), Candidate(0.0625, 0.6, 8.0, 0.35), Candidate(0.1, 0.1, 1.0, 0.3),  # bin [0, 1/8): 1.1
    ]
    chosen, sparse = select_head_settings(candidates)
    assert (chosen.sim_threshold, chosen.cdf_threshold, chosen.pv_threshold) == (0.1, 0.6, 8.0)
    assert sparse and chosen.sparsity == pytest.approx(1.1 / 3)
    _, sparse = select_head_settings([Candidate(-1.0, 1.0, 50.0, 0.05)])
    assert not sparse  # mean sparsity <= 0.1: the head stays dense


def test_calibration_on_local_attention_meets_its_error_target(tmp_path):
    grid = Grid(4, 8, 16)
    q, k, v = local_qkv(grid)
    calibration = SpargeCalibrationConfig(l1=0.06, pv_l1=0.065, tune_pv=False, backend="reference", min_tokens=256)
    probe = AttentionProbe([calibration])
    out = probe(q, k, v, grid, block=1)
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v))  # calibration leaves attention dense
    settings = probe.methods[0].settings()["blocks.1.attn1"]
    assert settings.heads == 2 and not any(settings.dense)
    path = SpargeTuning(0.06, 0.065, probe.methods[0].calls, {"blocks.1.attn1": settings}).save(tmp_path / "t.json")

    tuned = AttentionProbe([diffattn.SpargeConfig(tuned=str(path), backend="reference", min_tokens=256)])
    sparse = tuned(q, k, v, grid, block=1)
    error = float((sparse - out).abs().sum() / out.abs().sum())
    assert error < 0.06  # the largest theta and tau of the chosen bin meet the target on the calibration call
    assert tuned.stats.to_dict()["blocks.1.attn1"][0]["density"] < 1.0  # and it skips blocks


def test_tune_sparge_round_trip_on_a_pipeline(tmp_path, call_spy):
    pipe = tiny_pipeline("wan")
    call = tiny_call_kwargs("wan", height=128, width=128, num_frames=13, num_inference_steps=1, guidance_scale=1.0, output_type="latent")
    prompt = call.pop("prompt")
    call.pop("negative_prompt")
    path = tmp_path / "sparge.json"
    tuning = diffattn.tune_sparge(pipe, [prompt], path=path, tune_pv=False, min_tokens=256, backend="reference", **call)
    assert set(tuning.layers) == {"blocks.0.attn1", "blocks.1.attn1"}  # self-attention only (grid 4 x 8 x 8 = 256)
    loaded = SpargeTuning.load(path)
    assert loaded.layers == tuning.layers and loaded.calls == tuning.calls == 2
    assert json.loads(path.read_text())["method"] == "sparge"

    with diffattn.apply(pipe, diffattn.SpargeConfig(tuned=str(path), backend="reference", min_tokens=256)):
        out = pipe(prompt=prompt, **call).frames
    assert torch.isfinite(out).all()
    for spied in call_spy:
        settings = tuning.layers[spied.layer.name]
        rows = spied.plan.to_block_mask()
        for head, dense in enumerate(settings.dense):
            if dense:
                assert rows[:, head].all()
        assert spied.kernel_options["pv_threshold"].tolist() == list(settings.pv_threshold)


def test_bad_tuning_files_are_refused(tmp_path):
    with pytest.raises(diffattn.ConfigError, match="does not exist"):
        diffattn.SpargeConfig(tuned=str(tmp_path / "missing.json"))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"method": "radial"}))
    with pytest.raises(diffattn.ConfigError, match="not a SpargeAttn tuning file"):
        SpargeTuning.load(wrong)
    with pytest.raises(diffattn.ConfigError, match="pv_l1"):
        SpargeCalibrationConfig(l1=0.07, pv_l1=0.06)
