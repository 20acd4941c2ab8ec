"""In-process Storage for unit tests and docs. Thread-safe; not shared across processes."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime

from ..errors import LeaseLost
from .base import (
    ACTIVE_STATES,
    CallRecord,
    Claim,
    ClaimOutcome,
    JobRecord,
    JobState,
    Lease,
    NewJob,
)


class MemoryStorage:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, JobRecord] = {}
        self._calls: dict[tuple[str, str, int], CallRecord] = {}

    def migrate(self) -> list[int]:
        return []

    def create_job(self, job: NewJob) -> bool:
        with self._lock:
            if job.id in self._jobs:
                return False
            self._jobs[job.id] = JobRecord(
                id=job.id, task=job.task, args=job.args, kwargs=job.kwargs, queue=job.queue,
                priority=job.priority, state=JobState.PENDING, attempts=0, recoveries=0,
                lease_owner=None, lease_expires_at=job.deliver_by, result=None, error=None,
                created_at=job.created_at, started_at=None, finished_at=None,
                options=job.options,
            )
            return True

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
            if job.lease_owner is not None and _live(job, now):
                return Claim(ClaimOutcome.BUSY, job)
            self._jobs[job_id] = replace(
                job, state=JobState.RUNNING, attempts=job.attempts + 1, lease_owner=owner,
                lease_expires_at=lease_until, started_at=job.started_at or now,
            )
            return Claim(ClaimOutcome.CLAIMED, attempts=job.attempts + 1)

    def load_history(self, root_id: str) -> list[CallRecord]:
        with self._lock:
            calls = [c for c in self._calls.values() if c.root_id == root_id]
        return sorted(calls, key=lambda c: (c.job_id, c.seq))

    def record_call(self, call: CallRecord, lease: Lease) -> None:
        with self._lock:
            self._check(lease)
            key = (call.root_id, call.job_id, call.seq)
            if key in self._calls:
                raise LeaseLost(lease.job_id)
            self._calls[key] = call

    def renew_lease(self, lease: Lease, until: datetime) -> bool:
        with self._lock:
            job = self._jobs.get(lease.job_id)
            if job is None or job.lease_owner != lease.owner:
                return False
            self._jobs[lease.job_id] = replace(job, lease_expires_at=until)
            return True

    def finish_job(self, lease: Lease, state: JobState, result: str | None,
                   error: str | None, now: datetime) -> None:
        with self._lock:
            job = self._check(lease)
            self._jobs[lease.job_id] = replace(
                job, state=state, result=result, error=error, lease_owner=None,
                lease_expires_at=None, finished_at=now,
            )

    def release_job(self, lease: Lease, state: JobState, deliver_by: datetime,
                    now: datetime) -> None:
        with self._lock:
            job = self._check(lease)
            self._jobs[lease.job_id] = replace(
                job, state=state, lease_owner=None, lease_expires_at=deliver_by)

    def expired_jobs(self, now: datetime, limit: int) -> list[JobRecord]:
        with self._lock:
            due = [j for j in self._jobs.values()
                   if j.state in ACTIVE_STATES and j.lease_expires_at is not None
                   and j.lease_expires_at < now]
        return sorted(due, key=lambda j: j.lease_expires_at or now)[:limit]

    def recover_job(self, seen: JobRecord, deliver_by: datetime, now: datetime) -> bool:
        with self._lock:
            if not self._unchanged(seen):
                return False
            crashed = 1 if seen.lease_owner is not None else 0  # unclaimed: just resent
            self._jobs[seen.id] = replace(
                seen, state=JobState.PENDING, lease_owner=None, lease_expires_at=deliver_by,
                recoveries=seen.recoveries + crashed)
            return True

    def abandon_job(self, seen: JobRecord, error: str, now: datetime) -> bool:
        with self._lock:
            if not self._unchanged(seen):
                return False
            self._jobs[seen.id] = replace(
                seen, state=JobState.FAILED, lease_owner=None, lease_expires_at=None,
                error=error, finished_at=now)
            return True

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _check(self, lease: Lease) -> JobRecord:
        job = self._jobs.get(lease.job_id)
        if job is None or job.lease_owner != lease.owner:
            raise LeaseLost(lease.job_id)
        return job

    def _unchanged(self, seen: JobRecord) -> bool:
        job = self._jobs.get(seen.id)
        return (job is not None and job.state in ACTIVE_STATES
                and job.lease_owner == seen.lease_owner
                and job.lease_expires_at == seen.lease_expires_at)


def _live(job: JobRecord, now: datetime) -> bool:
    return job.lease_expires_at is not None and job.lease_expires_at >= now
