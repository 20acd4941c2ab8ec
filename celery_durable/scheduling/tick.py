"""The tick: fire the due schedules, exactly once per nominal tick across every beat.

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
from collections import deque
from datetime import datetime, timedelta

from .. import serialization
from ..engine.enqueue import broker_priority
from ..engine.runtime import Runtime
from ..engine.task import DurableTask
from ..store.protocol import ScheduleStorage
from ..store.records import ACTIVE_STATES, NewJob, ScheduleRecord, ScheduleRun
from .definition import run_job_id
from .kinds import Every, Schedule, schedule_from_dict

logger = logging.getLogger(__name__)

DUE_BATCH = 100


REPUBLISH_AFTER = timedelta(seconds=10)


class Ticker:
    """One beat's view of the schedules table, for one tick."""

    def __init__(self, runtime: Runtime, store: ScheduleStorage) -> None:
        self.runtime = runtime
        self.store = store

    def tick(self) -> int:
        """Fire every due tick (and republish what a dead beat left unpublished);
        returns how many ticks this process fired."""
        now, fired = self.runtime.now(), 0
        for run in self.store.unpublished_runs(now - REPUBLISH_AFTER, DUE_BATCH):
            record = self.store.get_schedule(run.schedule)
            if record is not None:
                logger.warning(
                    "schedule %s: republishing the run of %s",
                    run.schedule,
                    run.nominal_at.isoformat(),
                )
                self.publish(record, run)
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
        jobs = self.jobs_for(record, fired, now)
        if not self.store.fire_schedule(
            record, runs, upcoming, fired[-1].job_id if fired else None, jobs, now
        ):
            return 0  # another beat fired these ticks
        for run in fired:
            self.publish(record, run)
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
        job = self.runtime.storage.get_job(record.last_job_id)
        return job is not None and job.state in ACTIVE_STATES

    def jobs_for(
        self, record: ScheduleRecord, runs: list[ScheduleRun], now: datetime
    ) -> list[NewJob]:
        task = self.runtime.app.tasks.get(record.task)
        if not isinstance(task, DurableTask):
            return []  # a plain Celery task has no row: its message is all there is
        options = serialization.loads(record.options)
        # If this beat dies between the commit and the publish, and no other beat is
        # left to republish the run, any worker's sweeper sends the job soon after.
        settings = self.runtime.settings
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

    def publish(self, record: ScheduleRecord, run: ScheduleRun) -> None:
        options = serialization.loads(record.options)
        if options.get("priority") is not None:
            options["priority"] = broker_priority(self.runtime.app, options["priority"])
        try:
            self.runtime.app.send_task(
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
