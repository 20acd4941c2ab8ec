"""The scheduler's part of the SQL store: schedules and their runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import (
    BindParameter,
    Delete,
    Insert,
    Integer,
    Select,
    Update,
    and_,
    bindparam,
    select,
)
from sqlalchemy import exc as sa_exc

from ..records import NewJob, ScheduleRecord, ScheduleRun, last_run_after
from .connection import SQLConnection
from .dialects import outer_table
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


@dataclass(frozen=True)
class ScheduleStatements:
    insert: Insert
    replace: Update
    get: Select[Any]
    all: Select[Any]
    delete: Delete
    delete_runs: Delete
    due: Select[Any]
    advance: Update
    insert_runs: Insert
    insert_jobs: Insert
    mark_published: Update
    unpublished: Select[Any]
    runs: Select[Any]
    latest_runs: Select[Any]


def schedule_statements(tables: Tables) -> ScheduleStatements:
    schedules, runs = tables.schedules, tables.schedule_runs
    by_name = schedules.c.name == bindparam("p_name")
    at_version = (by_name, schedules.c.version == bindparam("p_version"))
    limit: BindParameter[int] = bindparam("p_limit")
    return ScheduleStatements(
        insert=schedules.insert(),
        replace=schedules.update().where(*at_version),  # SET from the row's keys
        get=select(schedules).where(by_name),
        all=select(schedules).order_by(schedules.c.name),
        delete=schedules.delete().where(by_name),
        delete_runs=runs.delete().where(runs.c.schedule == bindparam("p_name")),
        due=select(schedules)
        .where(schedules.c.next_run_at <= bindparam("p_now", type_=UTCDateTime()))
        .order_by(schedules.c.next_run_at)
        .limit(limit),
        advance=schedules.update()
        .where(*at_version)
        .values(
            next_run_at=bindparam("p_next", type_=UTCDateTime()),
            version=bindparam("p_version", type_=Integer()) + 1,
            last_run_at=bindparam("p_last_run", type_=UTCDateTime()),
            last_job_id=bindparam("p_last_job"),
        ),
        insert_runs=runs.insert(),
        insert_jobs=tables.jobs.insert(),
        mark_published=runs.update()
        .where(
            runs.c.schedule == bindparam("p_name"),
            runs.c.nominal_at == bindparam("p_nominal", type_=UTCDateTime()),
        )
        .values(published=True),
        unpublished=select(runs)
        .where(
            runs.c.published.is_(False),
            runs.c.recorded_at < bindparam("p_before", type_=UTCDateTime()),
        )
        .order_by(runs.c.recorded_at)
        .limit(limit),
        runs=select(runs)
        .where(runs.c.schedule == bindparam("p_name"))
        .order_by(runs.c.nominal_at.desc())
        .limit(limit),
        latest_runs=_latest_runs(tables),
    )


def _latest_runs(tables: Tables) -> Select[Any]:
    """Each schedule's last run: the run row at the schedule's ``last_run_at`` (the newest
    tick its firing recorded), found through the runs' primary key (schedule,
    nominal_at), one lookup per schedule however many runs are kept."""
    schedules, runs = tables.schedules, tables.schedule_runs
    return select(runs).join(
        schedules,
        and_(
            runs.c.schedule == outer_table(schedules.c.name),
            runs.c.nominal_at == schedules.c.last_run_at,
        ),
    )


class ScheduleSQL(SQLConnection):
    @cached_property
    def _schedule_sql(self) -> ScheduleStatements:
        return schedule_statements(self.tables)

    def put_schedule(self, record: ScheduleRecord, expected_version: int | None) -> bool:
        row = _row(record)
        with self._connect() as conn:
            if expected_version is None:
                try:
                    conn.execute(self._schedule_sql.insert, row)
                except sa_exc.IntegrityError:
                    return False
                return True
            params = {**row, "p_name": record.name, "p_version": expected_version}
            return bool(conn.execute(self._schedule_sql.replace, params).rowcount)

    def get_schedule(self, name: str) -> ScheduleRecord | None:
        with self._connect() as conn:
            row = conn.execute(self._schedule_sql.get, {"p_name": name}).first()
        return None if row is None else _record(row)

    def list_schedules(self) -> list[ScheduleRecord]:
        with self._connect() as conn:
            return [_record(r) for r in conn.execute(self._schedule_sql.all)]

    def delete_schedule(self, name: str) -> bool:
        with self._transaction() as conn:
            conn.execute(self._schedule_sql.delete_runs, {"p_name": name})
            return bool(conn.execute(self._schedule_sql.delete, {"p_name": name}).rowcount)

    def due_schedules(self, now: datetime, limit: int) -> list[ScheduleRecord]:
        with self._connect() as conn:
            return [
                _record(r)
                for r in conn.execute(self._schedule_sql.due, {"p_now": now, "p_limit": limit})
            ]

    def fire_schedule(
        self,
        seen: ScheduleRecord,
        runs: Sequence[ScheduleRun],
        next_run_at: datetime | None,
        last_job_id: str | None,
        jobs: Sequence[NewJob],
        now: datetime,
    ) -> bool:
        sql = self._schedule_sql
        last_at, last_job = last_run_after(runs, seen.last_run_at, seen.last_job_id, last_job_id)
        params = {
            "p_name": seen.name,
            "p_version": seen.version,
            "p_next": next_run_at,
            "p_last_run": last_at,
            "p_last_job": last_job,
        }
        try:
            with self._transaction() as conn:
                if conn.execute(sql.advance, params).rowcount != 1:
                    raise _Rollback()  # another beat fired these ticks
                if runs:
                    conn.execute(sql.insert_runs, [_run_row(r) for r in runs])
                if jobs:
                    conn.execute(sql.insert_jobs, [new_job_row(j) for j in jobs])
        except (_Rollback, sa_exc.IntegrityError):
            return False
        return True

    def mark_published(self, schedule: str, nominal_at: datetime) -> None:
        self._rowcount(
            self._schedule_sql.mark_published, {"p_name": schedule, "p_nominal": nominal_at}
        )

    def unpublished_runs(self, before: datetime, limit: int) -> list[ScheduleRun]:
        with self._connect() as conn:
            return [
                _run(r)
                for r in conn.execute(
                    self._schedule_sql.unpublished, {"p_before": before, "p_limit": limit}
                )
            ]

    def latest_schedule_runs(self) -> dict[str, ScheduleRun]:
        with self._connect() as conn:
            found = [_run(r) for r in conn.execute(self._schedule_sql.latest_runs)]
        return {r.schedule: r for r in found}

    def schedule_runs(self, name: str, limit: int) -> list[ScheduleRun]:
        with self._connect() as conn:
            return [
                _run(r)
                for r in conn.execute(self._schedule_sql.runs, {"p_name": name, "p_limit": limit})
            ]


class _Rollback(Exception):
    """Leave the transaction without writing (another beat won the tick)."""


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
