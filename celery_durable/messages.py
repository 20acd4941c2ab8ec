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
from typing import TYPE_CHECKING, Any

from . import serialization
from .context import require_execution
from .determinism import EndOfHistory, recorded_for
from .errors import (
    JobNotFound,
    JobStateError,
    interrupt_on_storage_error,
)
from .identifiers import check_key, check_name
from .store.base import SendOutcome
from .suspension import Suspend

if TYPE_CHECKING:
    from .app import Durable

RECEIVE = "celery_durable.receive"


def receive(topic: str, timeout: float | timedelta | None = None) -> Any:
    """The next message sent to this job on ``topic``, waiting for it without holding a
    worker; None if ``timeout`` (seconds or a timedelta, counted from the first time the
    job got here) passes first. Messages on a topic are taken in the order sent."""
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
    from .values import pseudo_call, recorded_value, write_pseudo_call

    durable = execution.durable
    # recorded: the deadline is the same on every replay
    started = datetime.fromisoformat(recorded_value("now", (), lambda: durable.now().isoformat()))
    seq = execution.next_seq()
    digest = serialization.digest((topic,), {})
    recorded = recorded_for(execution, seq, RECEIVE, digest)
    if recorded is not None:
        return serialization.loads(recorded.result)
    if execution.replay_only:
        raise EndOfHistory(seq, RECEIVE)
    record = pseudo_call(execution, seq, RECEIVE, digest, "null")
    with interrupt_on_storage_error(execution.root_id):  # fenced: a lost lease raises
        payload = durable.storage.take_message(execution.lease, topic, record)
    if payload is not None:
        return serialization.loads(payload)
    deadline = None if seconds is None else started + timedelta(seconds=seconds)
    if deadline is not None and record.finished_at >= deadline:
        write_pseudo_call(execution, record)  # timed out: None, recorded
        return None
    raise Suspend(wake_at=deadline, topic=topic)


def send(
    durable: Durable, job_id: str, topic: str, payload: Any, *, key: str | None = None
) -> bool:
    """Store a message for the job and wake it if it waits on ``topic``. False if a
    message with this ``key`` was sent to the job before (nothing sent again)."""
    _check_topic(topic)
    if key is not None:
        check_key(key, "a message key")
    encoded = serialization.dumps(payload, what=f"the message on {topic!r}")
    now = durable.now()
    outcome = durable.storage.send_message(
        job_id, topic, encoded, key, now, now + timedelta(seconds=durable.settings.lease_seconds)
    )
    if outcome is SendOutcome.MISSING:
        raise JobNotFound(job_id)
    if outcome is SendOutcome.FINISHED:
        job = durable.storage.get_job(job_id)
        raise JobStateError(
            job_id,
            job.state.value if job else "finished",
            "messages can only be sent to a job that has not finished",
        )
    if outcome is SendOutcome.WOKE:
        from .wakeup import publish_woken

        publish_woken(durable, job_id)
    return outcome is not SendOutcome.DUPLICATE


def _check_topic(topic: object) -> None:
    check_name(topic, "a message topic")
