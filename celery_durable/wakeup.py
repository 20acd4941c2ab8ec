"""Waking a suspended parent when a child job it dispatched finishes.

A dispatched child's message carries the parent's id in the ``durable_parent`` header
(stored with the child's row, so a republished message carries it too). The child's
final write and the parent's wake-up are one transaction; publishing the parent comes
after it, and if the worker dies in between, the parent's row deadline makes the
recovery sweeper publish it.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .enqueue import header
from .errors import interrupt_on_storage_error
from .store.base import JobState, Lease, Wake

if TYPE_CHECKING:
    from .app import Durable

logger = logging.getLogger(__name__)
PARENT_HEADER = "durable_parent"


def finish(
    durable: Durable,
    request: Any,
    lease: Lease,
    state: JobState,
    result: str | None,
    error: str | None,
) -> None:
    """Record the job's final outcome; for a dispatched child, wake its parent in the
    same transaction and publish it."""
    wake = wake_of(durable, request)
    with interrupt_on_storage_error(lease.job_id):
        woken = durable.storage.finish_job(lease, state, result, error, durable.now(), wake)
    if wake is not None and woken:
        publish_woken(durable, wake.parent_id)


def wake_of(durable: Durable, request: Any) -> Wake | None:
    """For a dispatched child's execution: its parent, due soon once woken."""
    parent = header(request, PARENT_HEADER)
    if parent is None:
        return None
    return Wake(parent, durable.now() + timedelta(seconds=durable.settings.lease_seconds))


def publish_woken(durable: Durable, job_id: str) -> None:
    """Publish a job just made pending (the row's near deadline covers a crash before
    this, or a broker error)."""
    from .recovery import publish_or_leave

    try:  # the job's outcome is committed already: nothing here may fail it
        job = durable.storage.get_job(job_id)
    except Exception:
        logger.exception(
            "job %s woken but not read back; the recovery sweeper will publish it", job_id
        )
        return
    if job is not None:
        publish_or_leave(durable, job, "woken")
