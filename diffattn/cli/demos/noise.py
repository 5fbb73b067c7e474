"""Demo entries of the noise methods on the tiny models: FreeInit, FreeNoise and InitNO.

Each entry checks an equivalence that must hold (FreeInit equals diffusers' `FreeInitMixin`; FreeNoise with one
window equals stock sampling; InitNO with thresholds every noise meets equals Stable Diffusion) and reports what
the method costs on top of plain sampling.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import demo_entry

FPS = 8


def _timed(fn) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - start, 3)


@demo_entry("freeinit-animatediff", "tiny AnimateDiff with FreeInit (3 iterations), equal to diffusers' FreeInitMixin",
            ("freeinit",))
def freeinit_animatediff(out_dir: Path) -> dict[str, Any]:
    from ...api import apply
    from ...configs import FreeInitConfig
    from ...media.video import write_video
    from ...testing import tiny_call_kwargs, tiny_pipeline

    pipe = tiny_pipeline("animatediff")
    plain, plain_seconds = _timed(lambda: pipe(**tiny_call_kwargs("animatediff")).frames[0])
    pipe.enable_free_init(num_iters=3)
    reference = pipe(**tiny_call_kwargs("animatediff")).frames[0]
    pipe.disable_free_init()
    with apply(pipe, FreeInitConfig(num_iters=3)) as handle:
        video, seconds = _timed(lambda: pipe(**tiny_call_kwargs("animatediff")).frames[0])
        history = handle.methods[0].history
    path = write_video(out_dir / "freeinit_animatediff.mp4", video, fps=FPS)
    max_diff = float((video - reference).abs().max())
    return {
        "ok": max_diff <= 1e-5,
        "video": path.name,
        "max_abs_diff_vs_diffusers_freeinit": max_diff,
        "changed_vs_plain": float((video - plain).abs().max()),
        "plain_seconds": plain_seconds,
        "freeinit_seconds": seconds,
        "iteration_seconds": [round(r.seconds, 3) for r in history],
    }


@demo_entry("freeinit-wan", "tiny Wan (flow matching) with FreeInit: re-noising to a signal-matched sigma", ("freeinit",))
def freeinit_wan(out_dir: Path) -> dict[str, Any]:
    from ...api import apply
    from ...configs import FreeInitConfig
    from ...media.video import write_video
    from ...testing import tiny_call_kwargs, tiny_pipeline

    pipe = tiny_pipeline("wan")
    plain, plain_seconds = _timed(lambda: pipe(**tiny_call_kwargs("wan")).frames[0])
    with apply(pipe, FreeInitConfig(num_iters=3, fast_sampling=True)) as handle:
        video, seconds = _timed(lambda: pipe(**tiny_call_kwargs("wan")).frames[0])
        again = pipe(**tiny_call_kwargs("wan")).frames[0]
        steps = [r.steps for r in handle.methods[0].history]
    path = write_video(out_dir / "freeinit_wan.mp4", video, fps=FPS)
    return {
        "ok": bool((video == again).all()) and bool((video != plain).any()),
        "video": path.name,
        "deterministic": bool((video == again).all()),
        "changed_vs_plain": float((video - plain).abs().max()),
        "fast_sampling_steps": steps,
        "plain_seconds": plain_seconds,
        "freeinit_seconds": seconds,
    }


@demo_entry("freenoise-animatediff", "tiny AnimateDiff, 24 frames from 8-frame windows with two prompts (FreeNoise)",
            ("freenoise",))
def freenoise_animatediff(out_dir: Path) -> dict[str, Any]:
    from ...api import apply
    from ...configs import FreeNoiseConfig
    from ...media.video import write_video
    from ...testing import tiny_call_kwargs, tiny_pipeline

    pipe = tiny_pipeline("animatediff")
    config = FreeNoiseConfig(context_length=8, context_stride=4)
    stock = pipe(**tiny_call_kwargs("animatediff")).frames[0]
    _, plain_seconds = _timed(lambda: pipe(**tiny_call_kwargs("animatediff", num_frames=24)))
    prompts = {0: "a red fox running through fresh snow", 16: "a white cat sitting in fresh snow"}
    with apply(pipe, config) as handle:
        one_window = pipe(**tiny_call_kwargs("animatediff")).frames[0]
        _, single_seconds = _timed(lambda: pipe(**tiny_call_kwargs("animatediff", num_frames=24)))
        video, seconds = _timed(lambda: pipe(**tiny_call_kwargs("animatediff", num_frames=24, prompt=prompts)).frames[0])
        windows = handle.stats.summary()["calls"]
    path = write_video(out_dir / "freenoise_animatediff.mp4", video, fps=FPS)
    return {
        "ok": bool((one_window == stock).all()) and bool(video.isfinite().all()),
        "video": path.name,
        "frames": video.shape[0],
        "one_window_equals_stock": bool((one_window == stock).all()),
        "plain_seconds_24_frames": plain_seconds,
        "freenoise_seconds_24_frames": single_seconds,
        "freenoise_two_prompts_seconds": seconds,
        "windowed_attention_calls": windows,
    }


@demo_entry("initno-sd", "tiny Stable Diffusion with InitNO's initial-noise optimisation", ("initno",))
def initno_sd(out_dir: Path) -> dict[str, Any]:
    from ...configs import InitNOConfig
    from ...media.video import write_video
    from ...pipelines.initno import InitNOPipeline
    from ...testing import tiny_call_kwargs, tiny_pipeline

    sd = tiny_pipeline("sd")
    stock, plain_seconds = _timed(lambda: sd(**tiny_call_kwargs("sd")).images)
    pipe = InitNOPipeline.from_pipe(sd)
    pipe.set_progress_bar_config(disable=True)
    config = InitNOConfig(words=("squirrel", "burger"))
    neutral = pipe(**tiny_call_kwargs("sd"), initno=InitNOConfig(words=config.words, tau_cross=1.0, tau_self=1.0, attend_and_excite=False))
    output, seconds = _timed(lambda: pipe(**tiny_call_kwargs("sd"), initno=config))
    path = write_video(out_dir / "initno_sd.mp4", output.images, fps=1)
    summary = output.initno
    return {
        "ok": summary["optimiser_steps"] <= config.optimiser_budget and float((neutral.images - stock).abs().max()) <= 1e-6,
        "video": path.name,
        "neutral_thresholds_max_abs_diff_vs_sd": float((neutral.images - stock).abs().max()),
        "plain_seconds": plain_seconds,
        "initno_seconds": seconds,
        **{k: v for k, v in summary.items()},
    }
