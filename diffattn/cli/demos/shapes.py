"""Demo entries on the trained shapes-world models: recognisable content, scored against what the prompt asked for.

`shapes-wan`: the trained Wan generates the default prompt (`diffattn.defaults.VIDEO_EXAMPLE`) densely under
`observe`, then with Sparge and Radial, at :data:`~diffattn.shapes.quality.sparse.FRAMES` frames of its trained
32 x 32 (576 tokens: the trained 9 frames are under the methods' `min_tokens`). Each run reports the scorer's
verdict (`diffattn.shapes.score.score_video`: the named object, colour and shape, found in most frames), and the
sparse ones their density and distance to the dense clip. `shapes-sd-edit`: FateZero recolours a rendered
shapes-world clip on the trained Stable Diffusion (`diffattn.defaults.EDIT_EXAMPLE`), the same run as
`diffattn edit`, scored as the quality benchmark's editing group scores it. Both are skipped, saying how to train
the model, when its weights are not installed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ...defaults import EDIT_EXAMPLE, TRAINED_IMAGE_MODEL, TRAINED_VIDEO_MODEL, VIDEO_EXAMPLE
from . import demo_entry, single_thread

FPS = 8
STEPS = 20
"""Denoising steps of every run (the trained models' `sample_kwargs` default)."""
EDIT_FRAMES = 8


def _verdict(video: Any, prompt: str) -> dict[str, Any]:
    """The scorer's verdict on one clip: correct or not, and in what fraction of frames the object was found."""
    from ...shapes.score import score_video

    score = score_video(video, prompt)
    return {"correct": score.correct, "found_frames": round(score.objects[0].found_frames, 3)}


@demo_entry("shapes-wan", "trained tiny:shapes-wan: a shapes-world clip dense under observe, with Sparge and with "
            "Radial, each with the scorer's verdict", needs=(TRAINED_VIDEO_MODEL,))
def shapes_wan(out_dir: Path) -> dict[str, Any]:
    with single_thread():
        return _shapes_wan(out_dir)


def _shapes_wan(out_dir: Path) -> dict[str, Any]:
    import torch

    from ... import configs
    from ...api import apply
    from ...generation import pipeline_frames
    from ...media.video import write_video
    from ...shapes.models import load_trained, sample_kwargs
    from ...shapes.quality.sparse import FRAMES, METHODS

    pipe = load_trained(TRAINED_VIDEO_MODEL.removeprefix("tiny:"))
    prompt = VIDEO_EXAMPLE.prompt
    variants = {"dense (observe)": configs.ObserveConfig(),
                **{name: METHODS[name](STEPS)[0] for name in ("sparge", "radial")}}
    report: dict[str, Any] = {"prompt": prompt, "frames": FRAMES, "steps": STEPS, "runs": {}}
    dense = None
    for name, config in variants.items():
        call = sample_kwargs("shapes-wan", num_frames=FRAMES, num_inference_steps=STEPS,
                             generator=torch.Generator().manual_seed(0))
        with apply(pipe, config) as handle:
            start = time.perf_counter()
            video = pipeline_frames(pipe(prompt=prompt, **call))
            seconds = time.perf_counter() - start
            summary = handle.stats.summary()
        dense = video if dense is None else dense
        path = write_video(out_dir / f"shapes_wan_{name.split()[0]}.mp4", video, fps=FPS)
        report["runs"][name] = {
            "video": path.name, "seconds": round(seconds, 2), **_verdict(video, prompt),
            "mean_density": summary["mean_density"], "attention_calls": summary["calls"],
            "max_abs_diff_vs_dense": round(float((video - dense).abs().max()), 4),
            "finite": bool(video.isfinite().all()),
        }
    runs = report["runs"]
    # ok: every clip finite and the sparse methods really skipped work (the verdicts are reported, not required:
    # they measure the model as much as the methods)
    report["ok"] = all(run["finite"] for run in runs.values()) and all(
        runs[name]["mean_density"] is not None and runs[name]["mean_density"] < 1.0 for name in ("sparge", "radial"))
    return report


@demo_entry("shapes-sd-edit", "trained tiny:shapes-sd: FateZero recolours a rendered shapes-world clip "
            f"({EDIT_EXAMPLE.prompt!r} -> {EDIT_EXAMPLE.target_prompt!r}), scored", needs=(TRAINED_IMAGE_MODEL,))
def shapes_sd_edit(out_dir: Path) -> dict[str, Any]:
    with single_thread():
        return _shapes_sd_edit(out_dir)


def _shapes_sd_edit(out_dir: Path) -> dict[str, Any]:
    import torch

    from ...media.video import write_video
    from ...pipelines.edit_job import EditSpec, edit_video
    from ...shapes.models import sample_kwargs
    from ...shapes.quality.editing import EditCase, edit_scores

    clip = EDIT_EXAMPLE.source_clip(EDIT_FRAMES, 64, 64)
    case = EditCase(clip, EDIT_EXAMPLE.prompt, EDIT_EXAMPLE.target_prompt, EDIT_EXAMPLE.target_colour, seed=0)
    source = write_video(out_dir / "shapes_sd_source.mp4", case.frames, fps=FPS)
    first = clip.scene.objects[0]
    spec = EditSpec(editor="fatezero", model=TRAINED_IMAGE_MODEL, video=str(source), source_prompt=case.source_prompt,
                    target_prompt=case.target_prompt, steps=STEPS, guidance=sample_kwargs("shapes-sd")["guidance_scale"], fps=FPS,
                    settings={"is_replace_controller": True, "blend_words": [first.colour, first.shape]})
    result = edit_video(spec)
    path = write_video(out_dir / "shapes_sd_edit.mp4", result.frames, fps=FPS)
    edited = result.frames
    same_size = edited.shape == case.frames.shape
    scores = edit_scores(edited, case) if same_size else {}  # hue_changed, mask_iou, psnr_outside
    return {
        "ok": bool(torch.isfinite(edited).all()) and same_size,
        "video": path.name, "source": source.name, "edit": f"{case.source_prompt!r} -> {case.target_prompt!r}",
        "edit_seconds": round(result.seconds, 2),
        **{name: round(value, 3) for name, value in scores.items()},
    }
