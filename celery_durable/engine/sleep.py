"""Durable sleep: ``sleep(seconds)`` and ``sleep_until(when)`` inside a durable task.

The wake-up time is recorded as a checkpoint and the job suspends: its worker slot is
free while it waits, and a worker restart does not shorten or restart the wait. Short
waits (up to ``durable_max_countdown``) travel as an ETA message; longer ones are kept
only in SQL and the recovery sweeper publishes the job when it is due.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from .. import serialization
from .context import Execution, current_execution
from .loop import eager
from .matching import recorded_for
from .recorded_values import pseudo_call, write_pseudo_call
from .suspend import Suspend

SLEEP = "celery_durable.sleep"


def sleep(delay: float | timedelta) -> Any:
    """Wait ``delay`` (seconds or a timedelta) without holding a worker.

    In an ``async def`` body: ``await sleep(...)``. Outside a durable task it is
    ``time.sleep``."""
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise ValueError(f"sleep() takes seconds >= 0 or a timedelta, not {delay!r}")
    execution = current_execution()
    if execution is None:
        time.sleep(seconds)
        return None
    return _waited(execution, lambda now: now + timedelta(seconds=seconds), ("for", seconds))


def sleep_until(when: datetime) -> Any:
    """Wait until ``when`` (an aware datetime) without holding a worker (``await`` it
    in an ``async def`` body)."""
    if not isinstance(when, datetime) or when.tzinfo is None or when.tzinfo.utcoffset(when) is None:
        raise ValueError(f"sleep_until() takes an aware datetime (with a timezone), not {when!r}")
    execution = current_execution()
    if execution is None:
        time.sleep(max(0.0, (when - datetime.now(when.tzinfo)).total_seconds()))
        return None
    return _waited(execution, lambda _now: when, ("until", when.isoformat()))


def _waited(
    execution: Execution, until_from: Callable[[datetime], datetime], args: tuple[object, ...]
) -> Any:
    if execution.is_async:
        return eager(execution, lambda: _wait(execution, until_from, args), "sleep()")
    _wait(execution, until_from, args)
    return None


def _wait(
    execution: Execution, until_from: Callable[[datetime], datetime], args: tuple[object, ...]
) -> None:
    seq = execution.next_seq()
    digest = serialization.digest(args, {})
    recorded = recorded_for(execution, seq, SLEEP, digest)
    now = execution.runtime.now()
    if recorded is not None:
        until = datetime.fromisoformat(serialization.loads(recorded.result)["until"])
        if until > now and not execution.replay_only:
            raise Suspend(wake_at=until)  # woken early (a duplicate message): wait on
        return
    until = until_from(now)
    record = pseudo_call(
        execution,
        seq,
        SLEEP,
        digest,
        serialization.dumps({"until": until.isoformat()}, what="a sleep"),
    )
    if until <= now:  # nothing to wait for; the position is still taken
        write_pseudo_call(execution, record)
        return
    raise Suspend(calls=(record,), wake_at=until)  # written by the (fenced) suspend
