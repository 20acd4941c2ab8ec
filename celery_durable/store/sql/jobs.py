"""The SQL store's jobs: enqueue, claim, renew, finish, retry, recover, cancel, list."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, select
from sqlalchemy import exc as sa_exc

from ...errors import LeaseLost, StorageUnavailable
from ..batch import check_batch, duplicate_ids
from ..claims import unclaimable
from ..records import (
    FINISHED_STATES,
    CallKey,
    CancelOutcome,
    Claim,
    ClaimOutcome,
    Held,
    JobError,
    JobFilter,
    JobRecord,
    JobState,
    Lease,
    NewJob,
    Wake,
    call_id,
)
from .connection import SQLConnection
from .dialects import parse_minute
from .rows import fence, job_record
from .statements import (
    count_jobs_query,
    finished_per_minute_query,
    list_jobs_query,
    new_job_row,
)

DELETE_BATCH = 1000

"""Jobs deleted per transaction (each id list is one IN clause)."""


class JobsSQL(SQLConnection):
    def create_job(self, job: NewJob) -> bool:
        try:
            self._run("insert_job", new_job_row(job))
        except sa_exc.IntegrityError:
            return False
        return True

    def create_jobs(self, jobs: Sequence[NewJob]) -> None:
        check_batch(jobs)
        if not jobs:
            return
        try:
            with self._transaction() as conn:
                # one executemany, one commit: psycopg 3 pipelines it (one round trip),
                # PyMySQL rewrites it into multi-row INSERTs, sqlite3 loops in C
                conn.execute(self._sql.insert_job, [new_job_row(job) for job in jobs])
        except sa_exc.IntegrityError:
            taken = self._existing_ids([job.id for job in jobs])
            raise duplicate_ids(taken or [job.id for job in jobs]) from None

    def _existing_ids(self, ids: list[str]) -> list[str]:
        found: list[str] = []
        jobs = self.tables.jobs
        with self._connect() as conn:
            for start in range(0, len(ids), DELETE_BATCH):
                chunk = ids[start : start + DELETE_BATCH]
                found += conn.scalars(select(jobs.c.id).where(jobs.c.id.in_(chunk))).all()
        return found

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

    def claim_job(
        self,
        job_id: str,
        owner: str,
        now: datetime,
        lease_until: datetime,
        queue: str | None = None,
    ) -> Claim:
        params = {
            "p_id": job_id,
            "p_owner": owner,
            "p_now": now,
            "p_until": lease_until,
            "p_queue": queue,
        }
        if self.engine.dialect.update_returning:  # the attempt count comes back for free
            claimed = self._run("claim_returning", params).first()
            if claimed is not None:
                return Claim(ClaimOutcome.CLAIMED, attempts=claimed["attempts"])
        elif self._run("claim", params).rowcount == 1:
            return Claim(ClaimOutcome.CLAIMED)
        row = self._run("get_job", {"p_id": job_id}).first()
        if row is None:
            return Claim(ClaimOutcome.MISSING)
        job = job_record(row)
        refused = unclaimable(job, now)
        if refused is not None:
            return refused
        # nothing else stops it: a pause (or a claim that raced ours)
        if self._rowcount(self._sql.hold_paused, {"p_id": job_id, "p_queue": queue}) == 1:
            return Claim(ClaimOutcome.HELD, job, held=Held.PAUSED)
        return Claim(ClaimOutcome.BUSY, job)

    def renew_lease(self, lease: Lease, until: datetime) -> bool:
        return self._run("renew", fence(lease, p_until=until)).rowcount == 1

    def finish_job(
        self,
        lease: Lease,
        state: JobState,
        result: str | None,
        error: str | None,
        now: datetime,
        wake: Wake | None = None,
    ) -> bool:
        params = fence(lease, p_state=state.value, p_result=result, p_error=error, p_now=now)
        failed = error is not None and state in (JobState.FAILED, JobState.DEAD)
        if not failed and wake is None:  # the hot path: one autocommit statement
            if self._run("finish", params).rowcount != 1:
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

    def get_job(self, job_id: str) -> JobRecord | None:
        row = self._run("get_job", {"p_id": job_id}).first()
        return None if row is None else job_record(row)

    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord]:
        if not job_ids:
            return []
        with self._connect() as conn:
            return [
                job_record(row)
                for row in conn.execute(self._sql.get_jobs, {"p_ids": list(set(job_ids))})
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
        params = fence(
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
        params = fence(lease, p_state=state.value, p_deliver_by=deliver_by)
        if self._rowcount(self._sql.release, params) != 1:
            raise LeaseLost(lease.job_id)

    def expired_jobs(self, now: datetime, limit: int) -> list[JobRecord]:
        with self._connect() as conn:
            rows = conn.execute(self._sql.expired, {"p_now": now, "p_limit": limit})
            return [job_record(row) for row in rows]

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

    def count_active(self) -> list[tuple[str | None, str, int]]:
        with self._connect() as conn:
            return [(q, st, int(n)) for q, st, n in conn.execute(self._sql.count_active)]

    def list_jobs(self, where: JobFilter) -> list[JobRecord]:
        with self._connect() as conn:
            return [job_record(row) for row in conn.execute(list_jobs_query(self.tables, where))]

    def count_jobs(self, where: JobFilter) -> dict[str, int]:
        with self._connect() as conn:
            return {st: int(n) for st, n in conn.execute(count_jobs_query(self.tables, where))}

    def finished_per_minute(self, since: datetime) -> list[tuple[datetime, str, int]]:
        with self._connect() as conn:
            rows = conn.execute(finished_per_minute_query(self.tables), {"p_since": since})
            return [(parse_minute(minute), st, int(n)) for minute, st, n in rows]

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
        wanted, ids = [s.value for s in states], list(dict.fromkeys(job_ids))
        deleted = 0
        for start in range(0, len(ids), DELETE_BATCH):
            chunk = ids[start : start + DELETE_BATCH]
            with self._transaction() as conn:
                gone = conn.execute(
                    self._sql.delete_finished, {"p_ids": chunk, "p_states": wanted}
                ).rowcount
                if not gone:
                    continue
                remaining = set(conn.scalars(self._sql.remaining_ids, {"p_ids": chunk}))
                dropped = {"p_ids": [i for i in chunk if i not in remaining]}
                for statement in (
                    self._sql.delete_calls_of,
                    self._sql.delete_errors_of,
                    self._sql.delete_messages_of,
                ):
                    conn.execute(statement, dropped)
                deleted += gone
        return deleted

    def delete_finished(self, state: JobState, before: datetime, limit: int) -> int:
        if self.engine.dialect.name == "postgresql":  # one statement per batch
            params = {"p_state": state.value, "p_before": before, "p_limit": limit}
            with self._transaction() as conn:
                return int(conn.scalar(self._sql.delete_finished_batch, params) or 0)
        # elsewhere: the batch's ids, then a transaction of IN-list deletes
        return self.delete_jobs(self.finished_job_ids(state, before, limit), (state,))

    def finished_job_ids(self, state: JobState, before: datetime, limit: int) -> list[str]:
        params = {"p_state": state.value, "p_before": before, "p_limit": limit}
        with self._connect() as conn:
            return [str(i) for i in conn.scalars(self._sql.finished_ids, params)]

    def count_finished(self, state: JobState, before: datetime) -> int:
        params = {"p_state": state.value, "p_before": before}
        with self._connect() as conn:
            return int(conn.scalar(self._sql.count_finished, params) or 0)

    def mark_reported(self, job_id: str, now: datetime) -> None:
        self._rowcount(self._sql.mark_reported, {"p_id": job_id, "p_now": now})
