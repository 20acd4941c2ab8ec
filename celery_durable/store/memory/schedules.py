"""The in-memory store's schedules and their runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from ..records import NewJob, ScheduleRecord, ScheduleRun, last_run_after
from .state import MemoryState


class MemorySchedules(MemoryState):
    def put_schedule(self, record: ScheduleRecord, expected_version: int | None) -> bool:
        with self._lock:
            current = self._schedules.get(record.name)
            if (current is None) != (expected_version is None) or (
                current is not None and current.version != expected_version
            ):
                return False
            self._schedules[record.name] = record
            return True

    def get_schedule(self, name: str) -> ScheduleRecord | None:
        with self._lock:
            return self._schedules.get(name)

    def list_schedules(self) -> list[ScheduleRecord]:
        with self._lock:
            return sorted(self._schedules.values(), key=lambda s: s.name)

    def delete_schedule(self, name: str) -> bool:
        with self._lock:
            self._runs = {k: r for k, r in self._runs.items() if k[0] != name}
            return self._schedules.pop(name, None) is not None

    def due_schedules(self, now: datetime, limit: int) -> list[ScheduleRecord]:
        with self._lock:
            due = [
                s
                for s in self._schedules.values()
                if s.next_run_at is not None and s.next_run_at <= now
            ]
        return sorted(due, key=lambda s: s.next_run_at or now)[:limit]

    def fire_schedule(
        self,
        seen: ScheduleRecord,
        runs: Sequence[ScheduleRun],
        next_run_at: datetime | None,
        last_job_id: str | None,
        jobs: Sequence[NewJob],
        now: datetime,
    ) -> bool:
        with self._lock:
            current = self._schedules.get(seen.name)
            if current is None or current.version != seen.version:
                return False
            if any((r.schedule, r.nominal_at) in self._runs for r in runs) or any(
                j.id in self._jobs for j in jobs
            ):
                return False
            for run in runs:
                self._runs[(run.schedule, run.nominal_at)] = run
            for job in jobs:
                self._jobs[job.id] = job.as_record()
            last_at, last_job = last_run_after(
                runs, current.last_run_at, current.last_job_id, last_job_id
            )
            self._schedules[seen.name] = replace(
                current,
                next_run_at=next_run_at,
                version=current.version + 1,
                last_run_at=last_at,
                last_job_id=last_job,
            )
            return True

    def mark_published(self, schedule: str, nominal_at: datetime) -> None:
        with self._lock:
            run = self._runs.get((schedule, nominal_at))
            if run is not None:
                self._runs[(schedule, nominal_at)] = replace(run, published=True)

    def unpublished_runs(self, before: datetime, limit: int) -> list[ScheduleRun]:
        with self._lock:
            runs = [r for r in self._runs.values() if not r.published and r.recorded_at < before]
        return sorted(runs, key=lambda r: r.recorded_at)[:limit]

    def latest_schedule_runs(self) -> dict[str, ScheduleRun]:
        with self._lock:
            keys = [(s.name, s.last_run_at) for s in self._schedules.values() if s.last_run_at]
            return {name: self._runs[(name, at)] for name, at in keys if (name, at) in self._runs}

    def schedule_runs(self, name: str, limit: int) -> list[ScheduleRun]:
        with self._lock:
            runs = [r for r in self._runs.values() if r.schedule == name]
        return sorted(runs, key=lambda r: r.nominal_at, reverse=True)[:limit]
