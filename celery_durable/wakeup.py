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

from .store.base import Wake

if TYPE_CHECKING:
    from .app import Durable

logger = logging.getLogger(__name__)
PARENT_HEADER = "durable_parent"


def wake_of(durable: Durable, request: Any) -> Wake | None:
    """For a dispatched child's execution: its parent, due soon once woken."""
    parent = header(request, PARENT_HEADER)
    if parent is None:
        return None
    return Wake(parent, durable.now() + timedelta(seconds=durable.settings.lease_seconds))


def resume_parent(durable: Durable, wake: Wake | None, woken: bool) -> None:
    """Publish a parent the finishing child made runnable (its deadline covers a crash
    before this)."""
    if wake is not None and woken:
        publish_woken(durable, wake.parent_id)


def publish_woken(durable: Durable, job_id: str) -> None:
    """Publish a job just made pending from its row; a broker error is left to the
    sweeper (the row's deadline is near)."""
    from .recovery import publish

    try:
        job = durable.storage.get_job(job_id)
        if job is not None:
            publish(durable, job)
    except Exception:
        logger.exception("job %s: woken but not published; the recovery sweeper will",
                         job_id)


def header(request: Any, name: str) -> str | None:
    value = getattr(request, name, None) or (getattr(request, "headers", None) or {}).get(name)
    return value if isinstance(value, str) else None
