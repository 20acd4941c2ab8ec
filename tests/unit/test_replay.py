"""Replay semantics of call(), on the in-memory store."""

from __future__ import annotations

import itertools
import time

import pytest
from celery.exceptions import Ignore, Reject

from celery_durable import (
    CallError,
    JobState,
    LeaseLost,
    NonDeterministicError,
    OutsideDurableTaskError,
    SerializationError,
    UnknownTaskError,
    call,
    current_call_id,
    current_job_id,
)
from celery_durable.engine.enqueue import new_job
from celery_durable.engine.runner import run_job
from celery_durable.store.records import ClaimOutcome
from tests.unit.conftest import Crash, Env, make_env


def _register(env: Env, crash_at: str | None = None) -> None:
    @env.app.task(name="u.step", shared=False)
    def step(name: str, value: int) -> int:
        env.effects.append(name)
        if name == crash_at:
            raise Crash()
        return value + 1

    @env.durable.task(name="u.flow", shared=False)
    def flow(x: int) -> list[int]:
        a = call(step, "s1", x)
        b = call("u.step", "s2", a)
        c = call(step.s("s3", b))
        return [a, b, c]


def test_completed_calls_are_not_rerun_after_a_crash(env: Env) -> None:
    _register(env, crash_at="s3")
    with pytest.raises(Crash):
        env.deliver("u.flow", "j1", 0)
    assert env.effects == ["s1", "s2", "s3"]
    env.effects.clear()
    env.app.tasks.unregister("u.step")
    env.app.tasks.unregister("u.flow")
    _register(env)
    with pytest.raises(Ignore):  # the dead execution's lease is still live
        env.deliver("u.flow", "j1", 0)
    env.clock.advance(31)
    assert env.deliver("u.flow", "j1", 0) == [1, 2, 3]
    assert env.effects == ["s3"]
    job = env.durable.get_job("j1")
    assert (job.state, job.attempts, job.result) == ("succeeded", 2, [1, 2, 3])
    assert [(c.seq, c.name) for c in job.calls] == [(1, "u.step"), (2, "u.step"), (3, "u.step")]


def test_a_finished_job_delivered_again_returns_its_result_without_running(env: Env) -> None:
    _register(env)
    assert env.deliver("u.flow", "j1", 5) == [6, 7, 8]
    env.effects.clear()
    assert env.deliver("u.flow", "j1", 5) == [6, 7, 8]
    assert env.effects == []
    assert env.durable.get_job("j1").attempts == 1


def test_a_changed_call_order_raises_non_deterministic_error(env: Env) -> None:
    _register(env, crash_at="s2")
    with pytest.raises(Crash):
        env.deliver("u.flow", "j1", 0)

    @env.app.task(name="u.other", shared=False)
    def other() -> int:
        return 1

    @env.durable.task(name="u.flow2", shared=False)
    def flow2(x: int) -> int:
        call(other)
        return 0

    env.app.tasks["u.flow"].run = flow2.run
    env.clock.advance(31)
    with pytest.raises(NonDeterministicError) as info:
        env.deliver("u.flow", "j1", 0)
    message = str(info.value)
    assert "j1" in message and "#1" in message
    assert "'u.other'" in message and "'u.step'" in message
    assert env.storage.get_job("j1").state is JobState.FAILED  # type: ignore[union-attr]


def test_a_failed_call_raises_call_error_and_replays_the_same_path(env: Env) -> None:
    @env.app.task(name="u.charge", shared=False)
    def charge(amount: int) -> str:
        env.effects.append("charge")
        return f"receipt-{amount}"

    @env.app.task(name="u.reserve", shared=False)
    def reserve() -> None:
        env.effects.append("reserve")
        raise ValueError("out of stock")

    @env.app.task(name="u.refund", shared=False)
    def refund(receipt: str) -> None:
        env.effects.append("refund")
        if env.effects.count("refund") == 1:
            raise Crash()

    @env.durable.task(name="u.order", shared=False)
    def order(amount: int) -> str:
        receipt = call(charge, amount)
        try:
            call(reserve)
        except CallError as exc:
            assert exc.error_type == "ValueError"
            call(refund, receipt)
            return f"refunded {receipt}: {exc.error_message}"
        return "done"

    with pytest.raises(Crash):  # dies inside the compensation
        env.deliver("u.order", "j1", 10)
    env.clock.advance(31)
    assert env.deliver("u.order", "j1", 10) == "refunded receipt-10: out of stock"
    assert env.effects == ["charge", "reserve", "refund", "refund"]


