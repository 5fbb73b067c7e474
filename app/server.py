"""Launching the app: one queue whose device jobs run one at a time, upload limits, errors shown to the user."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from .limits import AppLimits
from .ui import build_demo

__all__ = ["launch"]


def launch(model: str = "tiny:wan", *, host: str = "127.0.0.1", port: int | None = 7860,
           limits: AppLimits | None = None, work_dir: Path | str | None = None, max_queue: int = 16,
           prevent_thread_lock: bool = False, quiet: bool = False) -> gr.Blocks:
    """Build and serve the app; returns the launched `gr.Blocks` (`.local_url`, `.close()`).

    Blocks until the server stops unless `prevent_thread_lock`.

    Jobs that use the model device share one concurrency group of size 1 (one job at a time on the GPU) and at
    most `max_queue` requests wait. Uploads are capped by `limits.max_upload_mb`; the only extra folder the server
    may serve files from is the run folder (`work_dir`, a fresh temporary folder by default).
    """
    limits = limits or AppLimits()
    root = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="diffattn-app-"))
    demo = build_demo(model, limits, root)
    demo.queue(default_concurrency_limit=1, max_size=max_queue)
    demo.launch(
        server_name=host, server_port=port, show_error=True, max_file_size=f"{limits.max_upload_mb:g}mb",
        allowed_paths=[str(root)], prevent_thread_lock=prevent_thread_lock, quiet=quiet,
    )
    return demo
