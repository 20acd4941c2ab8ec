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

from ..errors import interrupt_on_storage_error
from ..store.records import JobState, Lease, Wake
from .enqueue import header
from .publish import publish_woken

if TYPE_CHECKING:
    from .runtime import Runtime

logger = logging.getLogger(__name__)
PARENT_HEADER = "durable_parent"


def finish(
    runtime: Runtime,
    request: Any,
    lease: Lease,
    state: JobState,
    result: str | None,
    error: str | None,
) -> None:
    """Record the job's final outcome; for a dispatched child, wake its parent in the
    same transaction and publish it."""
    wake = wake_of(runtime, request)
    with interrupt_on_storage_error(lease.job_id):
        woken = runtime.storage.finish_job(lease, state, result, error, runtime.now(), wake)
    if wake is not None and woken:
        publish_woken(runtime, wake.parent_id)


def wake_of(runtime: Runtime, request: Any) -> Wake | None:
    """For a dispatched child's execution: its parent, due soon once woken."""
    parent = header(request, PARENT_HEADER)
    if parent is None:
        return None
    return Wake(parent, runtime.now() + timedelta(seconds=runtime.settings.lease_seconds))
