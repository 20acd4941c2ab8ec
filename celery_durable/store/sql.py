"""SQLAlchemy Storage for PostgreSQL, MySQL/MariaDB and SQLite.

Every operation is a single statement on an AUTOCOMMIT connection: one round trip that
is also the commit. Fenced writes use ``INSERT ... SELECT ... WHERE lease_owner = :me``
and ``UPDATE ... WHERE lease_owner = :me`` so ownership is checked by the database in
the same statement that writes.

The engine is created lazily and re-created in a forked child (pid check), so pooled
connections are never shared across Celery's prefork pool.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, literal, or_, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from ..errors import ConfigurationError, LeaseLost, StorageUnavailable
from .base import (
    ACTIVE_STATES,
    FINISHED_STATES,
    CallRecord,
    CallState,
    Claim,
    ClaimOutcome,
    JobRecord,
    JobState,
    Lease,
    NewJob,
)
from .schema import UTCDateTime, apply_migrations, build_tables, pending_migrations

_ACTIVE = [s.value for s in ACTIVE_STATES]
_DRIVER_HINTS = {
    "psycopg": "pip install 'celery-durable[postgres]'",
    "pymysql": "pip install 'celery-durable[mysql]'",
}


class SQLStorage:
    def __init__(self, url: str, *, table_prefix: str = "durable_",
                 engine_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.safe_url = make_url(url).render_as_string(hide_password=True)
        self.tables = build_tables(table_prefix)
        self._engine_options = engine_options or {}
        self._engine: Engine | None = None
        self._pid = 0
        self._lock = threading.Lock()

    # -- connection management -------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None or self._pid != os.getpid():
            with self._lock:
                if self._engine is None or self._pid != os.getpid():
                    if self._engine is not None:
                        self._engine.dispose(close=False)  # inherited from the parent
                    self._engine = self._create_engine(isolation_level="AUTOCOMMIT",
                                                       pool_reset_on_return=None)
                    self._pid = os.getpid()
        return self._engine

    def _create_engine(self, **options: Any) -> Engine:
        url = make_url(self.url)
        kwargs: dict[str, Any] = {**options, **self._engine_options}
        if url.get_backend_name() == "sqlite":
            kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
            if url.database in (None, "", ":memory:"):
                kwargs.setdefault("poolclass", StaticPool)
        try:
            engine = create_engine(url, **kwargs)
        except (ImportError, sa_exc.NoSuchModuleError) as exc:
            hint = next((h for d, h in _DRIVER_HINTS.items() if d in self.url), "")
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
        except sa_exc.OperationalError as exc:
            if _missing_table(exc):
                raise _not_migrated(self.safe_url) from exc
            raise StorageUnavailable(
                f"cannot use the durable database {self.safe_url}: {exc.orig}. "
                f"Check app.conf.durable_database_url and that the server is running."
            ) from exc
        except sa_exc.ProgrammingError as exc:
            if _missing_table(exc):
                raise _not_migrated(self.safe_url) from exc
            raise

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
                f"cannot migrate the durable database {self.safe_url}: {exc.orig}") from exc
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
        jobs = self.tables.jobs
        stmt = jobs.insert().values(
            id=job.id, task=job.task, args=job.args, kwargs=job.kwargs, queue=job.queue,
            priority=job.priority, options=job.options, state=JobState.PENDING.value,
            attempts=0, recoveries=0,
            lease_expires_at=job.deliver_by, created_at=job.created_at)
        with self._connect() as conn:
            try:
                conn.execute(stmt)
            except sa_exc.IntegrityError:
                return False
        return True

    def delete_unstarted_job(self, job_id: str) -> None:
        jobs = self.tables.jobs
        with self._connect() as conn:
            conn.execute(jobs.delete().where(
                jobs.c.id == job_id, jobs.c.state == JobState.PENDING.value,
                jobs.c.attempts == 0))

    def claim_job(self, job_id: str, owner: str, now: datetime, lease_until: datetime) -> Claim:
        jobs = self.tables.jobs
        stmt = jobs.update().where(
            jobs.c.id == job_id,
            jobs.c.state.in_(_ACTIVE),
            or_(jobs.c.lease_owner.is_(None), jobs.c.lease_expires_at < now),
        ).values(
            state=JobState.RUNNING.value, attempts=jobs.c.attempts + 1, lease_owner=owner,
            lease_expires_at=lease_until,
            started_at=_coalesce(jobs.c.started_at, now),
        )
        with self._connect() as conn:
            if conn.execute(stmt).rowcount == 1:
                return Claim(ClaimOutcome.CLAIMED)
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            return Claim(ClaimOutcome.MISSING)
        job = _job(row)
        outcome = ClaimOutcome.FINISHED if job.state in FINISHED_STATES else ClaimOutcome.BUSY
        return Claim(outcome, job)

    def renew_lease(self, lease: Lease, until: datetime) -> bool:
        jobs = self.tables.jobs
        with self._connect() as conn:
            result = conn.execute(jobs.update().where(
                jobs.c.id == lease.job_id, jobs.c.lease_owner == lease.owner,
            ).values(lease_expires_at=until))
        return bool(result.rowcount == 1)

    def finish_job(self, lease: Lease, state: JobState, result: str | None,
                   error: str | None, now: datetime) -> None:
        self._fenced_update(lease, state=state.value, result=result, error=error,
                            lease_owner=None, lease_expires_at=None, finished_at=now)

    def release_job(self, lease: Lease, state: JobState, deliver_by: datetime,
                    now: datetime) -> None:
        self._fenced_update(lease, state=state.value, lease_owner=None,
                            lease_expires_at=deliver_by)

    def _fenced_update(self, lease: Lease, **values: Any) -> None:
        jobs = self.tables.jobs
        with self._connect() as conn:
            result = conn.execute(jobs.update().where(
                jobs.c.id == lease.job_id, jobs.c.lease_owner == lease.owner,
            ).values(**values))
        if result.rowcount != 1:
            raise LeaseLost(lease.job_id)

    def expired_jobs(self, now: datetime, limit: int) -> list[JobRecord]:
        jobs = self.tables.jobs
        stmt = (select(jobs)
                .where(jobs.c.lease_expires_at < now, jobs.c.state.in_(_ACTIVE))
                .order_by(jobs.c.lease_expires_at).limit(limit))
        with self._connect() as conn:
            return [_job(row) for row in conn.execute(stmt)]

    def recover_job(self, seen: JobRecord, deliver_by: datetime, now: datetime) -> bool:
        jobs = self.tables.jobs
        return self._compare_and_set(seen, now, state=JobState.PENDING.value,
                                     lease_owner=None, lease_expires_at=deliver_by,
                                     recoveries=jobs.c.recoveries + 1)

    def abandon_job(self, seen: JobRecord, error: str, now: datetime) -> bool:
        return self._compare_and_set(seen, now, state=JobState.FAILED.value,
                                     lease_owner=None, lease_expires_at=None, error=error,
                                     finished_at=now)

    def _compare_and_set(self, seen: JobRecord, now: datetime, **values: Any) -> bool:
        jobs = self.tables.jobs
        owner = (jobs.c.lease_owner.is_(None) if seen.lease_owner is None
                 else jobs.c.lease_owner == seen.lease_owner)
        with self._connect() as conn:
            result = conn.execute(jobs.update().where(
                jobs.c.id == seen.id, jobs.c.state.in_(_ACTIVE),
                jobs.c.lease_expires_at < now, owner,
            ).values(**values))
        return bool(result.rowcount == 1)

    def get_job(self, job_id: str) -> JobRecord | None:
        jobs = self.tables.jobs
        with self._connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        return None if row is None else _job(row)

    # -- calls --------------------------------------------------------------------------

    def load_history(self, root_id: str) -> list[CallRecord]:
        calls = self.tables.calls
        stmt = (select(calls).where(calls.c.root_id == root_id)
                .order_by(calls.c.job_id, calls.c.seq))
        with self._connect() as conn:
            return [_call(row) for row in conn.execute(stmt)]

    def record_call(self, call: CallRecord, lease: Lease) -> None:
        calls, jobs = self.tables.calls, self.tables.jobs
        values = {
            "job_id": call.job_id, "seq": call.seq, "root_id": call.root_id,
            "name": call.name, "args_digest": call.args_digest, "state": call.state.value,
            "attempts": call.attempts, "result": call.result, "error": call.error,
            "started_at": call.started_at, "finished_at": call.finished_at,
        }
        source = select(*[literal(v, type_=calls.c[k].type).label(k) for k, v in values.items()])
        stmt = calls.insert().from_select(
            list(values),
            source.where(jobs.c.id == lease.job_id, jobs.c.lease_owner == lease.owner),
        ).execution_options(preserve_rowcount=True)  # SQLAlchemy drops INSERT rowcounts
        with self._connect() as conn:
            try:
                inserted = conn.execute(stmt).rowcount
            except sa_exc.IntegrityError:
                inserted = 0  # another execution recorded this seq: we are not the owner
        if inserted != 1:
            raise LeaseLost(lease.job_id)


def _coalesce(column: Any, value: datetime) -> Any:
    return func.coalesce(column, literal(value, type_=UTCDateTime()))


def _job(row: Any) -> JobRecord:
    m = row._mapping
    return JobRecord(
        id=m["id"], task=m["task"], args=m["args"], kwargs=m["kwargs"], queue=m["queue"],
        priority=m["priority"], state=JobState(m["state"]), attempts=m["attempts"],
        recoveries=m["recoveries"], lease_owner=m["lease_owner"],
        lease_expires_at=m["lease_expires_at"], result=m["result"], error=m["error"],
        created_at=m["created_at"], started_at=m["started_at"], finished_at=m["finished_at"],
        options=m["options"],
    )


def _call(row: Any) -> CallRecord:
    m = row._mapping
    return CallRecord(
        job_id=m["job_id"], seq=m["seq"], root_id=m["root_id"], name=m["name"],
        args_digest=m["args_digest"], state=CallState(m["state"]), attempts=m["attempts"],
        result=m["result"], error=m["error"], started_at=m["started_at"],
        finished_at=m["finished_at"],
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _missing_table(exc: sa_exc.DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return any(s in text for s in ("no such table", "does not exist", "doesn't exist"))


def _not_migrated(safe_url: str) -> ConfigurationError:
    return ConfigurationError(
        f"the celery-durable tables do not exist in {safe_url}. Create them once with "
        f"`celery -A <your app> durable migrate` or `Durable(app).migrate()`."
    )
