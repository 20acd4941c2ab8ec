"""Storage conformance, part 7: flow control (pauses, concurrency and rate limits,
debounce)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from ...store.protocol import Storage
from ...store.records import ClaimOutcome, Gate, Held, JobState, Lease
from .core import LEASE, T0, new_job

ONE_AT_A_TIME = Gate(task="tests.flow", queue="default", concurrency=1, concurrency_key="k1")


class FlowConformance:
    """Needs a ``storage`` fixture."""

    def test_a_paused_queue_holds_its_jobs_until_resume(self, storage: Storage) -> None:
        storage.create_job(new_job("job-1"))
        storage.create_job(new_job("job-2", at=T0 + timedelta(seconds=1)))
        assert storage.pause("queue", "default", T0)
        assert not storage.pause("queue", "default", T0)  # paused already
        assert [(p.kind, p.name, p.paused_at) for p in storage.pauses()] == [
            ("queue", "default", T0)
        ]
        for job_id in ("job-2", "job-1"):
            claim = storage.claim_job(job_id, "w1", T0, T0 + LEASE, "default")
            assert (claim.outcome, claim.held) == (ClaimOutcome.HELD, Held.PAUSED)
        job = storage.get_job("job-1")
        assert job is not None
        # waiting in SQL with no deadline: recovery does not redeliver it in a loop
        assert (job.state, job.held, job.lease_expires_at) == (JobState.PENDING, "paused", None)
        assert storage.expired_jobs(T0 + timedelta(days=1), 10) == []
        # another queue is not paused
        storage.create_job(replace(new_job("job-3"), queue="other"))
        assert storage.claim_job("job-3", "w1", T0, T0 + LEASE, "other").outcome is (
            ClaimOutcome.CLAIMED
        )
        released = storage.resume("queue", "default", T0, T0 + timedelta(minutes=15))
        assert [j.id for j in released or []] == ["job-1", "job-2"]  # oldest first
        assert storage.resume("queue", "default", T0, T0) is None
        assert storage.pauses() == []
        claim = storage.claim_job("job-1", "w1", T0, T0 + LEASE, "default")
        assert claim.outcome is ClaimOutcome.CLAIMED
        assert storage.get_job("job-1").held is None  # type: ignore[union-attr]

    def test_a_paused_task_holds_its_jobs_and_two_pauses_hold_until_both_lift(
        self, storage: Storage
    ) -> None:
        storage.create_job(new_job("job-1"))
        storage.pause("task", "tests.flow", T0)
        storage.pause("queue", "default", T0)
        claim = storage.claim_job("job-1", "w1", T0, T0 + LEASE, "default")
        assert (claim.outcome, claim.held) == (ClaimOutcome.HELD, Held.PAUSED)
        gated = storage.claim_gated("job-1", "w1", T0, T0 + LEASE, ONE_AT_A_TIME)
        assert (gated.outcome, gated.held) == (ClaimOutcome.HELD, Held.PAUSED)
        later = T0 + timedelta(seconds=1)
        # the queue's pause lifts; the task's still holds the job, sweep or not
        assert storage.resume("queue", "default", later, later) == []
        assert storage.resumed_holds(T0, 10, later) == []
        assert [(p.kind, p.name) for p in storage.pauses()] == [("task", "tests.flow")]
        released = storage.resume("task", "tests.flow", later, later) or []
        assert [j.id for j in released] == ["job-1"]
        assert storage.resumed_holds(T0, 10, later) == []  # released once
        # paused again after a resume: a pause like any other
        assert storage.pause("queue", "default", later)
        assert not storage.pause("queue", "default", later)
        claim = storage.claim_job("job-1", "w1", later, later + LEASE, "default")
        assert claim.outcome is ClaimOutcome.HELD

    def test_concurrency_lets_one_job_of_a_key_run_and_keeps_order(self, storage: Storage) -> None:
        for i in range(1, 4):
            storage.create_job(new_job(f"job-{i}", at=T0 + timedelta(seconds=i)))
        first = storage.claim_gated("job-1", "w1", T0, T0 + LEASE, ONE_AT_A_TIME)
        assert (first.outcome, first.flow_key) == (ClaimOutcome.CLAIMED, "k1")
        for job_id in ("job-3", "job-2"):
            claim = storage.claim_gated(job_id, "w2", T0, T0 + LEASE, ONE_AT_A_TIME)
            assert (claim.outcome, claim.held, claim.waiters) == (
                ClaimOutcome.HELD,
                Held.CONCURRENCY,
                (),
            )
        held = storage.get_job("job-2")
        assert held is not None and (held.state, held.held, held.flow_key) == (
            JobState.PENDING,
            "concurrency",
            "k1",
        )
        other_key = replace(ONE_AT_A_TIME, concurrency_key="k2")
        storage.create_job(new_job("job-9"))
        assert storage.claim_gated("job-9", "w3", T0, T0 + LEASE, other_key).outcome is (
            ClaimOutcome.CLAIMED
        )
        assert storage.next_waiters("tests.flow", "k1", 1, T0) == []  # the slot is taken
        storage.finish_job(Lease("job-1", "w1"), JobState.SUCCEEDED, "1", None, T0)
        assert [j.id for j in storage.next_waiters("tests.flow", "k1", 1, T0)] == ["job-2"]
        # job-3 arrives first: the free slot is job-2's, which it is told to publish
        claim = storage.claim_gated("job-3", "w2", T0, T0 + LEASE, ONE_AT_A_TIME)
        assert claim.outcome is ClaimOutcome.HELD
        assert [w.id for w in claim.waiters] == ["job-2"]
        assert storage.claim_gated("job-2", "w2", T0, T0 + LEASE, ONE_AT_A_TIME).outcome is (
            ClaimOutcome.CLAIMED
        )

    def test_an_older_job_not_delivered_yet_goes_first(self, storage: Storage) -> None:
        for i in (1, 2):  # the key is written at enqueue
            storage.create_job(
                replace(new_job(f"job-{i}", at=T0 + timedelta(seconds=i)), flow_key="k1")
            )
        # job-2's message arrives first: it waits, and job-1 is sent (again) for the slot
        claim = storage.claim_gated("job-2", "w1", T0, T0 + LEASE, ONE_AT_A_TIME)
        assert (claim.outcome, [w.id for w in claim.waiters]) == (ClaimOutcome.HELD, ["job-1"])
        assert storage.claim_gated("job-1", "w1", T0, T0 + LEASE, ONE_AT_A_TIME).outcome is (
            ClaimOutcome.CLAIMED
        )

    def test_a_lost_worker_frees_its_slot_when_recovery_takes_the_job_back(
        self, storage: Storage
    ) -> None:
        storage.create_job(new_job("job-1"))
        storage.create_job(new_job("job-2", at=T0 + timedelta(seconds=1)))
        storage.claim_gated("job-1", "w1", T0, T0 + LEASE, ONE_AT_A_TIME)
        assert storage.claim_gated("job-2", "w2", T0, T0 + LEASE, ONE_AT_A_TIME).outcome is (
            ClaimOutcome.HELD
        )
        later = T0 + LEASE * 2  # w1's lease ran out: it may be slow, not dead
        assert storage.next_waiters("tests.flow", "k1", 1, later) == []  # still its slot
        assert storage.claim_gated("job-2", "w2", later, later + LEASE, ONE_AT_A_TIME).outcome is (
            ClaimOutcome.HELD
        )
        [seen] = [j for j in storage.expired_jobs(later, 10) if j.id == "job-1"]
        assert storage.recover_job(seen, later + LEASE, later)  # recovery takes it back
        assert [j.id for j in storage.next_waiters("tests.flow", "k1", 1, later)] == ["job-2"]
        # the recovered job is older: it goes first, and job-2 waits for it
        claim = storage.claim_gated("job-2", "w2", later, later + LEASE, ONE_AT_A_TIME)
        assert (claim.outcome, [w.id for w in claim.waiters]) == (ClaimOutcome.HELD, ["job-1"])
        assert storage.claim_gated("job-1", "w3", later, later + LEASE, ONE_AT_A_TIME).outcome is (
            ClaimOutcome.CLAIMED
        )

    def test_a_rate_limit_spaces_starts_and_queues_the_turns(self, storage: Storage) -> None:
        gate = Gate(task="tests.flow", queue="default", rate=2.0, rate_key="r")
        for i in range(1, 4):
            storage.create_job(new_job(f"job-{i}"))
        assert storage.claim_gated("job-1", "w1", T0, T0 + LEASE, gate).outcome is (
            ClaimOutcome.CLAIMED
        )
        turns = []
        for job_id in ("job-2", "job-3"):
            claim = storage.claim_gated(job_id, "w1", T0, T0 + LEASE, gate)
            assert (claim.outcome, claim.held) == (ClaimOutcome.HELD, Held.RATE)
            turns.append(claim.due_at)
        assert turns == [T0 + timedelta(seconds=0.5), T0 + timedelta(seconds=1)]
        job = storage.get_job("job-2")
        assert job is not None and (job.held, job.not_before) == ("rate", turns[0])
        # early: it is not due yet
        assert storage.claim_gated("job-2", "w1", T0, T0 + LEASE, gate).outcome is (
            ClaimOutcome.EARLY
        )
        at = turns[0]
        assert at is not None
        assert storage.claim_gated("job-2", "w1", at, at + LEASE, gate).outcome is (
            ClaimOutcome.CLAIMED
        )
        # a new job queues behind job-3's turn, not before it
        storage.create_job(new_job("job-4"))
        claim = storage.claim_gated("job-4", "w1", at, at + LEASE, gate)
        assert claim.due_at == T0 + timedelta(seconds=1.5)

    def test_a_long_rate_wait_is_published_by_recovery_and_keeps_its_turn(
        self, storage: Storage
    ) -> None:
        hourly = Gate(task="tests.flow", queue="default", rate=1 / 3600, countdown_limit=60)
        storage.create_job(new_job("job-1"))
        storage.create_job(new_job("job-2"))
        assert storage.claim_gated("job-1", "w1", T0, T0 + LEASE, hourly).outcome is (
            ClaimOutcome.CLAIMED
        )
        claim = storage.claim_gated("job-2", "w1", T0, T0 + LEASE, hourly)
        turn = T0 + timedelta(hours=1)
        assert (claim.held, claim.due_at) == (Held.RATE, turn)
        # too long for an ETA message: recovery publishes it when its turn comes
        early = storage.expired_jobs(turn - timedelta(seconds=1), 10)
        assert "job-2" not in [j.id for j in early]
        [seen] = [
            j for j in storage.expired_jobs(turn + timedelta(seconds=1), 10) if j.id == "job-2"
        ]
        at = turn + timedelta(seconds=1)
        assert storage.recover_job(seen, at + LEASE, at)
        assert storage.claim_gated("job-2", "w1", at, at + LEASE, hourly).outcome is (
            ClaimOutcome.CLAIMED
        )

    def test_debounced_enqueues_collapse_into_one_pending_job(self, storage: Storage) -> None:
        window = timedelta(seconds=30)

        def debounced(job_id: str, args: str, at: timedelta) -> tuple[str, bool]:
            job = replace(
                new_job(job_id, args=args),
                debounce_key="d1",
                not_before=T0 + at + window,
                deliver_by=T0 + at + window + timedelta(minutes=15),
            )
            return storage.create_debounced_job(job, keep_first=False)

        assert debounced("job-1", "[1]", timedelta()) == ("job-1", True)
        assert debounced("job-2", "[2]", timedelta(seconds=5)) == ("job-1", False)
        assert storage.get_job("job-2") is None
        job = storage.get_job("job-1")
        assert job is not None and (job.args, job.not_before) == (
            "[2]",
            T0 + timedelta(seconds=35),
        )
        first = replace(new_job("job-3", args="[3]"), debounce_key="d1", not_before=T0)
        assert storage.create_debounced_job(first, keep_first=True) == ("job-1", False)
        assert storage.get_job("job-1").args == "[2]"  # type: ignore[union-attr]
        # once it started, the key makes a new job
        late = T0 + timedelta(minutes=1)
        assert storage.claim_job("job-1", "w1", late, late + LEASE).outcome is (
            ClaimOutcome.CLAIMED
        )
        assert storage.get_job("job-1").debounce_key is None  # type: ignore[union-attr]
        assert debounced("job-4", "[4]", timedelta(minutes=1)) == ("job-4", True)
        # a key belongs to its task: another task's debounce with it is its own job
        other = replace(new_job("job-5"), task="tests.other", debounce_key="d1", not_before=late)
        assert storage.create_debounced_job(other, keep_first=False) == ("job-5", True)
        # a cancelled pending job gives its key back
        assert storage.cancel_job("job-4", '{"type": "Cancelled"}', late).value == "cancelled"
        assert debounced("job-6", "[6]", timedelta(minutes=1)) == ("job-6", True)
