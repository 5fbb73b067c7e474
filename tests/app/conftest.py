"""One app server for the app tests: `diffattn.app.launch` on 127.0.0.1 with the tiny CPU models and tight limits."""

from __future__ import annotations

import builtins
import io
import os
from pathlib import Path

import pytest

from diffattn.media.video import write_video
from diffattn.testing import sample_clip


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """`(url, limits)` of a running app (uploads up to 1 MB and 5 s); closed after the session."""
    from diffattn.app import AppLimits, launch

    limits = AppLimits(max_upload_mb=1.0, max_video_seconds=5.0)
    demo = launch("tiny:wan", host="127.0.0.1", port=None, limits=limits, work_dir=tmp_path_factory.mktemp("app"),
                  max_queue=8, prevent_thread_lock=True, quiet=True)
    yield demo.local_url, limits
    demo.close()


@pytest.fixture(scope="session")
def clip_file(tmp_path_factory) -> Path:
    """The built-in sample clip (8 frames, 64x64, 1 s) as an MP4 to upload."""
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", sample_clip(8, 64, 64), fps=8)


class Touches:
    """Every open or stat of a file path while the `touches` fixture is active."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def clear(self) -> None:
        """Forget what was touched so far (e.g. writing the test's own files)."""
        self.calls.clear()

    def of(self, path: str | os.PathLike) -> list[str]:
        """How `path` was touched ("open", "stat"), in order: [] proves it never was."""
        return [kind for kind, touched in self.calls if os.path.realpath(touched) == os.path.realpath(path)]


@pytest.fixture
def touches(monkeypatch) -> Touches:
    """Records opens (`open`, `io.open`, so `Path.open` / `read_text`) and stats (`os.stat`, so `Path.is_file`)."""
    record = Touches()
    real_open, real_stat = io.open, os.stat

    def spy_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            record.calls.append(("open", os.fspath(file)))
        return real_open(file, *args, **kwargs)

    def spy_stat(path, *args, **kwargs):
        if isinstance(path, (str, os.PathLike)):
            record.calls.append(("stat", os.fspath(path)))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(io, "open", spy_open)
    monkeypatch.setattr(os, "stat", spy_stat)
    return record
