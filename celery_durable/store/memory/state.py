"""What every part of the in-memory store shares: its tables, as dicts, and one lock."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ...errors import LeaseLost
from ..records import (
    ACTIVE_STATES,
    CallKey,
    CallRecord,
    JobError,
    JobRecord,
    Lease,
    ScheduleRecord,
    ScheduleRun,
    WorkerRecord,
    call_id,
)


class MemoryState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, JobRecord] = {}
        self._calls: dict[tuple[str, str, int], CallRecord] = {}
        self._errors: dict[str, list[JobError]] = {}
        self._messages: list[dict[str, Any]] = []
        self._workers: dict[str, WorkerRecord] = {}
        self._schedules: dict[str, ScheduleRecord] = {}
        self._runs: dict[tuple[str, datetime], ScheduleRun] = {}
        self._pauses: dict[tuple[str, str | None], tuple[datetime, datetime | None]] = {}
        """(kind, name): (paused_at, resumed_at)."""
        self._gates: dict[tuple[str, str], tuple[float, datetime, datetime]] = {}

    safe_url = "memory://"

    def migrate(self) -> list[int]:
        return []

    def pending_migrations(self) -> list[int]:
        return []

    def _check(self, lease: Lease) -> JobRecord:
        job = self._jobs.get(lease.job_id)
        if job is None or job.lease_owner != lease.owner:
            raise LeaseLost(lease.job_id)
        return job

    def _unchanged(self, seen: JobRecord) -> bool:
        job = self._jobs.get(seen.id)
        return (
            job is not None
            and job.state in ACTIVE_STATES
            and job.lease_owner == seen.lease_owner
            and job.lease_expires_at == seen.lease_expires_at
        )

    def _discard(self, root_id: str, keys: Sequence[CallKey] | None) -> None:
        """Drop these checkpoints (None: all); a message a dropped receive took can be
        taken again."""
        for key in [k for k in self._calls if k[0] == root_id and (keys is None or k[1:] in keys)]:
            del self._calls[key]
        dropped = None if keys is None else {call_id(*key) for key in keys}
        for message in self._messages:
            if (
                message["job_id"] == root_id
                and message["taken_by"] is not None
                and (dropped is None or message["taken_by"] in dropped)
            ):
                message["taken_at"] = message["taken_by"] = None

    def _untaken(self, job_id: str, topic: str) -> dict[str, Any] | None:
        return next(
            (
                m
                for m in self._messages
                if m["job_id"] == job_id and m["topic"] == topic and m["taken_at"] is None
            ),
            None,
        )


def _live(job: JobRecord, now: datetime) -> bool:
    return job.lease_expires_at is not None and job.lease_expires_at >= now
