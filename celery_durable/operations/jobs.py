"""The management API behind `celery durable jobs ...`, `recover` and `retention`.

Everything here works on the SQL state only, so it runs from any process: a web app, a
script, the CLI, a worker's sweeper thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from ..engine.cancellation import cancel_job
from ..engine.runtime import Runtime
from ..errors import JobNotFound, JobStateError
from ..store.records import CancelOutcome, JobFilter, JobState
from .rerun import requeue
from .views import JobSummary, job_summary

logger = logging.getLogger(__name__)
RETRYABLE_STATES = (JobState.FAILED, JobState.DEAD, JobState.CANCELLED)


def job_filter(
    *,
    states: str | Iterable[str] | None = None,
    task: str | None = None,
    queue: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    id_prefix: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> JobFilter:
    """The storage filter for the listing's arguments; a clear error for a bad state."""
    wanted = [states] if isinstance(states, str) else list(states or ())
    try:
        parsed = tuple(JobState(s) for s in wanted)
    except ValueError:
        raise ValueError(
            f"unknown job state in {wanted!r}; states are {', '.join(s.value for s in JobState)}"
        ) from None
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must not be negative, got {limit} and {offset}")
    return JobFilter(
        states=parsed,
        task=task,
        queue=queue,
        created_after=since,
        created_before=until,
        id_prefix=id_prefix.strip() or None if id_prefix else None,
        limit=limit,
        offset=offset,
    )


def list_jobs(runtime: Runtime, where: JobFilter) -> list[JobSummary]:
    return [job_summary(job) for job in runtime.storage.list_jobs(where)]


def count_jobs(runtime: Runtime, where: JobFilter) -> dict[str, int]:
    """How many jobs match, per state (every state, zeros included), ignoring the
    filter's states, limit and offset."""
    counted = runtime.storage.count_jobs(where)
    return {s.value: counted.get(s.value, 0) for s in JobState}


def throughput(runtime: Runtime, minutes: int) -> list[tuple[datetime, str, int]]:
    """(minute, state, how many) of the jobs that finished in the last ``minutes``."""
    now = runtime.now()
    since = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    return runtime.storage.finished_per_minute(since)


def retry(runtime: Runtime, job_id: str, *, from_scratch: bool = False) -> None:
    """Run a failed, dead or cancelled job again under the same id (fresh retry budget).

    Calls that succeeded before the first failure replay unless ``from_scratch``.
    Raises JobNotFound, or JobStateError for a job that is still active or succeeded."""
    job = runtime.storage.get_job(job_id)
    if job is None:
        raise JobNotFound(job_id)
    if not requeue(runtime, job_id, RETRYABLE_STATES, from_scratch=from_scratch):
        raise JobStateError(
            job_id, job.state.value, "only failed, dead or cancelled jobs can be retried"
        )


def cancel(runtime: Runtime, job_id: str, *, revoke: bool = False) -> CancelOutcome:
    """Cancel a job (``engine.cancellation``); raises JobNotFound.

    The row is what counts (a delivery of a cancelled job is acked without running).
    ``revoke=True`` also broadcasts Celery's revoke, so workers drop a message they hold;
    but workers then drop *every* message with that id for Celery's revoke window (3 h),
    so a cancelled job retried with ``durable.retry`` inside it would not run."""

    def revoke_message(cancelled_id: str) -> None:
        try:  # drops the message a worker may already hold (an ETA retry, say)
            runtime.app.control.revoke(cancelled_id)
        except Exception:  # the row is what counts: a cancelled job is never claimed
            logger.warning(
                "job %s cancelled; revoking its message failed", cancelled_id, exc_info=True
            )

    outcome = cancel_job(runtime, job_id, revoke_message if revoke else lambda _: None)
    if outcome is CancelOutcome.MISSING:
        raise JobNotFound(job_id)
    return outcome
