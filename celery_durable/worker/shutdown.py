"""Graceful shutdown: a bounded warm shutdown for durable jobs.

Celery's warm shutdown (SIGTERM, or the first Ctrl+C) stops taking messages and waits,
without a limit, for running tasks. For durable jobs the wait is bounded by
``durable_shutdown_grace``: a job that reaches its end in time finishes here; one still
running when the grace period ends is *released*: its row goes back to pending (the lease
given up, no recovery or failure counted), its message is published again for another
worker, and the pool process running it is stopped, so the worker can exit. The job
resumes elsewhere by replay; only the call in flight runs again, as after a crash.

This runs in the worker's main process, which knows which pool process runs which
request; a lease owner is ``host/pid/token``, so ``host/pid/`` names that process's
executions without anything being sent to it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Any

from ..engine.publish import publish
from ..engine.runner import HOSTNAME
from ..engine.runtime import Runtime
from ..engine.task import DurableTask
from ..errors import StorageUnavailable

logger = logging.getLogger(__name__)


def start_grace_period(runtime: Runtime) -> None:
    grace = runtime.settings.shutdown_grace
    if grace is None:
        return
    timer = threading.Timer(grace, release_running_jobs, args=(runtime,))
    timer.daemon = True
    timer.name = "celery-durable-shutdown"
    timer.start()


def release_running_jobs(runtime: Runtime) -> list[str]:
    """Release every durable job this worker still runs; returns their ids."""
    from celery.worker import state

    released = []
    for request in list(state.active_requests):
        task = runtime.app.tasks.get(request.task_name)
        pid = getattr(request, "worker_pid", None)
        if not isinstance(task, DurableTask) or not pid:
            continue
        try:
            job = runtime.storage.release_abandoned(
                request.id, f"{HOSTNAME}/{pid}/", runtime.deliver_by(None)
            )
        except StorageUnavailable as exc:  # the worker still exits: recovery resumes the
            logger.error(
                "job %s could not be released (%s); stopping its process, "  # job
                "recovery resumes it when its lease expires",
                request.id,
                exc,
            )
            _stop(pid)
            continue
        if job is None:
            continue
        logger.warning(
            "job %s still running at the end of the %ss shutdown grace period: "
            "released for another worker",
            request.id,
            runtime.settings.shutdown_grace,
        )
        try:
            publish(runtime, job)
        except Exception:  # pending with a deadline: another worker's sweeper sends it
            logger.exception("job %s released but not published", request.id)
        _stop(pid)
        released.append(request.id)
    return released


def _stop(pid: Any) -> None:
    # The child may hold the job in a long call; it has nothing left to write (its
    # lease is gone, every later write would be refused), so it can simply stop.
    with contextlib.suppress(ProcessLookupError, ValueError):
        os.kill(int(pid), signal.SIGKILL)
