"""The management API behind `celery durable jobs ...`, `recover` and `retention`.

Everything here works on the SQL state only, so it runs from any process: a web app, a
script, the CLI, a worker's sweeper thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from . import serialization
from .errors import JobNotFound, JobStateError
from .history import waited_children
from .inspection import JobSummary, job_summary
from .recovery import requeue
from .store.base import CancelOutcome, JobFilter, JobState

if TYPE_CHECKING:
    from .app import Durable

logger = logging.getLogger(__name__)
RETRYABLE_STATES = (JobState.FAILED, JobState.DEAD, JobState.CANCELLED)
RETENTION_BATCH = 500


def list_jobs(
    durable: Durable,
    *,
    states: str | Iterable[str] | None = None,
    task: str | None = None,
    queue: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[JobSummary]:
    wanted = [states] if isinstance(states, str) else list(states or ())
    try:
        parsed = tuple(JobState(s) for s in wanted)
    except ValueError:
        raise ValueError(
            f"unknown job state in {wanted!r}; states are {', '.join(s.value for s in JobState)}"
        ) from None
    where = JobFilter(
        states=parsed,
        task=task,
        queue=queue,
        created_after=since,
        created_before=until,
        limit=limit,
        offset=offset,
    )
    return [job_summary(job) for job in durable.storage.list_jobs(where)]


def retry(durable: Durable, job_id: str, *, from_scratch: bool = False) -> None:
    """Run a failed, dead or cancelled job again under the same id (fresh retry budget).

    Calls that succeeded before the first failure replay unless ``from_scratch``.
    Raises JobNotFound, or JobStateError for a job that is still active or succeeded."""
    job = durable.storage.get_job(job_id)
    if job is None:
        raise JobNotFound(job_id)
    if not requeue(durable, job_id, RETRYABLE_STATES, from_scratch=from_scratch):
        raise JobStateError(
            job_id, job.state.value, "only failed, dead or cancelled jobs can be retried"
        )


def cancel(durable: Durable, job_id: str, *, revoke: bool = False) -> CancelOutcome:
    """Cancel a job. Pending or retrying: it never starts. Running: it gets Cancelled at
    its next call. Either way it is never resumed by recovery. Raises JobNotFound.

    The row is what counts (a delivery of a cancelled job is acked without running).
    ``revoke=True`` also broadcasts Celery's revoke, so workers drop a message they hold;
    but workers then drop *every* message with that id for Celery's revoke window (3 h),
    so a cancelled job retried with ``durable.retry`` inside it would not run.

    The child jobs of calls it dispatched and still waits for are cancelled too."""
    error = serialization.dumps(
        {"type": "Cancelled", "message": f"job {job_id} cancelled", "traceback": ""},
        what="an error description",
    )
    outcome = durable.storage.cancel_job(job_id, error, durable.now())
    if outcome is CancelOutcome.MISSING:
        raise JobNotFound(job_id)
    if revoke and outcome is not CancelOutcome.FINISHED:
        try:  # drops the message a worker may already hold (an ETA retry, say)
            durable.app.control.revoke(job_id)
        except Exception:  # the row is what counts: a cancelled job is never claimed
            logger.warning("job %s cancelled; revoking its message failed", job_id, exc_info=True)
    if outcome is not CancelOutcome.FINISHED:
        for child_id in waited_children(durable.storage.load_history(job_id)):
            cancel(durable, child_id, revoke=revoke)
    return outcome


def apply_retention(durable: Durable, *, dry_run: bool = False) -> dict[str, int]:
    """Delete finished jobs older than ``durable_retention`` says, per state, in batches
    of RETENTION_BATCH; returns how many were (or, dry run, would be) deleted."""
    storage, now = durable.storage, durable.now()
    counts: dict[str, int] = {}
    for state, keep in durable.settings.retention.items():
        if keep is None:
            continue
        where = JobFilter(
            states=(JobState(state),),
            finished_before=now - timedelta(seconds=keep),
            limit=RETENTION_BATCH,
        )
        deleted = 0
        while True:
            batch = storage.list_jobs(
                where if not dry_run else JobFilter(**{**where.__dict__, "offset": deleted})
            )
            if not batch:
                break
            deleted += (
                len(batch)
                if dry_run
                else storage.delete_jobs([job.id for job in batch], (JobState(state),))
            )
        counts[state] = deleted
    return counts
