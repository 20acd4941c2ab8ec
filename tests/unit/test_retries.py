"""The retry layer on the in-memory store, with a steppable clock and Celery's memory
broker: call retries, job retries, NoRetry / RetryAfter, dead letters and requeue.

Each ``deliver`` is one Celery delivery run in this process; the durability of the
same paths under real workers and SIGKILL is in tests/integration/test_retries.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from celery.exceptions import Ignore, Retry

from celery_durable import (
    CallError,
    ConfigurationError,
    ConstantBackoff,
    ExponentialBackoff,
    NoRetry,
    RetryAfter,
    call,
)
from celery_durable.engine.positions import discard_from_first_failure
from celery_durable.store.records import CallRecord, CallState, JobState
from celery_durable.testing import call_record
from celery_durable.testing.conformance.core import T0
from tests.unit.conftest import Crash, Env, make_env


def _register(env: Env, *, failures: dict[str, Any], **flow_options: Any) -> None:
    """u.step records its name; u.flaky fails while ``failures["flaky"]`` is positive
    (or always, if it is None), raising ``failures["error"]`` if set."""

    @env.app.task(name="u.step", shared=False)
    def step(name: str) -> str:
        env.effects.append(name)
        return name.upper()

    @env.app.task(name="u.flaky", shared=False)
    def flaky() -> str:
        env.effects.append("flaky")
        left = failures.get("flaky")
        if left is None or left > 0:
            failures["flaky"] = None if left is None else left - 1
            raise failures.get("error") or TimeoutError("payment API timed out")
        return "charged"

    @env.durable.task(name="u.flow", shared=False, **flow_options)
    def flow() -> list[str]:
        return [call(step, "a"), call(flaky), call(step, "c")]


def _attempt_delays(env: Env, job_id: str, position: str) -> list[float]:
    view = env.durable.get_job(job_id)
    [record] = [c for c in view.calls if c.position == position]
    attempts = record.failed_attempts
    starts = [a["started_at"] for a in attempts[1:]] + [record.started_at.isoformat()]
    from datetime import datetime

    return [
        (datetime.fromisoformat(s) - datetime.fromisoformat(a["failed_at"])).total_seconds()
        for a, s in zip(attempts, starts, strict=True)
    ]


def test_a_flaky_call_is_retried_with_backoff_without_rerunning_earlier_calls() -> None:
    env = make_env(call_retries=3, call_backoff=ExponentialBackoff(1, 60), job_retries=0)
    _register(env, failures={"flaky": 2})
    with pytest.raises(Retry) as first:
        env.deliver("u.flow", "j1")
    assert first.value.when == 1.0
    job = env.storage.get_job("j1")
    assert job is not None and (job.state, job.not_before) == (
        JobState.RETRYING,
        env.clock() + timedelta(seconds=1),
    )
    [message] = env.published()
    # a call retry is not one of Celery's retries: max_retries budgets stay untouched
    assert (message["id"], message["retries"]) == ("j1", 0)
    assert message["eta"] == (env.clock() + timedelta(seconds=1)).isoformat()

    with pytest.raises(Ignore):  # too early: sent again for the rest of the wait
        env.deliver("u.flow", "j1")
    [early] = env.published()
    assert early["eta"] == (env.clock() + timedelta(seconds=1)).isoformat()

    env.clock.advance(1)
    with pytest.raises(Retry) as second:
        env.deliver("u.flow", "j1", retries=1)
    assert second.value.when == 2.0
    env.clock.advance(2)
    assert env.deliver("u.flow", "j1", retries=2) == ["A", "charged", "C"]
    assert env.effects == ["a", "flaky", "flaky", "flaky", "c"]
    view = env.durable.get_job("j1")
    assert [(c.position, c.state, c.attempts) for c in view.calls] == [
        ("1", "succeeded", 1),
        ("2", "succeeded", 3),
        ("3", "succeeded", 1),
    ]
    assert [a["type"] for a in view.calls[1].failed_attempts] == ["TimeoutError"] * 2
    assert _attempt_delays(env, "j1", "2") == [1.0, 2.0]
    assert (view.state, view.failures) == ("succeeded", 0)


def test_exhausted_call_then_job_retries_then_dead_letter_then_requeue() -> None:
    env = make_env(
        call_retries=1,
        call_backoff=ConstantBackoff(0.5),
        job_retries=1,
        job_backoff=ConstantBackoff(10),
        on_exhausted="dead_letter",
    )
    failures: dict[str, Any] = {"flaky": None}
    _register(env, failures=failures)
    with pytest.raises(Retry):  # call attempt 1
        env.deliver("u.flow", "j1")
    env.clock.advance(0.5)
    with pytest.raises(Retry) as job_retry:  # call attempt 2 fails: the job retries
        env.deliver("u.flow", "j1")
    assert job_retry.value.when == 10.0
    assert isinstance(job_retry.value.exc, CallError)
    job = env.storage.get_job("j1")
    assert job is not None and (job.state, job.failures) == (JobState.RETRYING, 1)
    # the failed call went; the call before it stays and will replay
    assert [(c.seq, c.state) for c in env.storage.load_history("j1")] == [(1, CallState.SUCCEEDED)]
    env.clock.advance(10)
    with pytest.raises(Retry):
        env.deliver("u.flow", "j1")
    env.clock.advance(0.5)
    with pytest.raises(CallError, match="after 2 attempts: TimeoutError"):
        env.deliver("u.flow", "j1")
    assert env.effects == ["a", "flaky", "flaky", "flaky", "flaky"]

    [dead] = env.durable.dead_letters()
    assert (dead.id, dead.task, dead.state, dead.failures) == ("j1", "u.flow", "dead", 2)
    letter = env.durable.dead_letter("j1")
    assert [e.error["type"] for e in letter.errors] == ["CallError", "CallError"]
    assert "TimeoutError: payment API timed out" in letter.errors[0].error["traceback"]
    assert env.durable.dead_letters(task="u.other") == []

    failures["flaky"] = 0
    env.published()
    assert env.durable.requeue("j1") == ["j1"]
    assert env.durable.requeue("j1") == []  # not a dead letter any more
    [message] = env.published()
    assert message["id"] == "j1"
    env.effects.clear()
    assert env.deliver("u.flow", "j1") == ["A", "charged", "C"]
    assert env.effects == ["flaky", "c"]  # "a" replayed from its checkpoint
    view = env.durable.get_job("j1")
    assert (view.state, view.requeues, len(view.errors)) == ("succeeded", 1, 2)


def test_requeue_from_scratch_runs_every_call_again() -> None:
    env = make_env(call_retries=0, job_retries=0, on_exhausted="dead_letter")
    failures: dict[str, Any] = {"flaky": None}
    _register(env, failures=failures)
    with pytest.raises(CallError):
        env.deliver("u.flow", "j1")
    failures["flaky"] = 0
    env.effects.clear()
    assert env.durable.requeue(["j1", "missing"], from_scratch=True) == ["j1"]
    assert env.deliver("u.flow", "j1") == ["A", "charged", "C"]
    assert env.effects == ["a", "flaky", "c"]


def test_purge_dead_letters() -> None:
    env = make_env(call_retries=0, job_retries=0, on_exhausted="dead_letter")
    _register(env, failures={"flaky": None})
    for job_id in ("j1", "j2", "j3"):
        with pytest.raises(CallError):
            env.deliver("u.flow", job_id)
    assert env.durable.purge_dead_letters(["j1"]) == 1
    assert env.durable.purge_dead_letters(task="u.other") == 0
    assert env.durable.purge_dead_letters() == 2
    assert env.storage.get_job("j2") is None and env.storage.load_history("j2") == []


def test_no_retry_from_a_call_fails_the_job_at_once() -> None:
    env = make_env(call_retries=5, job_retries=5, on_exhausted="dead_letter")
    _register(env, failures={"flaky": None, "error": NoRetry(ValueError("card declined"))})
    with pytest.raises(CallError) as raised:
        env.deliver("u.flow", "j1")
    assert raised.value.no_retry and raised.value.error_type == "ValueError"
    assert isinstance(raised.value.__cause__, ValueError)
    assert env.effects == ["a", "flaky"]
    view = env.durable.get_job("j1")
    assert (view.state, view.failures) == ("dead", 1)
    assert view.calls[1].error is not None
    assert (view.calls[1].error["type"], view.calls[1].error["no_retry"]) == ("ValueError", True)
    assert view.error is not None and view.error["no_retry"] is True


def test_no_retry_from_the_body_fails_the_job_at_once() -> None:
    env = make_env(job_retries=5)

    @env.durable.task(name="u.validate", shared=False)
    def validate(order: dict[str, Any]) -> None:
        env.effects.append("ran")
        raise NoRetry(f"order {order['id']} has no items")

    with pytest.raises(NoRetry):
        env.deliver("u.validate", "j1", {"id": 7})
    view = env.durable.get_job("j1")
    assert (view.state, view.failures, env.effects) == ("failed", 1, ["ran"])
    assert view.error == {**view.error, "type": "NoRetry", "message": "order 7 has no items"}


def test_retry_after_sets_the_exact_delay_for_a_call_and_for_the_job() -> None:
    env = make_env(
        call_retries=1,
        call_backoff=ConstantBackoff(99),
        job_retries=1,
        job_backoff=ConstantBackoff(99),
    )
    _register(env, failures={"flaky": None, "error": RetryAfter(7, TimeoutError("429"))})
    start = env.clock()
    with pytest.raises(Retry) as raised:
        env.deliver("u.flow", "j1")
    assert raised.value.when == 7.0
    assert env.storage.get_job("j1").not_before == start + timedelta(seconds=7)  # type: ignore[union-attr]
    env.clock.advance(7)
    with pytest.raises(Retry) as job_retry:  # the call's budget is spent: the job retries
        env.deliver("u.flow", "j1")
    assert job_retry.value.when == 99.0

    @env.durable.task(name="u.polite", shared=False, retries=1)
    def polite() -> None:
        raise RetryAfter(timedelta(seconds=3), "rate limited")

    with pytest.raises(Retry) as body:
        env.deliver("u.polite", "j2")
    assert body.value.when == 3.0
    env.clock.advance(3)
    with pytest.raises(RetryAfter):  # counted as an attempt: the budget of 1 is spent
        env.deliver("u.polite", "j2")
    assert env.durable.get_job("j2").state == "failed"


def test_per_call_and_per_task_overrides() -> None:
    env = make_env(call_retries=0, job_retries=0)
    failures: dict[str, Any] = {"flaky": 1}
    _register(env, failures=failures)

    @env.durable.task(
        name="u.generous", shared=False, call_retries=2, call_backoff=timedelta(seconds=4)
    )
    def generous() -> str:
        return call("u.flaky")

    with pytest.raises(Retry) as raised:
        env.deliver("u.generous", "j1")
    assert raised.value.when == 4.0

    @env.durable.task(name="u.override", shared=False, call_retries=0)
    def override() -> str:
        return call("u.flaky", retries=1, backoff=ExponentialBackoff(0.25, 1))

    failures["flaky"] = 1
    with pytest.raises(Retry) as raised:
        env.deliver("u.override", "j2")
    assert raised.value.when == 0.25

    @env.durable.task(name="u.bad_call", shared=False)
    def bad_call() -> str:
        return call("u.flaky", retries=-1)

    with pytest.raises(ConfigurationError, match=r"call\(retries=...\) must be a whole"):
        env.deliver("u.bad_call", "j3")
    assert env.durable.get_job("j3").state == "failed"  # not retried: it cannot help


def test_long_delays_are_kept_in_sql_and_published_by_the_sweeper_when_due() -> None:
    env = make_env(call_retries=1, call_backoff=ConstantBackoff(600), max_countdown=60)
    _register(env, failures={"flaky": 1})
    with pytest.raises(Retry) as raised:
        env.deliver("u.flow", "j1")
    assert raised.value.sig is None and env.published() == []
    job = env.storage.get_job("j1")
    due = env.clock() + timedelta(seconds=600)
    assert job is not None and (job.not_before, job.lease_expires_at) == (due, due)
    env.clock.advance(599)
    assert env.durable.sweeper.sweep_once() == []
    env.clock.advance(2)
    assert env.durable.sweeper.sweep_once() == ["j1"]
    [message] = env.published()
    assert message["id"] == "j1" and message.get("eta") is None
    assert env.deliver("u.flow", "j1") == ["A", "charged", "C"]
    job = env.storage.get_job("j1")
    assert job is not None and job.recoveries == 0  # a due retry is not a crash


def test_a_crash_during_a_retry_neither_resets_nor_skips_attempts() -> None:
    env = make_env(call_retries=3, call_backoff=ConstantBackoff(1), job_retries=0)
    crash = {"on": 2}

    @env.app.task(name="u.fragile", shared=False)
    def fragile() -> str:
        env.effects.append("fragile")
        attempt = len([e for e in env.effects if e == "fragile"])
        if attempt == crash["on"]:
            raise Crash()  # SIGKILL during attempt 2
        if attempt < 4:
            raise TimeoutError(f"attempt {attempt}")
        return "ok"

    @env.durable.task(name="u.fragile_flow", shared=False)
    def fragile_flow() -> str:
        return call(fragile)

    with pytest.raises(Retry):
        env.deliver("u.fragile_flow", "j1")
    env.clock.advance(1)
    with pytest.raises(Crash):
        env.deliver("u.fragile_flow", "j1")
    [row] = env.storage.load_history("j1")
    assert (row.state, row.attempts) == (CallState.RETRYING, 1)  # the crash is not counted
    env.clock.advance(31)  # the dead execution's lease expires
    with pytest.raises(Retry):
        env.deliver("u.fragile_flow", "j1")
    [row] = env.storage.load_history("j1")
    assert row.attempts == 2
    env.clock.advance(1)
    assert env.deliver("u.fragile_flow", "j1") == "ok"
    [row] = env.storage.load_history("j1")
    assert (row.state, row.attempts) == (CallState.SUCCEEDED, 3)


def test_a_caught_call_error_keeps_its_compensation_until_the_job_retries() -> None:
    env = make_env(call_retries=0, job_retries=1, job_backoff=ConstantBackoff(1))
    failures: dict[str, Any] = {"flaky": None}
    _register(env, failures=failures)

    @env.durable.task(name="u.saga", shared=False)
    def saga() -> str:
        call("u.step", "reserve")
        try:
            call("u.flaky")
        except CallError:
            call("u.step", "release")
            raise
        return "done"

    with pytest.raises(Retry):
        env.deliver("u.saga", "j1")
    failures["flaky"] = 0
    env.clock.advance(1)
    assert env.deliver("u.saga", "j1") == "done"
    assert env.effects == ["reserve", "flaky", "release", "flaky"]


def test_self_retry_keeps_celery_semantics_on_a_durable_task() -> None:
    env = make_env(job_retries=0)
    _register(env, failures={"flaky": 0})

    @env.durable.task(name="u.legacy", shared=False, bind=True, max_retries=1)
    def legacy(self: Any) -> str:
        call("u.step", "once")
        if self.request.retries == 0:
            raise self.retry(countdown=5)
        return "second"

    with pytest.raises(Retry):
        env.deliver("u.legacy", "j1")
    [message] = env.published()
    assert message["retries"] == 1
    assert env.deliver("u.legacy", "j1", retries=1) == "second"
    assert env.effects == ["once"]


def _rec(
    scope: str, seq: int, state: CallState = CallState.SUCCEEDED, at: datetime | None = None
) -> CallRecord:
    """As a plain body runs them: call n at 10n s, its own calls inside it, 1 ms apart."""
    _, _, inner = scope.partition(".")
    start = timedelta(seconds=10 * (int(inner) if inner else seq), milliseconds=seq if inner else 0)
    return call_record(scope, seq, root_id="J", state=state, at=at or T0 + start)


def test_discard_from_first_failure() -> None:
    failed, ok = CallState.FAILED, CallState.SUCCEEDED
    assert discard_from_first_failure("J", [_rec("J", 1), _rec("J", 2)]) == []
    assert discard_from_first_failure(
        "J", [_rec("J", 1), _rec("J", 2, failed), _rec("J", 3), _rec("J.2", 1)]
    ) == [("J", 2), ("J.2", 1), ("J", 3)]
    # a failure caught inside a call that succeeded belongs to that call's checkpoint
    assert discard_from_first_failure(
        "J", [_rec("J", 1), _rec("J", 2, ok), _rec("J.2", 1, failed), _rec("J", 3, failed)]
    ) == [("J", 3)]
    # a child's failure that escaped: the parent call failed too and goes with its calls
    assert discard_from_first_failure(
        "J", [_rec("J", 1), _rec("J", 2, failed), _rec("J.2", 1), _rec("J.2", 2, failed)]
    ) == [("J", 2), ("J.2", 1), ("J.2", 2)]
    assert discard_from_first_failure("J", [_rec("J", 1), _rec("J", 10, failed), _rec("J", 9)]) == [
        ("J", 10)
    ]
    # an async body's call that ran beside the failure (it started before the failure
    # ended) is kept; one started after it ended goes, as in a plain body
    beside = _rec("J", 3, at=T0 + timedelta(seconds=20, milliseconds=1))
    assert discard_from_first_failure(
        "J", [_rec("J", 1), _rec("J", 2, failed), beside, _rec("J", 4)]
    ) == [("J", 2), ("J", 4)]


def test_no_retry_deep_in_a_called_durable_task_stops_every_layer() -> None:
    env = make_env(call_retries=3, job_retries=3)

    @env.app.task(name="u.validate", shared=False)
    def validate() -> None:
        env.effects.append("validate")
        raise NoRetry("bad address")

    @env.durable.task(name="u.child", shared=False)
    def child() -> None:
        call(validate)

    @env.durable.task(name="u.parent", shared=False)
    def parent() -> None:
        call(child)

    with pytest.raises(CallError) as raised:
        env.deliver("u.parent", "j1")
    assert raised.value.no_retry
    assert env.effects == ["validate"]
    assert env.durable.get_job("j1").state == "failed"


def test_a_requeued_dead_letter_gets_a_fresh_recovery_budget_too() -> None:
    env = make_env(
        max_recoveries=1,
        call_retries=1,
        call_backoff=ConstantBackoff(600),
        on_exhausted="dead_letter",
    )
    env.app.send_task = lambda *a, **k: None  # type: ignore[method-assign]
    failures: dict[str, Any] = {"flaky": 1}
    _register(env, failures=failures)
    env.storage.create_job(_new_job(env, "j1"))
    for _ in range(2):  # the job keeps killing its worker
        now = env.clock()
        env.storage.claim_job("j1", "w", now, now)
        env.clock.advance(1)
        env.durable.recover()
    job = env.storage.get_job("j1")
    assert job is not None and (job.state, job.recoveries) == (JobState.DEAD, 1)
    assert "WorkerLostError" in env.storage.job_errors("j1")[0].error
    assert env.durable.requeue("j1") == ["j1"]
    with pytest.raises(Retry):  # a long retry wait, kept in SQL
        env.deliver("u.flow", "j1")
    env.clock.advance(601)
    assert env.durable.recover() == ["j1"]  # published when due, not abandoned
    assert env.storage.get_job("j1").state is JobState.PENDING  # type: ignore[union-attr]
    assert env.deliver("u.flow", "j1") == ["A", "charged", "C"]


def test_autoretry_for_never_retries_no_retry_or_cancelled() -> None:
    env = make_env(job_retries=0)

    @env.durable.task(
        name="u.auto", shared=False, autoretry_for=(Exception,), retry_backoff=False, max_retries=5
    )
    def auto() -> None:
        env.effects.append("ran")
        raise NoRetry("bad input")

    with pytest.raises(NoRetry):
        env.deliver("u.auto", "j1")
    assert env.effects == ["ran"] and env.published() == []
    assert env.durable.get_job("j1").state == "failed"


def test_eager_apply_waits_for_a_call_retry_in_process() -> None:
    env = make_env(call_retries=2, call_backoff=ConstantBackoff(0.05), job_retries=0)
    env.clock = None  # type: ignore[assignment]
    env.durable.runtime.clock = lambda: datetime.now(timezone.utc)
    _register(env, failures={"flaky": 1})
    result = env.app.tasks["u.flow"].apply()
    assert result.get() == ["A", "charged", "C"]
    assert env.effects == ["a", "flaky", "flaky", "c"] and env.published() == []


def _new_job(env: Env, job_id: str) -> Any:
    from celery_durable.engine.enqueue import new_job

    return new_job(env.durable, "u.flow", job_id, [], {}, queue=None, priority=None, eta=None)
