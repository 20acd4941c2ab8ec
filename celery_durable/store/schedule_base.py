"""Records and the storage protocol of the database scheduler (tables ``schedules`` and
``schedule_runs``); both stores implement it beside ``Storage``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from .base import NewJob


@dataclass(frozen=True)
class ScheduleRecord:
    name: str
    task: str
    args: str
    kwargs: str
    options: str
    """Enqueue options as JSON: queue, priority, ..."""
    spec: str
    """The schedule's definition as JSON (``Schedule.to_dict()``)."""
    timezone: str
    unique: bool
    """Skip a tick while the previous run is still pending or running."""
    missed: str
    """What a beat that was down does with ticks it missed: once, skip or all."""
    catchup_limit: int
    enabled: bool
    """False once the schedule was removed from code (kept, with its history)."""
    paused: bool
    source: str
    """"code" (synced from ``durable.schedule(...)``) or "api"."""
    next_run_at: datetime | None
    """The next nominal tick; None while paused or disabled (so the due index skips it)."""
    last_run_at: datetime | None
    last_job_id: str | None
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ScheduleRun:
    """One nominal tick of a schedule: fired (with the job id) or skipped (why)."""

    schedule: str
    nominal_at: datetime
    job_id: str | None
    outcome: str
    reason: str | None
    recorded_at: datetime
    lateness: float
    """Seconds between the nominal tick and when it was recorded."""
    published: bool


@runtime_checkable
class ScheduleStorage(Protocol):
    def put_schedule(self, record: ScheduleRecord, expected_version: int | None) -> bool:
        """Insert a new schedule (``expected_version`` None: False if the name exists), or
        replace one still at ``expected_version`` (False if it changed meanwhile)."""

    def get_schedule(self, name: str) -> ScheduleRecord | None: ...

    def list_schedules(self) -> list[ScheduleRecord]: ...

    def delete_schedule(self, name: str) -> bool:
        """Delete a schedule and its run history; False if there was none."""

    def due_schedules(self, now: datetime, limit: int) -> list[ScheduleRecord]:
        """Schedules whose next tick is due, oldest first, through an index."""

    def fire_schedule(
        self,
        seen: ScheduleRecord,
        runs: Sequence[ScheduleRun],
        next_run_at: datetime | None,
        last_job_id: str | None,
        jobs: Sequence[NewJob],
        now: datetime,
    ) -> bool:
        """Atomically: advance the schedule if it is still as ``seen`` (compare-and-set
        on its version), record the runs (unique per schedule and nominal tick) and
        create the jobs' rows. False, with nothing written, if another beat did it."""

    def mark_published(self, schedule: str, nominal_at: datetime) -> None: ...

    def unpublished_runs(self, before: datetime, limit: int) -> list[ScheduleRun]:
        """Fired runs recorded before ``before`` whose message may not have been sent."""

    def schedule_runs(self, name: str, limit: int) -> list[ScheduleRun]:
        """A schedule's runs, newest first."""
