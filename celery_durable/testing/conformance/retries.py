"""Storage conformance, part 2: retries, dead letters, requeue, listing and purging."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ...errors import LeaseLost
from ...store.protocol import Storage
from ...store.records import CallState, ClaimOutcome, JobFilter, JobState, Lease
from .core import LEASE, T0, call_record, claimed, new_job

ERROR = '{"type": "Timeout", "message": "slow"}'


class RetryConformance:
    """Needs a ``storage`` fixture."""

    def test_retry_call_records_the_attempt_and_releases_until_not_before(
        self, storage: Storage
    ) -> None:
        lease = claimed(storage)
        failed = call_record(seq=1, state=CallState.RETRYING, result=None, error=ERROR)
        with pytest.raises(LeaseLost):
            storage.retry_call(failed, Lease("job-1", "w9"), T0, T0, T0)
        storage.retry_call(failed, lease, T0 + LEASE, T0 + LEASE * 3, T0)
        job = storage.get_job("job-1")
        assert job is not None
        assert (job.state, job.lease_owner, job.not_before, job.failures) == (
            JobState.RETRYING,
            None,
            T0 + LEASE,
            0,
        )
        early = storage.claim_job("job-1", "w2", T0 + LEASE / 2, T0 + LEASE * 2)
        assert early.outcome is ClaimOutcome.EARLY
        assert storage.get_job("job-1").state is JobState.RETRYING  # type: ignore[union-attr]
        due = T0 + LEASE
        assert storage.claim_job("job-1", "w2", due, due + LEASE).outcome is ClaimOutcome.CLAIMED
        [recorded] = storage.load_history("job-1")
        assert (recorded.state, recorded.attempts, recorded.error) == (CallState.RETRYING, 1, ERROR)

    def test_a_later_attempt_updates_the_retrying_row_fenced(self, storage: Storage) -> None:
        lease = claimed(storage)
        first = call_record(seq=1, state=CallState.RETRYING, result=None, error=ERROR)
        storage.retry_call(first, lease, T0, T0 + LEASE, T0)
        lease = Lease("job-1", "w2")
        assert storage.claim_job("job-1", "w2", T0, T0 + LEASE).outcome is ClaimOutcome.CLAIMED
        second = call_record(seq=1, state=CallState.RETRYING, result=None, error=ERROR, attempts=2)
        storage.retry_call(second, lease, T0, T0 + LEASE, T0)
        assert storage.claim_job("job-1", "w3", T0, T0 + LEASE).outcome is ClaimOutcome.CLAIMED
        lease = Lease("job-1", "w3")
        done = call_record(seq=1, attempts=3, result='"ok"', error=ERROR)
        with pytest.raises(LeaseLost):
            storage.record_call(done, Lease("job-1", "w2"))
        with pytest.raises(LeaseLost):  # attempt 2 again: somebody else wrote it already
            storage.record_call(call_record(seq=1, attempts=2, result='"x"'), lease)
        storage.record_call(done, lease)
        [recorded] = storage.load_history("job-1")
        assert (recorded.state, recorded.attempts, recorded.result, recorded.error) == (
            CallState.SUCCEEDED,
            3,
            '"ok"',
            ERROR,
        )

    def test_retry_job_counts_keeps_the_error_and_discards_checkpoints(
        self, storage: Storage
    ) -> None:
        lease = claimed(storage)
        storage.record_call(call_record(seq=1), lease)
        storage.record_call(call_record(seq=2, state=CallState.FAILED, error=ERROR), lease)
        storage.record_call(call_record("job-1.2", 1, root_id="job-1"), lease)
        with pytest.raises(LeaseLost):
            storage.retry_job(Lease("job-1", "w9"), ERROR, [], T0, T0, T0)
        storage.retry_job(
            lease,
            ERROR,
            [("job-1", 2), ("job-1.2", 1)],
            T0 + LEASE,
            T0 + LEASE * 3,
            T0 + timedelta(seconds=1),
        )
        assert [(c.job_id, c.seq) for c in storage.load_history("job-1")] == [("job-1", 1)]
        job = storage.get_job("job-1")
        assert job is not None
        assert (job.state, job.failures, job.error, job.not_before, job.lease_owner) == (
            JobState.RETRYING,
            1,
            ERROR,
            T0 + LEASE,
            None,
        )
        [error] = storage.job_errors("job-1")
        assert (error.execution, error.error, error.failed_at) == (
            1,
            ERROR,
            T0 + timedelta(seconds=1),
        )

    def test_failed_and_dead_jobs_keep_every_execution_error(self, storage: Storage) -> None:
        lease = claimed(storage)
        storage.retry_job(lease, '{"n": 1}', [], T0, T0 + LEASE, T0)
        assert storage.claim_job("job-1", "w2", T0, T0 + LEASE).outcome is ClaimOutcome.CLAIMED
        storage.finish_job(Lease("job-1", "w2"), JobState.DEAD, None, '{"n": 2}', T0 + LEASE)
        job = storage.get_job("job-1")
        assert job is not None
        assert (job.state, job.failures, job.error) == (JobState.DEAD, 2, '{"n": 2}')
        assert [(e.execution, e.error) for e in storage.job_errors("job-1")] == [
            (1, '{"n": 1}'),
            (2, '{"n": 2}'),
        ]
        other = claimed(storage, "job-2")
        storage.finish_job(other, JobState.SUCCEEDED, "1", None, T0)
        assert storage.job_errors("job-2") == []

    def test_requeue_dead_job_keeps_checkpoints_and_errors(self, storage: Storage) -> None:
        lease = claimed(storage)
        storage.record_call(call_record(seq=1), lease)
        storage.record_call(call_record(seq=2, state=CallState.FAILED, error=ERROR), lease)
        storage.finish_job(lease, JobState.DEAD, None, ERROR, T0)
        assert not storage.requeue_job("job-1", [JobState.FAILED], None, T0, T0)
        assert storage.requeue_job("job-1", [JobState.DEAD], [("job-1", 2)], T0 + LEASE, T0)
        assert not storage.requeue_job("job-1", [JobState.DEAD], None, T0, T0)  # once
        job = storage.get_job("job-1")
        assert job is not None
        assert (
            job.state,
            job.failures,
            job.requeues,
            job.error,
            job.finished_at,
            job.lease_expires_at,
        ) == (JobState.PENDING, 0, 1, None, None, T0 + LEASE)
        assert [c.seq for c in storage.load_history("job-1")] == [1]
        assert len(storage.job_errors("job-1")) == 1
        assert storage.claim_job("job-1", "w2", T0, T0 + LEASE).outcome is ClaimOutcome.CLAIMED

    def test_requeue_from_scratch_drops_every_checkpoint(self, storage: Storage) -> None:
        lease = claimed(storage)
        storage.record_call(call_record(seq=1), lease)
        storage.record_call(call_record("job-1.1", 1, root_id="job-1"), lease)
        storage.finish_job(lease, JobState.DEAD, None, ERROR, T0)
        assert storage.requeue_job("job-1", [JobState.DEAD], None, T0, T0)
        assert storage.load_history("job-1") == []

    def test_list_jobs_filters_and_pages(self, storage: Storage) -> None:
        for n in range(5):
            lease = claimed(storage, f"job-{n}", at=T0 + timedelta(minutes=n))
            state = JobState.DEAD if n % 2 == 0 else JobState.FAILED
            storage.finish_job(lease, state, None, ERROR, T0 + timedelta(hours=n))
        storage.create_job(new_job("pending"))

        def ids(**where: object) -> list[str]:
            return [j.id for j in storage.list_jobs(JobFilter(**where))]  # type: ignore[arg-type]

        assert ids(states=(JobState.DEAD,)) == ["job-4", "job-2", "job-0"]
        assert ids(states=(JobState.DEAD,), limit=2, offset=1) == ["job-2", "job-0"]
        assert ids(states=(JobState.PENDING,), task="tests.flow") == ["pending"]
        assert ids(task="other") == []
        assert ids(
            finished_after=T0 + timedelta(hours=1), finished_before=T0 + timedelta(hours=3)
        ) == ["job-2", "job-1"]
        assert ids(created_before=T0 + timedelta(minutes=1)) == ["pending", "job-0"]

    def test_counts_by_state_search_by_id_prefix_and_finished_per_minute(
        self, storage: Storage
    ) -> None:
        for n, state in enumerate((JobState.DEAD, JobState.SUCCEEDED, JobState.SUCCEEDED)):
            lease = claimed(storage, f"ab{n}-job", at=T0)
            storage.finish_job(lease, state, None, ERROR, T0 + timedelta(seconds=50 * n))
        storage.create_job(new_job("abz"))
        storage.create_job(new_job("b-job"))
        assert storage.count_jobs(JobFilter()) == {"dead": 1, "succeeded": 2, "pending": 2}
        # the states filter is not what counts look at; the other filters are
        assert storage.count_jobs(JobFilter(states=(JobState.DEAD,), id_prefix="ab")) == {
            "dead": 1,
            "succeeded": 2,
            "pending": 1,
        }
        assert storage.count_jobs(JobFilter(task="other")) == {}
        found = [j.id for j in storage.list_jobs(JobFilter(id_prefix="ab1"))]
        assert found == ["ab1-job"]
        assert sorted(j.id for j in storage.list_jobs(JobFilter(id_prefix="ab"))) == [
            "ab0-job",
            "ab1-job",
            "ab2-job",
            "abz",
        ]
        minute = T0.replace(second=0, microsecond=0)  # T0 is 5 s into it: +50 s stays in it
        assert storage.finished_per_minute(T0) == [
            (minute, "dead", 1),
            (minute, "succeeded", 1),
            (minute + timedelta(minutes=1), "succeeded", 1),
        ]
        assert storage.finished_per_minute(T0 + timedelta(seconds=60)) == [
            (minute + timedelta(minutes=1), "succeeded", 1)
        ]

    def test_delete_jobs_only_in_the_given_states(self, storage: Storage) -> None:
        dead = claimed(storage, "dead")
        storage.record_call(call_record("dead", 1), dead)
        storage.finish_job(dead, JobState.DEAD, None, ERROR, T0)
        claimed(storage, "running")
        assert storage.delete_jobs(["dead", "running", "missing"], [JobState.DEAD]) == 1
        assert storage.get_job("dead") is None
        assert storage.load_history("dead") == []
        assert storage.job_errors("dead") == []
        assert storage.get_job("running") is not None

    def test_abandon_to_dead(self, storage: Storage) -> None:
        claimed(storage)
        now = T0 + timedelta(hours=1)
        seen = storage.expired_jobs(now, 1)[0]
        assert storage.abandon_job(seen, ERROR, now, JobState.DEAD)
        assert storage.get_job("job-1").state is JobState.DEAD  # type: ignore[union-attr]

    def test_discard_calls_is_fenced(self, storage: Storage) -> None:
        lease = claimed(storage)
        for seq in (1, 2, 3):
            storage.record_call(call_record(seq=seq), lease)
        with pytest.raises(LeaseLost):
            storage.discard_calls(Lease("job-1", "w9"), [("job-1", 1)])
        storage.discard_calls(lease, [("job-1", 2), ("job-1", 3), ("job-1", 9)])
        assert [c.seq for c in storage.load_history("job-1")] == [1]
