"""Retention: finished jobs are deleted once they are older than ``durable_retention``
says for their state, in batches, by every worker's sweeper (or ``celery durable
retention``)."""

from __future__ import annotations

from datetime import timedelta

from ..engine.runtime import Runtime
from ..store.records import JobFilter, JobState

RETENTION_BATCH = 500


def apply_retention(runtime: Runtime, *, dry_run: bool = False) -> dict[str, int]:
    """Delete finished jobs older than ``durable_retention`` says, per state, in batches
    of RETENTION_BATCH; returns how many were (or, dry run, would be) deleted."""
    storage, now = runtime.storage, runtime.now()
    counts: dict[str, int] = {}
    for state, keep in runtime.settings.retention.items():
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
