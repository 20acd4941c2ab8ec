"""Messages to a running job (durable.send / receive) on the in-memory store; under
real workers in tests/integration/test_suspend.py."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

import pytest
from celery.exceptions import Ignore

from celery_durable import JobNotFound, JobStateError, OutsideDurableTaskError, call, receive
from celery_durable.store.records import JobState
from tests.unit.conftest import Env, make_env


@pytest.fixture
def menv() -> Env:
    env = make_env(call_retries=0, job_retries=0)

    @env.app.task(name="u.step", shared=False)
    def step(x: Any) -> Any:
        env.effects.append(f"step {x}")
        return x

    @env.durable.task(name="u.approval", shared=False)
    def approval(timeout: float | None) -> Any:
        call(step, "asked")
        answer = receive("approval", timeout=timeout)
        call(step, f"answer {answer}")
        return answer

    @env.durable.task(name="u.two", shared=False)
    def two() -> Any:
        return [receive("n"), receive("n")]

    return env


def test_a_job_waits_for_a_message_without_a_worker_and_is_woken_by_it(menv: Env) -> None:
    with pytest.raises(Ignore):
        menv.deliver("u.approval", "a1", None)
    job = menv.storage.get_job("a1")
    assert job is not None and (job.state, job.waiting_topic) == (JobState.SUSPENDED, "approval")
    assert menv.published() == []
    assert "waiting for a message on 'approval'" in menv.durable.get_job("a1").timeline()
    assert menv.durable.send("a1", "other", 1)  # another topic does not wake it
    assert menv.storage.get_job("a1").state is JobState.SUSPENDED  # type: ignore[union-attr]
    assert menv.durable.send("a1", "approval", {"ok": True})
    assert [m["id"] for m in menv.published()] == ["a1"]
    assert menv.deliver("u.approval", "a1", None) == {"ok": True}
    assert menv.effects == ["step asked", "step answer {'ok': True}"]
    with pytest.raises(JobStateError, match="has not finished"):
        menv.durable.send("a1", "approval", 2)
    with pytest.raises(JobNotFound):
        menv.durable.send("nope", "approval", 2)


def test_a_message_sent_before_the_job_asks_is_taken_at_once(menv: Env) -> None:
    menv.app.tasks["u.two"].apply_async(task_id="t1")
    assert menv.durable.send("t1", "n", 1)
    assert menv.durable.send("t1", "n", 2, key="k")
    assert not menv.durable.send("t1", "n", 2, key="k")  # the same key: sent once
    assert menv.deliver("u.two", "t1") == [1, 2]


def test_a_message_ends_a_wait_with_a_timeout_early(menv: Env) -> None:
    with pytest.raises(Ignore):
        menv.deliver("u.approval", "a3", 3600)
    menv.durable.send("a3", "approval", "yes")
    assert menv.deliver("u.approval", "a3", 3600) == "yes"


def test_receive_times_out_with_none(menv: Env) -> None:
    with pytest.raises(Ignore):
        menv.deliver("u.approval", "a2", 30)
    job = menv.storage.get_job("a2")
    assert job is not None and job.not_before == menv.clock.now + timedelta(seconds=30)
    menv.clock.advance(30)
    assert menv.deliver("u.approval", "a2", 30) is None
    assert menv.effects == ["step asked", "step answer None"]
    # a replay returns what was taken (here: the timeout), never a later message
    assert menv.storage.load_history("a2")[-2].result == "null"


def test_receive_checks_its_arguments(menv: Env) -> None:
    with pytest.raises(ValueError, match="topic"):
        receive("")
    with pytest.raises(ValueError, match="timeout"):
        receive("x", timeout=-1)
    with pytest.raises(OutsideDurableTaskError):
        receive("x")
    with pytest.raises(ValueError, match="topic"):
        menv.durable.send("a", "", 1)


def test_a_message_taken_by_a_receive_that_a_job_retry_dropped_is_received_again() -> None:
    env = make_env(call_retries=0, job_retries=1, job_backoff=1)
    state = {"fail": True}

    @env.app.task(name="u.flaky", shared=False)
    def flaky() -> str:
        raise ValueError("always")

    @env.durable.task(name="u.r", shared=False)
    def r() -> Any:
        with contextlib.suppress(Exception):
            call(flaky)
        message = receive("go")
        if state["fail"]:
            state["fail"] = False
            raise ConnectionError("after the receive")  # job retry from the failed call
        return message

    env.app.tasks["u.r"].apply_async(task_id="r1")
    env.durable.send("r1", "go", "hello")
    from celery.exceptions import Retry

    with pytest.raises(Retry):
        env.deliver("u.r", "r1")
    env.clock.advance(1)
    assert env.deliver("u.r", "r1") == "hello"  # the same message, taken again
