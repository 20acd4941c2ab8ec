"""Storage conformance, part 3: cancellation."""

from __future__ import annotations

from datetime import timedelta

from ...store.protocol import Storage
from ...store.records import CancelOutcome, ClaimOutcome, JobState, Lease
from .core import LEASE, T0, claimed, new_job

ERROR = '{"type": "Cancelled"}'


class OperationsConformance:
    """Needs a ``storage`` fixture."""

    def test_cancel_a_pending_job_for_good(self, storage: Storage) -> None:
        storage.create_job(new_job())
        assert storage.cancel_job("job-1", ERROR, T0) is CancelOutcome.CANCELLED
        job = storage.get_job("job-1")
        assert job is not None
        assert (job.state, job.error, job.finished_at, job.lease_expires_at) == (
            JobState.CANCELLED,
            ERROR,
            T0,
            None,
        )
        assert storage.claim_job("job-1", "w1", T0, T0 + LEASE).outcome is ClaimOutcome.FINISHED
        assert storage.cancel_job("job-1", ERROR, T0) is CancelOutcome.FINISHED
        assert storage.cancel_job("nope", ERROR, T0) is CancelOutcome.MISSING
        assert storage.expired_jobs(T0 + timedelta(days=1), 10) == []

    def test_cancel_a_running_job_is_a_request_seen_by_its_execution(
        self, storage: Storage
    ) -> None:
        claimed(storage)
        claimed(storage, "job-2")
        assert storage.cancel_requested(["job-1", "job-2"]) == set()
        assert storage.cancel_job("job-1", ERROR, T0) is CancelOutcome.REQUESTED
        assert storage.cancel_job("job-1", ERROR, T0 + LEASE / 2) is CancelOutcome.REQUESTED
        assert storage.cancel_requested(["job-1", "job-2"]) == {"job-1"}
        assert storage.cancel_requested([]) == set()
        job = storage.get_job("job-1")
        assert job is not None
        assert (job.state, job.cancel_requested_at) == (JobState.RUNNING, T0)
        # its worker dies: nobody may claim it again, recovery ends it instead
        later = T0 + LEASE * 2
        assert storage.claim_job("job-1", "w2", later, later + LEASE).outcome is ClaimOutcome.BUSY
        [seen] = [j for j in storage.expired_jobs(later, 10) if j.id == "job-1"]
        assert seen.cancel_requested_at == T0
        assert storage.abandon_job(seen, ERROR, later, JobState.CANCELLED)
        assert storage.get_job("job-1").state is JobState.CANCELLED  # type: ignore[union-attr]

    def test_cancel_a_job_whose_worker_died_or_that_waits_for_a_retry(
        self, storage: Storage
    ) -> None:
        claimed(storage)  # lease expires at T0 + LEASE
        assert storage.cancel_job("job-1", ERROR, T0 + LEASE * 2) is CancelOutcome.CANCELLED
        lease = claimed(storage, "job-2")
        storage.retry_job(lease, ERROR, [], T0 + LEASE, T0 + LEASE * 2, T0)
        assert storage.cancel_job("job-2", ERROR, T0) is CancelOutcome.CANCELLED
        assert (
            storage.claim_job("job-2", "w2", T0 + LEASE, T0 + LEASE * 2).outcome
            is ClaimOutcome.FINISHED
        )

    def test_a_cancelled_job_can_be_requeued(self, storage: Storage) -> None:
        lease = claimed(storage)
        storage.cancel_job("job-1", ERROR, T0)
        storage.finish_job(lease, JobState.CANCELLED, None, ERROR, T0)
        assert storage.requeue_job("job-1", [JobState.CANCELLED], None, T0 + LEASE, T0)
        job = storage.get_job("job-1")
        assert job is not None and (job.state, job.cancel_requested_at) == (JobState.PENDING, None)
        assert storage.claim_job("job-1", "w2", T0, T0 + LEASE).outcome is ClaimOutcome.CLAIMED
        assert storage.renew_lease(Lease("job-1", "w2"), T0 + LEASE)

    def test_release_abandoned_only_for_the_owner_prefix(self, storage: Storage) -> None:
        claimed(storage, owner="host-a/123/abc")
        claimed(storage, "job-2", owner="host-a/1234/abc")
        claimed(storage, "job-3", owner="host_a/123/abc")  # "_" is not a wildcard
        assert storage.release_abandoned("job-1", "host-b/123/", T0) is None
        released = storage.release_abandoned("job-1", "host-a/123/", T0 + LEASE)
        assert released is not None
        assert (
            released.state,
            released.lease_owner,
            released.lease_expires_at,
            released.recoveries,
            released.attempts,
        ) == (JobState.PENDING, None, T0 + LEASE, 0, 1)
        assert storage.release_abandoned("job-1", "host-a/123/", T0) is None  # once
        assert storage.release_abandoned("job-2", "host-a/123/", T0) is None
        assert storage.release_abandoned("job-3", "host-a/123/", T0) is None
        assert storage.claim_job("job-1", "w2", T0, T0 + LEASE).outcome is ClaimOutcome.CLAIMED