def test_call_error_chains_the_original_exception(env: Env) -> None:
    seen: list[BaseException | None] = []

    @env.app.task(name="u.bad", shared=False)
    def bad() -> None:
        raise KeyError("k")

    @env.durable.task(name="u.catcher", shared=False)
    def catcher() -> str:
        try:
            call(bad)
        except CallError as exc:
            seen.append(exc.__cause__)
            raise
        return "unreachable"

    with pytest.raises(CallError):
        env.deliver("u.catcher", "j1")
    assert isinstance(seen[0], KeyError)
    job = env.durable.get_job("j1")
    assert job.state == "failed"
    assert job.error is not None and job.error["type"] == "CallError"


def test_durable_task_called_in_process_has_its_own_checkpoints(env: Env) -> None:
    @env.app.task(name="u.leaf", shared=False)
    def leaf(name: str) -> str:
        env.effects.append(name)
        if name == "c2" and env.effects.count("c2") == 1:
            raise Crash()
        return name.upper()

    @env.durable.task(name="u.child", shared=False)
    def child() -> list[str]:
        return [call(leaf, "c1"), call(leaf, "c2")]

    @env.durable.task(name="u.parent", shared=False)
    def parent() -> list[object]:
        return [call(leaf, "p1"), call(child), call(leaf, "p3")]

    with pytest.raises(Crash):
        env.deliver("u.parent", "j1")
    env.clock.advance(31)
    assert env.deliver("u.parent", "j1") == ["P1", ["C1", "C2"], "P3"]
    assert env.effects == ["p1", "c1", "c2", "c2", "p3"]
    positions = [c.position for c in env.durable.get_job("j1").calls]
    assert positions == ["1", "2", "2.1", "2.2", "3"]


def test_a_delivery_that_finds_the_job_busy_does_not_run_it(env: Env) -> None:
    _register(env)
    env.storage.create_job(
        new_job(env.durable, "u.flow", "j1", [0], {}, queue=None, priority=None, eta=None)
    )
    claim = env.storage.claim_job("j1", "other", env.clock(), env.clock.now.replace(year=2030))
    assert claim.outcome is ClaimOutcome.CLAIMED
    with pytest.raises(Ignore):
        env.deliver("u.flow", "j1", 0)
    assert env.effects == []


def test_losing_the_lease_stops_at_the_next_call_without_writing(env: Env) -> None:
    @env.app.task(name="u.leaf", shared=False)
    def leaf(n: int) -> int:
        env.effects.append(f"leaf{n}")
        if n == 1:  # meanwhile recovery gave the job to another worker
            env.clock.advance(31)
            assert (
                env.storage.claim_job(
                    "j1", "usurper", env.clock(), env.clock.now.replace(year=2030)
                ).outcome
                is ClaimOutcome.CLAIMED
            )
        return n

    @env.durable.task(name="u.flow", shared=False)
    def flow() -> None:
        call(leaf, 1)
        call(leaf, 2)

    with pytest.raises(Ignore):
        env.deliver("u.flow", "j1")
    assert env.effects == ["leaf1"]
    assert env.storage.load_history("j1") == []
    assert env.storage.get_job("j1").lease_owner == "usurper"  # type: ignore[union-attr]


