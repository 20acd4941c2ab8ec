"""SQLAlchemy Storage for PostgreSQL, MySQL/MariaDB and SQLite.

Every operation is a single statement on an AUTOCOMMIT connection: one round trip that
is also the commit. Fenced writes use ``INSERT ... SELECT ... WHERE lease_owner = :me``
and ``UPDATE ... WHERE lease_owner = :me`` so ownership is checked by the database in
the same statement that writes.

The engine is created lazily and re-created in a forked child (pid check), so pooled
connections are never shared across Celery's prefork pool.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    Select,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from ..errors import ConfigurationError, LeaseLost, StorageUnavailable
from .base import (
    ACTIVE_STATES,
    FINISHED_STATES,
    CallKey,
    CallRecord,
    CallState,
    CancelOutcome,
    Claim,
    ClaimOutcome,
    JobError,
    JobFilter,
    JobRecord,
    JobState,
    Lease,
    NewJob,
    SendOutcome,
    SuspendOutcome,
    Wake,
    WorkerRecord,
    call_id,
)
from .schema import apply_migrations, build_tables, pending_migrations
from .sql_schedules import ScheduleSQL
from .statements import CALL_COLUMNS, build_statements, new_job_row
from .urls import safe_url

_DRIVER_HINTS = {
    "psycopg": "pip install 'celery-durable[postgres]'",
    "pymysql": "pip install 'celery-durable[mysql]'",
}


class SQLStorage(ScheduleSQL):
    def __init__(
        self,
        url: str,
        *,
        table_prefix: str = "durable_",
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        self._url = url
        self.table_prefix = table_prefix
        self.safe_url = safe_url(url)
        """The URL with its password masked: what every message and repr shows."""
        self.tables = build_tables(table_prefix)
        self._sql = build_statements(self.tables)
        self._engine_options = engine_options or {}
        self._engine: Engine | None = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The database URL, password masked (the real one is never shown)."""
        return self.safe_url

    def __repr__(self) -> str:
        return f"SQLStorage({self.safe_url!r}, table_prefix={self.table_prefix!r})"

    # -- connection management -------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None or self._pid != os.getpid():
            with self._lock:
                if self._engine is None or self._pid != os.getpid():
                    if self._engine is not None:
                        self._engine.dispose(close=False)  # inherited from the parent
                    self._engine = self._create_engine(
                        isolation_level="AUTOCOMMIT", pool_reset_on_return=None
                    )
                    self._pid = os.getpid()
        return self._engine

    def _create_engine(self, **options: Any) -> Engine:
        url = make_url(self._url)
        kwargs: dict[str, Any] = {**options, **self._engine_options}
        if url.get_backend_name() == "sqlite":
            kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
            if url.database in (None, "", ":memory:"):
                kwargs.setdefault("poolclass", StaticPool)
        try:
            engine = create_engine(url, **kwargs)
        except (ImportError, sa_exc.NoSuchModuleError) as exc:
            hint = next((h for d, h in _DRIVER_HINTS.items() if d in self._url), "")
            raise ConfigurationError(
                f"cannot load the database driver for {self.safe_url}: {exc}. {hint}"
            ) from exc
        if url.get_backend_name() == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except sa_exc.DBAPIError as exc:
            if _missing_table(exc):
                raise _not_migrated(self.safe_url) from exc
            if not _unreachable(exc):
                raise
            raise StorageUnavailable(
                f"cannot use the durable database {self.safe_url}: {exc.orig}. "
                f"Check app.conf.durable_database_url and that the server is running."
            ) from exc

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A real transaction, for the rare writes that touch more than one row."""
        with self._connect() as conn:
            level = "SERIALIZABLE" if conn.dialect.name == "sqlite" else "READ COMMITTED"
            conn = conn.execution_options(isolation_level=level)
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- schema -----------------------------------------------------------------------

    def migrate(self) -> list[int]:
        engine = self._create_engine()
        try:
            with engine.begin() as conn:
                return apply_migrations(conn, self.tables)
        except sa_exc.OperationalError as exc:
            raise StorageUnavailable(
                f"cannot migrate the durable database {self.safe_url}: {exc.orig}"
            ) from exc
        finally:
            engine.dispose()

    def pending_migrations(self) -> list[int]:
        with self._connect() as conn:
            return pending_migrations(conn, self.tables)

    def drop_tables(self) -> None:
        """Drop every table this store owns (tests and teardown only)."""
        with self._connect() as conn:
            self.tables.metadata.drop_all(conn)

    # -- jobs ---------------------------------------------------------------------------

    def create_job(self, job: NewJob) -> bool:
        with self._connect() as conn:
            try:
                conn.execute(self._sql.insert_job, new_job_row(job))
            except sa_exc.IntegrityError:
                return False
        return True

    def create_unique_job(self, job: NewJob) -> str:
        for _ in range(5):  # the holder may finish between our INSERT and SELECT
            with self._connect() as conn:
                try:
                    conn.execute(self._sql.insert_job, new_job_row(job))
                    return job.id
                except sa_exc.IntegrityError:
                    holder = conn.scalar(self._sql.unique_holder, {"p_key": job.unique_key})
            if holder is not None:
                return str(holder)
            if self.get_job(job.id) is not None:
                return job.id  # the id itself existed: an enqueue repeated
        raise StorageUnavailable(f"could not settle unique key {job.unique_key!r}")

    def delete_unstarted_job(self, job_id: str) -> None:
        with self._connect() as conn:
            conn.execute(self._sql.delete_unstarted, {"p_id": job_id})

    def claim_job(self, job_id: str, owner: str, now: datetime, lease_until: datetime) -> Claim:
        params = {"p_id": job_id, "p_owner": owner, "p_now": now, "p_until": lease_until}
        with self._connect() as conn:
            if conn.dialect.update_returning:  # the attempt count comes back for free
                claimed = conn.execute(self._sql.claim_returning, params).first()
                if claimed is not None:
                    return Claim(ClaimOutcome.CLAIMED, attempts=claimed.attempts)
            elif conn.execute(self._sql.claim, params).rowcount == 1:
                return Claim(ClaimOutcome.CLAIMED)
            row = conn.execute(self._sql.get_job, {"p_id": job_id}).first()
        if row is None:
            return Claim(ClaimOutcome.MISSING)
        job = _job(row)
        if job.state in FINISHED_STATES:
            return Claim(ClaimOutcome.FINISHED, job)
        leased = (
            job.lease_owner is not None
            and job.lease_expires_at is not None
            and (job.lease_expires_at >= now)
        )
        if not leased and job.not_before is not None and job.not_before > now:
            return Claim(ClaimOutcome.EARLY, job)
        return Claim(ClaimOutcome.BUSY, job)

    def renew_lease(self, lease: Lease, until: datetime) -> bool:
        return self._rowcount(self._sql.renew, _fence(lease, p_until=until)) == 1

    def finish_job(
        self,
        lease: Lease,
        state: JobState,
        result: str | None,
        error: str | None,
        now: datetime,
        wake: Wake | None = None,
    ) -> bool:
        params = _fence(lease, p_state=state.value, p_result=result, p_error=error, p_now=now)
        failed = error is not None and state in (JobState.FAILED, JobState.DEAD)
        if not failed and wake is None:  # the hot path: one autocommit statement
            if self._rowcount(self._sql.finish, params) != 1:
                raise LeaseLost(lease.job_id)
            return False
        with self._transaction() as conn:
            stmt = self._sql.finish_failed if failed else self._sql.finish
            if conn.execute(stmt, params).rowcount != 1:
                raise LeaseLost(lease.job_id)
            if failed:
                conn.execute(self._sql.insert_job_error, params)
            return wake is not None and self._wake(conn, wake.parent_id, wake.deliver_by)

    def _wake(self, conn: Connection, parent_id: str, deliver_by: datetime) -> bool:
        """One child of ``parent_id`` finished: True if the parent is runnable now."""
        params = {"p_id": parent_id, "p_deliver_by": deliver_by}
        conn.execute(self._sql.wake_decrement, params)
        return bool(conn.execute(self._sql.wake, params).rowcount == 1)

    def suspend_job(
        self,
        lease: Lease,
        calls: Sequence[CallRecord],
        children: Sequence[NewJob],
        waiting_for: Sequence[str],
        wake_at: datetime | None,
        deliver_by: datetime | None,
        now: datetime,
        *,
        cancel_taken: bool = False,
        topic: str | None = None,
    ) -> SuspendOutcome:
        params = _fence(lease)
        with self._transaction() as conn:
            stmt = self._sql.suspend_cancel_taken if cancel_taken else self._sql.suspend
            if conn.execute(stmt, params).rowcount != 1:
                row = conn.execute(self._sql.get_job, params).first()
                if row is not None and row.lease_owner == lease.owner:
                    return SuspendOutcome.CANCEL_REQUESTED
                raise LeaseLost(lease.job_id)
            for call in calls:
                self._write_call(conn, call, lease, _call_params(call, lease))
            if children:
                try:
                    conn.execute(self._sql.insert_job, [new_job_row(c) for c in children])
                except sa_exc.IntegrityError:  # another execution dispatched them
                    raise LeaseLost(lease.job_id) from None
            awaiting = (
                int(conn.scalar(self._sql.count_unfinished, {"p_ids": list(set(waiting_for))}))
                if waiting_for
                else 0
            )
            # A message sent before this transaction locked the row is counted here; one
            # sent after it waits for our commit and then wakes the job.
            arrived = (
                topic is not None
                and int(
                    conn.scalar(self._sql.count_messages, {"p_id": lease.job_id, "p_topic": topic})
                )
                > 0
            )
            waiting = not arrived and (awaiting > 0 or wake_at is not None or topic is not None)
            # Runnable now: no wake-up time, and due for the sweeper at once should the
            # caller's publish fail.
            conn.execute(
                self._sql.suspend_state,
                {
                    "p_id": lease.job_id,
                    "p_awaiting": awaiting,
                    "p_topic": topic,
                    "p_state": (JobState.SUSPENDED if waiting else JobState.PENDING).value,
                    "p_wake_at": wake_at if waiting else None,
                    "p_deliver_by": deliver_by if waiting else now,
                },
            )
            return SuspendOutcome.SUSPENDED if waiting else SuspendOutcome.RUNNABLE

    def send_message(
        self,
        job_id: str,
        topic: str,
        payload: str,
        key: str | None,
        now: datetime,
        deliver_by: datetime,
    ) -> SendOutcome:
        params = {"p_id": job_id, "p_topic": topic, "p_deliver_by": deliver_by}
        with self._transaction() as conn:
            if conn.execute(self._sql.touch_job, params).rowcount != 1:
                exists = conn.execute(self._sql.get_job, params).first() is not None
                return SendOutcome.FINISHED if exists else SendOutcome.MISSING
            try:
                conn.execute(
                    self._sql.insert_message,
                    {
                        "job_id": job_id,
                        "topic": topic,
                        "payload": payload,
                        "key": key,
                        "sent_at": now,
                    },
                )
            except sa_exc.IntegrityError:
                return SendOutcome.DUPLICATE
            woke = conn.execute(self._sql.wake_for_message, params).rowcount == 1
        return SendOutcome.WOKE if woke else SendOutcome.SENT

    def take_message(self, lease: Lease, topic: str, call: CallRecord) -> str | None:
        params = _fence(lease, p_topic=topic, p_now=call.finished_at)
        with self._transaction() as conn:
            if conn.execute(self._sql.lock_job, params).rowcount != 1:
                raise LeaseLost(lease.job_id)
            found = conn.execute(self._sql.next_message, params).first()
            if found is None:
                return None
            conn.execute(
                self._sql.take_message,
                {**params, "p_message": found.id, "p_by": call_id(call.job_id, call.seq)},
            )
            taken = dataclasses.replace(call, result=found.payload)
            self._write_call(conn, taken, lease, _call_params(taken, lease))
            return str(found.payload)

    def settle_calls(self, lease: Lease, calls: Sequence[CallRecord]) -> None:
        with self._transaction() as conn:
            if conn.execute(self._sql.lock_job, _fence(lease)).rowcount != 1:
                raise LeaseLost(lease.job_id)
            for call in calls:
                if conn.execute(self._sql.settle_call, _call_params(call, lease)).rowcount != 1:
                    raise LeaseLost(lease.job_id)

    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord]:
        if not job_ids:
            return []
        with self._connect() as conn:
            return [
                _job(row) for row in conn.execute(self._sql.get_jobs, {"p_ids": list(set(job_ids))})
            ]

    def retry_job(
        self,
        lease: Lease,
        error: str,
        discard: Sequence[CallKey],
        not_before: datetime,
        deliver_by: datetime,
        now: datetime,
    ) -> None:
        params = _fence(
            lease,
            p_error=error,
            p_failed=1,
            p_not_before=not_before,
            p_deliver_by=deliver_by,
            p_now=now,
        )
        with self._transaction() as conn:
            if conn.execute(self._sql.retry_release, params).rowcount != 1:
                raise LeaseLost(lease.job_id)
            conn.execute(self._sql.insert_job_error, params)
            self._discard(conn, lease.job_id, discard)

    def release_job(
        self, lease: Lease, state: JobState, deliver_by: datetime, now: datetime
    ) -> None:
        params = _fence(lease, p_state=state.value, p_deliver_by=deliver_by)
        if self._rowcount(self._sql.release, params) != 1:
            raise LeaseLost(lease.job_id)

    def expired_jobs(self, now: datetime, limit: int) -> list[JobRecord]:
        with self._connect() as conn:
            rows = conn.execute(self._sql.expired, {"p_now": now, "p_limit": limit})
            return [_job(row) for row in rows]

    def recover_job(self, seen: JobRecord, deliver_by: datetime, now: datetime) -> bool:
        stmt = self._sql.recover_unowned if seen.lease_owner is None else self._sql.recover
        params = {
            "p_id": seen.id,
            "p_owner": seen.lease_owner,
            "p_now": now,
            "p_deliver_by": deliver_by,
        }
        return self._rowcount(stmt, params) == 1

    def abandon_job(
        self, seen: JobRecord, error: str, now: datetime, state: JobState = JobState.FAILED
    ) -> bool:
        stmt = self._sql.abandon_unowned if seen.lease_owner is None else self._sql.abandon
        params = {
            "p_id": seen.id,
            "p_owner": seen.lease_owner,
            "p_now": now,
            "p_error": error,
            "p_state": state.value,
        }
        failed = state in (JobState.FAILED, JobState.DEAD)
        if not failed and seen.parent_id is None:
            return self._rowcount(stmt, params) == 1
        with self._transaction() as conn:
            if conn.execute(stmt, params).rowcount != 1:
                return False
            if failed:
                conn.execute(self._sql.insert_job_error, params)
            if seen.parent_id is not None:
                self._wake(conn, seen.parent_id, now)
        return True

    def release_abandoned(
        self, job_id: str, owner_prefix: str, deliver_by: datetime
    ) -> JobRecord | None:
        escaped = owner_prefix.replace("!", "!!").replace("%", "!%").replace("_", "!_")
        params = {"p_id": job_id, "p_pattern": escaped + "%", "p_deliver_by": deliver_by}
        if self._rowcount(self._sql.release_abandoned, params) != 1:
            return None
        return self.get_job(job_id)

    def cancel_job(self, job_id: str, error: str, now: datetime) -> CancelOutcome:
        params = {"p_id": job_id, "p_error": error, "p_now": now}
        with self._transaction() as conn:
            if conn.execute(self._sql.cancel_unheld, params).rowcount == 1:
                row = conn.execute(self._sql.get_job, params).first()
                if row is not None and row.parent_id is not None:
                    self._wake(conn, row.parent_id, now)
                return CancelOutcome.CANCELLED
        if self._rowcount(self._sql.cancel_request, params) == 1:
            return CancelOutcome.REQUESTED
        job = self.get_job(job_id)
        if job is None:
            return CancelOutcome.MISSING
        if job.state in FINISHED_STATES:
            return CancelOutcome.FINISHED
        return self.cancel_job(job_id, error, now)  # the lease changed hands meanwhile

    def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        if not job_ids:
            return set()
        with self._connect() as conn:
            return set(conn.scalars(self._sql.cancel_requested, {"p_ids": list(job_ids)}))

    def changes_since(self, after: datetime, limit: int) -> list[dict[str, Any]]:
        """Rows written after ``after`` that the event stream turns into events."""
        jobs, calls, errors = self.tables.jobs, self.tables.calls, self.tables.job_errors
        out: list[dict[str, Any]] = []
        job_columns = (
            jobs.c.id,
            jobs.c.task,
            jobs.c.state,
            jobs.c.started_at,
            jobs.c.finished_at,
            jobs.c.error,
        )
        final = (jobs.c.finished_at == errors.c.failed_at) & jobs.c.state.in_(
            [JobState.FAILED.value, JobState.DEAD.value]
        )
        with self._connect() as conn:
            for kind, column in (("started", jobs.c.started_at), ("finished", jobs.c.finished_at)):
                for row in conn.execute(
                    select(*job_columns).where(column > after).order_by(column).limit(limit)
                ):
                    out.append({"kind": kind, **row._mapping})
            for row in conn.execute(
                select(calls)
                .where(calls.c.finished_at > after)
                .order_by(calls.c.finished_at)
                .limit(limit)
            ):
                out.append(
                    {
                        "kind": "call",
                        **row._mapping,
                        "position": _position_text(row.root_id, row.job_id, row.seq),
                    }
                )
            for row in conn.execute(
                select(errors)
                .join(jobs, jobs.c.id == errors.c.job_id)
                .where(errors.c.failed_at > after, ~final)
                .order_by(errors.c.failed_at)
                .limit(limit)
            ):
                out.append({"kind": "error", **row._mapping})
        return out

    def count_active(self) -> list[tuple[str | None, str, int]]:
        jobs = self.tables.jobs
        query = (
            select(jobs.c.queue, jobs.c.state, func.count())
            .where(jobs.c.state.in_([s.value for s in ACTIVE_STATES]))
            .group_by(jobs.c.queue, jobs.c.state)
        )
        with self._connect() as conn:
            return [(q, st, int(n)) for q, st, n in conn.execute(query)]

    def list_jobs(self, where: JobFilter) -> list[JobRecord]:
        with self._connect() as conn:
            return [_job(row) for row in conn.execute(self._list_query(where))]

    def _list_query(self, where: JobFilter) -> Select:  # type: ignore[type-arg]
        jobs = self.tables.jobs
        query = select(jobs)
        if where.states:
            query = query.where(jobs.c.state.in_([s.value for s in where.states]))
        for column, value in (("task", where.task), ("queue", where.queue)):
            if value is not None:
                query = query.where(jobs.c[column] == value)
        for column, after, before in (
            ("created_at", where.created_after, where.created_before),
            ("finished_at", where.finished_after, where.finished_before),
        ):
            if after is not None:
                query = query.where(jobs.c[column] >= after)
            if before is not None:
                query = query.where(jobs.c[column] < before)
        return (
            query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
            .limit(where.limit)
            .offset(where.offset)
        )

    def job_errors(self, job_id: str) -> list[JobError]:
        with self._connect() as conn:
            return [
                JobError(
                    job_id=r.job_id, execution=r.execution, error=r.error, failed_at=r.failed_at
                )
                for r in conn.execute(self._sql.job_errors, {"p_id": job_id})
            ]

    def requeue_job(
        self,
        job_id: str,
        from_states: Sequence[JobState],
        discard: Sequence[CallKey] | None,
        deliver_by: datetime,
        now: datetime,
    ) -> bool:
        params = {
            "p_id": job_id,
            "p_states": [s.value for s in from_states],
            "p_deliver_by": deliver_by,
        }
        with self._transaction() as conn:
            if conn.execute(self._sql.requeue, params).rowcount != 1:
                return False
            if discard is None:
                conn.execute(self._sql.discard_all_calls, {"p_root_id": job_id})
                conn.execute(self._sql.untake_all_messages, {"p_root_id": job_id})
            else:
                self._discard(conn, job_id, discard)
        return True

    def _discard(self, conn: Connection, root_id: str, keys: Sequence[CallKey]) -> None:
        """Drop these checkpoints; a message a dropped receive took can be taken again."""
        if not keys:
            return
        conn.execute(
            self._sql.discard_call,
            [{"p_root_id": root_id, "p_job_id": scope, "p_seq": seq} for scope, seq in keys],
        )
        conn.execute(
            self._sql.untake_message,
            [{"p_root_id": root_id, "p_by": call_id(*key)} for key in keys],
        )

    def delete_jobs(self, job_ids: Sequence[str], states: Sequence[JobState]) -> int:
        jobs, calls, errors = self.tables.jobs, self.tables.calls, self.tables.job_errors
        messages = self.tables.messages
        wanted = [s.value for s in states]
        deleted = 0
        with self._transaction() as conn:
            for job_id in job_ids:
                # The state check is in the DELETE itself (a write, so SQLite's
                # transaction has begun): a job requeued meanwhile stays.
                if (
                    conn.execute(
                        jobs.delete().where(jobs.c.id == job_id, jobs.c.state.in_(wanted))
                    ).rowcount
                    == 1
                ):
                    conn.execute(calls.delete().where(calls.c.root_id == job_id))
                    conn.execute(errors.delete().where(errors.c.job_id == job_id))
                    conn.execute(messages.delete().where(messages.c.job_id == job_id))
                    deleted += 1
        return deleted

    def mark_reported(self, job_id: str, now: datetime) -> None:
        self._rowcount(self._sql.mark_reported, {"p_id": job_id, "p_now": now})

    # -- workers --------------------------------------------------------------------------

    def record_heartbeat(self, worker: WorkerRecord) -> None:
        row = dataclasses.asdict(worker)
        workers = self.tables.workers
        with self._connect() as conn:
            if (
                conn.execute(
                    workers.update().where(workers.c.name == worker.name).values(**row)
                ).rowcount
                == 1
            ):
                return
            try:
                conn.execute(workers.insert().values(**row))
            except sa_exc.IntegrityError:  # a worker of the same name got there first
                conn.execute(workers.update().where(workers.c.name == worker.name).values(**row))

    def list_workers(self) -> list[WorkerRecord]:
        workers = self.tables.workers
        with self._connect() as conn:
            return [
                WorkerRecord(**row._mapping)
                for row in conn.execute(select(workers).order_by(workers.c.name))
            ]

    def delete_workers(self, seen_before: datetime) -> int:
        workers = self.tables.workers
        with self._connect() as conn:
            return int(
                conn.execute(workers.delete().where(workers.c.last_seen_at < seen_before)).rowcount
            )

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._connect() as conn:
            row = conn.execute(self._sql.get_job, {"p_id": job_id}).first()
        return None if row is None else _job(row)

    # -- calls --------------------------------------------------------------------------

    def load_history(self, root_id: str) -> list[CallRecord]:
        with self._connect() as conn:
            return [_call(row) for row in conn.execute(self._sql.history, {"p_root_id": root_id})]

    def record_call(self, call: CallRecord, lease: Lease) -> None:
        params = _call_params(call, lease)
        if call.attempts > 1:  # a retried call: its row exists, in state retrying
            with self._transaction() as conn:
                if conn.execute(self._sql.lock_job, params).rowcount != 1:
                    raise LeaseLost(lease.job_id)
                self._write_call(conn, call, lease, params)
            return
        try:
            inserted = self._rowcount(self._sql.record_call, params)
        except sa_exc.IntegrityError:
            inserted = 0  # another execution recorded this seq: we are not the owner
        if inserted != 1:
            raise LeaseLost(lease.job_id)

    def discard_calls(self, lease: Lease, keys: Sequence[CallKey]) -> None:
        with self._transaction() as conn:
            if conn.execute(self._sql.lock_job, _fence(lease)).rowcount != 1:
                raise LeaseLost(lease.job_id)
            self._discard(conn, lease.job_id, keys)

    def retry_call(
        self,
        call: CallRecord,
        lease: Lease,
        not_before: datetime,
        deliver_by: datetime,
        now: datetime,
    ) -> None:
        params = {
            **_call_params(call, lease),
            "p_failed": 0,
            "p_error": None,
            "p_not_before": not_before,
            "p_deliver_by": deliver_by,
        }
        with self._transaction() as conn:
            if conn.execute(self._sql.retry_release, params).rowcount != 1:
                raise LeaseLost(lease.job_id)
            params["p_error"] = call.error
            self._write_call(conn, call, lease, params)

    def _write_call(
        self, conn: Connection, call: CallRecord, lease: Lease, params: dict[str, Any]
    ) -> None:
        """Insert a first attempt, or update the row the previous attempt left; inside a
        transaction that holds the job row. Anything else means another execution
        wrote this position: we are not the owner."""
        try:
            if call.attempts == 1:
                conn.execute(
                    self._sql.insert_call, {name: params[f"p_{name}"] for name in CALL_COLUMNS}
                )
                return
        except sa_exc.IntegrityError:
            raise LeaseLost(lease.job_id) from None
        written = conn.execute(
            self._sql.update_call, {**params, "p_previous_attempts": call.attempts - 1}
        )
        if written.rowcount != 1:
            raise LeaseLost(lease.job_id)

    def _rowcount(self, stmt: Executable, params: dict[str, Any]) -> int:
        with self._connect() as conn:
            return int(conn.execute(stmt, params).rowcount)


def _position_text(root_id: str, scope: str, seq: int) -> str:
    from ..history import position

    return ".".join(map(str, position(root_id, scope, seq)))


def _fence(lease: Lease, **params: Any) -> dict[str, Any]:
    return {"p_id": lease.job_id, "p_owner": lease.owner, **params}


def _call_params(call: CallRecord, lease: Lease) -> dict[str, Any]:
    params = _fence(lease, **{f"p_{name}": getattr(call, name) for name in CALL_COLUMNS})
    params["p_state"] = call.state.value
    return params


def _job(row: Any) -> JobRecord:
    m = row._mapping
    return JobRecord(
        id=m["id"],
        task=m["task"],
        args=m["args"],
        kwargs=m["kwargs"],
        queue=m["queue"],
        priority=m["priority"],
        state=JobState(m["state"]),
        attempts=m["attempts"],
        recoveries=m["recoveries"],
        lease_owner=m["lease_owner"],
        lease_expires_at=m["lease_expires_at"],
        result=m["result"],
        error=m["error"],
        created_at=m["created_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        options=m["options"],
        failures=m["failures"],
        requeues=m["requeues"],
        not_before=m["not_before"],
        cancel_requested_at=m["cancel_requested_at"],
        unique_key=m["unique_key"],
        parent_id=m["parent_id"],
        awaiting=m["awaiting"],
        waiting_topic=m["waiting_topic"],
        reported_at=m["reported_at"],
    )


def _call(row: Any) -> CallRecord:
    m = row._mapping
    return CallRecord(
        job_id=m["job_id"],
        seq=m["seq"],
        root_id=m["root_id"],
        name=m["name"],
        args_digest=m["args_digest"],
        state=CallState(m["state"]),
        attempts=m["attempts"],
        result=m["result"],
        error=m["error"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _unreachable(exc: sa_exc.DBAPIError) -> bool:
    """The server is down, restarting or unreachable: OperationalError on every driver,
    InterfaceError from PyMySQL on a connection the server closed, and any error that
    made SQLAlchemy drop the connection."""
    return (
        isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))
        or exc.connection_invalidated
    )


def _missing_table(exc: sa_exc.DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return any(s in text for s in ("no such table", "does not exist", "doesn't exist"))


def _not_migrated(safe_url: str) -> ConfigurationError:
    return ConfigurationError(
        f"the celery-durable tables do not exist in {safe_url}. Create them once with "
        f"`celery -A <your app> durable migrate` or `Durable(app).migrate()`."
    )
