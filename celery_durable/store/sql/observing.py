"""What the SQL store tells observers: the rows the event stream reads, and the workers'
heartbeats."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import BindParameter, Delete, Insert, Select, Update, bindparam, select
from sqlalchemy import exc as sa_exc

from ..records import JobState, WorkerRecord, position_text
from .connection import SQLConnection
from .schema import Tables, UTCDateTime


@dataclass(frozen=True)
class ObservingStatements:
    started: Select[Any]
    finished: Select[Any]
    calls: Select[Any]
    errors: Select[Any]
    update_worker: Update
    insert_worker: Insert
    workers: Select[Any]
    forget_workers: Delete


def observing_statements(tables: Tables) -> ObservingStatements:
    jobs, calls, errors, workers = tables.jobs, tables.calls, tables.job_errors, tables.workers
    after = bindparam("p_after", type_=UTCDateTime())
    limit: BindParameter[int] = bindparam("p_limit")
    job_columns = (
        jobs.c.id,
        jobs.c.task,
        jobs.c.state,
        jobs.c.started_at,
        jobs.c.finished_at,
        jobs.c.error,
    )
    # A failed or dead job's last error is its JobFailed event, not a JobRetried one.
    final = (jobs.c.finished_at == errors.c.failed_at) & jobs.c.state.in_(
        [JobState.FAILED.value, JobState.DEAD.value]
    )
    by_name = workers.c.name == bindparam("p_name")
    return ObservingStatements(
        started=select(*job_columns)
        .where(jobs.c.started_at > after)
        .order_by(jobs.c.started_at)
        .limit(limit),
        finished=select(*job_columns)
        .where(jobs.c.finished_at > after)
        .order_by(jobs.c.finished_at)
        .limit(limit),
        calls=select(calls)
        .where(calls.c.finished_at > after)
        .order_by(calls.c.finished_at)
        .limit(limit),
        errors=select(errors)
        .join(jobs, jobs.c.id == errors.c.job_id)
        .where(errors.c.failed_at > after, ~final)
        .order_by(errors.c.failed_at)
        .limit(limit),
        update_worker=workers.update().where(by_name),
        insert_worker=workers.insert(),
        workers=select(workers).order_by(workers.c.name),
        forget_workers=workers.delete().where(
            workers.c.last_seen_at < bindparam("p_before", type_=UTCDateTime())
        ),
    )


class ObservingSQL(SQLConnection):
    @cached_property
    def _observing_sql(self) -> ObservingStatements:
        return observing_statements(self.tables)

    def changes_since(self, after: datetime, limit: int) -> list[dict[str, Any]]:
        sql, params = self._observing_sql, {"p_after": after, "p_limit": limit}
        out: list[dict[str, Any]] = []
        with self._connect() as conn:
            for kind, statement in (("started", sql.started), ("finished", sql.finished)):
                out += [{"kind": kind, **row._mapping} for row in conn.execute(statement, params)]
            out += [
                {
                    "kind": "call",
                    **row._mapping,
                    "position": position_text(row.root_id, row.job_id, row.seq),
                }
                for row in conn.execute(sql.calls, params)
            ]
            out += [{"kind": "error", **row._mapping} for row in conn.execute(sql.errors, params)]
        return out

    def record_heartbeat(self, worker: WorkerRecord) -> None:
        row = dataclasses.asdict(worker)
        sql = self._observing_sql
        with self._connect() as conn:
            if conn.execute(sql.update_worker, {"p_name": worker.name, **row}).rowcount == 1:
                return
            try:
                conn.execute(sql.insert_worker, row)
            except sa_exc.IntegrityError:  # a worker of the same name got there first
                conn.execute(sql.update_worker, {"p_name": worker.name, **row})

    def list_workers(self) -> list[WorkerRecord]:
        with self._connect() as conn:
            return [
                WorkerRecord(**row._mapping) for row in conn.execute(self._observing_sql.workers)
            ]

    def delete_workers(self, seen_before: datetime) -> int:
        return self._rowcount(self._observing_sql.forget_workers, {"p_before": seen_before})
