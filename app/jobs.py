"""Device jobs: one at a time, each with a time limit, and a cancel that really stops it.

A job runs in a worker thread so the server stays responsive. `Job.checkpoint()` raises `JobStopped` once the job
is past its deadline or cancelled; it runs before every forward of the pipeline's models (`Job.watch`: at least once
per denoising step, inversion and optimisation steps included) and before every timed kernel call, so a job ends
within one model call of its limit. Gradio cancels an event (the Stop buttons, `gradio_client`'s `Job.cancel()`) by
cancelling its asyncio task, which cannot stop a thread: `device_job` turns that cancellation into the job's cancel
flag and waits for the thread to reach its next checkpoint, so the job slot is free only once the device is.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from diffattn.errors import DiffAttnError

__all__ = ["JobStopped", "Job", "device_job"]


class JobStopped(DiffAttnError, RuntimeError):
    """A job was stopped: it ran past the app's time limit per job, or it was cancelled."""


class Job:
    """One job's deadline (`seconds` from `start()`) and cancel flag."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self._cancelled = threading.Event()

    def start(self) -> None:
        """Start the clock (when the job gets the device, not while it waits for it)."""
        self.started = time.monotonic()

    def cancel(self) -> None:
        """Ask the job to stop at its next checkpoint."""
        self._cancelled.set()

    def checkpoint(self) -> None:
        """Raise `JobStopped` if the job was cancelled or is past its deadline."""
        if self._cancelled.is_set():
            raise JobStopped("the job was cancelled")
        elapsed = time.monotonic() - self.started
        if elapsed > self.seconds:
            raise JobStopped(f"the job was stopped after {elapsed:.1f} s: this app allows {self.seconds:g} s per job "
                             "(max_job_seconds); ask for fewer steps, frames or repeats, or a smaller size")

    @contextmanager
    def watch(self, pipe: Any) -> Iterator[None]:
        """Run `checkpoint()` before every forward of the pipeline's models while inside the block."""
        modules = [m for m in getattr(pipe, "components", {}).values() if isinstance(m, torch.nn.Module)]
        hooks = [module.register_forward_pre_hook(lambda *_: self.checkpoint()) for module in modules]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()


def device_job(seconds: Callable[[], float], device: threading.Lock) -> Callable[[Callable[..., Any]], Any]:
    """Decorator: run `handler(job, *args)` as a device job and expose it without `job` (Gradio reads the signature).

    `seconds()` is read per call (the limit of the app's current `AppLimits`); `device` is held while the job runs.
    """

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)
        async def run(*args: Any, **kwargs: Any) -> Any:
            job = Job(seconds())

            def work() -> Any:
                with device:
                    job.start()
                    return handler(job, *args, **kwargs)

            thread = asyncio.ensure_future(asyncio.to_thread(work))  # copies the context: gr.Progress follows tqdm
            try:
                return await asyncio.shield(thread)
            except asyncio.CancelledError:
                job.cancel()
                await _stopped(thread)
                raise

        signature = inspect.signature(handler)
        run.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])  # type: ignore[attr-defined]
        return run

    return decorate


async def _stopped(thread: asyncio.Future[Any]) -> None:
    """Wait until a cancelled job's thread has ended, whatever else is cancelled meanwhile."""
    while not thread.done():
        try:
            await asyncio.wait({thread})
        except asyncio.CancelledError:
            continue
    if not thread.cancelled():
        thread.exception()  # mark the job's own error (JobStopped) as seen: the cancellation is what propagates
