"""Enqueue options: queue, priority ("higher runs first" on every broker), delay / at
(long waits kept in SQL, not as ETA messages in worker RAM), and unique keys."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from celery import Celery

from .errors import ConfigurationError
from .identifiers import check_key
from .retry import seconds

if TYPE_CHECKING:
    from .app import Durable

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


def enqueue(
    durable: Durable,
    task: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None,
    *,
    queue: str | None,
    priority: int | None,
    delay: Any,
    at: datetime | None,
    unique: str | None,
    **options: Any,
) -> Any:
    from .task import DurableTask

    target = durable.app.tasks.get(task) if isinstance(task, str) else task
    if not isinstance(target, DurableTask):
        raise ConfigurationError(
            f"enqueue() takes a durable task or its registered name, got {task!r}; "
            f"plain Celery tasks keep apply_async()"
        )
    if queue is not None:
        options["queue"] = queue
    if priority is not None:
        options["priority"] = broker_priority(durable.app, priority)
    return target.apply_async(args, kwargs, delay=delay, at=at, unique=unique, **options)
