"""Launching the app: one queue whose device jobs run one at a time, upload limits, errors shown to the user."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import gradio as gr

from diffattn.errors import ConfigError

from .limits import AppLimits, bounded
from .ui import build_demo

__all__ = ["launch", "check_port"]


def check_port(host: str, port: int) -> None:
    """`ConfigError` unless `port` is a valid port that is free on `host` (checked by binding it for a moment)."""
    bounded("port", port, 1, 65535)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on host {host!r} ({exc.strerror}); give an address such as 127.0.0.1") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is not "in use"
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"port {port} on {host} is not available ({exc.strerror}); stop what uses it or choose "
                              "another with --port") from None


def launch(model: str | None = None, *, host: str = "127.0.0.1", port: int | None = 7860,
           limits: AppLimits | None = None, work_dir: Path | str | None = None, max_queue: int = 16,
           prevent_thread_lock: bool = False, quiet: bool = False) -> gr.Blocks:
    """Build and serve the app; returns the launched `gr.Blocks` (`.local_url`, `.close()`).

    Blocks until the server stops unless `prevent_thread_lock`. `model` (the Generate tab's starting model)
    defaults to `diffattn.defaults.default_model()`.

    Jobs that use the model device share one concurrency group of size 1 (one job at a time on the GPU) and at
    most `max_queue` requests wait. Uploads are capped by `limits.max_upload_mb`; the only extra folder the server
    may serve files from is the run folder (`work_dir`, a fresh temporary folder by default). The port (`None`:
    the first free one from 7860) and `max_queue` are checked before anything is built: `ConfigError` if unusable.
    """
    if port is not None:
        check_port(host, port)
    bounded("max_queue", max_queue, 1, 10_000)
    limits = limits or AppLimits()
    root = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="diffattn-app-"))
    demo = build_demo(model, limits, root)
    demo.queue(default_concurrency_limit=1, max_size=max_queue)
    demo.launch(
        server_name=host, server_port=port, show_error=True, max_file_size=f"{limits.max_upload_mb:g}mb",
        allowed_paths=[str(root)], prevent_thread_lock=prevent_thread_lock, quiet=quiet,
    )
    return demo
