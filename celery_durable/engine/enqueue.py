"""Enqueue options: queue, priority ("higher runs first" on every broker), delay / at
(long waits kept in SQL, not as ETA messages in worker RAM), and unique keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from celery import Celery

from .. import serialization
from ..errors import ConfigurationError, SerializationError
from ..identifiers import check_key
from ..retry import seconds
from ..store.records import NewJob

if TYPE_CHECKING:
    from .runtime import Runtime

MAX_PRIORITY = 9


DUE_HEADER = "durable_due"
"""When a message's job became due (ISO time): the queue-wait metric starts there. A
message with an ETA is due at its ETA instead."""


def due_header(at: datetime) -> dict[str, str]:
    return {DUE_HEADER: at.isoformat()}


def header(request: Any, name: str) -> str | None:
    """A custom header of the delivered message (Celery exposes them as attributes)."""
    value = getattr(request, name, None) or (getattr(request, "headers", None) or {}).get(name)
    return value if isinstance(value, str) else None


def due_from_request(request: Any) -> datetime | None:
    """When the delivered job became due: its ETA, else the ``durable_due`` header."""
    value = getattr(request, "eta", None) or header(request, DUE_HEADER)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def broker_priority(app: Celery, priority: Any) -> int:
    """Our priority (0-9, higher runs first) in the broker's own convention.

    RabbitMQ (and most AMQP brokers) run higher numbers first; Celery's Redis transport
    runs lower numbers first. Anything else gets RabbitMQ's convention."""
    if (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not 0 <= priority <= MAX_PRIORITY
    ):
        raise ConfigurationError(
            f"priority must be a whole number from 0 to {MAX_PRIORITY} (higher runs "
            f"first), got {priority!r}"
        )
    scheme = str(app.conf.broker_url or "").split("://", 1)[0].lower()
    if scheme in ("redis", "rediss", "redis+socket", "sentinel"):
        return MAX_PRIORITY - priority
    return priority


def due_time(delay: Any = None, at: Any = None, *, now: datetime | None = None) -> datetime | None:
    """When a job may start: ``delay`` (seconds or timedelta) or ``at`` (aware)."""
    if delay is not None and at is not None:
        raise ConfigurationError("give delay= or at=, not both")
    now = now or datetime.now(timezone.utc)
    if delay is not None:
        return now + timedelta(seconds=seconds(delay, "delay"))
    if at is not None:
        if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
            raise ConfigurationError(
                f"at= must be a timezone-aware datetime (e.g. datetime.now(timezone.utc) + "
                f"timedelta(hours=1)), got {at!r}"
            )
        return at.astimezone(timezone.utc)
    return None


def check_unique(key: Any) -> str | None:
    return None if key is None else check_key(key, "unique= key")


# Message options that recovery sends again, so a republished job keeps its place in a
# canvas (chain, links, group, chord) and its ids.
RESENT_OPTIONS = (
    "link",
    "link_error",
    "chain",
    "group_id",
    "group_index",
    "chord",
    "root_id",
    "parent_id",
    "reply_to",
    "shadow",
    "exchange",
    "routing_key",
    "time_limit",
    "soft_time_limit",
    "expires",
    "retries",
    "headers",
)


def new_job(
    runtime: Runtime,
    task_name: str,
    job_id: str,
    args: Any,
    kwargs: Any,
    *,
    queue: str | None,
    priority: int | None,
    eta: datetime | None,
    options: dict[str, Any] | None = None,
    not_before: datetime | None = None,
    unique_key: str | None = None,
    deliver_at: datetime | None = None,
    debounce_key: str | None = None,
    flow_key: str | None = None,
) -> NewJob:
    """``deliver_at``: the sweeper publishes the job then (nothing is published now)."""
    what = f"task {task_name!r}"
    return NewJob(
        id=job_id,
        task=task_name,
        args=serialization.dumps(list(args or ()), what=f"{what} positional arguments"),
        kwargs=serialization.dumps(dict(kwargs or {}), what=f"{what} keyword arguments"),
        queue=queue,
        priority=priority,
        created_at=runtime.now(),
        deliver_by=deliver_at or runtime.deliver_by(eta),
        options=_resent_options(options or {}),
        not_before=not_before,
        unique_key=unique_key,
        debounce_key=debounce_key,
        flow_key=flow_key,
    )


def _resent_options(options: dict[str, Any]) -> str:
    kept = {k: v for k, v in options.items() if k in RESENT_OPTIONS and v is not None}
    try:
        return serialization.dumps(kept, what="message options")
    except SerializationError:  # e.g. a kombu Exchange object: routing falls back to queue
        return serialization.dumps(
            {k: v for k, v in kept.items() if serialization.encodes(v)}, what="message options"
        )


def options_from_request(request: Any) -> dict[str, Any]:
    """What a delivered message carried, for a job whose row was not written at enqueue."""
    return {
        "link": getattr(request, "callbacks", None),
        "link_error": getattr(request, "errbacks", None),
        "chain": getattr(request, "chain", None),
        "group_id": getattr(request, "group", None),
        "group_index": getattr(request, "group_index", None),
        "chord": getattr(request, "chord", None),
        "root_id": getattr(request, "root_id", None),
        "parent_id": getattr(request, "parent_id", None),
        "reply_to": getattr(request, "reply_to", None),
    }


DISPATCH_TASK = "celery_durable.dispatched"


def shown_name(task_name: str, args: Sequence[Any]) -> str:
    """What hooks, metrics and spans call a job: a dispatched call's child job goes by
    the task it runs (its first argument), as Celery's logs do (``shadow``)."""
    if task_name == DISPATCH_TASK and args and isinstance(args[0], str):
        return args[0]
    return task_name
