"""Bad input gets a clear `DiffAttnError`: unsupported models, unrecoverable grids, out-of-range settings."""

from __future__ import annotations

import pytest

import diffattn
from diffattn.errors import ConfigError, GridError, UnsupportedModelError
from diffattn.testing import tiny_denoiser

from .conftest import denoiser, forward, inputs


@pytest.mark.parametrize("method", ["sparge", "radial", "psa", "lite"])
def test_block_sparse_methods_refuse_unet_models(method):
    unet = tiny_denoiser("sd")
    with pytest.raises(UnsupportedModelError, match="is for diffusion transformers .*sd3.*is a unet model"):
        diffattn.apply(unet, method)
    assert not hasattr(unet, "_diffattn_handle")  # nothing stays installed


def test_objects_that_are_not_denoisers_are_refused():
    with pytest.raises(UnsupportedModelError):
        diffattn.apply(object(), "radial")


def test_a_grid_that_cannot_be_recovered_is_a_clear_error():
    model, kwargs = denoiser("ltx"), inputs("ltx")
    kwargs.pop("num_frames")
    with diffattn.apply(model, "radial"), pytest.raises(GridError, match="num_frames, height and width"):
        forward(model, kwargs)


@pytest.mark.parametrize(
    "method, settings, message",
    [
        ("sparge", {"topk": 0.0}, "topk is a fraction"),
        ("sparge", {"topk": 0.5, "cdf_threshold": 0.9}, "exactly one of topk and cdf_threshold"),
        ("sparge", {"topk": None, "cdf_threshold": 1.5}, "cdf_threshold must lie"),
        ("sparge", {"sim_threshold": 2.0}, "sim_threshold must lie"),
        ("sparge", {"pv_threshold": -1.0}, "pv_threshold must lie"),
        ("radial", {"decay_factor": 0.0}, "decay_factor must lie in"),
        ("radial", {"dense_steps": -1}, "dense_steps must lie"),
        ("psa", {"cutoffs": (0.5, 0.4, 0.6, 0.8)}, "ascending"),
        ("psa", {"cutoffs": (0.5, 0.6)}, "cutoffs must be 4 values"),
        ("psa", {"mode": "best"}, "mode must be"),
        ("lite", {"threshold": 1.0}, "threshold must lie"),
        ("lite", {"early_steps": 3}, "early_steps needs early_threshold"),
        ("lite", {"backend": "cuda"}, "backend must be one of"),
        ("lite", {"mark_criterion": "max"}, "mark_criterion must be one of 'running', 'final'"),
        ("lite", {"mark_scope": "step"}, "mark_scope must be one of 'branch', 'layer'"),
        ("lite", {"keep_marks_across_runs": "yes"}, "keep_marks_across_runs must be true or false"),
        ("lite", {"must_do": (5,)}, "must_do must hold start, end pairs"),
        ("lite", {"must_do": (10, 5)}, r"must_do range \(10, 5\) must have 0 <= start < end"),
        ("lite", {"must_skip": (-4, 5)}, r"must_skip range \(-4, 5\) must have 0 <= start < end"),
        ("lite", {"must_skip": (0, 10, 5, 20)}, "must_skip ranges must be ascending and not overlap"),
        ("lite", {"must_do": (0, 10), "must_skip": (5, 20)}, r"must_do range \(0, 10\) overlaps must_skip range"),
        ("lite", {"must_do": (0.5, 10)}, "must_do must be a list of whole numbers"),
        ("radial", {"token_order": "gilbert"}, "token_order must be one of"),
        ("psa", {"min_tokens": 0}, "min_tokens must lie"),
        ("sparge", {"query_block": 32}, "query_block must be 64 or 128"),
        ("pab", {"spatial_skip_range": -2}, "spatial_skip_range must be an integer"),
        ("pab", {"cross_timestep_range": (500.0, 500.0)}, "low < high"),
    ],
)
def test_out_of_range_settings_are_config_errors(method, settings, message):
    with pytest.raises(ConfigError, match=message):
        diffattn.get_method(method).from_dict(settings)


def test_tuned_settings_for_another_model_are_refused(tmp_path):
    from diffattn.processors.sparse.sparge_tuning import SpargeLayerSettings, SpargeTuning

    three_heads = SpargeLayerSettings((0.0,) * 3, (0.9,) * 3, (50.0,) * 3, (0.5,) * 3, (False,) * 3)
    path = SpargeTuning(0.06, 0.065, 1, {"blocks.0.attn1": three_heads}).save(tmp_path / "tuned.json")
    model, kwargs = denoiser("wan"), inputs("wan")
    config = diffattn.SpargeConfig(tuned=str(path), backend="reference", min_tokens=256)
    with diffattn.apply(model, config), pytest.raises(ConfigError, match="have 3 heads but the model has 2"):
        forward(model, kwargs)


def test_tuned_settings_for_other_block_sizes_are_refused(tmp_path):
    from diffattn.processors.sparse.sparge_tuning import SpargeLayerSettings, SpargeTuning

    two_heads = SpargeLayerSettings((0.0,) * 2, (0.9,) * 2, (50.0,) * 2, (0.5,) * 2, (False,) * 2)
    path = SpargeTuning(0.06, 0.065, 1, {"blocks.0.attn1": two_heads}).save(tmp_path / "tuned.json")  # 64-token blocks
    with pytest.raises(ConfigError, match="tuned with 64-token query blocks but the config uses 128"):
        diffattn.apply(denoiser("wan"), diffattn.SpargeConfig(tuned=str(path), query_block=128))
    assert not hasattr(denoiser("wan"), "_diffattn_handle")
