"""Device jobs: a time limit per job and a cancel that stops the job's thread, checked on the handlers themselves
(called directly, without a server) and on `Job` / `device_job`."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import threading
import time

import gradio as gr
import pytest
import torch

from diffattn.app import catalog
from diffattn.app.handlers import AppContext, generate_handler, kernels_handler
from diffattn.app.jobs import Job, JobStopped, device_job
from diffattn.app.limits import AppLimits
from diffattn.app.runs import PipelineCache, RunFolders, generation_key, run_generation
from diffattn.app.settings import method_panel
from diffattn.generation import GenerationSpec

LONG_KERNEL_JOB = {"tokens": 1024, "heads": 2, "head_dim": 64, "block": 64, "densities": "0.1, 0.5, 1", "repeats": 100}
SHORT_KERNEL_JOB = {"tokens": 128, "heads": 1, "head_dim": 32, "block": 32, "densities": "1", "repeats": 1}


def _no_progress(*args, **kwargs) -> None:
    """Stands in for `gr.Progress` outside a Gradio event."""


@pytest.fixture
def ctx(tmp_path) -> AppContext:
    return AppContext(limits=AppLimits(max_job_seconds=0.5), pipes=PipelineCache(), folders=RunFolders(tmp_path / "runs"))


def test_checkpoint_passes_within_the_deadline_and_stops_past_it_or_when_cancelled():
    job = Job(60)
    job.checkpoint()
    job.cancel()
    with pytest.raises(JobStopped, match="the job was cancelled"):
        job.checkpoint()
    late = Job(0.01)
    time.sleep(0.02)
    with pytest.raises(JobStopped, match=r"stopped after 0\.0 s: this app allows 0\.01 s per job \(max_job_seconds\)"):
        late.checkpoint()
    late.start()  # the clock starts when the job gets the device
    late.seconds = 60
    late.checkpoint()


def test_device_job_hides_the_job_parameter_from_gradio():
    def handler(job: Job, tokens: float, progress: gr.Progress = gr.Progress()) -> float:
        return tokens

    exposed = device_job(lambda: 1.0, threading.Lock())(handler)
    assert list(inspect.signature(exposed).parameters) == ["tokens", "progress"]
    assert inspect.iscoroutinefunction(exposed) and asyncio.run(exposed(3.0)) == 3.0


def test_cancelling_a_running_job_stops_its_thread_before_the_slot_is_freed():
    device, started, ended = threading.Lock(), threading.Event(), []

    def handler(job: Job) -> None:
        started.set()
        try:
            while True:
                job.checkpoint()
                time.sleep(0.01)
        except JobStopped as exc:
            time.sleep(0.1)  # the end of a denoising step: the slot must stay taken meanwhile
            ended.append(str(exc))
            raise

    async def cancel_while_running() -> None:
        task = asyncio.ensure_future(device_job(lambda: 60.0, device)(handler)())
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ended == ["the job was cancelled"]  # the event ends only once the job's thread has
        assert not device.locked()

    asyncio.run(cancel_while_running())


def test_kernel_job_past_its_deadline_stops_with_a_clear_error_and_frees_the_slot(ctx):
    kernels = kernels_handler(ctx)
    begin = time.monotonic()
    with pytest.raises(gr.Error, match=r"stopped after [\d.]+ s: this app allows 0\.5 s per job \(max_job_seconds\)"):
        asyncio.run(kernels(**LONG_KERNEL_JOB, progress=_no_progress))  # minutes without the limit
    assert time.monotonic() - begin < 15
    assert not ctx.device.locked()
    ctx.limits = dataclasses.replace(ctx.limits, max_job_seconds=600)
    _, table = asyncio.run(kernels(**SHORT_KERNEL_JOB, progress=_no_progress))
    assert "dense SDPA" in table


def test_generation_stopped_by_its_deadline_leaves_the_cached_pipeline_as_it_was(tmp_path):
    pipes, folders = PipelineCache(), RunFolders(tmp_path)
    spec = GenerationSpec(model="tiny:wan", prompt="a fox", steps=3)
    with pytest.raises(JobStopped, match="this app allows 0 s per job"):
        run_generation(spec, pipes, folders, job=Job(0))
    pipe = pipes.get(generation_key(spec), lambda: pytest.fail("reloaded"))
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    assert modules and not any(m._forward_pre_hooks for m in modules)  # the deadline's hooks are gone
    finished = run_generation(spec, pipes, folders, job=Job(600)).result.frames
    assert torch.equal(finished, run_generation(spec, PipelineCache(), folders).result.frames)


def test_tuning_file_path_outside_the_allowed_folders_is_refused_by_generate_unopened(ctx, tmp_path, touches):
    attention, noise = catalog.generation_methods()
    with gr.Blocks():
        generate = generate_handler(ctx, method_panel(attention, limits=ctx.limits),
                                    method_panel(noise, limits=ctx.limits))
    assert inspect.signature(generate).parameters["sparge__tuned"].default is None  # API callers may leave it out
    secret = tmp_path / "bashrc.json"
    secret.write_text("{}")
    touches.clear()
    with pytest.raises(gr.Error, match="sparge tuned file must be uploaded through the app"):
        asyncio.run(generate("tiny:wan", "a fox", attention_methods=["sparge"], sparge__tuned=str(secret),
                             progress=_no_progress))
    assert touches.of(secret) == []