def test_lease_keeper_marks_a_lost_lease(env: Env) -> None:
    from celery_durable.store.records import Lease

    _register(env)
    env.deliver("u.flow", "j0", 0)
    lease = Lease("j0", "nobody")
    watch = env.durable.lease_keeper.hold(lease)
    env.durable.lease_keeper.renew_all()
    env.durable.lease_keeper.drop(lease)
    assert watch.lost.is_set() and not watch.cancelled.is_set()
    with pytest.raises(LeaseLost):
        env.storage.record_call(env.storage.load_history("j0")[0], lease)


def test_call_outside_a_durable_task_is_a_clear_error(env: Env) -> None:
    _register(env)
    with pytest.raises(OutsideDurableTaskError, match="inside the body of a durable task"):
        call(env.app.tasks["u.step"], "x", 1)
    with pytest.raises(OutsideDurableTaskError):
        env.app.tasks["u.flow"](0)  # a plain function call runs no durable job


def test_unknown_task_name_is_a_clear_error_and_records_nothing(env: Env) -> None:
    _register(env)

    @env.durable.task(name="u.typo", shared=False)
    def typo() -> None:
        call("u.stpe", "s1", 0)

    with pytest.raises(UnknownTaskError, match=r"'u\.stpe'.*Did you mean 'u\.step'"):
        env.deliver("u.typo", "j1")
    assert env.storage.load_history("j1") == []


def test_non_json_call_result_fails_the_job_and_records_no_call(env: Env) -> None:
    @env.app.task(name="u.objecty", shared=False)
    def objecty() -> object:
        return {"when": object()}

    @env.durable.task(name="u.flow", shared=False)
    def flow() -> None:
        call(objecty)

    with pytest.raises(SerializationError) as info:
        env.deliver("u.flow", "j1")
    message = str(info.value)
    assert "'u.objecty'" in message and "builtins.object" in message and "['when']" in message
    assert env.storage.load_history("j1") == []
    assert env.storage.get_job("j1").state is JobState.FAILED  # type: ignore[union-attr]


def test_results_are_what_a_replay_would_return(env: Env) -> None:
    @env.app.task(name="u.pair", shared=False)
    def pair() -> tuple[int, int]:
        return (1, 2)

    @env.durable.task(name="u.flow", shared=False)
    def flow() -> bool:
        return call(pair) == [1, 2]

    assert env.deliver("u.flow", "j1") is True


def test_a_call_sees_the_same_idempotency_key_when_it_runs_again(env: Env) -> None:
    keys: list[tuple[str | None, str | None]] = []

    @env.app.task(name="u.pay", shared=False)
    def pay() -> None:
        keys.append((current_call_id(), current_job_id()))
        if len(keys) == 1:
            raise Crash()

    @env.durable.task(name="u.flow", shared=False)
    def flow() -> None:
        call(pay)

    with pytest.raises(Crash):
        env.deliver("u.flow", "j1")
    env.clock.advance(31)
    env.deliver("u.flow", "j1")
    assert keys == [("j1:1", "j1"), ("j1:1", "j1")]
    assert current_call_id() is None and current_job_id() is None


def test_a_storage_error_mid_job_is_a_crash_not_a_failure(env: Env) -> None:
    """The body cannot swallow it, the job is not failed, and recovery resumes it."""
    from celery_durable import StorageUnavailable

    _register(env)

    @env.durable.task(name="u.swallower", shared=False)
    def swallower() -> object:
        try:
            return [call("u.step", "s1", 0), call("u.step", "s2", 1)]
        except Exception:
            return "swallowed"

    real_record = env.storage.record_call
    seen: list[int] = []

    def flaky_record(record, lease):  # type: ignore[no-untyped-def]
        seen.append(record.seq)
        if record.seq == 2 and seen.count(2) == 1:
            raise StorageUnavailable("database restarted")
        return real_record(record, lease)

    env.storage.record_call = flaky_record  # type: ignore[method-assign]
    real_get, probes = env.storage.get_job, []

    def get_job(job_id):  # type: ignore[no-untyped-def]
        probes.append(job_id)
        if len(probes) == 1:  # still away when the runner first looks
            raise StorageUnavailable("connection refused")
        return real_get(job_id)

    env.storage.get_job = get_job  # type: ignore[method-assign]
    # The database was away and came back: the job is handed back and its message
    # requeued, so it replays now rather than after its lease expires.
    with pytest.raises(Reject) as rejected:
        env.deliver("u.swallower", "j1")
    assert rejected.value.requeue is True
    env.storage.get_job = real_get  # type: ignore[method-assign]
    job = env.storage.get_job("j1")
    assert job is not None and job.state is JobState.PENDING and job.failures == 0
    assert env.deliver("u.swallower", "j1") == [1, 2]
    assert env.effects == ["s1", "s2", "s2"]


