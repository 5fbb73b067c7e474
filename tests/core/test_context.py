"""The run context: grid recovery for every family at odd sizes, step counting, CFG branches, runs."""

import pytest
import torch

import diffattn
from diffattn.geometry import Grid
from diffattn.processors.observe import ObserveMethod
from diffattn.testing import tiny_call_kwargs, tiny_denoiser, tiny_denoiser_inputs, tiny_pipeline

# Latent sizes (frames, height, width) that give odd token grids, and the grid each family must report.
ODD_SIZES = {
    "wan": ((3, 6, 10), Grid(3, 3, 5)),  # 2x2 spatial patches
    "cogvideox": ((3, 6, 10), Grid(3, 3, 5)),
    "mochi": ((3, 6, 10), Grid(3, 3, 5)),
    "hunyuanvideo": ((3, 3, 5), Grid(3, 3, 5)),  # 1x1 patches
    "ltx": ((3, 3, 5), Grid(3, 3, 5)),
    "wan22": ((3, 6, 10), Grid(3, 3, 5)),
    "wan-i2v": ((3, 6, 10), Grid(3, 3, 5)),
    "wan-vace": ((3, 6, 10), Grid(3, 3, 5)),
    "skyreels-v2": ((3, 6, 10), Grid(3, 3, 5)),
    "hunyuanvideo15": ((3, 3, 5), Grid(3, 3, 5)),
    "ltx2": ((3, 3, 5), Grid(3, 3, 5)),
    "sd": ((1, 3, 5), Grid(1, 3, 5)),
    "animatediff": ((9, 3, 5), Grid(9, 3, 5)),
}


@pytest.fixture
def layouts(monkeypatch):
    """Record the token layout of every attention call that reaches the observe method."""
    seen = []
    original = ObserveMethod.attend

    def attend(self, call, proceed):
        seen.append((call.layer, call.layout, call.query.shape[-2], call.key.shape[-2]))
        return original(self, call, proceed)

    monkeypatch.setattr(ObserveMethod, "attend", attend)
    return seen


@pytest.mark.parametrize("family", list(ODD_SIZES))
def test_grid_is_recovered_at_odd_sizes(family, layouts):
    (frames, height, width), expected = ODD_SIZES[family]
    model = tiny_denoiser(family)
    inputs = tiny_denoiser_inputs(family, frames=frames, height=height, width=width)
    with diffattn.apply(model, "observe") as handle, torch.no_grad():
        model(**inputs)
        assert handle.context.grid == expected
    video_calls = [(layer, layout, q, k) for layer, layout, q, k in layouts if layout.kind in ("self", "joint")]
    assert video_calls, "no attention call was recognised as video self-attention"
    for _, layout, _, _ in video_calls:
        assert layout.video.stop - layout.video.start == layout.grid.tokens // (layout.grid.frames if layout.frames_in_batch else 1)
    # the full-resolution layers see exactly the recovered grid
    full = [layout for _, layout, _, _ in video_calls if layout.grid.height == expected.height and layout.grid.width == expected.width]
    assert full and all(layout.grid == expected for layout in full)
    if family == "animatediff":
        assert any(layout.kind == "temporal" and layout.grid.frames == frames for _, layout, _, _ in layouts)


def run_and_log(family, steps):
    pipe = tiny_pipeline(family)
    log = []
    with diffattn.apply(pipe, "observe") as handle:
        handle.target.listeners.append(lambda ctx: log.append(ctx.summary()))
        pipe(**tiny_call_kwargs(family, num_inference_steps=steps))
        pipe(**tiny_call_kwargs(family, num_inference_steps=steps))
    return log


@pytest.mark.parametrize("family", ["wan22", "hunyuanvideo15"])
def test_cfg_branches_of_per_token_timesteps_and_guider_pipelines(family):
    """Wan 2.2 TI2V's per-token timesteps count one step per timestep; HunyuanVideo 1.5's guider names its branches
    `pred_cond` / `pred_uncond`, read as cond / uncond."""
    log = run_and_log(family, steps=2)
    assert [e["step_index"] for e in log] == [0, 0, 1, 1] * 2
    assert [e["cfg_branch"] for e in log] == ["cond", "uncond"] * 4
    assert [e["run_index"] for e in log] == [0] * 4 + [1] * 4


