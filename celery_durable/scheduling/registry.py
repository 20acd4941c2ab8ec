"""Schedules in the database: registration in code and the management API.

``durable.schedule(...)`` registers a schedule in code; beat syncs those into the
``schedules`` table when it starts (entries removed from code are disabled, not left
firing). ``durable.schedules`` adds, changes, pauses, resumes, deletes and triggers
schedules at runtime; a running beat sees the change at its next tick (``tick``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from celery import Task

from .. import serialization
from ..engine.runtime import Runtime
from ..errors import ConfigurationError, ScheduleNotFound
from ..identifiers import check_key
from ..store.protocol import ScheduleStorage, latest_schedule_runs
from ..store.records import ScheduleRecord, ScheduleRun
from .definition import (
    ENQUEUE_OPTIONS,
    Definition,
    default_timezone,
    definition_from,
    run_job_id,
    same_definition,
    task_name,
)
from .kinds import Schedule, schedule_from_dict
from .tick import Ticker

logger = logging.getLogger(__name__)


class Schedules:
    """``durable.schedules``: the management API and the tick beat runs."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._code: dict[str, Definition] = {}

    @property
    def _zone(self) -> str:
        return default_timezone(self.runtime.app)  # read each time: conf may change

    @property
    def store(self) -> ScheduleStorage:
        storage = self.runtime.storage
        if not isinstance(storage, ScheduleStorage):
            raise ConfigurationError(f"{type(storage).__name__} does not store schedules")
        return storage

    # -- registration in code ---------------------------------------------------------------

    def register(self, definition: Definition) -> None:
        known = self._code.get(definition.name)
        if known is not None and known != definition:
            raise ConfigurationError(
                f"schedule {definition.name!r} is defined twice, differently: "
                f"{known.when.describe()} and {definition.when.describe()}"
            )
        self._code[definition.name] = definition

    def sync(self) -> dict[str, list[str]]:
        """Write the code's schedules into the database: new ones added, changed ones
        updated, ones no longer in code disabled. Returns what changed, by kind."""
        store, now = self.store, self.runtime.now()
        changes: dict[str, list[str]] = {"added": [], "updated": [], "disabled": []}
        for name, definition in self._code.items():
            existing = store.get_schedule(name)
            fresh = definition.record(self._zone, now, source="code", existing=existing)
            if existing is not None and existing.enabled and same_definition(existing, fresh):
                continue
            # Several beats may start at once: every write is a compare-and-set, and
            # the beat that loses leaves the winner's row (and its tick grid) alone.
            if store.put_schedule(fresh, existing.version if existing else None):
                changes["updated" if existing else "added"].append(name)
        removed = [
            r
            for r in store.list_schedules()
            if r.source == "code" and r.enabled and r.name not in self._code
        ]
        for record in removed:
            if store.put_schedule(
                replace(
                    record,
                    enabled=False,
                    next_run_at=None,
                    version=record.version + 1,
                    updated_at=now,
                ),
                record.version,
            ):
                changes["disabled"].append(record.name)
        return changes

    # -- the management API -------------------------------------------------------------------

    def add(self, name: str, task: Task | str, when: Schedule, **options: Any) -> ScheduleRecord:
        """Add a schedule at runtime (source "api"); a running beat picks it up."""
        definition = definition_from(name, task, when, options)
        record = definition.record(self._zone, self.runtime.now(), source="api")
        if not self.store.put_schedule(record, None):
            raise ConfigurationError(f"schedule {name!r} exists; use change() or delete()")
        return record

    def change(self, name: str, *, when: Schedule | None = None, **options: Any) -> ScheduleRecord:
        """Change a schedule's timing or options; the next tick is computed anew."""
        existing = self.get(name)
        current = Definition(
            name=name,
            task=existing.task,
            when=schedule_from_dict(serialization.loads(existing.spec)),
            args=tuple(serialization.loads(existing.args)),
            kwargs=serialization.loads(existing.kwargs),
            options=serialization.loads(existing.options),
            unique=existing.unique,
            missed=existing.missed,
            catchup_limit=existing.catchup_limit,
            timezone=existing.timezone,
        )
        updates: dict[str, Any] = {"when": when} if when else {}
        if options.get("task") is not None:
            updates["task"] = task_name(options.pop("task"))
        enqueue = {k: options.pop(k) for k in list(options) if k in ENQUEUE_OPTIONS}
        if enqueue:
            updates["options"] = {**(current.options or {}), **enqueue}
        if "args" in options:
            updates["args"] = tuple(options.pop("args"))
        unknown = set(options) - {"kwargs", "unique", "missed", "catchup_limit", "timezone"}
        if unknown:
            raise ConfigurationError(
                f"schedule {name!r}: unknown option(s) {', '.join(sorted(unknown))}"
            )
        changed = replace(current, **updates, **options)
        record = changed.record(
            self._zone,
            self.runtime.now(),
            source=existing.source,
            existing=existing,
        )
        return self._replace(existing, record)

    def pause(self, name: str) -> ScheduleRecord:
        existing = self.get(name)
        return self._replace(
            existing,
            replace(
                existing,
                paused=True,
                next_run_at=None,
                version=existing.version + 1,
                updated_at=self.runtime.now(),
            ),
        )

    def resume(self, name: str) -> ScheduleRecord:
        """Resume from now: ticks missed while paused are not run."""
        existing, now = self.get(name), self.runtime.now()
        when = schedule_from_dict(serialization.loads(existing.spec))
        return self._replace(
            existing,
            replace(
                existing,
                paused=False,
                version=existing.version + 1,
                next_run_at=when.next_after(now, existing.timezone) if existing.enabled else None,
                updated_at=now,
            ),
        )

    def _replace(self, existing: ScheduleRecord, record: ScheduleRecord) -> ScheduleRecord:
        if not self.store.put_schedule(record, existing.version):
            raise ConfigurationError(
                f"schedule {existing.name!r} changed meanwhile (a beat fired it, or "
                f"another change); read it again and retry"
            )
        return record

    def delete(self, name: str) -> None:
        if not self.store.delete_schedule(check_key(name, "a schedule name")):
            raise ScheduleNotFound(name)

    def trigger(self, name: str) -> str:
        """Run the schedule's task now, once, outside its timing; returns the job id."""
        existing, now = self.get(name), self.runtime.now()
        run = ScheduleRun(
            schedule=name,
            nominal_at=now,
            job_id=run_job_id(name, now),
            outcome="fired",
            reason="triggered",
            recorded_at=now,
            lateness=0.0,
            published=False,
        )
        jobs = Ticker(self.runtime, self.store).jobs_for(existing, [run], now)
        if not self.store.fire_schedule(
            existing, [run], existing.next_run_at, run.job_id, jobs, now
        ):
            raise ConfigurationError(f"schedule {name!r} changed meanwhile; try again")
        Ticker(self.runtime, self.store).publish(existing, run)
        return run.job_id or ""

    def get(self, name: str) -> ScheduleRecord:
        record = self.store.get_schedule(check_key(name, "a schedule name"))
        if record is None:
            raise ScheduleNotFound(name)
        return record

    def all(self) -> list[ScheduleRecord]:
        """Every schedule, by name (disabled and paused ones too)."""
        return self.store.list_schedules()

    def next_due(self) -> datetime | None:
        """The earliest next tick of any active schedule."""
        upcoming = [
            r.next_run_at
            for r in self.store.due_schedules(self.runtime.now() + timedelta(days=3650), 1)
        ]
        return upcoming[0] if upcoming else None

    def latest_runs(self) -> dict[str, ScheduleRun]:
        """Each schedule's last run (fired or skipped), by name; one that never ran is
        absent. One query on the built-in stores (``latest_schedule_runs``, which a store
        of your own may leave out: then one query per schedule)."""
        return latest_schedule_runs(self.store)

    def runs(self, name: str, limit: int = 50) -> list[ScheduleRun]:
        """Fired and skipped ticks, newest first, with job ids and lateness."""
        return self.store.schedule_runs(check_key(name, "a schedule name"), limit)

    # -- the tick -----------------------------------------------------------------------------

    def tick(self) -> int:
        """Fire every due tick (and republish what a dead beat left unpublished);
        returns how many ticks this process fired."""
        return Ticker(self.runtime, self.store).tick()