def test_a_statement_that_fails_while_the_database_answers_is_left_to_recovery() -> None:
    """Not an outage (a packet too large, a statement timeout): requeueing at once would
    run the call again and again; recovery counts the rounds instead."""
    from celery_durable import StorageUnavailable

    env = make_env(call_retries=0, job_retries=0, max_recoveries=2)
    _register(env)

    @env.durable.task(name="u.big", shared=False)
    def big() -> object:
        return call("u.step", "huge", 0)

    def record(record, lease):  # type: ignore[no-untyped-def]
        raise StorageUnavailable("(2006, 'MySQL server has gone away')")

    env.storage.record_call = record  # type: ignore[method-assign]
    for _ in range(3):  # three rounds, each counted by recovery
        with pytest.raises(Ignore):  # acked; the lease is left to expire
            env.deliver("u.big", "j1")
        job = env.storage.get_job("j1")
        assert job is not None and job.state is JobState.RUNNING
        env.clock.advance(31)
        assert env.durable.recover() == ["j1"]
    job = env.storage.get_job("j1")
    assert job is not None and job.state is JobState.FAILED  # after max_recoveries rounds
    assert env.effects == ["huge", "huge", "huge"]


def test_a_store_that_stays_down_mid_job_leaves_the_job_to_recovery() -> None:
    from celery_durable import StorageUnavailable

    env = make_env(call_retries=0, job_retries=0, storage_wait=0.2)
    _register(env)

    @env.durable.task(name="u.two", shared=False)
    def two() -> object:
        return [call("u.step", "s1", 0), call("u.step", "s2", 1)]

    real_record, real_release = env.storage.record_call, env.storage.release_job
    down = {"on": True}

    def record(record, lease):  # type: ignore[no-untyped-def]
        if record.seq == 2 and down["on"]:
            raise StorageUnavailable("database down")
        return real_record(record, lease)

    def release(*args):  # type: ignore[no-untyped-def]
        if down["on"]:
            raise StorageUnavailable("database down")
        return real_release(*args)

    env.storage.record_call = record  # type: ignore[method-assign]
    env.storage.release_job = release  # type: ignore[method-assign]
    with pytest.raises(Ignore):  # acked, not failed: nothing more can be written now
        env.deliver("u.two", "j1")
    job = env.storage.get_job("j1")
    assert job is not None and job.state is JobState.RUNNING and job.failures == 0
    down["on"] = False
    env.clock.advance(31)
    assert env.durable.recover() == ["j1"]
    assert env.deliver("u.two", "j1") == [1, 2]
    assert env.effects == ["s1", "s2", "s2"]


