"""Flow control of a durable task: ``concurrency=`` (with ``concurrency_key=``) and
``rate_limit=`` (with ``rate_limit_key=``), enforced by the database when a delivery
claims its job, across every worker and host.

A delivery that may not start its job leaves it waiting in SQL (held) and acks its
message, so it holds no worker slot while it waits: a job held for a slot is published
by the execution that frees one, a job held for its rate comes back when its turn is
due (an ETA message for a short wait, recovery for a long one).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..identifiers import ID_COLUMN
from ..store.records import Gate
from .publish import publish_or_leave

if TYPE_CHECKING:
    from celery import Task

    from .runtime import Runtime

logger = logging.getLogger(__name__)
_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*/\s*(\d*)\s*(s|sec|m|min|h|hour|d|day)\s*$")
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600}
_UNIT_SECONDS |= {"d": 86400, "day": 86400}
KeyFunction = Callable[..., Any]


@dataclass(frozen=True)
class FlowLimits:
    concurrency: int | None = None
    concurrency_key: KeyFunction | None = None
    rate: float | None = None
    """Jobs per second."""
    rate_key: KeyFunction | None = None

    @property
    def active(self) -> bool:
        return self.concurrency is not None or self.rate is not None


NO_LIMITS = FlowLimits()


def parse_rate(value: Any, task: str) -> float | None:
    """``"100/m"``, ``"10/s"``, ``"5/h"``, ``"1000/d"``, ``"1/10s"``; a number is per
    second, as in Celery. None: no limit."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        per_second = float(value)
    else:
        match = _RATE.match(value) if isinstance(value, str) else None
        if match is None:
            raise ConfigurationError(
                f"task {task!r}: rate_limit={value!r} is not a rate; write it as "
                f"'<jobs>/<unit>' with unit s, m, h or d (e.g. '100/m', '10/s', '1/5s')"
            )
        count, multiple, unit = match.groups()
        per_second = float(count) / ((int(multiple) if multiple else 1) * _UNIT_SECONDS[unit])
    if not per_second > 0:
        raise ConfigurationError(
            f"task {task!r}: rate_limit={value!r} must allow at least some jobs; to stop "
            f"a task for a while, pause it (durable.pause(task=...))"
        )
    return per_second


def check_limits(cls: Any, task: str) -> FlowLimits:
    """The limits a task class sets, checked (ConfigurationError names the task and the
    option)."""
    concurrency = getattr(cls, "concurrency", None)
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise ConfigurationError(
            f"task {task!r}: concurrency={concurrency!r} must be a whole number of at least "
            f"1 (how many of its jobs may run at once); to stop it, pause it"
        )
    keys = {}
    for option in ("concurrency_key", "rate_limit_key"):
        key = getattr(cls, option, None)
        if key is not None and not callable(key):
            raise ConfigurationError(
                f"task {task!r}: {option} must be a function of the task's arguments "
                f"(e.g. lambda order: order['customer_id']), got {key!r}"
            )
        keys[option] = key
    rate_text = getattr(cls, "durable_rate_limit", None)
    rate = parse_rate(rate_text, task)
    if keys["concurrency_key"] is not None and concurrency is None:
        raise ConfigurationError(
            f"task {task!r}: concurrency_key without concurrency=; say how many jobs of "
            f"one key may run at once"
        )
    if keys["rate_limit_key"] is not None and rate is None:
        raise ConfigurationError(
            f"task {task!r}: rate_limit_key without rate_limit=; say how many jobs of "
            f"one key may start per unit of time (e.g. rate_limit='10/s')"
        )
    return FlowLimits(
        concurrency,
        keys["concurrency_key"],
        rate,
        keys["rate_limit_key"],
    )


def limits_of(task: Task) -> FlowLimits:
    limits = getattr(type(task), "_durable_limits", None)
    return limits if isinstance(limits, FlowLimits) else NO_LIMITS


def key_of(fn: KeyFunction | None, args: Any, kwargs: Any, task: str, option: str) -> str:
    """The key a job of ``task`` has under one limit ("" for a task-wide limit)."""
    if fn is None:
        return ""
    try:
        key = fn(*(args or ()), **(kwargs or {}))
    except Exception as exc:
        raise ConfigurationError(
            f"task {task!r}: its {option} raised {type(exc).__name__}: {exc} for the "
            f"arguments {args!r} {kwargs!r}"
        ) from exc
    text = str(key)
    if len(text) > ID_COLUMN - 2:  # the gate row's key has a 2-character prefix
        raise ConfigurationError(
            f"task {task!r}: its {option} gave a key of {len(text)} characters; keys "
            f"must be at most {ID_COLUMN - 2}"
        )
    return text


def gate_for(
    runtime: Runtime, task: Task, limits: FlowLimits, args: Any, kwargs: Any, queue: str | None
) -> Gate:
    name = task.name
    return Gate(
        task=name,
        queue=queue,
        concurrency=limits.concurrency,
        concurrency_key=key_of(limits.concurrency_key, args, kwargs, name, "concurrency_key"),
        rate=limits.rate,
        rate_key=key_of(limits.rate_key, args, kwargs, name, "rate_limit_key"),
        recheck=timedelta(seconds=runtime.settings.delivery_timeout),
        countdown_limit=runtime.settings.max_countdown,
    )


def check_keys(task: Task, args: Any, kwargs: Any) -> str | None:
    """At enqueue: a key function that fails on these arguments fails the enqueue,
    before anything is written, not the delivery. Returns the concurrency key (the row
    keeps it: an older job of the key goes first), None without a limit."""
    limits = limits_of(task)
    key_of(limits.rate_key, args, kwargs, task.name, "rate_limit_key")
    if limits.concurrency is None:
        return None
    return key_of(limits.concurrency_key, args, kwargs, task.name, "concurrency_key")


def free_slots(runtime: Runtime, task: Task, key: str) -> None:
    """An execution that held a slot of ``key`` ended: publish the jobs waiting for it
    (their row's deadline covers a crash before this, or a broker error)."""
    limits = limits_of(task)
    if limits.concurrency is None:
        return
    try:
        waiters = runtime.storage.next_waiters(task.name, key, limits.concurrency, runtime.now())
    except Exception:
        logger.exception(
            "task %s: could not read the jobs waiting for a slot of key %r; recovery "
            "publishes them when their deadline passes",
            task.name,
            key,
        )
        return
    for waiter in waiters:
        publish_or_leave(runtime, waiter, "next in line for a slot")
