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

    def test_finished_jobs_oldest_first_for_retention(self, storage: Storage) -> None:
        for n in range(5):
            lease = claimed(storage, f"r{n}")
            state = JobState.SUCCEEDED if n != 2 else JobState.FAILED
            storage.finish_job(lease, state, "1", None, T0 + timedelta(minutes=n))
        cutoff = T0 + timedelta(minutes=3, seconds=30)
        assert storage.finished_job_ids(JobState.SUCCEEDED, cutoff, 10) == ["r0", "r1", "r3"]
        assert storage.finished_job_ids(JobState.SUCCEEDED, cutoff, 2) == ["r0", "r1"]
        assert storage.count_finished(JobState.SUCCEEDED, cutoff) == 3
        assert storage.count_finished(JobState.FAILED, cutoff) == 1
        assert storage.count_finished(JobState.DEAD, cutoff) == 0

    def test_delete_jobs_takes_their_calls_errors_and_messages_and_spares_the_rest(
        self, storage: Storage
    ) -> None:
        from .core import call_record

        for job_id in ("gone", "kept", "requeued"):
            lease = claimed(storage, job_id)
            storage.record_call(call_record(job_id, 1), lease)
            storage.send_message(job_id, "t", '"m"', None, T0, T0 + LEASE)
            storage.finish_job(lease, JobState.FAILED, None, '{"type": "E"}', T0)
        storage.requeue_job("requeued", [JobState.FAILED], [], T0 + LEASE, T0)
        deleted = storage.delete_jobs(["gone", "requeued", "nope", "gone"], [JobState.FAILED])
        assert deleted == 1
        assert storage.get_job("gone") is None
        assert (storage.load_history("gone"), storage.job_errors("gone")) == ([], [])
        for job_id in ("kept", "requeued"):  # a requeued job is active again: it stays
            assert storage.get_job(job_id) is not None
            assert len(storage.load_history(job_id)) == 1
            assert len(storage.job_errors(job_id)) == 1

    def test_delete_finished_takes_the_oldest_batch_with_its_calls(self, storage: Storage) -> None:
        from .core import call_record

        for n in range(5):
            lease = claimed(storage, f"d{n}")
            storage.record_call(call_record(f"d{n}", 1), lease)
            storage.finish_job(lease, JobState.SUCCEEDED, "1", None, T0 + timedelta(minutes=n))
        claimed(storage, "active")
        cutoff = T0 + timedelta(minutes=3, seconds=30)
        assert storage.delete_finished(JobState.SUCCEEDED, cutoff, 2) == 2
        assert [storage.get_job(f"d{n}") is None for n in range(5)] == [
            True,
            True,
            False,
            False,
            False,
        ]
        assert storage.load_history("d0") == [] and len(storage.load_history("d2")) == 1
        assert storage.delete_finished(JobState.SUCCEEDED, cutoff, 10) == 2  # d2, d3
        assert storage.delete_finished(JobState.SUCCEEDED, cutoff, 10) == 0
        assert storage.get_job("d4") is not None and storage.get_job("active") is not None
        assert storage.delete_finished(JobState.FAILED, cutoff, 10) == 0

    def test_a_store_says_where_it_is_and_what_migrations_are_pending(
        self, storage: Storage
    ) -> None:
        assert isinstance(storage.safe_url, str) and storage.safe_url
        assert storage.pending_migrations() == []  # the fixture's store is migrated
