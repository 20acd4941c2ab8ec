"""Storage conformance, part 1: jobs, leases, checkpoints and recovery."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from ...errors import LeaseLost, ValidationError
from ...store.protocol import Storage
from ...store.records import (
    CallRecord,
    CallState,
    ClaimOutcome,
    JobState,
    Lease,
    NewJob,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
LEASE = timedelta(seconds=30)


def new_job(job_id: str = "job-1", *, at: datetime = T0, args: str = "[1]") -> NewJob:
    return NewJob(
        id=job_id,
        task="tests.flow",
        args=args,
        kwargs='{"k": "v"}',
        queue="default",
        priority=7,
        created_at=at,
        deliver_by=at + timedelta(minutes=15),
        options='{"root_id": "r"}',
    )


def call_record(
    job_id: str = "job-1",
    seq: int = 1,
    *,
    root_id: str | None = None,
    result: str | None = "42",
    state: CallState = CallState.SUCCEEDED,
    attempts: int = 1,
    error: str | None = None,
    at: datetime = T0,
) -> CallRecord:
    return CallRecord(
        job_id=job_id,
        seq=seq,
        root_id=root_id or job_id,
        name=f"step{seq}",
        args_digest="d" * 16,
        state=state,
        attempts=attempts,
        result=result,
        error=error,
        started_at=at,
        finished_at=at + timedelta(milliseconds=5),
    )


def claimed(storage: Storage, job_id: str = "job-1", owner: str = "w1", at: datetime = T0) -> Lease:
    storage.create_job(new_job(job_id, at=at))
    claim = storage.claim_job(job_id, owner, at, at + LEASE)
    assert claim.outcome is ClaimOutcome.CLAIMED
    assert claim.attempts in (1, None)
    return Lease(job_id, owner)


class CoreConformance:
    """Jobs, leases, checkpoints, recovery. Needs a ``storage`` fixture."""

    def test_migrate_is_idempotent(self, storage: Storage) -> None:
        storage.migrate()
        storage.migrate()
        assert storage.create_job(new_job())

    def test_create_job_once(self, storage: Storage) -> None:
        assert storage.create_job(new_job()) is True
        assert storage.create_job(new_job(args="[2]")) is False
        job = storage.get_job("job-1")
        assert job is not None
        assert (job.state, job.args, job.kwargs, job.attempts) == (
            JobState.PENDING,
            "[1]",
            '{"k": "v"}',
            0,
        )
        assert (job.task, job.queue, job.priority, job.options) == (
            "tests.flow",
            "default",
            7,
            '{"root_id": "r"}',
        )
        assert job.created_at == T0  # aware UTC, microseconds kept

    def test_create_jobs_writes_the_whole_batch(self, storage: Storage) -> None:
        batch = [new_job(f"batch-{n}", args=f"[{n}]") for n in range(1203)]
        storage.create_jobs(batch)
        for n in (0, 500, 1202):
            job = storage.get_job(f"batch-{n}")
            assert job is not None
            assert (job.state, job.args, job.created_at) == (JobState.PENDING, f"[{n}]", T0)
        assert storage.claim_job("batch-7", "w1", T0, T0 + LEASE).outcome is ClaimOutcome.CLAIMED

    def test_create_jobs_is_all_or_nothing(self, storage: Storage) -> None:
        assert storage.create_job(new_job("taken"))
        batch = [new_job("fresh-1"), new_job("taken"), new_job("fresh-2")]
        with pytest.raises(ValidationError, match="'taken' exist already"):
            storage.create_jobs(batch)
        assert storage.get_job("fresh-1") is None and storage.get_job("fresh-2") is None
        many = [new_job(f"many-{n}") for n in range(1500)] + [new_job("taken")]
        with pytest.raises(ValidationError, match="'taken' exist already"):
            storage.create_jobs(many)  # the taken id found among more ids than one query
        assert storage.get_job("many-0") is None and storage.get_job("many-1499") is None
        with pytest.raises(ValidationError, match="'twice' more than once"):
            storage.create_jobs([new_job("twice"), new_job("fresh-3"), new_job("twice")])
        assert storage.get_job("fresh-3") is None and storage.get_job("twice") is None
        keyed = replace(new_job("keyed"), unique_key="k")
        with pytest.raises(ValidationError, match="one at a time"):
            storage.create_jobs([new_job("fresh-4"), keyed])
        assert storage.get_job("fresh-4") is None

    def test_unknown_job(self, storage: Storage) -> None:
        assert storage.get_job("nope") is None
        assert storage.claim_job("nope", "w1", T0, T0 + LEASE).outcome is ClaimOutcome.MISSING

    def test_claim_is_exclusive_until_the_lease_expires(self, storage: Storage) -> None:
        claimed(storage, owner="w1")
        busy = storage.claim_job("job-1", "w2", T0 + LEASE / 2, T0 + LEASE * 2)
        assert busy.outcome is ClaimOutcome.BUSY
        assert busy.job is not None and busy.job.lease_owner == "w1"
        later = T0 + LEASE + timedelta(seconds=1)
        second = storage.claim_job("job-1", "w2", later, later + LEASE)
        assert second.outcome is ClaimOutcome.CLAIMED
        assert second.attempts in (2, None)  # None: this store cannot tell in one trip
        job = storage.get_job("job-1")
        assert job is not None
        assert (job.state, job.lease_owner, job.attempts, job.started_at) == (
            JobState.RUNNING,
            "w2",
            2,
            T0,
        )

    def test_record_call_is_fenced_on_the_lease(self, storage: Storage) -> None:
        lease = claimed(storage)
        storage.record_call(call_record(seq=1), lease)
        with pytest.raises(LeaseLost):
            storage.record_call(call_record(seq=2), Lease("job-1", "intruder"))
        with pytest.raises(LeaseLost):
            storage.record_call(call_record(seq=1, result="99"), lease)
        history = storage.load_history("job-1")
        assert [(c.seq, c.result) for c in history] == [(1, "42")]

    def test_history_loads_the_whole_tree_in_order(self, storage: Storage) -> None:
        lease = claimed(storage)
        storage.record_call(call_record(seq=2), lease)
        storage.record_call(call_record("job-1.1", 1, root_id="job-1", result='"c"'), lease)
        storage.record_call(call_record(seq=1, state=CallState.FAILED, result="null"), lease)
        claimed(storage, "job-2")
        history = storage.load_history("job-1")
        assert [(c.job_id, c.seq, c.state) for c in history] == [
            ("job-1", 1, CallState.FAILED),
            ("job-1", 2, CallState.SUCCEEDED),
            ("job-1.1", 1, CallState.SUCCEEDED),
        ]
        assert history[1].started_at == T0
        assert history[1].finished_at == T0 + timedelta(milliseconds=5)

    def test_child_scope_ids_do_not_collide_with_job_ids(self, storage: Storage) -> None:
        parent = claimed(storage, "J")
        storage.record_call(call_record("J.1", 1, root_id="J"), parent)
        lookalike = claimed(storage, "J.1")
        storage.record_call(call_record("J.1", 1), lookalike)
        assert [(c.root_id, c.job_id) for c in storage.load_history("J.1")] == [("J.1", "J.1")]
        assert [(c.root_id, c.job_id) for c in storage.load_history("J")] == [("J", "J.1")]

    def test_large_and_unicode_payloads(self, storage: Storage) -> None:
        lease = claimed(storage)
        big = '"' + "é€😀" * 30000 + '"'
        storage.record_call(call_record(result=big), lease)
        assert storage.load_history("job-1")[0].result == big

    def test_finish_releases_and_is_fenced(self, storage: Storage) -> None:
        lease = claimed(storage)
        with pytest.raises(LeaseLost):
            storage.finish_job(Lease("job-1", "w9"), JobState.SUCCEEDED, "1", None, T0)
        storage.finish_job(lease, JobState.SUCCEEDED, '{"ok": true}', None, T0 + LEASE)
        again = storage.claim_job("job-1", "w2", T0 + LEASE * 9, T0 + LEASE * 10)
        assert again.outcome is ClaimOutcome.FINISHED
        assert again.job is not None
        assert (
            again.job.state,
            again.job.result,
            again.job.lease_owner,
            again.job.finished_at,
        ) == (JobState.SUCCEEDED, '{"ok": true}', None, T0 + LEASE)
        with pytest.raises(LeaseLost):
            storage.finish_job(lease, JobState.FAILED, None, "{}", T0)

    def test_renew_lease(self, storage: Storage) -> None:
        lease = claimed(storage)
        assert storage.renew_lease(lease, T0 + LEASE * 3)
        assert not storage.renew_lease(Lease("job-1", "w2"), T0 + LEASE * 3)
        busy = storage.claim_job("job-1", "w2", T0 + LEASE * 2, T0 + LEASE * 4)
        assert busy.outcome is ClaimOutcome.BUSY

    def test_release_makes_the_job_claimable(self, storage: Storage) -> None:
        lease = claimed(storage)
        storage.release_job(lease, JobState.RETRYING, T0 + LEASE * 5, T0)
        job = storage.get_job("job-1")
        assert job is not None and (job.state, job.lease_owner) == (JobState.RETRYING, None)
        assert storage.claim_job("job-1", "w2", T0, T0 + LEASE).outcome is ClaimOutcome.CLAIMED

    def test_expired_jobs_and_recovery_compare_and_set(self, storage: Storage) -> None:
        claimed(storage, "running", owner="dead-worker")
        storage.create_job(new_job("unclaimed"))
        done = claimed(storage, "done")
        storage.finish_job(done, JobState.SUCCEEDED, "1", None, T0)
        claimed(storage, "live", at=T0 + timedelta(hours=1))
        now = T0 + timedelta(minutes=20)
        expired = storage.expired_jobs(now, 10)
        assert [j.id for j in expired] == ["running", "unclaimed"]
        running = expired[0]
        assert storage.recover_job(running, now + LEASE, now) is True
        assert storage.recover_job(running, now + LEASE, now) is False  # another sweeper
        job = storage.get_job("running")
        assert job is not None
        assert (job.state, job.lease_owner, job.recoveries) == (JobState.PENDING, None, 1)
        assert [j.id for j in storage.expired_jobs(now, 10)] == ["unclaimed"]
        assert storage.recover_job(expired[1], now + LEASE, now) is True
        resent = storage.get_job("unclaimed")
        assert resent is not None and resent.recoveries == 0  # never claimed: not a crash
        assert storage.claim_job("running", "w2", now, now + LEASE).outcome is ClaimOutcome.CLAIMED

    def test_abandon_job(self, storage: Storage) -> None:
        claimed(storage)
        now = T0 + timedelta(hours=1)
        seen = storage.expired_jobs(now, 1)[0]
        assert storage.abandon_job(seen, '{"type": "WorkerLostError"}', now)
        assert not storage.abandon_job(seen, "{}", now)
        job = storage.get_job("job-1")
        assert job is not None
        assert (job.state, job.error, job.finished_at) == (
            JobState.FAILED,
            '{"type": "WorkerLostError"}',
            now,
        )
        assert storage.expired_jobs(now, 10) == []

    def test_delete_unstarted_job_only(self, storage: Storage) -> None:
        storage.create_job(new_job("fresh"))
        claimed(storage, "started")
        storage.delete_unstarted_job("fresh")
        storage.delete_unstarted_job("started")
        assert storage.get_job("fresh") is None
        assert storage.get_job("started") is not None
