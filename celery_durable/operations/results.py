"""Waiting for a job's result from its row, not from a Celery result backend: a web app
or a script enqueues, then ``durable.result(job_id)`` / ``await durable.aresult(job_id)``.

Polled with a backoff from 50 ms to 1 s, one indexed primary-key read each time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .. import serialization
from ..engine.runtime import Runtime
from ..errors import JobFailedError, JobNotFound
from ..store.records import JobState

_FIRST_POLL, _LONGEST_POLL = 0.05, 1.0
_PENDING = object()


def outcome(runtime: Runtime, job_id: str) -> Any:
    """The job's result if it succeeded, ``_PENDING`` while it has not finished; raises
    JobFailedError for one that ended without a result, JobNotFound for no such job."""
    job = runtime.storage.get_job(job_id)
    if job is None:
        raise JobNotFound(job_id)
    if job.state is JobState.SUCCEEDED:
        return serialization.loads(job.result)
    if not job.state.finished:
        return _PENDING
    error = serialization.loads(job.error) or {}
    raise JobFailedError(
        job_id, job.state.value, str(error.get("type", "Error")), str(error.get("message", ""))
    )


def _timed_out(job_id: str, timeout: float) -> TimeoutError:
    return TimeoutError(f"durable job {job_id} did not finish within {timeout:g} s")


def wait_result(runtime: Runtime, job_id: str, timeout: float | None) -> Any:
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = _FIRST_POLL
    while (value := outcome(runtime, job_id)) is _PENDING:
        if deadline is not None and time.monotonic() + pause > deadline:
            raise _timed_out(job_id, timeout or 0.0)
        time.sleep(pause)
        pause = min(pause * 2, _LONGEST_POLL)
    return value


async def await_result(runtime: Runtime, job_id: str, timeout: float | None) -> Any:
    """Like ``wait_result``; each read runs in a thread, so the loop never blocks on it."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = _FIRST_POLL
    while (value := await asyncio.to_thread(outcome, runtime, job_id)) is _PENDING:
        if deadline is not None and time.monotonic() + pause > deadline:
            raise _timed_out(job_id, timeout or 0.0)
        await asyncio.sleep(pause)
        pause = min(pause * 2, _LONGEST_POLL)
    return value
