"""The in-memory store's checkpoints, and the writes of jobs that wait."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from ...errors import LeaseLost
from ..records import (
    ACTIVE_STATES,
    CallKey,
    CallRecord,
    CallState,
    JobState,
    Lease,
    NewJob,
    SendOutcome,
    SuspendOutcome,
    call_id,
)
from .jobs import MemoryJobs


class MemoryCalls(MemoryJobs):
    def load_history(self, root_id: str) -> list[CallRecord]:
        with self._lock:
            calls = [c for c in self._calls.values() if c.root_id == root_id]
        return sorted(calls, key=lambda c: (c.job_id, c.seq))

    def record_call(self, call: CallRecord, lease: Lease) -> None:
        with self._lock:
            self._check(lease)
            self._put_call(call, lease)

    def _put_call(self, call: CallRecord, lease: Lease) -> None:
        key = (call.root_id, call.job_id, call.seq)
        previous = self._calls.get(key)
        if call.attempts == 1 and previous is not None:
            raise LeaseLost(lease.job_id)  # another execution recorded this seq
        if call.attempts > 1 and (
            previous is None
            or previous.state is not CallState.RETRYING
            or previous.attempts != call.attempts - 1
        ):
            raise LeaseLost(lease.job_id)
        self._calls[key] = call

    def discard_calls(self, lease: Lease, keys: Sequence[CallKey]) -> None:
        with self._lock:
            self._check(lease)
            self._discard(lease.job_id, keys)

    def retry_call(
        self,
        call: CallRecord,
        lease: Lease,
        not_before: datetime,
        deliver_by: datetime,
        now: datetime,
    ) -> None:
        with self._lock:
            job = self._check(lease)
            self._put_call(call, lease)
            self._jobs[job.id] = replace(
                job,
                state=JobState.RETRYING,
                lease_owner=None,
                lease_expires_at=deliver_by,
                not_before=not_before,
            )

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
        with self._lock:
            job = self._check(lease)
            if job.cancel_requested_at is not None and not cancel_taken:
                return SuspendOutcome.CANCEL_REQUESTED
            if any(child.id in self._jobs for child in children):
                raise LeaseLost(lease.job_id)  # another execution dispatched them
            for call in calls:
                self._put_call(call, lease)
            for child in children:
                self._jobs[child.id] = child.as_record()
            awaiting = sum(
                1
                for i in set(waiting_for)
                if i in self._jobs and self._jobs[i].state in ACTIVE_STATES
            )
            arrived = topic is not None and self._untaken(job.id, topic) is not None
            waiting = not arrived and (awaiting > 0 or wake_at is not None or topic is not None)
            self._jobs[job.id] = replace(
                job,
                state=JobState.SUSPENDED if waiting else JobState.PENDING,
                lease_owner=None,
                lease_expires_at=deliver_by if waiting else now,
                not_before=wake_at if waiting else None,
                awaiting=awaiting,
                cancel_requested_at=None,
                waiting_topic=topic,
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
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return SendOutcome.MISSING
            if job.state not in ACTIVE_STATES:
                return SendOutcome.FINISHED
            if key is not None and any(
                m["job_id"] == job_id and m["key"] == key for m in self._messages
            ):
                return SendOutcome.DUPLICATE
            self._messages.append(
                {
                    "job_id": job_id,
                    "topic": topic,
                    "payload": payload,
                    "key": key,
                    "sent_at": now,
                    "taken_at": None,
                    "taken_by": None,
                }
            )
            if job.state is JobState.SUSPENDED and job.awaiting <= 0 and job.waiting_topic == topic:
                self._jobs[job_id] = replace(
                    job, state=JobState.PENDING, lease_expires_at=deliver_by, not_before=None
                )
                return SendOutcome.WOKE
            return SendOutcome.SENT

    def take_message(self, lease: Lease, topic: str, call: CallRecord) -> str | None:
        with self._lock:
            self._check(lease)
            message = self._untaken(lease.job_id, topic)
            if message is None:
                return None
            self._put_call(replace(call, result=message["payload"]), lease)
            message["taken_at"] = call.finished_at
            message["taken_by"] = call_id(call.job_id, call.seq)
            return str(message["payload"])

    def settle_calls(self, lease: Lease, calls: Sequence[CallRecord]) -> None:
        with self._lock:
            self._check(lease)
            for call in calls:
                key = (call.root_id, call.job_id, call.seq)
                previous = self._calls.get(key)
                if previous is None or previous.state is not CallState.DISPATCHED:
                    raise LeaseLost(lease.job_id)
                self._calls[key] = call