def test_wan_counts_one_step_per_timestep_over_cond_and_uncond_calls():
    log = run_and_log("wan", steps=3)
    assert [e["step_index"] for e in log] == [0, 0, 1, 1, 2, 2] * 2
    assert [e["cfg_branch"] for e in log[:2]] == ["cond", "uncond"]
    assert [e["call_in_step"] for e in log[:2]] == [0, 1]
    assert [e["run_index"] for e in log] == [0] * 6 + [1] * 6  # a second pipeline call is a new run
    assert {e["num_steps"] for e in log} == {3}


def test_cogvideox_counts_one_batched_call_per_step():
    log = run_and_log("cogvideox", steps=3)
    assert [e["step_index"] for e in log] == [0, 1, 2] * 2
    assert {e["cfg_branch"] for e in log} == {"batched"}
    assert [e["run_index"] for e in log] == [0, 0, 0, 1, 1, 1]


def test_model_only_runs_restart_when_the_timestep_rises_or_explicitly():
    model = tiny_denoiser("wan")
    inputs = tiny_denoiser_inputs("wan")
    with diffattn.apply(model, "observe") as handle, torch.no_grad():
        ctx = handle.context
        for t in (900.0, 900.0, 500.0, 100.0, 900.0):
            model(**{**inputs, "timestep": torch.tensor([t])})
        assert (ctx.run_index, ctx.step_index, ctx.num_steps) == (1, 0, None)
        ctx.start_run(num_steps=3)  # e.g. an inversion: timesteps rise within one run
        for t in (100.0, 500.0, 900.0):
            model(**{**inputs, "timestep": torch.tensor([t])})
        assert (ctx.run_index, ctx.step_index, ctx.num_steps) == (2, 2, 3)


def test_phases_follow_dense_steps():
    pipe = tiny_pipeline("wan")
    phases = []
    with diffattn.apply(pipe, "observe", dense_steps=1, dense_last_steps=1) as handle:
        handle.target.listeners.append(lambda ctx: phases.append(ctx.phase("observe").value))
        pipe(**tiny_call_kwargs("wan", num_inference_steps=4))
    assert phases[::2] == ["dense", "active", "active", "dense"]


def test_separate_cfg_calls_without_named_context_are_labelled_by_order():
    """Wan pipelines that do not name their calls (I2V, V2V) run cond then uncond at each timestep."""
    pipe = tiny_pipeline("wan")
    pipe._guidance_scale = 5.0  # what the pipeline sets while it runs with CFG
    inputs = tiny_denoiser_inputs("wan")
    branches = []
    with diffattn.apply(pipe, "observe") as handle, torch.no_grad():
        handle.target.listeners.append(lambda ctx: branches.append(ctx.cfg_branch))
        for t in (900.0, 900.0, 800.0, 800.0):
            pipe.transformer(**{**inputs, "timestep": torch.tensor([t])})
    assert branches == ["cond", "uncond", "cond", "uncond"]


def test_ltx2_methods_see_the_video_stream_only(layouts):
    """LTX-2's attention whose queries are audio tokens (audio self/text attention, video-to-audio) keeps the model's
    own processor; video self-attention is video, its text and audio-to-video attention cross; outputs are stock."""
    model, inputs = tiny_denoiser("ltx2"), tiny_denoiser_inputs("ltx2")
    with torch.no_grad():
        stock = model(**inputs, return_dict=False)
        with diffattn.apply(model, "observe"):
            observed = model(**inputs, return_dict=False)
    assert all(torch.equal(a, b) for a, b in zip(observed, stock))
    kinds = {layer.name.split(".")[-1]: (layer.role, layout.kind) for layer, layout, _, _ in layouts}
    assert kinds == {"attn1": ("self", "self"), "attn2": ("cross", "cross"), "audio_to_video_attn": ("cross", "cross")}


def test_named_cache_contexts_are_cfg_branches():
    """A pipeline's `cache_context` names the branch: cond / uncond / cond_uncond (batched), diffusers guiders'
    pred_cond / pred_uncond, and any other pass (LTX-2's uncond_stg) under its own name."""
    model, inputs = tiny_denoiser("ltx2"), tiny_denoiser_inputs("ltx2")
    branches = []
    with diffattn.apply(model, "observe") as handle, torch.no_grad():
        handle.target.listeners.append(lambda ctx: branches.append(ctx.cfg_branch))
        for name in ("cond_uncond", "pred_cond", "pred_uncond", "uncond_stg"):
            with model.cache_context(name):
                model(**inputs)
    assert branches == ["batched", "cond", "uncond", "uncond_stg"]
