"""Publishing a job's message from its row: after a recovery, a wake-up, a requeue, a
dispatch, or for a retry of the running job.

A publish that fails is logged, never raised, where the row already holds the job: its
deadline makes the recovery sweeper publish it later.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from celery import Task

from .. import serialization
from ..store.records import JobRecord
from .enqueue import due_header
from .runtime import Runtime

logger = logging.getLogger(__name__)


def publish(runtime: Runtime, job: JobRecord, *, eta: datetime | None = None) -> None:
    """Send a job's message from its row: same id, arguments, routing and canvas."""
    options = serialization.loads(job.options)
    # None would override the task's own routing (send_task merges options over it).
    options.update(
        {k: v for k, v in (("queue", job.queue), ("priority", job.priority)) if v is not None}
    )
    now = runtime.now()
    due = job.not_before if job.not_before is not None and job.not_before > now else now
    options["headers"] = {**(options.get("headers") or {}), **due_header(due)}
    if eta is not None:
        options["eta"] = eta
    runtime.app.send_task(
        job.task,
        args=serialization.loads(job.args),
        kwargs=serialization.loads(job.kwargs),
        task_id=job.id,
        **options,
    )


def publish_or_leave(
    runtime: Runtime, job: JobRecord, what: str, *, eta: datetime | None = None
) -> None:
    """Publish a job whose row was just written; on a broker error leave it to the
    sweeper (the row has a deadline)."""
    try:
        publish(runtime, job, eta=eta)
    except Exception:
        logger.exception(
            "job %s %s but not published; the recovery sweeper will publish it", job.id, what
        )


def publish_again(task: Task, request: Any, **options: Any) -> Any:
    """Send this job's message again (same id, routing and canvas), without touching
    its row. A broker error is logged, not raised: the row's deadline makes the
    recovery sweeper publish it later."""
    signature = task.signature_from_request(request, **options)
    try:
        Task.apply_async(task, signature.args, signature.kwargs, **signature.options)
    except Exception:
        logger.exception(
            "job %s: could not publish its retry; the recovery sweeper will "
            "publish it when its deadline passes",
            request.id,
        )
    return signature


def publish_woken(runtime: Runtime, job_id: str) -> None:
    """Publish a job just made pending (the row's near deadline covers a crash before
    this, or a broker error)."""
    try:  # the job's outcome is committed already: nothing here may fail it
        job = runtime.storage.get_job(job_id)
    except Exception:
        logger.exception(
            "job %s woken but not read back; the recovery sweeper will publish it", job_id
        )
        return
    if job is not None:
        publish_or_leave(runtime, job, "woken")
