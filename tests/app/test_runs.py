"""Run bookkeeping: one model loaded at a time (reloaded only for another key), bounded run folders."""

from __future__ import annotations

import os

from diffattn.app.runs import PipelineCache, RunFolders


class _Pipe:
    def __init__(self, name: str) -> None:
        self.name = name
        self.progress: dict = {}

    def set_progress_bar_config(self, **config) -> None:
        self.progress = config


def test_pipeline_cache_keeps_one_pipeline_and_enables_its_progress_bar():
    cache, loads = PipelineCache(), []

    def loader(name):
        return lambda: loads.append(name) or _Pipe(name)

    first = cache.get(("a",), loader("a"))
    assert cache.get(("a",), loader("a")) is first and loads == ["a"]
    assert first.progress["disable"] is False and cache.is_loaded(("a",))
    assert cache.get(("b",), loader("b")).name == "b" and loads == ["a", "b"]
    assert not cache.is_loaded(("a",))


def test_run_folders_keep_only_the_most_recent_runs(tmp_path):
    folders = RunFolders(tmp_path, keep=2)
    made = []
    for index in range(4):
        folder = folders.new("generate")
        (folder / "video.mp4").write_bytes(b"x")
        os.utime(folder, (index, index))  # distinct ages regardless of the clock's resolution
        made.append(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in made[-2:])
    assert all(p.name.startswith("generate-") for p in made)
