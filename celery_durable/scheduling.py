"""Schedules in the database: registration in code, the management API, and the tick.

``durable.schedule(...)`` registers a schedule in code; beat syncs those into the
``schedules`` table when it starts (entries removed from code are disabled, not left
firing). ``durable.schedules`` adds, changes, pauses, resumes, deletes and triggers
schedules at runtime; a running beat sees the change at its next tick.

A tick reads only due rows (``next_run_at <= now``, indexed). Firing a tick is one
transaction: a compare-and-set that advances ``next_run_at`` from the nominal tick, a
``schedule_runs`` row unique per (schedule, nominal tick), and for a durable task the
job's row under an id derived from both. Several beats may tick at once: one wins each
tick, the others write nothing. The message is published after the commit; a beat that
dies in between leaves the run marked unpublished and the next tick of any beat
publishes it again under the same id, which a durable task's claim deduplicates.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery import Task

from . import serialization
from .errors import ConfigurationError, ScheduleNotFound
from .identifiers import check_key, check_name
from .schedules import Every, Schedule, schedule_from_dict, zone
from .store.base import ACTIVE_STATES, NewJob
from .store.schedule_base import ScheduleRecord, ScheduleRun, ScheduleStorage

if TYPE_CHECKING:
    from .app import Durable

logger = logging.getLogger(__name__)
MISSED = ("once", "skip", "all")
_NAMESPACE = uuid.UUID("6f1c3a52-3f0e-4d39-9a53-5e0f6c1d2b7a")
DUE_BATCH = 100
REPUBLISH_AFTER = timedelta(seconds=10)
ENQUEUE_OPTIONS = (
    "queue",
    "priority",
    "routing_key",
    "exchange",
    "expires",
    "time_limit",
    "soft_time_limit",
    "headers",
)


@dataclass(frozen=True)
class Definition:
    """A schedule as code or the API gives it, before it becomes a row."""

    name: str
    task: str
    when: Schedule
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    unique: bool = False
    missed: str = "once"
    catchup_limit: int = 10
    timezone: str | None = None

    def __post_init__(self) -> None:
        check_key(self.name, "a schedule name")
        check_name(self.task, f"schedule {self.name!r}: the task name")
        if not isinstance(self.when, Schedule):
            raise ConfigurationError(
                f"schedule {self.name!r}: when must be every(), daily(), weekly() or "
                f"cron(), got {self.when!r}"
            )
        if self.missed not in MISSED:
            raise ConfigurationError(
                f"schedule {self.name!r}: missed must be one of "
                f"{', '.join(MISSED)}, got {self.missed!r}"
            )
        if (
            isinstance(self.catchup_limit, bool)
            or not isinstance(self.catchup_limit, int)
            or self.catchup_limit < 1
        ):
            raise ConfigurationError(f"schedule {self.name!r}: catchup_limit must be >= 1")
        unknown = set(self.options or {}) - set(ENQUEUE_OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"schedule {self.name!r}: unknown option(s) {', '.join(sorted(unknown))}"
            )
        if self.timezone is not None:
            zone(self.timezone)

    def record(
        self,
        durable: Durable,
        now: datetime,
        *,
        source: str,
        existing: ScheduleRecord | None = None,
    ) -> ScheduleRecord:
        what = f"schedule {self.name!r}"
        tz = self.timezone or self.when.timezone or default_timezone(durable)
        spec = serialization.dumps(self.when.to_dict(), what=f"{what} definition")
        return ScheduleRecord(
            name=self.name,
            task=self.task,
            args=serialization.dumps(list(self.args), what=f"{what} args"),
            kwargs=serialization.dumps(dict(self.kwargs or {}), what=f"{what} kwargs"),
            options=serialization.dumps(dict(self.options or {}), what=f"{what} options"),
            spec=spec,
            timezone=tz,
            unique=self.unique,
            missed=self.missed,
            catchup_limit=self.catchup_limit,
            enabled=True,
            paused=existing.paused if existing else False,
            source=source,
            next_run_at=None if existing and existing.paused else self.when.next_after(now, tz),
            last_run_at=existing.last_run_at if existing else None,
            last_job_id=existing.last_job_id if existing else None,
            version=existing.version + 1 if existing else 1,
            created_at=existing.created_at if existing else now,
            updated_at=now,
        )


def default_timezone(durable: Durable) -> str:
    return str(durable.app.conf.timezone or "UTC")


def same_definition(a: ScheduleRecord, b: ScheduleRecord) -> bool:
    fields = (
        "task",
        "args",
        "kwargs",
        "options",
        "spec",
        "timezone",
        "unique",
        "missed",
        "catchup_limit",
    )
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def run_job_id(name: str, nominal: datetime) -> str:
    """The job id of one nominal tick: the same in every beat, so it cannot double."""
    return str(uuid.uuid5(_NAMESPACE, f"{name}|{nominal.isoformat()}"))


class Schedules:
    """``durable.schedules``: the management API and the tick beat runs."""

    def __init__(self, durable: Durable) -> None:
        self.durable = durable
        self._code: dict[str, Definition] = {}

    @property
    def store(self) -> ScheduleStorage:
        storage = self.durable.storage
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
        store, now = self.store, self.durable.now()
        changes: dict[str, list[str]] = {"added": [], "updated": [], "disabled": []}
        for name, definition in self._code.items():
            existing = store.get_schedule(name)
            fresh = definition.record(self.durable, now, source="code", existing=existing)
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

    def add(self, name: str, task: Task | str, when: Schedule, **options: Any) -> ScheduleRecord:  # type: ignore[type-arg]
        """Add a schedule at runtime (source "api"); a running beat picks it up."""
        definition = _definition(name, task, when, options)
        record = definition.record(self.durable, self.durable.now(), source="api")
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
            updates["task"] = _task_name(options.pop("task"))
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
            self.durable, self.durable.now(), source=existing.source, existing=existing
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
                updated_at=self.durable.now(),
            ),
        )

    def resume(self, name: str) -> ScheduleRecord:
        """Resume from now: ticks missed while paused are not run."""
        existing, now = self.get(name), self.durable.now()
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
        existing, now = self.get(name), self.durable.now()
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
        jobs = self._jobs_for(existing, [run], now)
        if not self.store.fire_schedule(
            existing, [run], existing.next_run_at, run.job_id, jobs, now
        ):
            raise ConfigurationError(f"schedule {name!r} changed meanwhile; try again")
        self._publish(existing, run)
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
            for r in self.store.due_schedules(self.durable.now() + timedelta(days=3650), 1)
        ]
        return upcoming[0] if upcoming else None

    def runs(self, name: str, limit: int = 50) -> list[ScheduleRun]:
        """Fired and skipped ticks, newest first, with job ids and lateness."""
        return self.store.schedule_runs(check_key(name, "a schedule name"), limit)

    # -- the tick -----------------------------------------------------------------------------

    def tick(self) -> int:
        """Fire every due tick (and republish what a dead beat left unpublished);
        returns how many ticks this process fired."""
        now, fired = self.durable.now(), 0
        for run in self.store.unpublished_runs(now - REPUBLISH_AFTER, DUE_BATCH):
            record = self.store.get_schedule(run.schedule)
            if record is not None:
                logger.warning(
                    "schedule %s: republishing the run of %s",
                    run.schedule,
                    run.nominal_at.isoformat(),
                )
                self._publish(record, run)
        for record in self.store.due_schedules(now, DUE_BATCH):
            fired += self._fire(record, now)
        return fired

    def _fire(self, record: ScheduleRecord, now: datetime) -> int:
        when = schedule_from_dict(serialization.loads(record.spec))
        due, upcoming = _due_ticks(when, record, now)
        runs, still_running = [], record.unique and self._previous_active(record)
        for index, nominal in enumerate(due):
            late = (now - nominal).total_seconds()
            last = index == len(due) - 1
            if still_running:
                outcome, reason = "skipped", "previous run still active"
            elif record.missed == "all" or last:
                outcome, reason = "fired", None
            else:
                outcome, reason = "skipped", f"missed (policy {record.missed})"
            if record.missed == "skip" and outcome == "fired" and late > _grace(when):
                outcome, reason = "skipped", "missed (policy skip)"
            runs.append(
                ScheduleRun(
                    schedule=record.name,
                    nominal_at=nominal,
                    job_id=run_job_id(record.name, nominal) if outcome == "fired" else None,
                    outcome=outcome,
                    reason=reason,
                    recorded_at=now,
                    lateness=late,
                    published=outcome != "fired",
                )
            )
            if outcome == "fired" and record.unique:
                still_running = True  # one run at a time, even when catching up
        fired = [r for r in runs if r.outcome == "fired"]
        jobs = self._jobs_for(record, fired, now)
        if not self.store.fire_schedule(
            record, runs, upcoming, fired[-1].job_id if fired else None, jobs, now
        ):
            return 0  # another beat fired these ticks
        for run in fired:
            self._publish(record, run)
        for run in runs:
            if run.outcome == "skipped":
                logger.info(
                    "schedule %s: skipped %s (%s)",
                    record.name,
                    run.nominal_at.isoformat(),
                    run.reason,
                )
        return len(fired)

    def _previous_active(self, record: ScheduleRecord) -> bool:
        if not record.last_job_id:
            return False
        job = self.durable.storage.get_job(record.last_job_id)
        return job is not None and job.state in ACTIVE_STATES

    def _jobs_for(
        self, record: ScheduleRecord, runs: list[ScheduleRun], now: datetime
    ) -> list[NewJob]:
        from .task import DurableTask

        task = self.durable.app.tasks.get(record.task)
        if not isinstance(task, DurableTask):
            return []  # a plain Celery task has no row: its message is all there is
        options = serialization.loads(record.options)
        # If this beat dies between the commit and the publish, and no other beat is
        # left to republish the run, any worker's sweeper sends the job soon after.
        settings = self.durable.settings
        deliver_by = (
            now
            + REPUBLISH_AFTER
            + timedelta(seconds=settings.lease_seconds + settings.sweep_interval)
        )
        return [
            NewJob(
                id=run.job_id or "",
                task=record.task,
                args=record.args,
                kwargs=record.kwargs,
                queue=options.get("queue"),
                priority=options.get("priority"),
                created_at=now,
                deliver_by=deliver_by,
            )
            for run in runs
        ]

    def _publish(self, record: ScheduleRecord, run: ScheduleRun) -> None:
        from .enqueue import broker_priority

        options = serialization.loads(record.options)
        if options.get("priority") is not None:
            options["priority"] = broker_priority(self.durable.app, options["priority"])
        try:
            self.durable.app.send_task(
                record.task,
                args=serialization.loads(record.args),
                kwargs=serialization.loads(record.kwargs),
                task_id=run.job_id,
                **options,
            )
        except Exception:
            logger.exception(
                "schedule %s: could not publish the run of %s; the next tick retries",
                record.name,
                run.nominal_at.isoformat(),
            )
            return
        self.store.mark_published(record.name, run.nominal_at)


def _due_ticks(
    when: Schedule, record: ScheduleRecord, now: datetime
) -> tuple[list[datetime], datetime]:
    """The most recent ``catchup_limit`` nominal ticks due by ``now``, and the next one
    after them. After a long outage the grid is skipped over, not walked tick by tick."""
    tick = record.next_run_at
    assert tick is not None
    due: deque[datetime] = deque(maxlen=record.catchup_limit)
    steps = 0
    while tick <= now:
        due.append(tick)
        tick = when.next_after(tick, record.timezone)
        steps += 1
        if steps == 1000 and tick <= now:
            tick = _after(when, tick, now, record.timezone)
    return list(due), tick


def _after(when: Schedule, tick: datetime, now: datetime, tz: str) -> datetime:
    if isinstance(when, Every):  # stay on the grid of the first tick: no drift
        steps = int((now - tick).total_seconds() // when.seconds) + 1
        return tick + timedelta(seconds=when.seconds * steps)
    return when.next_after(now, tz)


def _grace(when: Schedule) -> float:
    """How late a tick may be and still count as on time for ``missed="skip"``."""
    if isinstance(when, Every):
        return min(60.0, when.seconds / 2)
    return 60.0


def _task_name(task: Any) -> str:
    name = getattr(task, "name", task)
    if not isinstance(name, str):
        raise ConfigurationError(f"a schedule needs a task or a task name, got {task!r}")
    return check_name(name, "a schedule's task name")


def _definition(name: str, task: Any, when: Schedule, options: dict[str, Any]) -> Definition:
    enqueue = {k: options.pop(k) for k in list(options) if k in ENQUEUE_OPTIONS}
    allowed = {"args", "kwargs", "unique", "missed", "catchup_limit", "timezone"}
    unknown = set(options) - allowed
    if unknown:
        raise ConfigurationError(
            f"schedule {name!r}: unknown option(s) {', '.join(sorted(unknown))}"
        )
    args = options.pop("args", ())
    return Definition(
        name=name,
        task=_task_name(task),
        when=when,
        args=tuple(args),
        options=enqueue or None,
        **options,
    )
