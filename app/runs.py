"""Running the app's jobs and keeping their files: one folder per run with the video, its config and stats.

Generation (and FreeSwim, whose config's runner `generate()` calls) goes through `diffattn.generation.generate`,
the same path as `diffattn generate`, so the config file saved with each run reproduces it from the command
line. The most recently used pipeline stays loaded (one at a time: a GPU holds one model), with its progress
bar enabled so `gr.Progress(track_tqdm=True)` can follow the denoising steps.
"""

from __future__ import annotations

import gc
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffattn.generation import GenerationResult, GenerationSpec, generate, save_spec
from diffattn.loading import load_pipeline, parse_dtype, pick_device
from diffattn.video import write_video

__all__ = ["RunFolders", "PipelineCache", "GenerationRun", "run_generation", "summary_markdown"]


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
    """Keeps the last loaded pipeline; asking for another model frees it first."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._pipe: Any = None

    def is_loaded(self, spec: GenerationSpec) -> bool:
        return self._key == self._key_of(spec)

    def get(self, spec: GenerationSpec) -> Any:
        key = self._key_of(spec)
        if key != self._key:
            self._key, self._pipe = None, None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            device = pick_device(spec.device)
            self._pipe = load_pipeline(spec.model, device=device, dtype=parse_dtype(spec.dtype, device),
                                       cpu_offload=spec.cpu_offload)
            self._key = key
        self._pipe.set_progress_bar_config(disable=False)
        return self._pipe

    @staticmethod
    def _key_of(spec: GenerationSpec) -> tuple[Any, ...]:
        return spec.model, spec.device, spec.dtype, spec.cpu_offload


@dataclass(frozen=True)
class GenerationRun:
    """A finished generation: its files and the result they were written from."""

    video: Path
    config: Path
    stats: Path
    result: GenerationResult


def run_generation(spec: GenerationSpec, pipes: PipelineCache, folders: RunFolders, kind: str = "generate") -> GenerationRun:
    """Generate with `spec` and write `video.mp4`, `config.json` (for `diffattn generate --config`) and `stats.json`."""
    result = generate(spec, pipe=pipes.get(spec))
    folder = folders.new(kind)
    video = write_video(folder / "video.mp4", result.frames, fps=spec.fps)
    config = save_spec(spec, folder / "config.json")
    stats = folder / "stats.json"
    stats.write_text(json.dumps({"summary": result.stats_summary, "layers": result.stats}, indent=2))
    return GenerationRun(video=video, config=config, stats=stats, result=result)


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
