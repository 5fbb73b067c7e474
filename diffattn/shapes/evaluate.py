"""How often a shapes-world model draws what its caption says, judged by :func:`~diffattn.shapes.score.score_video`.

``python -m diffattn.shapes.evaluate DIR --n 50`` loads a trained pipeline folder and prints its accuracy on
captions of held-out scenes (:func:`~diffattn.shapes.world.split_of`), one sample per caption.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffattn.shapes.score import VideoScore, score_video
from diffattn.shapes.world import sample_scene

__all__ = ["Sample", "Evaluation", "heldout_captions", "generate", "accuracy", "save_grid", "main"]


@dataclass(frozen=True)
class Sample:
    """One generated sample: its caption, seed, score and the frames ``[F, 3, H, W]`` in [0, 1] (one frame for images)."""

    caption: str
    seed: int
    score: VideoScore
    frames: torch.Tensor


@dataclass(frozen=True)
class Evaluation:
    """``accuracy``: the fraction of samples scored correct; ``samples``: every sample with its score."""

    accuracy: float
    samples: tuple[Sample, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: accuracy, colour/shape/background rates and each caption's verdict."""
        scores = [s.score for s in self.samples]
        return {
            "accuracy": self.accuracy,
            "colour_ok": float(np.mean([s.colour_ok for s in scores])) if scores else None,
            "shape_ok": float(np.mean([s.shape_ok for s in scores])) if scores else None,
            "background_ok": float(np.mean([bool(s.background_ok) for s in scores])) if scores else None,
            "samples": [{"caption": s.caption, "seed": s.seed, "correct": s.score.correct} for s in self.samples],
        }


def heldout_captions(n: int, seed: int = 0, *, max_objects: int = 1, image: bool = False) -> list[str]:
    """Captions of ``n`` held-out scenes (``image``: without motions, as the image model is trained)."""
    scenes = [sample_scene(np.random.default_rng([seed, index]), max_objects=max_objects, split="heldout") for index in range(n)]
    return [scene.image_caption if image else scene.caption for scene in scenes]


def _is_video(pipe: Any) -> bool:
    return hasattr(pipe, "transformer")


@torch.no_grad()
def generate(pipe: Any, captions: Sequence[str], seeds: Sequence[int], *, batch: int = 16, **sample_kwargs: Any) -> list[torch.Tensor]:
    """One sample per (caption, seed) pair, as frames ``[F, 3, H, W]`` in [0, 1] on the CPU, ``batch`` prompts per call;
    each sample's initial noise comes from its own generator seeded with its seed, so a sample does not depend on the
    batch it is in."""
    if len(captions) != len(seeds):
        raise ValueError(f"one seed per caption: got {len(captions)} captions and {len(seeds)} seeds")
    device = pipe._execution_device
    outputs: list[torch.Tensor] = []
    for begin in range(0, len(captions), batch):
        prompts = list(captions[begin : begin + batch])
        generators = [torch.Generator(device).manual_seed(int(seed)) for seed in seeds[begin : begin + batch]]
        result = pipe(prompt=prompts, generator=generators, **{"output_type": "pt", **sample_kwargs})
        frames = result.frames if _is_video(pipe) else result.images[:, None]
        outputs.extend(frames.float().cpu().clamp(0, 1))
    return outputs


def accuracy(pipe: Any, captions: Sequence[str], seeds: Sequence[int], **sample_kwargs: Any) -> Evaluation:
    """Sample ``pipe`` once per (caption, seed) and score each sample against its caption (see :func:`generate`)."""
    frames = generate(pipe, captions, seeds, **sample_kwargs)
    samples = tuple(Sample(caption, int(seed), score_video(video, caption), video)
                    for caption, seed, video in zip(captions, seeds, frames))
    return Evaluation(float(np.mean([s.score.correct for s in samples])) if samples else 0.0, samples)


def save_grid(samples: Sequence[Sample], path: str | Path) -> None:
    """A PNG with one row per sample (its frames side by side), to look at what a model draws."""
    from PIL import Image

    rows = [torch.cat(list(sample.frames), dim=-1) for sample in samples]
    width = max(row.shape[-1] for row in rows)
    rows = [torch.nn.functional.pad(row, (0, width - row.shape[-1])) for row in rows]
    grid = torch.cat(rows, dim=-2).permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()
    Image.fromarray(grid).save(path)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: accuracy of a trained pipeline folder on held-out captions."""
    from diffusers import DiffusionPipeline

    from diffattn.loading import pick_device
    from diffattn.shapes.models import sample_kwargs

    parser = argparse.ArgumentParser(prog="python -m diffattn.shapes.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a pipeline folder written by diffattn.shapes.train")
    parser.add_argument("--n", type=int, default=50, help="number of held-out captions (one sample each)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the captions and of the samples' noise")
    parser.add_argument("--max-objects", type=int, default=1, help="objects per held-out scene (1..3)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print the whole evaluation as JSON")
    parser.add_argument("--grid", default=None, help="also write the samples as a PNG grid to this path")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    pipe = DiffusionPipeline.from_pretrained(args.folder, dtype=torch.float32).to(device)  # as the training run evaluates
    pipe.set_progress_bar_config(disable=True)
    name = "shapes-wan" if _is_video(pipe) else "shapes-sd"
    overrides = {k: v for k, v in (("num_inference_steps", args.steps), ("guidance_scale", args.guidance)) if v is not None}
    captions = heldout_captions(args.n, args.seed, max_objects=args.max_objects, image=name == "shapes-sd")
    result = accuracy(pipe, captions, [args.seed + i for i in range(args.n)], **sample_kwargs(name, **overrides))
    if args.grid:
        save_grid(result.samples, args.grid)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        wrong = [s.caption for s in result.samples if not s.score.correct]
        print(f"{name}: {result.accuracy:.1%} of {args.n} held-out captions drawn correctly (shape and colour)")
        for caption in wrong[:10]:
            print(f"  wrong: {caption}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
