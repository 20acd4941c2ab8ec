"""Messages to a running job: ``durable.send(job_id, topic, payload)`` from anywhere,
``receive(topic, timeout=None)`` in the job's body (Temporal's signals, DBOS's send and
recv).

A message is a row until the body takes it; taking it and recording it as the call's
result are one transaction, so a replay returns the same payload and no message is
taken twice. A body waiting for a message suspends (no worker slot, no broker message);
``send`` and the suspend serialise on the job's row, so a message sent at any moment
either is seen by the suspend or wakes the job.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from .. import serialization
from ..errors import (
    interrupt_on_storage_error,
)
from ..identifiers import check_name
from .context import Execution, require_execution
from .loop import eager
from .matching import EndOfHistory, recorded_for
from .recorded_values import pseudo_call, recorded_value, write_pseudo_call
from .suspend import Suspend

RECEIVE = "celery_durable.receive"


def receive(topic: str, timeout: float | timedelta | None = None) -> Any:
    """The next message sent to this job on ``topic``, waiting for it without holding a
    worker; None if ``timeout`` (seconds or a timedelta, counted from the first time the
    job got here) passes first. Messages on a topic are taken in the order sent.

    In an ``async def`` body: ``await receive(...)``."""
    _check_topic(topic)
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    if seconds is not None and (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise ValueError(
            f"receive() takes a timeout in seconds >= 0 or a timedelta, not {timeout!r}"
        )
    execution = require_execution("receive()")
    if execution.is_async:
        return eager(execution, lambda: _receive(execution, topic, seconds), "receive()")
    return _receive(execution, topic, seconds)


def _receive(execution: Execution, topic: str, seconds: float | None) -> Any:
    runtime = execution.runtime
    # recorded: the deadline is the same on every replay
    started = datetime.fromisoformat(recorded_value("now", (), lambda: runtime.now().isoformat()))
    seq = execution.next_seq()
    digest = serialization.digest((topic,), {})
    recorded = recorded_for(execution, seq, RECEIVE, digest)
    if recorded is not None:
        return serialization.loads(recorded.result)
    if execution.replay_only:
        raise EndOfHistory(seq, RECEIVE)
    record = pseudo_call(execution, seq, RECEIVE, digest, "null")
    with interrupt_on_storage_error(execution.root_id):  # fenced: a lost lease raises
        payload = runtime.storage.take_message(execution.lease, topic, record)
    if payload is not None:
        return serialization.loads(payload)
    deadline = None if seconds is None else started + timedelta(seconds=seconds)
    if deadline is not None and record.finished_at >= deadline:
        write_pseudo_call(execution, record)  # timed out: None, recorded
        return None
    raise Suspend(wake_at=deadline, topic=topic)


def _check_topic(topic: object) -> None:
    check_name(topic, "a message topic")
