"""One app server for the app tests: `diffattn.app.launch` on 127.0.0.1 with the tiny CPU models and tight limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffattn.testing import sample_clip
from diffattn.video import write_video


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
