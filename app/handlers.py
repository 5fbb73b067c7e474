"""The app's event handlers: widget values in, checked specs to the runners, videos, figures and files out.

Each `*_handler` factory returns the function one button calls. Their parameter names are the API's parameter
names (`gradio_client` callers use them), method settings arrive as `<method>__<field>` keyword arguments, and
every deliberate diffattn error reaches the user as a `gr.Error` carrying its message. Every input is checked
against the app's limits before any work; the work then runs as a device job (`app.jobs`): one at a time, within
`max_job_seconds`, stoppable.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import torch

from diffattn.errors import ConfigError, DiffAttnError
from diffattn.generation import GenerationSpec
from diffattn.kernels.bench import KernelBenchSpec, run_kernel_benchmark

from . import catalog
from .jobs import Job, device_job
from .limits import (
    AppLimits,
    check_kernel_request,
    check_model,
    check_sampling,
    check_upload,
    upload_root,
)
from .plots import density_heatmap, kernel_plot, timing_plot
from .runs import (
    GenerationRun,
    PipelineCache,
    RunFolders,
    edit_key,
    edit_summary_markdown,
    generation_key,
    run_edit,
    run_generation,
    summary_markdown,
)
from .settings import MethodPanel, optional_uploads

__all__ = ["AppContext", "shown_to_user", "generation_outputs", "generate_handler", "edit_handler", "high_resolution_handler",
           "kernels_handler"]


@dataclass
class AppContext:
    """What every handler shares: the limits, the loaded pipeline, the run folders, the device (one job at a time)."""

    limits: AppLimits
    pipes: PipelineCache
    folders: RunFolders
    device: threading.Lock = field(default_factory=threading.Lock)

    def job(self) -> Callable[[Callable[..., Any]], Any]:
        """Decorator running a handler as a device job within this app's time limit (see `app.jobs`)."""
        return device_job(lambda: self.limits.max_job_seconds, self.device)


