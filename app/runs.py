"""Running the app's jobs and keeping their files: one folder per run with the video, its config and stats.

Generation (and FreeSwim, whose config's runner `generate()` calls) goes through `diffattn.generation.generate`,
the same path as `diffattn generate`, and editing through `edit_video`, the same path as `diffattn edit`, so
the config file saved with each run reproduces it from the command line. The most recently used pipeline stays
loaded (one at a time: a GPU holds one model), with its progress
bar enabled so `gr.Progress(track_tqdm=True)` can follow the denoising steps. A run given a `Job` watches the
pipeline's models, so the job's deadline and cancel stop it between model calls.
"""

from __future__ import annotations

import gc
import json
import shutil
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffattn.generation import GenerationResult, GenerationSpec, generate, save_spec
from diffattn.loading import load_pipeline, parse_dtype, pick_device
from diffattn.media.video import write_video

from .jobs import Job

__all__ = ["RunFolders", "PipelineCache", "generation_key", "GenerationRun", "run_generation", "summary_markdown",
           "edit_key", "EditRun", "run_edit", "edit_summary_markdown"]


class RunFolders:
    """A fresh folder per run under `root`; only the `keep` most recent runs stay on disk."""

    def __init__(self, root: Path, keep: int = 20) -> None:
        self.root = root
        self.keep = keep
        root.mkdir(parents=True, exist_ok=True)

    def new(self, kind: str) -> Path:
        old = sorted((p for p in self.root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for stale in old[: max(0, len(old) - self.keep + 1)]:
            shutil.rmtree(stale, ignore_errors=True)
        folder = self.root / f"{kind}-{uuid.uuid4().hex[:10]}"
        folder.mkdir()
        return folder


class PipelineCache:
    """Keeps the last loaded pipeline; asking for another one frees it first (one model on the device at a time)."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._pipe: Any = None

    def is_loaded(self, key: tuple[Any, ...]) -> bool:
        return self._key == key

    def get(self, key: tuple[Any, ...], load: Callable[[], Any]) -> Any:
        """The pipeline cached under `key`, or the one `load()` returns (then cached), progress bar enabled."""
        if key != self._key:
            self._key, self._pipe = None, None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self._pipe = load()
            self._key = key
        self._pipe.set_progress_bar_config(disable=False, desc="denoise", leave=False)
        return self._pipe


def generation_key(spec: GenerationSpec) -> tuple[Any, ...]:
    return "generate", spec.model, spec.device, spec.dtype, spec.cpu_offload


def _load_for(spec: GenerationSpec) -> Any:
    device = pick_device(spec.device)
    return load_pipeline(spec.model, device=device, dtype=parse_dtype(spec.dtype, device), cpu_offload=spec.cpu_offload)


@dataclass(frozen=True)
class GenerationRun:
    """A finished generation: its files and the result they were written from."""

    video: Path
    config: Path
    stats: Path
    result: GenerationResult


def _watched(job: Job | None, pipe: Any) -> Any:
    """`job.watch(pipe)` (deadline and cancel checked before every model call), or nothing without a job."""
    return job.watch(pipe) if job is not None else nullcontext()


def run_generation(spec: GenerationSpec, pipes: PipelineCache, folders: RunFolders, kind: str = "generate",
                   job: Job | None = None) -> GenerationRun:
    """Generate with `spec` and write `video.mp4`, `config.json` (for `diffattn generate --config`) and `stats.json`."""
    pipe = pipes.get(generation_key(spec), lambda: _load_for(spec))
    with _watched(job, pipe):
        result = generate(spec, pipe=pipe)
    folder = folders.new(kind)
    video = write_video(folder / "video.mp4", result.frames, fps=spec.fps)
    config = save_spec(spec, folder / "config.json")
    stats = folder / "stats.json"
    stats.write_text(json.dumps({"summary": result.stats_summary, "layers": result.stats}, indent=2))
    return GenerationRun(video=video, config=config, stats=stats, result=result)


@dataclass(frozen=True)
class EditRun:
    """A finished edit: the edited video, the config that reproduces it, the result and its quality metrics."""

    video: Path
    config: Path
    result: Any
    metrics: dict[str, float]


def edit_key(spec: Any) -> tuple[Any, ...]:
    return "edit", spec.editor, spec.model_spec, spec.controlnet, spec.device, spec.dtype


def run_edit(spec: Any, pipes: PipelineCache, folders: RunFolders, job: Job | None = None) -> EditRun:
    """Edit with `spec` (a `diffattn.pipelines.edit_job.EditSpec`) through `edit_video`, the run `diffattn edit` makes.

    Writes `video.mp4` and `edit.json`; the config names the input video by its file name, so
    `diffattn edit <editor> --config edit.json` reproduces the edit with the video placed next to the config.
    """
    from diffattn.pipelines.edit_job import build_edit_pipeline, edit_metrics, edit_video

    pipe = pipes.get(edit_key(spec), lambda: build_edit_pipeline(spec))
    with _watched(job, pipe):
        result = edit_video(spec, pipe=pipe)
    folder = folders.new("edit")
    video = write_video(folder / "video.mp4", result.frames, fps=spec.fps)
    config = spec.to_dict()
    config["video"] = Path(spec.video).name if spec.video else None
    (folder / "edit.json").write_text(json.dumps(config, indent=2))
    return EditRun(video=video, config=folder / "edit.json", result=result, metrics=edit_metrics(result))


def edit_summary_markdown(run: EditRun, editor_name: str) -> str:
    """What was edited, how long it took, the quality metrics, and the command that reproduces it."""
    result, spec = run.result, run.result.spec
    frames, _, height, width = result.frames.shape
    lines = [f"**{frames} frame{'s' * (frames != 1)} at {width}×{height}** edited with {editor_name} in "
             f"{result.seconds:.1f} s · model `{spec.model_spec}`"]
    names = {"warp_error_source": "warp error of the source", "warp_error_edit": "warp error of the edit",
             "psnr_outside_mask": "PSNR outside the edit mask (dB)"}
    if run.metrics:
        lines.append(" · ".join(f"{names.get(key, key)}: {value:g}" for key, value in run.metrics.items()))
    lines.append(f"Reproduce from the command line (with the video next to the config): "
                 f"`diffattn edit {spec.editor} --config {run.config.name} --out edited.mp4`")
    return "\n\n".join(lines)


def summary_markdown(run: GenerationRun) -> str:
    """What was produced, what attention did, and the command that reproduces it."""
    result = run.result
    frames, _, height, width = result.frames.shape
    methods = ", ".join(m.name for m in result.spec.methods) or "none (stock pipeline)"
    lines = [f"**{frames} frame{'s' * (frames != 1)} at {width}×{height}** in {result.seconds:.1f} s · "
             f"model `{result.spec.model}` · methods: {methods}"]
    summary = result.stats_summary
    if summary:
        density = "n/a" if summary.get("mean_density") is None else f"{summary['mean_density']:.3f}"
        lines.append(f"Attention: {summary['calls']} calls over {summary['layers']} layers × {summary['steps']} steps, "
                     f"mean density {density}, attention time {summary['attention_ms']:.1f} ms")
    lines.append(f"Reproduce from the command line: `diffattn generate --config {run.config.name} --out video.mp4`")
    return "\n\n".join(lines)
