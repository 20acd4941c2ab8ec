"""The dead-letter queue: jobs whose retries ran out with ``on_exhausted="dead_letter"``.

A dead letter is a job row in state ``dead``: task, arguments, every failed execution's
error and traceback, its call timeline and timestamps all stay in the database until
someone requeues or purges it. Requeueing keeps the job id (the Celery task id), its
earlier errors and its requeue count, so its whole history stays in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from ..engine.runtime import Runtime
from ..errors import JobNotFound
from ..store.records import JobFilter, JobState
from . import rerun
from .views import JobSummary, JobView, job_summary, job_view

DEAD = (JobState.DEAD,)
_PURGE_BATCH = 500


def list_dead(
    runtime: Runtime,
    *,
    task: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[JobSummary]:
    where = JobFilter(
        states=DEAD,
        task=task,
        finished_after=since,
        finished_before=until,
        limit=limit,
        offset=offset,
    )
    return [job_summary(job) for job in runtime.storage.list_jobs(where)]


def show_dead(runtime: Runtime, job_id: str) -> JobView:
    job = runtime.storage.get_job(job_id)
    if job is None or job.state is not JobState.DEAD:
        raise JobNotFound(job_id)
    storage = runtime.storage
    return job_view(job, storage.load_history(job_id), storage.job_errors(job_id))


def requeue(
    runtime: Runtime, job_ids: str | Iterable[str], *, from_scratch: bool = False
) -> list[str]:
    """Put dead jobs back on their queue; returns the ids that were requeued.

    By default the job resumes from its checkpoints: calls that succeeded before the
    first failure replay, the failed call and everything after it run again. With
    ``from_scratch=True`` every checkpoint is dropped and the body runs from the top.
    Ids that are not dead letters (any more) are skipped.
    """
    ids = [job_ids] if isinstance(job_ids, str) else list(job_ids)
    return [
        job_id for job_id in ids if rerun.requeue(runtime, job_id, DEAD, from_scratch=from_scratch)
    ]


def purge(
    runtime: Runtime,
    job_ids: Iterable[str] | None = None,
    *,
    task: str | None = None,
    before: datetime | None = None,
) -> int:
    """Delete dead letters (with their calls and errors); returns how many went.

    Either the given ids, or every dead letter matching ``task``/``before`` (finished
    before that time); with neither, all of them."""
    storage = runtime.storage
    if job_ids is not None:
        return storage.delete_jobs(list(job_ids), DEAD)
    deleted = 0
    while True:
        batch = storage.list_jobs(
            JobFilter(states=DEAD, task=task, finished_before=before, limit=_PURGE_BATCH)
        )
        if not batch:
            return deleted
        deleted += storage.delete_jobs([job.id for job in batch], DEAD)
