"""The event stream on the in-memory store: kinds, order per job, resuming from a cursor."""

from __future__ import annotations

import pytest
from celery.exceptions import Retry

from celery_durable import CallError, ConstantBackoff, NoRetry, call
from tests.unit.conftest import make_env


def test_events_follow_a_job_and_resume_from_a_cursor() -> None:
    env = make_env(
        call_retries=1,
        call_backoff=ConstantBackoff(1),
        job_retries=1,
        job_backoff=ConstantBackoff(1),
        on_exhausted="dead_letter",
    )
    fail = {"n": 3}

    @env.app.task(name="u.pay", shared=False)
    def pay() -> str:
        if fail["n"]:
            fail["n"] -= 1
            raise TimeoutError("slow")
        return "ok"

    @env.app.task(name="u.step", shared=False)
    def step() -> str:
        return "s"

    @env.durable.task(name="u.order", shared=False)
    def order() -> list[str]:
        return [call(step), call(pay)]

    with pytest.raises(Retry):
        env.deliver("u.order", "j1")  # step ok, pay fails: call retry
    env.clock.advance(1)
    with pytest.raises(Retry):
        env.deliver("u.order", "j1")  # pay fails again: job retry
    first = list(env.durable.events(follow=False))
    env.clock.advance(1)
    with pytest.raises(Retry):
        env.deliver("u.order", "j1")
    env.clock.advance(1)
    assert env.deliver("u.order", "j1") == ["s", "ok"]

    events = list(env.durable.events(follow=False))
    assert [e.kind for e in events] == [
        "JobStarted",
        "CheckpointSaved",
        "JobRetried",
        "CheckpointSaved",
        "JobCompleted",
    ]
    # the retried call is one row: read afterwards, it shows its final checkpoint
    assert events[-2].detail == {
        "position": "2",
        "call": "u.pay",
        "attempt": 2,
        "state": "succeeded",
    }
    assert [e.kind for e in first] == ["JobStarted", "CheckpointSaved", "JobRetried"]
    later = list(env.durable.events(since=first[-1].cursor, follow=False))
    assert [e.kind for e in later] == [e.kind for e in events if e.order > first[-1].order]
    assert list(env.durable.events(since=events[-1].cursor, follow=False)) == []


def test_a_dead_letter_is_one_event_not_a_retry() -> None:
    env = make_env(call_retries=0, job_retries=0, on_exhausted="dead_letter")

    @env.app.task(name="u.bad", shared=False)
    def bad() -> None:
        raise ValueError("no")

    @env.durable.task(name="u.flow", shared=False)
    def flow() -> None:
        call(bad)

    with pytest.raises(CallError):
        env.deliver("u.flow", "j1")
    kinds = [e.kind for e in env.durable.events(follow=False)]
    assert kinds == ["JobStarted", "CheckpointSaved", "JobDeadLettered"]


def test_failed_and_dead_letter_events_carry_the_error() -> None:
    env = make_env(call_retries=0, job_retries=0, on_exhausted="dead_letter")

    @env.app.task(name="u.bad", shared=False)
    def bad() -> None:
        raise ValueError("no stock")

    @env.durable.task(name="u.flow", shared=False)
    def flow() -> None:
        call(bad)

    @env.durable.task(name="u.refuse", shared=False, on_exhausted="fail")
    def refuse() -> None:
        raise NoRetry(KeyError("card"))

    with pytest.raises(CallError):
        env.deliver("u.flow", "j1")
    with pytest.raises(NoRetry):
        env.deliver("u.refuse", "j2")
    ended = {
        e.job_id: e
        for e in env.durable.events(follow=False)
        if e.kind in ("JobDeadLettered", "JobFailed")
    }
    assert ended["j1"].kind == "JobDeadLettered"
    assert ended["j1"].detail == {
        "error": "CallError",
        "no_retry": False,
        "message": "call #1 'u.bad' of job j1 failed: ValueError: no stock",
    }
    assert ended["j2"].kind == "JobFailed"
    assert ended["j2"].detail == {"error": "KeyError", "message": "'card'", "no_retry": True}