def test_a_claim_that_cannot_reach_the_store_waits_then_requeues() -> None:
    from celery_durable import StorageUnavailable

    env = make_env(call_retries=0, job_retries=0, storage_wait=0.3)
    _register(env)

    @env.durable.task(name="u.two", shared=False)
    def two() -> object:
        return call("u.step", "s1", 0)

    env.app.tasks["u.two"].apply_async(task_id="j1")
    real_claim, tries = env.storage.claim_job, []

    def claim(*args):  # type: ignore[no-untyped-def]
        tries.append(time.monotonic())
        if len(tries) <= 3:
            raise StorageUnavailable("connection refused")
        return real_claim(*args)

    env.storage.claim_job = claim  # type: ignore[method-assign]
    assert env.deliver("u.two", "j1") == 1  # the database came back during the wait
    assert len(tries) == 4 and env.effects == ["s1"]
    # backing off, not spinning: at least half of 50, 100, 200 ms between the tries
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert [round(g, 3) >= low for g, low in zip(gaps, (0.025, 0.05, 0.1), strict=True)] == [
        True
    ] * 3

    down = lambda *args: (_ for _ in ()).throw(StorageUnavailable("refused"))  # noqa: E731
    env.app.tasks["u.two"].apply_async(task_id="j2")
    env.storage.claim_job = down  # type: ignore[method-assign]
    started = time.monotonic()
    with pytest.raises(Reject) as rejected:  # never a failure: back to the broker
        env.deliver("u.two", "j2")
    assert rejected.value.requeue is True and time.monotonic() - started >= 0.3
    job = env.storage.get_job("j2")
    assert job is not None and job.state is JobState.PENDING and job.attempts == 0


def test_a_durable_task_can_call_itself_in_process(env: Env) -> None:
    @env.durable.task(name="u.countdown", shared=False)
    def countdown(n: int) -> int:
        env.effects.append(f"n{n}")
        return 0 if n == 0 else 1 + call(countdown, n - 1)

    assert env.deliver("u.countdown", "j1", 2) == 2
    assert env.effects == ["n2", "n1", "n0"]
    assert [c.position for c in env.durable.get_job("j1").calls] == ["1", "1.1"]


def test_calls_inside_a_called_plain_task_keep_the_callers_positions(env: Env) -> None:
    @env.app.task(name="u.leaf", shared=False)
    def leaf(name: str) -> str:
        env.effects.append(name)
        return name

    @env.app.task(name="u.helper", shared=False)
    def helper() -> str:
        return call(leaf, "inner")

    crashes: list[int] = []

    @env.durable.task(name="u.flow", shared=False)
    def flow() -> list[str]:
        first = call(helper)
        if not crashes:
            crashes.append(1)
            raise Crash()
        return [first, call(leaf, "second")]

    with pytest.raises(Crash):
        env.deliver("u.flow", "j1")
    env.clock.advance(31)
    assert env.deliver("u.flow", "j1") == ["inner", "second"]
    assert env.effects == ["inner", "second"]


def test_ignore_and_reject_in_a_body_do_not_fail_the_job_wrongly(env: Env) -> None:
    from celery.exceptions import Reject

    @env.durable.task(name="u.requeue", shared=False)
    def requeue() -> None:
        raise Reject("later", requeue=True)

    @env.durable.task(name="u.ignore", shared=False)
    def ignore() -> None:
        raise Ignore()

    with pytest.raises(Reject):
        env.deliver("u.requeue", "j1")
    job = env.storage.get_job("j1")
    assert job is not None and (job.state, job.lease_owner) == (JobState.PENDING, None)
    with pytest.raises(Ignore):
        env.deliver("u.ignore", "j2")
    assert env.durable.get_job("j2").state == "cancelled"


def test_a_canvas_is_recorded_as_continued_even_if_celery_popped_the_chain(env: Env) -> None:
    """Celery before 5.7 pops the last chain step off the request before on_success: the
    runner decides whether the delivery has a canvas before the body runs."""

    @env.durable.task(name="u.first", shared=False)
    def first() -> int:
        return 1

    task = env.app.tasks["u.first"]
    task.push_request(
        id="j1",
        delivery_info={"routing_key": "q"},
        args=(),
        kwargs={},
        retries=0,
        called_directly=False,
        headers={},
        chain=[{"task": "u.next", "args": [], "kwargs": {}, "options": {}}],
    )
    try:
        assert run_job(env.durable.runtime, task, task.request, (), {}) == 1
        task.request.chain = []  # what Celery 5.4-5.6 does before on_success
        task.on_success(1, "j1", (), {})
    finally:
        task.pop_request()
    job = env.storage.get_job("j1")
    assert job is not None and job.reported_at is not None
