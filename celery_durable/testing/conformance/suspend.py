"""Storage conformance, part 5: suspended jobs, dispatched children, waking parents."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from ...errors import LeaseLost
from ...store.protocol import Storage
from ...store.records import (
    CallState,
    CancelOutcome,
    ClaimOutcome,
    JobState,
    Lease,
    NewJob,
    SendOutcome,
    SuspendOutcome,
    Wake,
)
from .core import LEASE, T0, call_record, claimed, new_job

DEADLINE = T0 + timedelta(minutes=15)
ERROR = '{"type": "Cancelled"}'


def _children(n: int, parent: str = "job-1") -> list[NewJob]:
    return [
        dataclasses.replace(new_job(f"{parent}.{i}"), parent_id=parent) for i in range(1, n + 1)
    ]


def _ids(children: list[NewJob]) -> list[str]:
    return [c.id for c in children]


def _finish_child(storage: Storage, child_id: str, owner: str) -> bool:
    claim = storage.claim_job(child_id, owner, T0, T0 + LEASE)
    assert claim.outcome is ClaimOutcome.CLAIMED
    return storage.finish_job(
        Lease(child_id, owner), JobState.SUCCEEDED, '"ok"', None, T0, Wake("job-1", T0 + LEASE)
    )


class SuspendConformance:
    """Needs a ``storage`` fixture."""

    def test_suspend_for_children_then_the_last_one_wakes_the_parent(
        self, storage: Storage
    ) -> None:
        lease = claimed(storage)
        dispatched = [call_record(seq=i, state=CallState.DISPATCHED, result=None) for i in (1, 2)]
        children = _children(2)
        assert (
            storage.suspend_job(lease, dispatched, children, _ids(children), None, DEADLINE, T0)
            is SuspendOutcome.SUSPENDED
        )
        parent = storage.get_job("job-1")
        assert parent is not None
        assert (parent.state, parent.awaiting, parent.lease_owner, parent.lease_expires_at) == (
            JobState.SUSPENDED,
            2,
            None,
            DEADLINE,
        )
        assert [c.state for c in storage.load_history("job-1")] == [CallState.DISPATCHED] * 2
        assert {j.id: j.parent_id for j in storage.get_jobs(["job-1.1", "job-1.2", "x"])} == {
            "job-1.1": "job-1",
            "job-1.2": "job-1",
        }
        assert storage.get_jobs([]) == []
        # a suspended job waiting for children cannot be claimed
        assert storage.claim_job("job-1", "w2", T0, T0 + LEASE).outcome is ClaimOutcome.BUSY
        with pytest.raises(LeaseLost):
            storage.record_call(call_record(seq=3), lease)  # the lease was given back
        assert not _finish_child(storage, "job-1.2", "c2")
        assert storage.get_job("job-1").state is JobState.SUSPENDED  # type: ignore[union-attr]
        assert _finish_child(storage, "job-1.1", "c1")
        parent = storage.get_job("job-1")
        assert parent is not None
        assert (parent.state, parent.awaiting, parent.lease_expires_at) == (
            JobState.PENDING,
            0,
            T0 + LEASE,
        )
        lease = Lease("job-1", "w3")
        assert storage.claim_job("job-1", "w3", T0, T0 + LEASE).outcome is ClaimOutcome.CLAIMED
        settled = [
            dataclasses.replace(c, state=CallState.SUCCEEDED, result='"ok"') for c in dispatched
        ]
        storage.settle_calls(lease, settled)
        assert [(c.state, c.result) for c in storage.load_history("job-1")] == [
            (CallState.SUCCEEDED, '"ok"')
        ] * 2
        with pytest.raises(LeaseLost):  # only dispatched checkpoints can be settled
            storage.settle_calls(lease, settled[:1])

    def test_only_the_children_waited_for_are_counted(self, storage: Storage) -> None:
        lease = claimed(storage)
        storage.create_job(_children(1)[0])  # an earlier child, still running
        new = _children(3)[1:]
        storage.suspend_job(lease, [], new, _ids(new), None, DEADLINE, T0)
        assert storage.get_job("job-1").awaiting == 2  # type: ignore[union-attr]

    def test_suspend_is_all_or_nothing_and_fenced(self, storage: Storage) -> None:
        lease = claimed(storage)
        storage.create_job(_children(1)[0])  # the child id is taken already
        with pytest.raises(LeaseLost):
            storage.suspend_job(
                lease,
                [call_record(state=CallState.DISPATCHED)],
                _children(1),
                ["job-1.1"],
                None,
                DEADLINE,
                T0,
            )
        assert storage.load_history("job-1") == []
        assert storage.get_job("job-1").state is JobState.RUNNING  # type: ignore[union-attr]
        with pytest.raises(LeaseLost):
            storage.suspend_job(Lease("job-1", "thief"), [], [], [], None, DEADLINE, T0)

    def test_nothing_left_to_wait_for_leaves_the_job_pending(self, storage: Storage) -> None:
        lease = claimed(storage)
        storage.create_job(_children(1)[0])
        child = Lease("job-1.1", "c1")
        storage.claim_job("job-1.1", "c1", T0, T0 + LEASE)
        storage.finish_job(child, JobState.SUCCEEDED, '"ok"', None, T0)
        assert (
            storage.suspend_job(lease, [], [], ["job-1.1"], None, DEADLINE, T0)
            is SuspendOutcome.RUNNABLE
        )
        job = storage.get_job("job-1")
        assert job is not None and (job.state, job.lease_owner) == (JobState.PENDING, None)

    def test_a_pending_cancel_stops_the_suspend_unless_the_body_took_it(
        self, storage: Storage
    ) -> None:
        lease = claimed(storage)
        assert storage.cancel_job("job-1", ERROR, T0) is CancelOutcome.REQUESTED
        children = _children(1)
        assert (
            storage.suspend_job(lease, [], children, _ids(children), None, DEADLINE, T0)
            is SuspendOutcome.CANCEL_REQUESTED
        )
        assert storage.get_jobs(["job-1.1"]) == []  # nothing written
        job = storage.get_job("job-1")
        assert job is not None and job.state is JobState.RUNNING and job.lease_owner == "w1"
        # the body caught Cancelled and suspends to compensate: the request is cleared
        assert (
            storage.suspend_job(
                lease, [], children, _ids(children), None, DEADLINE, T0, cancel_taken=True
            )
            is SuspendOutcome.SUSPENDED
        )
        job = storage.get_job("job-1")
        assert job is not None
        assert (job.state, job.cancel_requested_at) == (JobState.SUSPENDED, None)

    def test_sleeping_job_is_claimable_when_due_and_swept_at_its_deadline(
        self, storage: Storage
    ) -> None:
        lease = claimed(storage)
        wake = T0 + timedelta(hours=1)
        assert (
            storage.suspend_job(lease, [call_record()], [], [], wake, wake, T0)
            is SuspendOutcome.SUSPENDED
        )
        early = storage.claim_job("job-1", "w2", T0 + LEASE, T0 + LEASE * 2)
        assert early.outcome is ClaimOutcome.EARLY
        assert storage.expired_jobs(wake - timedelta(seconds=1), 10) == []
        [due] = storage.expired_jobs(wake + timedelta(seconds=1), 10)
        assert due.state is JobState.SUSPENDED
        assert storage.claim_job("job-1", "w2", wake, wake + LEASE).outcome is ClaimOutcome.CLAIMED

    def test_a_child_abandoned_or_cancelled_wakes_its_parent(self, storage: Storage) -> None:
        lease = claimed(storage)
        children = _children(2)
        storage.suspend_job(lease, [], children, _ids(children), None, DEADLINE, T0)
        assert storage.cancel_job("job-1.1", ERROR, T0) is CancelOutcome.CANCELLED
        assert storage.get_job("job-1").awaiting == 1  # type: ignore[union-attr]
        storage.claim_job("job-1.2", "c2", T0, T0 + LEASE)
        later = T0 + LEASE * 2
        [lost] = [j for j in storage.expired_jobs(later, 10) if j.id == "job-1.2"]
        assert storage.abandon_job(lost, '{"type": "WorkerLostError"}', later)
        parent = storage.get_job("job-1")
        assert parent is not None and parent.state is JobState.PENDING

    def test_messages_wake_a_job_waiting_on_their_topic_and_are_taken_once(
        self, storage: Storage
    ) -> None:
        lease = claimed(storage)
        timeout = T0 + timedelta(days=2)  # receive("go", timeout=...)
        assert (
            storage.suspend_job(lease, [], [], [], timeout, timeout, T0, topic="go")
            is SuspendOutcome.SUSPENDED
        )
        job = storage.get_job("job-1")
        assert job is not None and (job.state, job.waiting_topic) == (JobState.SUSPENDED, "go")
        assert storage.send_message("job-1", "other", "1", None, T0, T0 + LEASE) is SendOutcome.SENT
        assert storage.send_message("job-1", "go", '"a"', "k1", T0, T0 + LEASE) is SendOutcome.WOKE
        assert (
            storage.send_message("job-1", "go", '"a"', "k1", T0, T0 + LEASE)
            is SendOutcome.DUPLICATE
        )
        assert storage.send_message("job-1", "go", '"b"', None, T0, T0 + LEASE) is SendOutcome.SENT
        job = storage.get_job("job-1")
        assert job is not None and (job.state, job.lease_expires_at) == (
            JobState.PENDING,
            T0 + LEASE,
        )
        assert storage.claim_job("job-1", "w2", T0, T0 + LEASE).outcome is ClaimOutcome.CLAIMED
        lease = Lease("job-1", "w2")
        taken = [
            storage.take_message(lease, "go", call_record(seq=i, result="null")) for i in (1, 2, 3)
        ]
        assert taken == ['"a"', '"b"', None]  # in the order sent, each once
        assert [(c.seq, c.result) for c in storage.load_history("job-1")] == [
            (1, '"a"'),
            (2, '"b"'),
        ]
        with pytest.raises(LeaseLost):
            storage.take_message(Lease("job-1", "thief"), "other", call_record(seq=4))

    def test_a_message_already_there_keeps_the_job_from_suspending(self, storage: Storage) -> None:
        lease = claimed(storage)
        storage.send_message("job-1", "go", "1", None, T0, T0 + LEASE)
        timeout = T0 + timedelta(days=2)
        assert (
            storage.suspend_job(lease, [], [], [], timeout, timeout, T0, topic="go")
            is SuspendOutcome.RUNNABLE
        )
        job = storage.get_job("job-1")  # runnable now, not held back by the timeout
        assert job is not None and (job.state, job.not_before) == (JobState.PENDING, None)
        assert storage.claim_job("job-1", "w2", T0, T0 + LEASE).outcome is ClaimOutcome.CLAIMED

    def test_a_message_taken_by_a_dropped_receive_can_be_taken_again(
        self, storage: Storage
    ) -> None:
        lease = claimed(storage)
        storage.send_message("job-1", "go", '"m"', None, T0, T0 + LEASE)
        assert storage.take_message(lease, "go", call_record(seq=2)) == '"m"'
        storage.retry_job(lease, ERROR, [("job-1", 2)], T0, T0 + LEASE, T0)
        assert storage.load_history("job-1") == []
        storage.claim_job("job-1", "w2", T0, T0 + LEASE)
        lease = Lease("job-1", "w2")
        assert storage.take_message(lease, "go", call_record(seq=2)) == '"m"'
        storage.finish_job(lease, JobState.FAILED, None, ERROR, T0)
        assert storage.requeue_job("job-1", [JobState.FAILED], None, T0 + LEASE, T0)
        storage.claim_job("job-1", "w3", T0, T0 + LEASE)
        assert storage.take_message(Lease("job-1", "w3"), "go", call_record(seq=2)) == '"m"'

    def test_a_stray_child_never_wakes_a_job_waiting_for_a_message(self, storage: Storage) -> None:
        lease = claimed(storage)
        storage.create_job(_children(1)[0])
        storage.suspend_job(lease, [], [], [], None, None, T0, topic="go")
        assert not _finish_child(storage, "job-1.1", "c1")
        job = storage.get_job("job-1")
        assert job is not None and job.state is JobState.SUSPENDED
        assert storage.expired_jobs(T0 + timedelta(days=365), 10) == [], (
            "a job waiting only for a message has no deadline: the send wakes it"
        )

    def test_messages_to_missing_or_finished_jobs_are_refused(self, storage: Storage) -> None:
        assert storage.send_message("nope", "go", "1", None, T0, T0 + LEASE) is SendOutcome.MISSING
        lease = claimed(storage)
        storage.finish_job(lease, JobState.SUCCEEDED, "1", None, T0)
        assert (
            storage.send_message("job-1", "go", "1", None, T0, T0 + LEASE) is SendOutcome.FINISHED
        )
        assert storage.delete_jobs(["job-1"], [JobState.SUCCEEDED]) == 1
