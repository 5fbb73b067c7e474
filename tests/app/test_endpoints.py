"""The app driven through `gradio_client`, as a remote caller would: every endpoint, progress, limits, errors.

The server (conftest) runs the real `launch()` on 127.0.0.1 with the tiny CPU models; runs use 2 steps.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import Status

from diffattn.app.catalog import EDITOR_TINY_MODELS, generation_methods
from diffattn.configs import ObserveConfig
from diffattn.generation import GenerationSpec, generate
from diffattn.media.video import read_video, write_video
from diffattn.testing import sample_clip

EDIT_PROMPTS = {"source_prompt": "a red sun moving over colorful waves",
                "target_prompt": "a blue moon moving over colorful waves"}
KERNEL_REQUEST = {"heads": 1, "head_dim": 32, "block": 32, "repeats": 1}


@pytest.fixture(scope="module")
def client(app_server, tmp_path_factory) -> Client:
    url, _ = app_server
    return Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")), analytics_enabled=False)


def _run(client: Client, api_name: str, **kwargs: Any) -> tuple[Any, list[Any]]:
    """Submit a job, poll its status until done; (result, every progress unit seen)."""
    job = client.submit(api_name=api_name, **kwargs)
    progress: list[Any] = []
    while not job.done():
        progress.extend(job.status().progress_data or [])
        time.sleep(0.005)
    return job.result(), progress


def test_api_offers_every_tab_and_every_registered_method_setting(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/generate", "/edit", "/high_resolution", "/kernels"} <= set(endpoints)
    assert not [name for name in endpoints if name.startswith("/show_")], "page-only events must stay private"
    parameters = {p["parameter_name"] for p in endpoints["/generate"]["parameters"]}
    attention, noise = generation_methods()
    expected = {f"{name}__{field}".replace("-", "_")
                for name, cls in {**attention, **noise}.items() for field in cls.field_types()}
    assert expected and expected <= parameters


def test_generate_reports_progress_and_returns_a_replayable_run(client, tmp_path):
    (video, density, timing, summary, config), progress = _run(
        client, "/generate", prompt="a fox", attention_methods=["observe"], observe__layers="0", steps="24")
    assert any(p.unit == "steps" and p.length == 24 and p.desc == "denoise" for p in progress), progress
    assert density["type"] == timing["type"] == "matplotlib"
    frames = read_video(video)
    assert frames.shape[0] > 1 and frames.shape[1] == 3

    spec = GenerationSpec.from_dict(json.loads(Path(config).read_text()))
    assert spec.model == "tiny:wan" and spec.steps == 24 and spec.prompt == "a fox"
    assert spec.methods == [ObserveConfig(layers=(0,))]
    replay = generate(spec)  # what `diffattn generate --config FILE` runs
    summary_stats = replay.stats_summary
    assert f"{summary_stats['calls']} calls over {summary_stats['layers']} layers × 24 steps" in summary
    replayed = read_video(write_video(tmp_path / "replay.mp4", replay.frames, fps=spec.fps))
    assert replayed.shape == frames.shape
    assert (replayed - frames).abs().mean() < 0.01


def test_high_resolution_runs_freeswim_at_the_target_size(client):
    (video, *_, config), progress = _run(client, "/high_resolution", prompt="a face", height=64, width=96, steps=20)
    # stage 1 runs the 20 steps at the native size, stage 2 the last 70% (14) at the target size
    assert any(p.unit == "steps" and (p.desc, p.length) in (("stage 1 (base size)", 20), ("stage 2 (target size)", 14))
               for p in progress), progress
    assert read_video(video).shape[-2:] == (64, 96)
    spec = json.loads(Path(config).read_text())
    assert [m["method"] for m in spec["methods"]] == ["freeswim"] and (spec["height"], spec["width"]) == (64, 96)


@pytest.mark.parametrize("editor", ["fatezero", "realcraft", "fresco"])
def test_edit_returns_the_edited_video_and_its_config(client, clip_file, editor):
    request = {"video": handle_file(str(clip_file)), "editor": editor, "model": EDITOR_TINY_MODELS[editor],
               "frames": 4, f"{editor}__num_inference_steps": 8, **EDIT_PROMPTS}
    (video, summary, config), progress = _run(client, "/edit", **request)
    assert any(p.unit == "steps" and p.length in (6, 8) for p in progress), progress  # FRESCO runs 75% of them
    assert read_video(video).shape == (4, 3, 64, 64)
    saved = json.loads(Path(config).read_text())
    assert saved["editor"] == editor and saved["video"] == clip_file.name
    assert saved[editor]["num_inference_steps"] == 8
    assert f"diffattn edit {editor} --config" in summary


def test_kernels_time_our_kernel_flex_and_dense_on_this_device(client):
    figure, table = client.predict(api_name="/kernels", tokens=128, densities="0.25, 1", **KERNEL_REQUEST)
    assert figure["type"] == "matplotlib"
    on_gpu = torch.cuda.is_available()
    assert ("Measured on **NVIDIA" if on_gpu else "Measured on **CPU") in table
    header, _, *rows = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("|")]
    ours = f"diffattn kernel ({'triton' if on_gpu else 'reference'})"
    assert [cell.strip() for cell in header] == ["density", "dense SDPA", ours, "FlexAttention"]
    assert [float(row[0]) for row in rows] == [0.25, 1.0]  # 1 of 4 kv blocks, all of them
    assert all(float(ms) > 0 for row in rows for ms in row[1:])


def test_device_jobs_run_one_at_a_time(client):
    """Different endpoints share one concurrency group: a kernel benchmark waits for a running generation."""
    jobs = [client.submit(api_name="/generate", prompt="a fox", steps="4", attention_methods=[]),
            client.submit(api_name="/kernels", tokens=256, densities="0.5, 1", **KERNEL_REQUEST)]
    seen: list[tuple[Status, ...]] = []
    while not all(job.done() for job in jobs):
        codes = tuple(job.status().code for job in jobs)
        if not seen or seen[-1] != codes:
            seen.append(codes)
        time.sleep(0.005)
    # Separate groups would start both at once; one shared group keeps one of them queued while the other runs.
    # (Both can look "running" for a moment on the client, whose status of a finished job lags, so the queued
    # state is the evidence.)
    running = [[code in (Status.PROCESSING, Status.PROGRESS) for code in codes] for codes in seen]
    assert any(any(flags) and Status.IN_QUEUE in codes for flags, codes in zip(running, seen, strict=True)), seen
    assert read_video(jobs[0].result()[0]).shape[0] > 1 and "dense SDPA" in jobs[1].result()[1]


EDIT_REQUEST = {"video": None, "editor": "fatezero", "model": "tiny:sd", "frames": 4, **EDIT_PROMPTS}
HIGH_RESOLUTION_REQUEST = {"prompt": "x", "height": 64, "width": 96, "steps": 4}
TOKEN_CAP = "tokens on (a GPU|the CPU) must lie between 1 and (131072|4096) in this app"


@pytest.mark.parametrize(("endpoint", "request_", "message"), [
    ("/generate", {"prompt": "x", "model": "../models/secret"}, "outside the folders this app may load from"),
    ("/generate", {"prompt": "x", "model": "tiny:nope"}, "no built-in tiny model 'nope'"),
    ("/generate", {"prompt": "x", "steps": "1000"}, "steps must lie between 1 and 100"),
    ("/generate", {"prompt": "x", "steps": "two"}, "steps must be a number"),
    ("/generate", {"prompt": "x", "guidance": "nan"}, "guidance must be a finite number"),
    ("/generate", {"prompt": "x", "seed": 1e30}, "seed must lie between 0 and 4294967295 in this app"),
    ("/generate", {"prompt": "x", "fps": 1000}, "fps must lie between 1 and 60 in this app"),
    ("/generate", {"prompt": " "}, "write a prompt first"),
    ("/generate", {"prompt": "x", "attention_methods": ["observe"], "observe__dense_layers": "a"},
     "observe: dense_layers cannot be 'a'"),
    ("/generate", {"prompt": "x", "attention_methods": ["observe"], "observe__dense_steps": -1},
     "dense_steps must lie in"),
    ("/generate", {"prompt": "x", "attention_methods": ["radial"], "radial__decay_factor": "nan"},
     "radial: decay_factor must be a finite number"),
    ("/generate", {"prompt": "x", "noise_methods": ["freeinit"], "freeinit__num_iters": 10**9},
     "freeinit: num_iters must lie between -1e\\+06 and 1e\\+06 in this app"),
    ("/edit", {**EDIT_REQUEST, "fatezero__num_inference_steps": 100000},
     "fatezero: num_inference_steps must lie between 1 and 100 in this app"),
    ("/edit", {**EDIT_REQUEST, "frames": 1000}, "frames must lie between 1 and 129 in this app"),
    ("/high_resolution", {**HIGH_RESOLUTION_REQUEST, "steps": 100000}, "steps must lie between 1 and 100 in this app"),
    ("/high_resolution", {**HIGH_RESOLUTION_REQUEST, "height": 100000}, "height must lie between 1 and 2048"),
    ("/kernels", {"tokens": 1_000_000, "densities": "1", **KERNEL_REQUEST}, TOKEN_CAP),
    ("/kernels", {"tokens": 128, "densities": "1", **KERNEL_REQUEST, "repeats": 100000},
     "repeats must lie between 1 and 100 in this app; got 100000"),
    ("/kernels", {"tokens": 128, "densities": "1", **KERNEL_REQUEST, "heads": 100000},
     "heads must lie between 1 and 64 in this app"),
    ("/kernels", {"tokens": 128, "densities": ", ".join(["1"] * 100), **KERNEL_REQUEST},
     "densities must hold between 1 and 16 values in this app; got 100"),
    ("/kernels", {"tokens": 100, "densities": "1", **KERNEL_REQUEST}, "multiple of the block size"),
    ("/kernels", {"tokens": 128, "densities": "0, 1", **KERNEL_REQUEST}, r"densities must lie in \(0, 1\]"),
], ids=["model_outside_folders", "unknown_tiny_model", "steps_1000", "steps_text", "guidance_nan", "seed_1e30",
        "fps_1000", "empty_prompt", "setting_text_for_ints", "setting_below_range", "setting_nan", "setting_1e9",
        "editor_steps_100000", "edit_frames_1000", "high_resolution_steps_100000", "high_resolution_height_100000",
        "kernel_tokens_1000000", "kernel_repeats_100000", "kernel_heads_100000", "kernel_100_densities",
        "kernel_tokens_not_multiple_of_block", "kernel_density_zero"])
def test_bad_inputs_get_clear_messages(client, endpoint, request_, message):
    with pytest.raises(AppError, match=message):
        client.predict(api_name=endpoint, **request_)


def test_stop_buttons_cancel_every_job(app_server):
    config = Client(app_server[0], verbose=False, analytics_enabled=False).config
    jobs = {dep["api_name"]: dep["id"] for dep in config["dependencies"]
            if dep["api_name"] in ("generate", "edit", "high_resolution", "kernels")}
    cancelled = {job for dep in config["dependencies"] for job in dep.get("cancels") or []}
    assert len(jobs) == 4 and set(jobs.values()) <= cancelled


def test_cancel_stops_the_running_job_and_frees_the_slot(app_server, monkeypatch):
    """Cancelling a running job (what the Stop button does) ends its thread before the cancel returns."""
    from diffattn.app import handlers

    started, ended = threading.Event(), []
    measure = handlers.run_kernel_benchmark

    def observed(*args, **kwargs):
        started.set()
        try:
            return measure(*args, **kwargs)
        except BaseException as exc:
            ended.append(type(exc).__name__)
            raise

    monkeypatch.setattr(handlers, "run_kernel_benchmark", observed)
    client = Client(app_server[0], verbose=False, analytics_enabled=False)
    long_job = {"tokens": 1024, "heads": 2, "head_dim": 64, "block": 64, "densities": "0.1, 0.5, 1", "repeats": 100}
    job = client.submit(api_name="/kernels", **long_job)  # minutes on a CPU
    assert started.wait(60)
    begin = time.monotonic()
    threading.Thread(target=job.cancel, daemon=True).start()  # its request returns once the job's thread ended
    while not ended and time.monotonic() - begin < 30:
        time.sleep(0.05)
    assert ended == ["JobStopped"], "the cancelled job is still running"
    figure, table = client.predict(api_name="/kernels", tokens=128, densities="1", **KERNEL_REQUEST)
    assert "dense SDPA" in table and time.monotonic() - begin < 30


def test_bad_uploads_get_clear_messages(client, tmp_path):
    request = {"editor": "fatezero", "model": "tiny:sd", "frames": 4, **EDIT_PROMPTS}
    with pytest.raises(AppError, match="no video uploaded"):
        client.predict(api_name="/edit", video=None, **request)
    long_clip = write_video(tmp_path / "long.mp4", sample_clip(8, 32, 32), fps=1)  # 8 s > the 5 s limit
    with pytest.raises(AppError, match=r"lasts 8\.0 s; the limit is 5 s"):
        client.predict(api_name="/edit", video=handle_file(str(long_clip)), **request)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(4096))
    with pytest.raises(AppError, match=r"corrupt\.mp4 could not be read as a video \([^\n]+\)$"):
        client.predict(api_name="/edit", video=handle_file(str(corrupt)), **request)
    too_big = tmp_path / "big.mp4"
    too_big.write_bytes(os.urandom(2 * 2**20))  # over the 1 MB upload limit the server announces
    with pytest.raises(ValueError, match="exceeds the maximum file size of 1048576 bytes"):
        client.predict(api_name="/edit", video=handle_file(str(too_big)), **request)