def shown_to_user(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Turn diffattn's errors (and invalid values) into `gr.Error` popups with their message."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except (DiffAttnError, ValueError) as exc:
            raise gr.Error(str(exc)) from exc

    return wrapper


def generation_outputs(run: GenerationRun, caption: str = "") -> tuple[Any, ...]:
    """What a generation tab shows of a finished run: video, density heatmap, timing plot, summary (after
    `caption`, if any) and config file."""
    stats = run.result.stats
    summary = "\n\n".join(text for text in (caption, summary_markdown(run)) if text)
    return str(run.video), density_heatmap(stats), timing_plot(stats), summary, str(run.config)


def _run_outputs(ctx: AppContext, job: Job, spec: GenerationSpec, progress: gr.Progress, kind: str) -> tuple[Any, ...]:
    if not ctx.pipes.is_loaded(generation_key(spec)):
        progress(0, desc=f"loading {spec.model}")
    return generation_outputs(run_generation(spec, ctx.pipes, ctx.folders, kind=kind, job=job))


def generate_handler(ctx: AppContext, attention: MethodPanel, noise: MethodPanel) -> Callable[..., Any]:
    """`/generate`: text-to-video (or image) with the chosen attention and noise-initialisation methods."""

    @ctx.job()
    @shown_to_user
    def generate(job: Job, model: str, prompt: str, negative_prompt: str | None = None,
                 attention_methods: Sequence[str] = (), noise_methods: Sequence[str] = (), frames: str | None = None,
                 height: str | None = None, width: str | None = None, steps: str | None = None,
                 guidance: str | None = None, seed: float = 0, fps: float = 8,
                 progress: gr.Progress = gr.Progress(track_tqdm=True), **method_settings: Any):
        """Generate a video; returns the video, density heatmap, timing plot, summary and reproducing config."""
        sampling = check_sampling(ctx.limits, required=("seed", "fps"), frames=frames, height=height, width=width,
                                  steps=steps, guidance=guidance, seed=seed, fps=fps)
        if not prompt.strip():
            raise ConfigError("write a prompt first")
        spec = GenerationSpec(
            model=check_model(model, ctx.limits),
            methods=[*attention.configs(attention_methods, method_settings),
                     *noise.configs(noise_methods, method_settings)],
            prompt=prompt, negative_prompt=(negative_prompt or "").strip() or None, **sampling,
        )
        return _run_outputs(ctx, job, spec, progress, "generate")

    return optional_uploads(generate, attention, noise)


def edit_handler(ctx: AppContext, editors: MethodPanel) -> Callable[..., Any]:
    """`/edit`: zero-shot editing of an uploaded video with FateZero, RealCraft or FRESCO."""

    @ctx.job()
    @shown_to_user
    def edit(job: Job, video: str | None, editor: str, model: str, source_prompt: str, target_prompt: str,
             frames: float = 8, height: str | None = None, width: str | None = None, seed: float = 0, fps: float = 8,
             progress: gr.Progress = gr.Progress(track_tqdm=True), **editor_settings: Any):
        """Edit the uploaded video; returns the edited video, a summary and the config that reproduces the edit."""
        from diffattn.pipelines.edit_job import EditSpec

        sampling = check_sampling(ctx.limits, required=("frames", "seed", "fps"), frames=frames, height=height,
                                  width=width, seed=seed, fps=fps)
        if not target_prompt.strip():
            raise ConfigError("write a target prompt: it describes the edited video")
        settings = editors.settings(editor, editor_settings)  # before the upload check, which decodes the video
        spec = EditSpec(
            editor=editor, model=check_model(model, ctx.limits),
            video=str(check_upload(video, ctx.limits, upload_root())), source_prompt=source_prompt,
            target_prompt=target_prompt, settings=settings, max_frames=ctx.limits.max_frames, **sampling,
        )
        spec.config()  # invalid settings fail here, before a model is loaded
        if not ctx.pipes.is_loaded(edit_key(spec)):
            progress(0, desc=f"loading {spec.model_spec}")
        run = run_edit(spec, ctx.pipes, ctx.folders, job=job)
        return str(run.video), edit_summary_markdown(run, catalog.EDITORS.get(editor, editor)), str(run.config)

    return optional_uploads(edit, editors)


def high_resolution_handler(ctx: AppContext, freeswim: MethodPanel) -> Callable[..., Any]:
    """`/high_resolution`: FreeSwim's two-stage generation at a size beyond the model's native one."""

    @ctx.job()
    @shown_to_user
    def high_resolution(job: Job, model: str, prompt: str, height: float, width: float, frames: str | None = None,
                        steps: float | None = None, seed: float = 0, fps: float = 8,
                        progress: gr.Progress = gr.Progress(track_tqdm=True), **freeswim_settings: Any):
        """Generate at height x width with FreeSwim; returns the video, heatmap, timing plot, summary and config."""
        sampling = check_sampling(ctx.limits, required=("height", "width", "steps", "seed", "fps"), frames=frames,
                                  height=height, width=width, steps=steps, seed=seed, fps=fps)
        spec = GenerationSpec(
            model=check_model(model, ctx.limits),
            methods=freeswim.configs(list(freeswim.registry), freeswim_settings),
            prompt=prompt, **sampling,
        )
        return _run_outputs(ctx, job, spec, progress, "freeswim")

    return optional_uploads(high_resolution, freeswim)


def kernels_handler(ctx: AppContext) -> Callable[..., Any]:
    """`/kernels`: time against density for diffattn's kernel, FlexAttention and dense SDPA on this device."""

    @ctx.job()
    @shown_to_user
    def kernels(job: Job, tokens: float, heads: float, head_dim: float, block: float, densities: str, repeats: float,
                progress: gr.Progress = gr.Progress(track_tqdm=True)):
        """Run the kernel benchmark; returns the plot and a Markdown table (progress: tqdm over the densities)."""
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        spec = KernelBenchSpec(**check_kernel_request(ctx.limits, device.type == "cuda", tokens=tokens, heads=heads,
                                                      head_dim=head_dim, block=block, densities=densities,
                                                      repeats=repeats))
        result = run_kernel_benchmark(spec, device, on_call=job.checkpoint)
        title = (f"{result.device}, {result.dtype}\n{spec.heads} heads × {spec.tokens} tokens × {spec.head_dim} dims, "
                 f"blocks of {spec.block}")
        notes = [f"Measured on **{result.device}** ({result.dtype}); median milliseconds per attention call."]
        notes += [f"{name} did not run here: {reason}" for name, reason in result.skipped.items()]
        return kernel_plot(result.rows, title), "\n\n".join([*notes, _kernel_table(result.rows)])

    return kernels


def _kernel_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table: one row per density, one column per implementation (median ms)."""
    names = list(dict.fromkeys(str(row["implementation"]) for row in rows))
    cells = {(row["density"], row["implementation"]): row["ms"] for row in rows}
    lines = ["| density | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for density in sorted({row["density"] for row in rows}):
        times = " | ".join(f"{cells[density, name]:.2f}" if (density, name) in cells else "–" for name in names)
        lines.append(f"| {density:.3f} | {times} |")
    return "\n".join(lines)
