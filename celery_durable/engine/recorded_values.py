"""Values a replay must see again: ``now()``, ``uuid4()``, ``random()``, ``randint()``,
and ``patched()`` for changing a workflow while jobs are in flight.

Inside a durable task each is a pseudo-call: it takes a position in the history like
``call()`` and its value is recorded, so a replay gets the same value back (in every
determinism mode). Outside one they behave like the stdlib.
"""

from __future__ import annotations

import random as _random
import uuid as _uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .. import serialization
from ..errors import LeaseLost, interrupt_on_storage_error
from ..store.records import CallRecord, CallState
from .context import current_execution
from .matching import EndOfHistory, recorded_for

if TYPE_CHECKING:
    from .context import Execution

PREFIX = "celery_durable."


def now() -> datetime:
    """The current time (aware, UTC), the same on every replay of this job."""
    return datetime.fromisoformat(
        recorded_value("now", (), lambda: datetime.now(timezone.utc).isoformat())
    )


def uuid4() -> _uuid.UUID:
    """A random UUID, the same on every replay of this job."""
    return _uuid.UUID(recorded_value("uuid4", (), lambda: str(_uuid.uuid4())))


def random() -> float:
    """A float in [0, 1), the same on every replay of this job."""
    return float(recorded_value("random", (), _random.random))


def randint(a: int, b: int) -> int:
    """An integer in [a, b], the same on every replay of this job."""
    return int(recorded_value("randint", (a, b), lambda: _random.randint(a, b)))


def patched(change_id: str) -> bool:
    """True where this code change applies to the running job, False where its history
    was recorded by the code before the change (Temporal's ``patched``)::

        if patched("charge-before-reserve"):
            receipt = call(charge_card, order); call(reserve, order)
        else:                                   # jobs started before the deploy
            call(reserve, order); receipt = call(charge_card, order)

    A job that reaches this point live records a marker and takes the new path; a
    replay finds either the marker (new path) or the old code's call at this position
    (old path, and the position is left to that call). Remove the old branch once no
    job that started before the change is in flight.
    """
    if not change_id or not isinstance(change_id, str):
        raise ValueError("patched() needs a change id (a non-empty string)")
    execution = current_execution()
    if execution is None:
        return True
    marker = f"{PREFIX}patched:{change_id}"
    upcoming = execution.history.get((execution.job_id, execution.seq + 1))
    if upcoming is not None:
        if upcoming.name != marker:
            return False  # recorded before the change: old path, position untouched
        execution.next_seq()
        return True
    if execution.replay_only:
        raise EndOfHistory(execution.seq + 1, marker)
    _record(execution, execution.next_seq(), marker, (), True)
    return True


def recorded_value(kind: str, args: tuple[Any, ...], produce: Callable[[], Any]) -> Any:
    """``produce()``'s value, recorded as pseudo-call ``celery_durable.<kind>`` the first
    time and read back on every replay (outside a durable task: just ``produce()``)."""
    execution = current_execution()
    if execution is None:
        return produce()
    name, seq = PREFIX + kind, execution.next_seq()
    digest = serialization.digest(args, {})
    recorded = recorded_for(execution, seq, name, digest)
    if recorded is not None:
        return serialization.loads(recorded.result)
    value = produce()
    _record(execution, seq, name, args, value)
    return value


def _record(execution: Any, seq: int, name: str, args: tuple[Any, ...], value: Any) -> None:
    write_pseudo_call(
        execution,
        pseudo_call(
            execution,
            seq,
            name,
            serialization.digest(args, {}),
            serialization.dumps(value, what=name),
        ),
    )


def pseudo_call(
    execution: Execution, seq: int, name: str, digest: str, result: str, *, attempts: int = 1
) -> CallRecord:
    """The checkpoint of a pseudo-call (a recorded value, a sleep, a received message,
    where Cancelled was raised): it succeeded at once, now."""
    at = execution.runtime.now()
    return CallRecord(
        job_id=execution.job_id,
        seq=seq,
        root_id=execution.root_id,
        name=name,
        args_digest=digest,
        state=CallState.SUCCEEDED,
        attempts=attempts,
        result=result,
        error=None,
        started_at=at,
        finished_at=at,
    )


def write_pseudo_call(execution: Execution, record: CallRecord) -> None:
    if execution.watch.lost.is_set():
        raise LeaseLost(execution.lease.job_id)
    with interrupt_on_storage_error(execution.root_id):
        execution.runtime.storage.record_call(record, execution.lease)
