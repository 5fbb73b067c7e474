"""The app's event handlers: widget values in, checked specs to the runners, videos, figures and files out.

Each `*_handler` factory returns the function one button calls. Their parameter names are the API's parameter
names (`gradio_client` callers use them), method settings arrive as `<method>__<field>` keyword arguments, and
every deliberate diffattn error reaches the user as a `gr.Error` carrying its message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import torch

from diffattn.config import field_parser
from diffattn.errors import ConfigError, DiffAttnError
from diffattn.generation import GenerationSpec

from . import catalog
from diffattn.kernels.bench import KernelBenchSpec, run_kernel_benchmark
from .limits import (
    AppLimits,
    check_kernel_tokens,
    check_model,
    check_sampling,
    check_upload,
)
from .plots import density_heatmap, kernel_plot, timing_plot
from .runs import (
    PipelineCache,
    RunFolders,
    edit_key,
    edit_summary_markdown,
    generation_key,
    run_edit,
    run_generation,
    summary_markdown,
)
from .settings import MethodPanel

__all__ = ["AppContext", "shown_to_user", "generate_handler", "edit_handler", "high_resolution_handler",
           "kernels_handler", "upload_root"]


@dataclass
class AppContext:
    """What every handler shares: the limits, the loaded pipeline, the run folders."""

    limits: AppLimits
    pipes: PipelineCache
    folders: RunFolders


def shown_to_user(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Turn diffattn's errors (and invalid values) into `gr.Error` popups with their message."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except (DiffAttnError, ValueError) as exc:
            raise gr.Error(str(exc)) from exc

    return wrapper


def _optional_number(value: str | float | None, name: str, kind: type = int) -> Any:
    """Empty -> None (the model's default); else the value as `kind`, or a `ConfigError` naming the setting."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, or empty for the model's default; got {value!r}") from None
    if kind is int and not number.is_integer():
        raise ConfigError(f"{name} must be a whole number; got {value!r}")
    return kind(number)


def _sizes(**values: str | float | None) -> dict[str, int | None]:
    return {name: _optional_number(value, name) for name, value in values.items()}


def _run_outputs(ctx: AppContext, spec: GenerationSpec, progress: gr.Progress, kind: str) -> tuple[Any, ...]:
    if not ctx.pipes.is_loaded(generation_key(spec)):
        progress(0, desc=f"loading {spec.model}")
    run = run_generation(spec, ctx.pipes, ctx.folders, kind=kind)
    stats = run.result.stats
    return str(run.video), density_heatmap(stats), timing_plot(stats), summary_markdown(run), str(run.config)


def generate_handler(ctx: AppContext, attention: MethodPanel, noise: MethodPanel) -> Callable[..., Any]:
    """`/generate`: text-to-video (or image) with the chosen attention and noise-initialisation methods."""

    @shown_to_user
    def generate(model: str, prompt: str, negative_prompt: str | None = None, attention_methods: Sequence[str] = (),
                 noise_methods: Sequence[str] = (), frames: str | None = None, height: str | None = None,
                 width: str | None = None, steps: str | None = None, guidance: str | None = None,
                 seed: float = 0, fps: float = 8, progress: gr.Progress = gr.Progress(track_tqdm=True),
                 **method_settings: Any):
        """Generate a video; returns the video, density heatmap, timing plot, summary and reproducing config."""
        sizes = _sizes(frames=frames, height=height, width=width, steps=steps)
        check_sampling(ctx.limits, **sizes)
        if not prompt.strip():
            raise ConfigError("write a prompt first")
        spec = GenerationSpec(
            model=check_model(model, ctx.limits),
            methods=[*attention.configs(attention_methods, method_settings),
                     *noise.configs(noise_methods, method_settings)],
            prompt=prompt, negative_prompt=(negative_prompt or "").strip() or None,
            guidance=_optional_number(guidance, "guidance", float),
            seed=int(seed), fps=int(fps), **sizes,
        )
        return _run_outputs(ctx, spec, progress, "generate")

    return generate


def edit_handler(ctx: AppContext, editors: MethodPanel) -> Callable[..., Any]:
    """`/edit`: zero-shot editing of an uploaded video with FateZero, RealCraft or FRESCO."""

    @shown_to_user
    def edit(video: str | None, editor: str, model: str, source_prompt: str, target_prompt: str, frames: float = 8,
             height: str | None = None, width: str | None = None, seed: float = 0, fps: float = 8,
             progress: gr.Progress = gr.Progress(track_tqdm=True), **editor_settings: Any):
        """Edit the uploaded video; returns the edited video, a summary and the config that reproduces the edit."""
        from diffattn.pipelines.editing import EditSpec

        sizes = _sizes(frames=frames, height=height, width=width)
        check_sampling(ctx.limits, **sizes)
        if not target_prompt.strip():
            raise ConfigError("write a target prompt: it describes the edited video")
        spec = EditSpec(
            editor=editor, model=check_model(model, ctx.limits),
            video=str(check_upload(video, ctx.limits, upload_root())), source_prompt=source_prompt,
            target_prompt=target_prompt, settings=editors.settings(editor, editor_settings),
            seed=int(seed), fps=int(fps), **sizes,
        )
        spec.config()  # invalid settings fail here, before a model is loaded
        if not ctx.pipes.is_loaded(edit_key(spec)):
            progress(0, desc=f"loading {spec.model_spec}")
        run = run_edit(spec, ctx.pipes, ctx.folders)
        return str(run.video), edit_summary_markdown(run, catalog.EDITORS.get(editor, editor)), str(run.config)

    return edit


def high_resolution_handler(ctx: AppContext, freeswim: MethodPanel) -> Callable[..., Any]:
    """`/high_resolution`: FreeSwim's two-stage generation at a size beyond the model's native one."""

    @shown_to_user
    def high_resolution(model: str, prompt: str, height: float, width: float, frames: str | None = None,
                        steps: float | None = None, seed: float = 0, fps: float = 8,
                        progress: gr.Progress = gr.Progress(track_tqdm=True), **freeswim_settings: Any):
        """Generate at height x width with FreeSwim; returns the video, heatmap, timing plot, summary and config."""
        sizes = _sizes(frames=frames, height=height, width=width, steps=steps)
        check_sampling(ctx.limits, **sizes)
        if sizes["height"] is None or sizes["width"] is None or sizes["steps"] is None:
            raise ConfigError("give the target height and width in pixels and the number of steps")
        spec = GenerationSpec(
            model=check_model(model, ctx.limits),
            methods=freeswim.configs(list(freeswim.registry), freeswim_settings),
            prompt=prompt, seed=int(seed), fps=int(fps), **sizes,
        )
        return _run_outputs(ctx, spec, progress, "freeswim")

    return high_resolution


def kernels_handler(ctx: AppContext) -> Callable[..., Any]:
    """`/kernels`: time against density for diffattn's kernel, FlexAttention and dense SDPA on this device."""

    @shown_to_user
    def kernels(tokens: float, heads: float, head_dim: float, block: float, densities: str, repeats: float,
                progress: gr.Progress = gr.Progress(track_tqdm=True)):
        """Run the kernel benchmark; returns the plot and a Markdown table (progress: tqdm over the densities)."""
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        check_kernel_tokens(int(tokens), ctx.limits, device.type == "cuda")
        spec = KernelBenchSpec(tokens=int(tokens), heads=int(heads), head_dim=int(head_dim), block=int(block),
                               densities=field_parser(tuple[float, ...])(densities), repeats=int(repeats))
        result = run_kernel_benchmark(spec, device)
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


def upload_root() -> Path:
    """Gradio's upload folder: uploaded videos must come from here."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder())
