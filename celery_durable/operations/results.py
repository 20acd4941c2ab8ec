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


class _Polls:
    """The pauses between reads: doubling up to a second, the last one cut to the
    deadline, then one more read."""

    def __init__(self, job_id: str, timeout: float | None) -> None:
        self.job_id, self.timeout = job_id, timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.pause = _FIRST_POLL

    def next(self) -> float:
        pause, self.pause = self.pause, min(self.pause * 2, _LONGEST_POLL)
        if self.deadline is None:
            return pause
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(
                f"durable job {self.job_id} did not finish within {self.timeout:g} s"
            )
        return min(pause, left)


def wait_result(runtime: Runtime, job_id: str, timeout: float | None) -> Any:
    polls = _Polls(job_id, timeout)
    while (value := outcome(runtime, job_id)) is _PENDING:
        time.sleep(polls.next())
    return value


async def await_result(runtime: Runtime, job_id: str, timeout: float | None) -> Any:
    """Like ``wait_result``; each read runs in a thread, so the loop never blocks on it."""
    polls = _Polls(job_id, timeout)
    while (value := await asyncio.to_thread(outcome, runtime, job_id)) is _PENDING:
        await asyncio.sleep(polls.next())
    return value
