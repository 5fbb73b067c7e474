"""Edit replays on the CPU are bitwise repeatable: the same tiny edit, run again in the same process, in a worker
thread (as the app runs its jobs) or with a freshly built pipeline, gives the same bits."""

from __future__ import annotations

import threading

import torch

from diffattn.pipelines.edit_job import EditSpec, build_edit_pipeline, edit_video

# blend words and latent blending: thresholded masks turn the smallest numeric difference into a visible one
SPEC = EditSpec(
    editor="fatezero", steps=4, frames=4, height=64, width=64,
    settings={"blend_words": ("red", "sun"), "target_blend_words": ("blue", "moon"), "blend_latents": True},
)


def _edit(pipe) -> tuple[torch.Tensor, torch.Tensor]:
    result = edit_video(SPEC, pipe)
    return result.frames, result.masks


def test_the_same_tiny_edit_three_times_is_bitwise_equal():
    pipe = build_edit_pipeline(SPEC)
    pipe.set_progress_bar_config(disable=True)
    first = _edit(pipe)
    in_thread: list = []
    worker = threading.Thread(target=lambda: in_thread.append(_edit(pipe)))
    worker.start()
    worker.join()
    fresh = build_edit_pipeline(SPEC)
    fresh.set_progress_bar_config(disable=True)
    for again in (_edit(pipe), in_thread[0], _edit(fresh)):
        assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
