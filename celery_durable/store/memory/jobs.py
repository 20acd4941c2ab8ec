"""The in-memory store's jobs: enqueue, claim, renew, finish, retry, recover, cancel, list."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from ..batch import check_batch, duplicate_ids
from ..claims import unclaimable
from ..records import (
    ACTIVE_STATES,
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
)
from .state import MemoryState, _live


class MemoryJobs(MemoryState):
    def create_job(self, job: NewJob) -> bool:
        with self._lock:
            if job.id in self._jobs or self._holder(job.unique_key):
                return False
            self._jobs[job.id] = job.as_record()
            return True

    def create_jobs(self, jobs: Sequence[NewJob]) -> None:
        check_batch(jobs)
        with self._lock:
            taken = [job.id for job in jobs if job.id in self._jobs]
            if taken:
                raise duplicate_ids(taken)
            for job in jobs:
                self._jobs[job.id] = job.as_record()

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

    def claim_job(
        self,
        job_id: str,
        owner: str,
        now: datetime,
        lease_until: datetime,
        queue: str | None = None,
    ) -> Claim:
        with self._lock:
            found = self._unpaused(job_id, now, queue, take_over_expired=True)
            if isinstance(found, Claim):
                return found
            return self._claim(found, owner, now, lease_until, None)

    def _unpaused(
        self, job_id: str, now: datetime, queue: str | None, *, take_over_expired: bool
    ) -> JobRecord | Claim:
        """The job, if nothing but flow limits can stop its claim; else the claim's
        outcome (a pause holds it). An expired lease is taken over only with
        ``take_over_expired`` (a limited task waits for recovery instead)."""
        job = self._jobs.get(job_id)
        if job is None:
            return Claim(ClaimOutcome.MISSING)
        refused = unclaimable(job, now)
        if refused is not None:
            return refused
        paused = self._paused(job.task, queue)
        if job.lease_owner is not None and (paused or not take_over_expired):
            return Claim(ClaimOutcome.BUSY, job)
        if paused:
            self._hold_paused(job, queue)
            return Claim(ClaimOutcome.HELD, job, held=Held.PAUSED)
        return job

    def _claim(
        self,
        job: JobRecord,
        owner: str,
        now: datetime,
        lease_until: datetime,
        flow_key: str | None,
    ) -> Claim:
        self._jobs[job.id] = replace(
            job,
            state=JobState.RUNNING,
            attempts=job.attempts + 1,
            lease_owner=owner,
            lease_expires_at=lease_until,
            started_at=job.started_at or now,
            held=None,
            debounce_key=None,
            flow_key=flow_key if flow_key is not None else job.flow_key,
        )
        return Claim(ClaimOutcome.CLAIMED, attempts=job.attempts + 1, flow_key=flow_key)

    def _paused(self, task: str, queue: str | None) -> bool:
        return any(
            key in self._pauses and self._pauses[key][1] is None
            for key in (("task", task), ("queue", queue))
        )

    def _hold_paused(self, job: JobRecord, queue: str | None) -> None:
        self._jobs[job.id] = replace(
            job, held=Held.PAUSED.value, lease_expires_at=None, held_on=queue
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
                debounce_key=None,
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
                held=None if seen.held == Held.OUTBOX.value else seen.held,
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
                debounce_key=None,
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
                debounce_key=None,
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

    def count_jobs(self, where: JobFilter) -> dict[str, int]:
        every_state = replace(where, states=())
        counts: dict[str, int] = {}
        with self._lock:
            for job in self._jobs.values():
                if _matches(job, every_state):
                    counts[job.state.value] = counts.get(job.state.value, 0) + 1
        return counts

    def finished_per_minute(self, since: datetime) -> list[tuple[datetime, str, int]]:
        counts: dict[tuple[datetime, str], int] = {}
        with self._lock:
            for job in self._jobs.values():
                if job.finished_at is not None and job.finished_at >= since:
                    key = (job.finished_at.replace(second=0, microsecond=0), job.state.value)
                    counts[key] = counts.get(key, 0) + 1
        return [(minute, st, n) for (minute, st), n in sorted(counts.items())]

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
            gone = {i for i in job_ids if i in self._jobs and self._jobs[i].state in states}
            for job_id in gone:
                del self._jobs[job_id]
                self._errors.pop(job_id, None)
            self._calls = {k: c for k, c in self._calls.items() if k[0] not in gone}
            self._messages = [m for m in self._messages if m["job_id"] not in gone]
            return len(gone)

    def _finished_before(self, state: JobState, before: datetime) -> list[JobRecord]:
        return sorted(
            (
                j
                for j in self._jobs.values()
                if j.state is state and j.finished_at and j.finished_at < before
            ),
            key=lambda j: (j.finished_at, j.id),
        )

    def delete_finished(self, state: JobState, before: datetime, limit: int) -> int:
        return self.delete_jobs(self.finished_job_ids(state, before, limit), (state,))

    def finished_job_ids(self, state: JobState, before: datetime, limit: int) -> list[str]:
        with self._lock:
            return [j.id for j in self._finished_before(state, before)[:limit]]

    def count_finished(self, state: JobState, before: datetime) -> int:
        with self._lock:
            return len(self._finished_before(state, before))

    def mark_reported(self, job_id: str, now: datetime) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.state.finished and job.reported_at is None:
                self._jobs[job_id] = replace(job, reported_at=now)


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
        and job.id.startswith(where.id_prefix or "")
        and within(job.created_at, where.created_after, where.created_before)
        and within(job.finished_at, where.finished_after, where.finished_before)
    )
