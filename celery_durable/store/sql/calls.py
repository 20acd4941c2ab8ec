"""The SQL store's checkpoints, and the writes of jobs that wait: suspend (with the
children it dispatches), messages sent to a job and taken by its body, settled calls."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from ...errors import LeaseLost
from ..records import (
    CallKey,
    CallRecord,
    JobState,
    Lease,
    NewJob,
    SendOutcome,
    SuspendOutcome,
    call_id,
)
from .jobs import JobsSQL
from .rows import call_params, call_record_of, fence
from .statements import CALL_COLUMNS, new_job_row


class CallsSQL(JobsSQL):
    def load_history(self, root_id: str) -> list[CallRecord]:
        rows = self._run("history", {"p_root_id": root_id}, tuples=True).tuples
        return [call_record_of(row) for row in rows]

    def record_call(self, call: CallRecord, lease: Lease) -> None:
        params = call_params(call, lease)
        if call.attempts > 1:  # a retried call: its row exists, in state retrying
            with self._transaction() as conn:
                if conn.execute(self._sql.lock_job, params).rowcount != 1:
                    raise LeaseLost(lease.job_id)
                self._write_call(conn, call, lease, params)
            return
        try:
            inserted = self._run("record_call", params).rowcount
        except sa_exc.IntegrityError:
            inserted = 0  # another execution recorded this seq: we are not the owner
        if inserted != 1:
            raise LeaseLost(lease.job_id)

    def discard_calls(self, lease: Lease, keys: Sequence[CallKey]) -> None:
        with self._transaction() as conn:
            if conn.execute(self._sql.lock_job, fence(lease)).rowcount != 1:
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
            **call_params(call, lease),
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
        params = fence(lease)
        with self._transaction() as conn:
            stmt = self._sql.suspend_cancel_taken if cancel_taken else self._sql.suspend
            if conn.execute(stmt, params).rowcount != 1:
                row = conn.execute(self._sql.get_job, params).first()
                if row is not None and row.lease_owner == lease.owner:
                    return SuspendOutcome.CANCEL_REQUESTED
                raise LeaseLost(lease.job_id)
            for call in calls:
                self._write_call(conn, call, lease, call_params(call, lease))
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
        params = fence(lease, p_topic=topic, p_now=call.finished_at)
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
            self._write_call(conn, taken, lease, call_params(taken, lease))
            return str(found.payload)

    def settle_calls(self, lease: Lease, calls: Sequence[CallRecord]) -> None:
        with self._transaction() as conn:
            if conn.execute(self._sql.lock_job, fence(lease)).rowcount != 1:
                raise LeaseLost(lease.job_id)
            for call in calls:
                if conn.execute(self._sql.settle_call, call_params(call, lease)).rowcount != 1:
                    raise LeaseLost(lease.job_id)
