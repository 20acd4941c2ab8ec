"""Paused queues and tasks: `durable.pause(queue=... | task=...)`, `resume`, `queues`.

A pause is a row in SQL. A delivery of a paused queue's or task's job leaves the job
waiting in SQL (held, with no deadline) and acks its message: no redelivery loop, no
worker slot. Running jobs finish. Resume deletes the row and publishes the held jobs,
oldest first; a hold that raced the resume is released by the next recovery sweep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from ..engine.publish import publish_or_leave
from ..engine.runtime import Runtime
from ..errors import ConfigurationError
from ..identifiers import check_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueView:
    """One queue as SQL sees it: its unfinished jobs by state, and whether it is paused."""

    name: str
    paused: bool
    paused_at: datetime | None
    pending: int
    running: int
    retrying: int
    suspended: int


@dataclass(frozen=True)
class PauseView:
    kind: str
    """"queue" or "task"."""
    name: str
    paused_at: datetime


def _target(queue: str | None, task: str | None) -> tuple[str, str]:
    if (queue is None) == (task is None):
        raise ConfigurationError(
            "say what to pause or resume: queue='name' or task='name' (one of them)"
        )
    if queue is not None:
        return "queue", check_name(queue, "queue")
    return "task", check_name(task, "task")


def pause(runtime: Runtime, *, queue: str | None = None, task: str | None = None) -> bool:
    """Pause a queue or a task; False if it was paused already."""
    kind, name = _target(queue, task)
    paused = runtime.storage.pause(kind, name, runtime.now())
    if paused:
        logger.info("%s %s paused", kind, name)
    return paused


def resume(runtime: Runtime, *, queue: str | None = None, task: str | None = None) -> int | None:
    """Resume a queue or a task and publish the jobs it held, oldest first; returns how
    many (None if it was not paused)."""
    kind, name = _target(queue, task)
    released = runtime.storage.resume(kind, name, runtime.now(), runtime.deliver_by(None))
    if released is None:
        return None
    for job in released:
        publish_or_leave(runtime, job, "resumed")
    logger.info("%s %s resumed; %d held job(s) published", kind, name, len(released))
    return len(released)


def paused(runtime: Runtime) -> list[PauseView]:
    return [PauseView(p.kind, p.name, p.paused_at) for p in runtime.storage.pauses()]


def queues(runtime: Runtime) -> list[QueueView]:
    """Every queue with unfinished jobs or a pause (the default queue as Celery names
    it, for jobs enqueued without one), by name."""
    default = runtime.app.conf.task_default_queue
    counts: dict[str, dict[str, int]] = {}
    for queue, state, n in runtime.storage.count_active():
        by_state = counts.setdefault(queue or default, {})
        by_state[state] = by_state.get(state, 0) + n
    pauses = {p.name: p.paused_at for p in runtime.storage.pauses() if p.kind == "queue"}
    return [
        QueueView(
            name=name,
            paused=name in pauses,
            paused_at=pauses.get(name),
            pending=counts.get(name, {}).get("pending", 0),
            running=counts.get(name, {}).get("running", 0),
            retrying=counts.get(name, {}).get("retrying", 0),
            suspended=counts.get(name, {}).get("suspended", 0),
        )
        for name in sorted({*counts, *pauses})
    ]
