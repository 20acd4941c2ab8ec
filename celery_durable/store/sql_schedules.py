"""The scheduler's part of SQLStorage: schedules and their runs."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import Connection, bindparam, select
from sqlalchemy import exc as sa_exc

from .base import NewJob
from .schedule_base import ScheduleRecord, ScheduleRun
from .schema import Tables, UTCDateTime
from .statements import new_job_row

_RECORD_COLUMNS = (
    "name",
    "task",
    "args",
    "kwargs",
    "options",
    "spec",
    "timezone",
    "missed",
    "catchup_limit",
    "enabled",
    "paused",
    "source",
    "next_run_at",
    "last_run_at",
    "last_job_id",
    "version",
    "created_at",
    "updated_at",
)


class _Rollback(Exception):
    """Leave the transaction without writing (another beat won the tick)."""


class ScheduleSQL:
    tables: Tables

    def _connect(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError  # SQLStorage provides it

    def _transaction(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError  # SQLStorage provides it

    @cached_property
    def _due(self) -> Any:
        schedules = self.tables.schedules
        return (
            select(schedules)
            .where(schedules.c.next_run_at <= bindparam("p_now", type_=UTCDateTime()))
            .order_by(schedules.c.next_run_at)
            .limit(bindparam("p_limit"))
        )

    def put_schedule(self, record: ScheduleRecord, expected_version: int | None) -> bool:
        schedules = self.tables.schedules
        row = _row(record)
        with self._connect() as conn:
            if expected_version is None:
                try:
                    conn.execute(schedules.insert().values(**row))
                except sa_exc.IntegrityError:
                    return False
                return True
            return bool(
                conn.execute(
                    schedules.update()
                    .where(
                        schedules.c.name == record.name,
                        schedules.c.version == expected_version,
                    )
                    .values(**row)
                ).rowcount
            )

    def get_schedule(self, name: str) -> ScheduleRecord | None:
        schedules = self.tables.schedules
        with self._connect() as conn:
            row = conn.execute(select(schedules).where(schedules.c.name == name)).first()
        return None if row is None else _record(row)

    def list_schedules(self) -> list[ScheduleRecord]:
        schedules = self.tables.schedules
        with self._connect() as conn:
            return [_record(r) for r in conn.execute(select(schedules).order_by(schedules.c.name))]

    def delete_schedule(self, name: str) -> bool:
        schedules, runs = self.tables.schedules, self.tables.schedule_runs
        with self._transaction() as conn:
            conn.execute(runs.delete().where(runs.c.schedule == name))
            return bool(conn.execute(schedules.delete().where(schedules.c.name == name)).rowcount)

    def due_schedules(self, now: datetime, limit: int) -> list[ScheduleRecord]:
        with self._connect() as conn:
            return [_record(r) for r in conn.execute(self._due, {"p_now": now, "p_limit": limit})]

    def fire_schedule(
        self,
        seen: ScheduleRecord,
        runs: Sequence[ScheduleRun],
        next_run_at: datetime | None,
        last_job_id: str | None,
        jobs: Sequence[NewJob],
        now: datetime,
    ) -> bool:
        schedules = self.tables.schedules
        try:
            with self._transaction() as conn:
                advanced = conn.execute(
                    schedules.update()
                    .where(
                        schedules.c.name == seen.name,
                        schedules.c.version == seen.version,
                    )
                    .values(
                        next_run_at=next_run_at,
                        version=seen.version + 1,
                        last_run_at=max((r.nominal_at for r in runs), default=None)
                        or seen.last_run_at,
                        last_job_id=last_job_id or seen.last_job_id,
                    )
                ).rowcount
                if advanced != 1:
                    raise _Rollback()
                if runs:
                    conn.execute(self.tables.schedule_runs.insert(), [_run_row(r) for r in runs])
                if jobs:
                    conn.execute(self.tables.jobs.insert(), [new_job_row(j) for j in jobs])
        except (_Rollback, sa_exc.IntegrityError):
            return False
        return True

    def mark_published(self, schedule: str, nominal_at: datetime) -> None:
        runs = self.tables.schedule_runs
        with self._connect() as conn:
            conn.execute(
                runs.update()
                .where(
                    runs.c.schedule == schedule,
                    runs.c.nominal_at == nominal_at,
                )
                .values(published=True)
            )

    def unpublished_runs(self, before: datetime, limit: int) -> list[ScheduleRun]:
        runs = self.tables.schedule_runs
        with self._connect() as conn:
            return [
                _run(r)
                for r in conn.execute(
                    select(runs)
                    .where(runs.c.published.is_(False), runs.c.recorded_at < before)
                    .order_by(runs.c.recorded_at)
                    .limit(limit)
                )
            ]

    def schedule_runs(self, name: str, limit: int) -> list[ScheduleRun]:
        runs = self.tables.schedule_runs
        with self._connect() as conn:
            return [
                _run(r)
                for r in conn.execute(
                    select(runs)
                    .where(runs.c.schedule == name)
                    .order_by(runs.c.nominal_at.desc())
                    .limit(limit)
                )
            ]


def _row(record: ScheduleRecord) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in _RECORD_COLUMNS}
    row["is_unique"] = record.unique
    return row


def _record(row: Any) -> ScheduleRecord:
    m = row._mapping
    return ScheduleRecord(
        unique=bool(m["is_unique"]), **{name: m[name] for name in _RECORD_COLUMNS}
    )


def _run_row(run: ScheduleRun) -> dict[str, Any]:
    return {
        "schedule": run.schedule,
        "nominal_at": run.nominal_at,
        "job_id": run.job_id,
        "outcome": run.outcome,
        "reason": run.reason,
        "recorded_at": run.recorded_at,
        "lateness": run.lateness,
        "published": run.published,
    }


def _run(row: Any) -> ScheduleRun:
    m = row._mapping
    return ScheduleRun(
        schedule=m["schedule"],
        nominal_at=m["nominal_at"],
        job_id=m["job_id"],
        outcome=m["outcome"],
        reason=m["reason"],
        recorded_at=m["recorded_at"],
        lateness=float(m["lateness"]),
        published=bool(m["published"]),
    )
