"""Demo entries of zero-shot video editing: each editor edits the sample clip on the tiny SD models.

FateZero and RealCraft also run a reconstruction (target prompt = source prompt) and report its latent error next
to that of plain DDIM inversion + reconstruction without attention fusion (both against the VAE encoding of the
clip, so the random VAE's own error is left out); fusing with the inversion's attention must reconstruct about as
well (within 5 %). Every entry reports the warp error (0-255, under the source clip's optical flow) of the source
and of the edit. FRESCO reports how much its feature optimisation lowered its loss (it must).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from . import demo_entry, single_thread

FPS = 8
STEPS = 6
FRAMES = 8
RECONSTRUCTION_TOLERANCE = 0.05


def _reconstruction(spec: Any, pipe: Any) -> dict[str, Any]:
    """Latent error of target == source, fused and without fusion, against the clip's VAE latents."""
    from ...configs import FateZeroConfig
    from ...pipelines.edit_job import source_frames
    from ...pipelines.fatezero import FateZeroPipeline
    from ...pipelines.inversion import encode_video

    frames = source_frames(spec)
    prompt = spec.source_prompt
    reference = encode_video(pipe.vae, frames)
    fused = pipe(frames, prompt, prompt, spec.config(), output_type="latent").frames
    plain_config = FateZeroConfig(num_inference_steps=STEPS, cross_replace_steps=0.0, self_replace_steps=0.0, kv_frames=("self",))
    plain_pipe = FateZeroPipeline.from_pipe(pipe)
    plain_pipe.set_progress_bar_config(disable=True)
    plain = plain_pipe(frames, prompt, prompt, plain_config, output_type="latent").frames
    fused_error = float((fused - reference.to(fused.dtype)).abs().mean())
    plain_error = float((plain - reference.to(plain.dtype)).abs().mean())
    return {
        "reconstruction_error": round(fused_error, 5),
        "plain_reconstruction_error": round(plain_error, 5),
        "reconstruction_ok": fused_error <= plain_error * (1 + RECONSTRUCTION_TOLERANCE),
    }


def _run(editor: str, out_dir: Path) -> dict[str, Any]:
    with single_thread():
        return _edit(editor, out_dir)


def _edit(editor: str, out_dir: Path) -> dict[str, Any]:
    from ...media.video import write_video
    from ...pipelines.edit_job import EditSpec, build_edit_pipeline, edit_metrics, edit_video

    spec = EditSpec(editor=editor, frames=FRAMES, steps=STEPS, seed=0)
    pipe = build_edit_pipeline(spec)
    pipe.set_progress_bar_config(disable=True)
    result = edit_video(spec, pipe)
    path = write_video(out_dir / f"edit_{editor}.mp4", result.frames, fps=FPS)
    report: dict[str, Any] = {"video": path.name, "frames": result.frames.shape[0], "seconds_edit": round(result.seconds, 2)}
    report.update(edit_metrics(result))
    checks = [math.isfinite(float(result.frames.sum()))]
    if editor == "fresco":
        ratio = result.info["optimization_loss_ratio"]
        report["optimization_loss_ratio"] = None if ratio is None else round(ratio, 4)
        checks.append(ratio is not None and ratio < 1)
    else:
        report["store_mode"] = result.info["store_mode"]
        report.update(_reconstruction(spec, pipe))
        checks.append(report["reconstruction_ok"])
    report["ok"] = all(checks)
    return report


@demo_entry("edit-fatezero", "FateZero edits the sample clip (tiny SD); reconstruction vs plain inversion, warp error",
            ("fatezero",))
def fatezero(out_dir: Path) -> dict[str, Any]:
    return _run("fatezero", out_dir)


@demo_entry("edit-realcraft", "RealCraft-style object edit of the sample clip (tiny SD); reconstruction, warp error",
            ("realcraft",))
def realcraft(out_dir: Path) -> dict[str, Any]:
    return _run("realcraft", out_dir)


@demo_entry("edit-fresco", "FRESCO translates the sample clip (tiny SD + ControlNet); optimisation loss, warp error",
            ("fresco",))
def fresco(out_dir: Path) -> dict[str, Any]:
    return _run("fresco", out_dir)
