"""In-process Storage for unit tests and docs. Thread-safe; not shared across processes."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from ..errors import LeaseLost
from .base import (
    ACTIVE_STATES,
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
from .memory_schedules import ScheduleMemory


class MemoryStorage(ScheduleMemory):
    def __init__(self) -> None:
        self._init_schedules()
        self._lock = threading.Lock()
        self._jobs: dict[str, JobRecord] = {}
        self._calls: dict[tuple[str, str, int], CallRecord] = {}
        self._errors: dict[str, list[JobError]] = {}
        self._messages: list[dict[str, Any]] = []
        self._workers: dict[str, WorkerRecord] = {}

    def migrate(self) -> list[int]:
        return []

    def create_job(self, job: NewJob) -> bool:
        with self._lock:
            if job.id in self._jobs or self._holder(job.unique_key):
                return False
            self._jobs[job.id] = job.as_record()
            return True

    def create_unique_job(self, job: NewJob) -> str:
        with self._lock:
            holder = self._holder(job.unique_key)
            if holder is not None:
                return holder
            if job.id not in self._jobs:
                self._jobs[job.id] = job.as_record()
            return job.id

    def _holder(self, key: str | None) -> str | None:
        if key is None:
            return None
        return next(
            (j.id for j in self._jobs.values() if j.unique_key == key and j.state in ACTIVE_STATES),
            None,
        )

    def delete_unstarted_job(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job and job.state is JobState.PENDING and job.attempts == 0:
                del self._jobs[job_id]

    def claim_job(self, job_id: str, owner: str, now: datetime, lease_until: datetime) -> Claim:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return Claim(ClaimOutcome.MISSING)
            if job.state not in ACTIVE_STATES:
                return Claim(ClaimOutcome.FINISHED, job)
            if (
                (job.lease_owner is not None and _live(job, now))
                or job.cancel_requested_at
                or (job.state is JobState.SUSPENDED and job.awaiting > 0)
            ):
                return Claim(ClaimOutcome.BUSY, job)
            if job.not_before is not None and job.not_before > now:
                return Claim(ClaimOutcome.EARLY, job)
            self._jobs[job_id] = replace(
                job,
                state=JobState.RUNNING,
                attempts=job.attempts + 1,
                lease_owner=owner,
                lease_expires_at=lease_until,
                started_at=job.started_at or now,
            )
            return Claim(ClaimOutcome.CLAIMED, attempts=job.attempts + 1)

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

    def _discard(self, root_id: str, keys: Sequence[CallKey] | None) -> None:
        """Drop these checkpoints (None: all); a message a dropped receive took can be
        taken again."""
        for key in [k for k in self._calls if k[0] == root_id and (keys is None or k[1:] in keys)]:
            del self._calls[key]
        dropped = None if keys is None else {call_id(*key) for key in keys}
        for message in self._messages:
            if (
                message["job_id"] == root_id
                and message["taken_by"] is not None
                and (dropped is None or message["taken_by"] in dropped)
            ):
                message["taken_at"] = message["taken_by"] = None

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

    def retry_job(
        self,
        lease: Lease,
        error: str,
        discard: Sequence[CallKey],
        not_before: datetime,
        deliver_by: datetime,
        now: datetime,
    ) -> None:
        with self._lock:
            job = self._check(lease)
            self._add_error(job, error, now)
            self._discard(job.id, discard)
            self._jobs[job.id] = replace(
                job,
                state=JobState.RETRYING,
                failures=job.failures + 1,
                error=error,
                lease_owner=None,
                lease_expires_at=deliver_by,
                not_before=not_before,
            )

    def _add_error(self, job: JobRecord, error: str, now: datetime) -> None:
        self._errors.setdefault(job.id, []).append(JobError(job.id, job.attempts, error, now))

    def renew_lease(self, lease: Lease, until: datetime) -> bool:
        with self._lock:
            job = self._jobs.get(lease.job_id)
            if job is None or job.lease_owner != lease.owner:
                return False
            self._jobs[lease.job_id] = replace(job, lease_expires_at=until)
            return True

    def finish_job(
        self,
        lease: Lease,
        state: JobState,
        result: str | None,
        error: str | None,
        now: datetime,
        wake: Wake | None = None,
    ) -> bool:
        with self._lock:
            job = self._check(lease)
            failed = error is not None and state in (JobState.FAILED, JobState.DEAD)
            if failed:
                self._add_error(job, error, now)  # type: ignore[arg-type]
            self._jobs[lease.job_id] = replace(
                job,
                state=state,
                result=result,
                error=error,
                lease_owner=None,
                lease_expires_at=None,
                finished_at=now,
                failures=job.failures + failed,
                unique_key=None,
            )
            return wake is not None and self._wake(wake.parent_id, wake.deliver_by)

    def _wake(self, parent_id: str, deliver_by: datetime) -> bool:
        parent = self._jobs.get(parent_id)
        if parent is None:
            return False
        parent = replace(parent, awaiting=parent.awaiting - 1)
        woken = (
            parent.state is JobState.SUSPENDED
            and parent.awaiting <= 0
            and parent.waiting_topic is None
        )  # a stray child never wakes a receive()
        if woken:
            parent = replace(parent, state=JobState.PENDING, lease_expires_at=deliver_by)
        self._jobs[parent_id] = parent
        return woken

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

    def _untaken(self, job_id: str, topic: str) -> dict[str, Any] | None:
        return next(
            (
                m
                for m in self._messages
                if m["job_id"] == job_id and m["topic"] == topic and m["taken_at"] is None
            ),
            None,
        )

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

    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord]:
        with self._lock:
            return [self._jobs[i] for i in dict.fromkeys(job_ids) if i in self._jobs]

    def release_job(
        self, lease: Lease, state: JobState, deliver_by: datetime, now: datetime
    ) -> None:
        with self._lock:
            job = self._check(lease)
            self._jobs[lease.job_id] = replace(
                job, state=state, lease_owner=None, lease_expires_at=deliver_by
            )

    def expired_jobs(self, now: datetime, limit: int) -> list[JobRecord]:
        with self._lock:
            due = [
                j
                for j in self._jobs.values()
                if j.state in ACTIVE_STATES
                and j.lease_expires_at is not None
                and j.lease_expires_at < now
            ]
        return sorted(due, key=lambda j: j.lease_expires_at or now)[:limit]

    def recover_job(self, seen: JobRecord, deliver_by: datetime, now: datetime) -> bool:
        with self._lock:
            if not self._unchanged(seen):
                return False
            crashed = 1 if seen.lease_owner is not None else 0  # unclaimed: just resent
            self._jobs[seen.id] = replace(
                seen,
                state=JobState.PENDING,
                lease_owner=None,
                lease_expires_at=deliver_by,
                recoveries=seen.recoveries + crashed,
            )
            return True

    def abandon_job(
        self, seen: JobRecord, error: str, now: datetime, state: JobState = JobState.FAILED
    ) -> bool:
        with self._lock:
            if not self._unchanged(seen):
                return False
            self._jobs[seen.id] = replace(
                seen,
                state=state,
                lease_owner=None,
                lease_expires_at=None,
                error=error,
                finished_at=now,
                unique_key=None,
            )
            if state in (JobState.FAILED, JobState.DEAD):
                self._add_error(seen, error, now)
            if seen.parent_id is not None:
                self._wake(seen.parent_id, now)
            return True

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._jobs.get(job_id)

    def release_abandoned(
        self, job_id: str, owner_prefix: str, deliver_by: datetime
    ) -> JobRecord | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if (
                job is None
                or job.state is not JobState.RUNNING
                or not (job.lease_owner or "").startswith(owner_prefix)
            ):
                return None
            released = replace(
                job, state=JobState.PENDING, lease_owner=None, lease_expires_at=deliver_by
            )
            self._jobs[job_id] = released
            return released

    def cancel_job(self, job_id: str, error: str, now: datetime) -> CancelOutcome:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return CancelOutcome.MISSING
            if job.state not in ACTIVE_STATES:
                return CancelOutcome.FINISHED
            if job.lease_owner is not None and _live(job, now):
                if job.cancel_requested_at is None:
                    self._jobs[job_id] = replace(job, cancel_requested_at=now)
                return CancelOutcome.REQUESTED
            self._jobs[job_id] = replace(
                job,
                state=JobState.CANCELLED,
                error=error,
                finished_at=now,
                lease_owner=None,
                lease_expires_at=None,
                cancel_requested_at=now,
                unique_key=None,
            )
            if job.parent_id is not None:
                self._wake(job.parent_id, now)
            return CancelOutcome.CANCELLED

    def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        with self._lock:
            return {
                i
                for i in job_ids
                if i in self._jobs and self._jobs[i].cancel_requested_at is not None
            }

    def changes_since(self, after: datetime, limit: int) -> list[dict[str, Any]]:
        from ..history import position

        with self._lock:
            jobs = list(self._jobs.values())
            calls = list(self._calls.values())
            errors = [e for errs in self._errors.values() for e in errs]
        out: list[dict[str, Any]] = [
            {
                "kind": kind,
                "id": j.id,
                "task": j.task,
                "state": j.state.value,
                "started_at": j.started_at,
                "finished_at": j.finished_at,
                "error": j.error,
            }
            for j in jobs
            for kind, at in (("started", j.started_at), ("finished", j.finished_at))
            if at and at > after
        ]
        out += [
            {
                "kind": "call",
                "root_id": c.root_id,
                "name": c.name,
                "state": c.state.value,
                "attempts": c.attempts,
                "finished_at": c.finished_at,
                "position": ".".join(map(str, position(c.root_id, c.job_id, c.seq))),
            }
            for c in calls
            if c.finished_at > after
        ]
        finals = {
            (j.id, j.finished_at) for j in jobs if j.state in (JobState.FAILED, JobState.DEAD)
        }
        out += [
            {
                "kind": "error",
                "job_id": e.job_id,
                "execution": e.execution,
                "error": e.error,
                "failed_at": e.failed_at,
            }
            for e in errors
            if e.failed_at > after and (e.job_id, e.failed_at) not in finals
        ]
        return out

    def count_active(self) -> list[tuple[str | None, str, int]]:
        counts: dict[tuple[str | None, str], int] = {}
        with self._lock:
            for job in self._jobs.values():
                if job.state in ACTIVE_STATES:
                    key = (job.queue, job.state.value)
                    counts[key] = counts.get(key, 0) + 1
        return [(q, st, n) for (q, st), n in sorted(counts.items(), key=str)]

    def list_jobs(self, where: JobFilter) -> list[JobRecord]:
        with self._lock:
            jobs = [j for j in self._jobs.values() if _matches(j, where)]
        jobs.sort(key=lambda j: (j.created_at, j.id), reverse=True)
        return jobs[where.offset : where.offset + where.limit]

    def job_errors(self, job_id: str) -> list[JobError]:
        with self._lock:
            return list(self._errors.get(job_id, ()))

    def requeue_job(
        self,
        job_id: str,
        from_states: Sequence[JobState],
        discard: Sequence[CallKey] | None,
        deliver_by: datetime,
        now: datetime,
    ) -> bool:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state not in from_states:
                return False
            self._discard(job_id, discard)
            self._jobs[job_id] = replace(
                job,
                state=JobState.PENDING,
                failures=0,
                recoveries=0,
                requeues=job.requeues + 1,
                result=None,
                error=None,
                finished_at=None,
                not_before=None,
                cancel_requested_at=None,
                lease_owner=None,
                lease_expires_at=deliver_by,
                reported_at=None,
            )
            return True

    def delete_jobs(self, job_ids: Sequence[str], states: Sequence[JobState]) -> int:
        with self._lock:
            gone = [i for i in job_ids if i in self._jobs and self._jobs[i].state in states]
            for job_id in gone:
                del self._jobs[job_id]
                self._errors.pop(job_id, None)
            self._calls = {k: c for k, c in self._calls.items() if k[0] not in gone}
            self._messages = [m for m in self._messages if m["job_id"] not in gone]
            return len(gone)

    def mark_reported(self, job_id: str, now: datetime) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.state.finished and job.reported_at is None:
                self._jobs[job_id] = replace(job, reported_at=now)

    def record_heartbeat(self, worker: WorkerRecord) -> None:
        with self._lock:
            self._workers[worker.name] = worker

    def list_workers(self) -> list[WorkerRecord]:
        with self._lock:
            return [self._workers[name] for name in sorted(self._workers)]

    def delete_workers(self, seen_before: datetime) -> int:
        with self._lock:
            gone = [n for n, w in self._workers.items() if w.last_seen_at < seen_before]
            for name in gone:
                del self._workers[name]
            return len(gone)

    def _check(self, lease: Lease) -> JobRecord:
        job = self._jobs.get(lease.job_id)
        if job is None or job.lease_owner != lease.owner:
            raise LeaseLost(lease.job_id)
        return job

    def _unchanged(self, seen: JobRecord) -> bool:
        job = self._jobs.get(seen.id)
        return (
            job is not None
            and job.state in ACTIVE_STATES
            and job.lease_owner == seen.lease_owner
            and job.lease_expires_at == seen.lease_expires_at
        )


def _matches(job: JobRecord, where: JobFilter) -> bool:
    def within(value: datetime | None, after: datetime | None, before: datetime | None) -> bool:
        if after is None and before is None:
            return True
        return (
            value is not None
            and (after is None or value >= after)
            and (before is None or value < before)
        )

    return (
        (not where.states or job.state in where.states)
        and where.task in (None, job.task)
        and where.queue in (None, job.queue)
        and within(job.created_at, where.created_after, where.created_before)
        and within(job.finished_at, where.finished_after, where.finished_before)
    )


def _live(job: JobRecord, now: datetime) -> bool:
    return job.lease_expires_at is not None and job.lease_expires_at >= now
