"""Suspending a job: it gives its worker slot back and is resumed by replay later.

``sleep()`` and dispatched calls raise ``Suspend``; the runner catches it and, in one
transaction, writes the new checkpoints, creates the child jobs and releases the job in
state suspended. Then it publishes the children, and for a short sleep an ETA message.
What resumes a suspended job:

- its last dispatched child finishing (the child's finish and the parent's wake-up are
  one transaction; the child's worker publishes the parent right after);
- the ETA message of a short sleep, or the recovery sweeper at the wake-up time of a
  long one (no message is held by a worker meanwhile);
- the recovery sweeper at the row's deadline, if every message above was lost: the job
  replays, finds what it waits for unfinished, and suspends again (for dispatched calls
  the deadline is ``durable_wait_check_interval`` away: a safety net only).

A body that caught ``Cancelled`` may still suspend while it compensates (a dispatched
refund, say): the cancel request is cleared so the job can resume, and the history
entry where Cancelled was raised makes every replay raise it again at the same place.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery.exceptions import Ignore

from .. import serialization
from ..errors import interrupt_on_storage_error
from ..store.records import CallRecord, NewJob, SuspendOutcome
from .enqueue import due_header, shown_name
from .failures import deliver_by_for_wait
from .publish import publish_again, publish_or_leave

if TYPE_CHECKING:
    from celery import Task

    from .context import Execution
    from .runtime import Runtime

logger = logging.getLogger(__name__)


@dataclass
class Suspend(BaseException):
    """Internal: the body waits; raised by sleep() and dispatched calls, handled by the
    runner. A BaseException, so a body's ``except Exception`` cannot swallow it."""

    calls: Sequence[CallRecord] = ()
    children: Sequence[NewJob] = ()
    wake_at: datetime | None = None
    waiting_for: Sequence[str] = field(default_factory=tuple)
    """Child job ids whose outcome the job waits for."""
    topic: str | None = None
    """receive(): the topic of the message the job waits for."""

    def __str__(self) -> str:
        if self.topic is not None:
            return f"waiting for a message on {self.topic!r}"
        if self.wake_at is not None:
            return f"sleeping until {self.wake_at.isoformat()}"
        return f"waiting for {len(self.waiting_for)} dispatched call(s)"


def suspend(
    runtime: Runtime,
    task: Task,
    request: Any,
    execution: Execution,
    waiting: Suspend,
) -> None:
    """Release the job in state suspended and raise Ignore; returns (having written
    nothing) only if a cancel arrived that the body has not taken in."""

    now = runtime.now()
    deliver_by: datetime | None
    if waiting.wake_at is not None:
        delay = (waiting.wake_at - now).total_seconds()
        deliver_by = deliver_by_for_wait(runtime, waiting.wake_at, delay)
    elif waiting.topic is not None:  # a send wakes it in its own transaction
        delay, deliver_by = 0.0, None
    else:  # the children wake it; this deadline is only a safety net
        delay = 0.0
        deliver_by = now + timedelta(seconds=runtime.settings.wait_check_interval)
    with interrupt_on_storage_error(execution.root_id):
        outcome = runtime.storage.suspend_job(
            execution.lease,
            waiting.calls,
            waiting.children,
            waiting.waiting_for,
            waiting.wake_at,
            deliver_by,
            now,
            cancel_taken=execution.watch.cancel_raised,
            topic=waiting.topic,
        )
    if outcome is SuspendOutcome.CANCEL_REQUESTED:
        return
    execution.released = True
    runnable = outcome is SuspendOutcome.RUNNABLE
    execution.ended("pending" if runnable else "suspended")
    for child in waiting.children:
        publish_or_leave(runtime, child.as_record(), "dispatched")
        if runtime.observers.active:  # labelled by the task it runs, as it will be there
            runtime.observers.job_enqueued(
                shown_name(child.task, serialization.loads(child.args)), child.queue
            )
    if runnable:  # what it waited for finished meanwhile: run again now
        publish_again(
            task, request, headers={**(getattr(request, "headers", None) or {}), **due_header(now)}
        )
    elif waiting.wake_at is not None and delay <= runtime.settings.max_countdown:
        publish_again(task, request, eta=waiting.wake_at)
    logger.info("job %s (%s) suspended: %s", execution.root_id, task.name, waiting)
    raise Ignore()
