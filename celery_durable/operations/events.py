"""The event stream: ``durable.events()`` yields what every worker on every host did,
read back from the tables the jobs already write (no extra commit on the hot path).

Each event has a ``cursor``; pass the last one back as ``since=`` to resume after it.
Events are ordered by the time their row was written (the workers' clocks: keep them
NTP-synchronised), so one job's events arrive in the order they happened.

    JobStarted        a job's first execution claimed it           (jobs.started_at)
    CheckpointSaved   a call's checkpoint was written               (calls.finished_at)
    CallRetried       a call failed and will be attempted again     (calls, state retrying)
    CallDispatched    a call was sent as a child job; the job waits (calls, dispatched)
    JobRetried        a job's execution failed; the job runs again  (job_errors)
    JobCompleted      the job succeeded                             (jobs.finished_at)
    JobFailed         the job failed for good                       (jobs.finished_at)
    JobDeadLettered   the job went to the dead letters              (jobs.finished_at)
    JobCancelled      the job was cancelled                         (jobs.finished_at)

JobFailed, JobDeadLettered and JobCancelled carry ``detail = {"error": type, "message":
..., "no_retry": bool}``; JobRetried carries the attempt and its error type and message.

Events reflect the rows as they are when read: a reader that is not following live
sees a call that was retried and then succeeded as its final checkpoint only, and a
job's first start only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .. import serialization
from ..engine.runtime import Runtime
from ..errors import ValidationError
from ..store.records import CallState, JobState


@dataclass(frozen=True)
class Event:
    kind: str
    at: datetime
    job_id: str
    task: str | None = None
    detail: dict[str, Any] | None = None

    @property
    def order(self) -> tuple[datetime, str, str, str]:
        detail = self.detail or {}
        # Within one instant a job starts, then saves, then retries or ends.
        return (
            self.at,
            self.job_id,
            f"{_RANK.get(self.kind, 9)}{self.kind}",
            f"{detail.get('position', '')}:{detail.get('attempt', '')}",
        )

    @property
    def cursor(self) -> str:
        """Resume after this event: ``durable.events(since=event.cursor)``."""
        at, job_id, kind, key = self.order
        return "|".join((at.isoformat(), job_id, kind, key))


_RANK = {
    "JobStarted": 0,
    "CheckpointSaved": 1,
    "CallRetried": 1,
    "CallDispatched": 1,
    "JobRetried": 2,
}


_FINISHED = {
    JobState.SUCCEEDED.value: "JobCompleted",
    JobState.FAILED.value: "JobFailed",
    JobState.DEAD.value: "JobDeadLettered",
    JobState.CANCELLED.value: "JobCancelled",
}
_EPOCH = datetime.fromtimestamp(0, timezone.utc)


def read_events(runtime: Runtime, since: str | datetime | None, limit: int = 500) -> list[Event]:
    """The events after ``since`` (a cursor, or a time), oldest first."""
    after = _parse(since)
    storage = runtime.storage
    events = [e for row in storage.changes_since(after[0], limit) for e in _events(row)]
    events = sorted((e for e in events if e.order > after), key=lambda e: e.order)
    return events[:limit]


def follow(
    runtime: Runtime,
    since: str | datetime | None = None,
    *,
    poll_interval: float = 0.5,
    stop: Any = None,
) -> Iterator[Event]:
    """Yield events as they happen, until ``stop()`` returns True (else forever)."""
    cursor: str | datetime | None = since
    while not (stop and stop()):
        batch = read_events(runtime, cursor)
        for event in batch:
            yield event
            cursor = event.cursor
        if not batch:
            time.sleep(poll_interval)


def _parse(since: str | datetime | None) -> tuple[datetime, str, str, str]:
    if since is None:
        return (_EPOCH, "", "", "")
    if isinstance(since, datetime):
        return (_utc(since), "", "", "")
    if not isinstance(since, str):
        raise ValidationError(
            f"since= takes an event's cursor, an ISO time or a datetime, got {since!r}"
        )
    at, job_id, kind, key = [*since.split("|"), "", "", ""][:4]
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        raise ValidationError(
            f"since= {since[:60]!r} is neither an event's cursor nor an ISO time such as "
            f"2026-12-01T09:00:00+00:00"
        ) from None
    return (_utc(when), job_id, kind, key)


def _utc(when: datetime) -> datetime:
    """Times without a zone are UTC, like every time the tables hold."""
    return (
        when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
    )


def _events(row: dict[str, Any]) -> list[Event]:
    kind = row["kind"]
    if kind == "started":
        return [Event("JobStarted", row["started_at"], row["id"], row["task"])]
    if kind == "finished":
        if row["state"] not in _FINISHED:
            return []
        return [
            Event(
                _FINISHED[row["state"]],
                row["finished_at"],
                row["id"],
                row["task"],
                _error_detail(row.get("error")),
            )
        ]
    if kind == "call":
        position = row["position"]
        kind = {
            CallState.RETRYING.value: "CallRetried",
            CallState.DISPATCHED.value: "CallDispatched",
        }.get(row["state"], "CheckpointSaved")
        return [
            Event(
                kind,
                row["finished_at"],
                row["root_id"],
                None,
                {
                    "position": position,
                    "call": row["name"],
                    "attempt": row["attempts"],
                    "state": row["state"],
                },
            )
        ]
    error = serialization.loads(row["error"]) or {}
    return [
        Event(
            "JobRetried",
            row["failed_at"],
            row["job_id"],
            None,
            {
                "attempt": row["execution"],
                "error": error.get("type"),
                "message": error.get("message", ""),
            },
        )
    ]


def _error_detail(text: str | None) -> dict[str, Any] | None:
    """What a failed, dead-lettered or cancelled job's event says about its error."""
    error = serialization.loads(text) if text else None
    if not isinstance(error, dict):
        return None
    return {
        "error": error.get("type"),
        "message": error.get("message", ""),
        "no_retry": bool(error.get("no_retry")),
    }
