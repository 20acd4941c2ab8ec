"""Retention: finished jobs are deleted once they are older than ``durable_retention``
says for their state, by every worker's sweeper (or ``celery durable retention``).

Linear in what it deletes: each batch is the oldest jobs of one state, found through
the ``(state, finished_at)`` index and deleted with their calls, errors and messages in
one transaction (one statement on PostgreSQL, a handful elsewhere; never one per job).
"""

from __future__ import annotations

from datetime import timedelta

from ..engine.runtime import Runtime
from ..store.records import JobState

RETENTION_BATCH = 2000


def apply_retention(runtime: Runtime, *, dry_run: bool = False) -> dict[str, int]:
    """Delete finished jobs older than ``durable_retention`` says, per state; returns
    how many were (or, with ``dry_run``, would be) deleted."""
    storage, now = runtime.storage, runtime.now()
    counts: dict[str, int] = {}
    for name, keep in runtime.settings.retention.items():
        if keep is None:
            continue
        state, cutoff = JobState(name), now - timedelta(seconds=keep)
        if dry_run:
            counts[name] = storage.count_finished(state, cutoff)
            continue
        deleted = 0
        while gone := storage.delete_finished(state, cutoff, RETENTION_BATCH):
            deleted += gone
        counts[name] = deleted
    return counts
