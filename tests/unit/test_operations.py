"""Operations on the in-memory store: cancellation at call boundaries, retry of a
finished job, retention, listing, a dry-run sweep. The same paths against real workers
are in tests/integration/test_operations.py."""

from __future__ import annotations

from typing import Any

import pytest
from celery.exceptions import Ignore

from celery_durable import (
    Cancelled,
    CancelOutcome,
    JobNotFound,
    JobStateError,
    call,
    current_job_id,
)
from celery_durable.store.records import JobState
from tests.unit.conftest import Env, make_env


def _register(env: Env, *, catch: bool) -> None:
    @env.app.task(name="u.step", shared=False)
    def step(name: str) -> str:
        env.effects.append(name)
        if name == "b":  # someone cancels the job while this call runs
            env.durable.cancel(current_job_id() or "", revoke=False)
            env.durable.lease_keeper.check_cancels()  # the keeper thread's next tick
        return name

    @env.durable.task(name="u.flow", shared=False)
    def flow() -> list[str]:
        done = [call(step, "a"), call(step, "b")]
        try:
            done.append(call(step, "c"))
        except Cancelled:
            if not catch:
                raise
            done.append(call(step, "undo-b"))
        return done


def test_a_running_job_gets_cancelled_at_its_next_call_and_may_compensate() -> None:
    env = make_env(job_retries=3)
    _register(env, catch=True)
    assert env.deliver("u.flow", "j1") == ["a", "b", "undo-b"]
    assert env.effects == ["a", "b", "undo-b"]  # "c" never ran
    view = env.durable.get_job("j1")
    assert (view.state, view.result) == ("cancelled", ["a", "b", "undo-b"])


def test_a_job_cancelled_mid_run_and_retried_runs_on_from_where_it_was_cancelled() -> None:
    env = make_env(job_retries=3)
    _register(env, catch=True)
    assert env.deliver("u.flow", "j1") == ["a", "b", "undo-b"]
    env.durable.retry("j1")  # the cancel is no longer wanted
    env.effects.clear()
    assert env.deliver("u.flow", "j1")[:2] == ["a", "b"]  # replayed, not run
    assert env.effects[0] == "c"  # the call where it was cancelled runs now
    assert env.durable.get_job("j1").state == "succeeded"


def test_an_uncaught_cancel_ends_the_job_without_retries() -> None:
    env = make_env(job_retries=3)
    _register(env, catch=False)
    with pytest.raises(Cancelled):
        env.deliver("u.flow", "j1")
    view = env.durable.get_job("j1")
    assert (view.state, view.failures) == ("cancelled", 0)
    with pytest.raises(Ignore):  # a redelivery finds it finished
        env.deliver("u.flow", "j1")
    assert env.effects == ["a", "b"]


def test_a_pending_job_cancelled_never_starts_and_can_be_retried() -> None:
    env = make_env()
    _register(env, catch=True)
    env.storage.create_job(_new(env, "j1"))
    assert env.durable.cancel("j1", revoke=False) is CancelOutcome.CANCELLED
    with pytest.raises(Ignore):
        env.deliver("u.flow", "j1")
    assert env.effects == []
    env.durable.retry("j1")
    view = env.durable.get_job("j1")
    assert (view.state, view.requeues) == ("pending", 1)
    with pytest.raises(JobStateError, match="is pending: only failed, dead or cancelled"):
        env.durable.retry("j1")
    with pytest.raises(JobNotFound):
        env.durable.retry("nope")
    with pytest.raises(JobNotFound):
        env.durable.cancel("nope", revoke=False)


def test_retry_a_failed_job_resumes_from_its_checkpoints() -> None:
    env = make_env(call_retries=0, job_retries=0)
    broken = {"on": True}

    @env.app.task(name="u.work", shared=False)
    def work(name: str) -> str:
        env.effects.append(name)
        if name == "second" and broken["on"]:
            raise ConnectionError("down")
        return name

    @env.durable.task(name="u.two", shared=False)
    def two() -> list[str]:
        return [call(work, "first"), call(work, "second")]

    with pytest.raises(Exception, match="down"):
        env.deliver("u.two", "j1")
    broken["on"] = False
    env.durable.retry("j1")
    assert env.deliver("u.two", "j1") == ["first", "second"]
    assert env.effects == ["first", "second", "second"]


def test_retention_deletes_old_finished_jobs_only_in_batches(monkeypatch: Any) -> None:
    from celery_durable.operations import retention as operations

    monkeypatch.setattr(operations, "RETENTION_BATCH", 2)
    env = make_env(retention={"succeeded": 60, "failed": None})
    _register(env, catch=True)
    for n in range(5):
        lease = _claimed(env, f"old-{n}")
        env.storage.finish_job(lease, JobState.SUCCEEDED, "1", None, env.clock())
    lease = _claimed(env, "old-failed")
    env.storage.finish_job(lease, JobState.FAILED, None, "{}", env.clock())
    _claimed(env, "running")
    env.clock.advance(61)
    lease = _claimed(env, "recent")
    env.storage.finish_job(lease, JobState.SUCCEEDED, "1", None, env.clock())

    assert env.durable.apply_retention(dry_run=True)["succeeded"] == 5
    assert len(env.durable.jobs(states="succeeded")) == 6
    assert env.durable.apply_retention() == {
        "succeeded": 5,
        "cancelled": 0,
        "dead": 0,
    }  # failed: kept forever
    left = {j.id for j in env.durable.jobs()}
    assert left == {"old-failed", "running", "recent"}


def test_jobs_listing_filters() -> None:
    env = make_env()
    for n, queue in enumerate(["a", "b", "a"]):
        env.storage.create_job(_new(env, f"j{n}", queue=queue))
        env.clock.advance(1)
    assert [j.id for j in env.durable.jobs(queue="a")] == ["j2", "j0"]
    assert [j.id for j in env.durable.jobs(limit=1, offset=1)] == ["j1"]
    assert env.durable.jobs(states=["running"]) == []
    with pytest.raises(ValueError, match="unknown job state in \\['done'\\]"):
        env.durable.jobs(states="done")


def test_recover_dry_run_changes_nothing() -> None:
    env = make_env()
    env.app.send_task = lambda *a, **k: None  # type: ignore[method-assign]
    _claimed(env, "j1")
    env.clock.advance(60)
    assert env.durable.recover(dry_run=True) == ["j1"]
    assert env.storage.get_job("j1").lease_owner == "w"  # type: ignore[union-attr]
    assert env.durable.recover() == ["j1"]
    assert env.storage.get_job("j1").state is JobState.PENDING  # type: ignore[union-attr]


def _new(env: Env, job_id: str, queue: str | None = None) -> Any:
    from celery_durable.engine.enqueue import new_job

    return new_job(env.durable, "u.flow", job_id, [], {}, queue=queue, priority=None, eta=None)


def _claimed(env: Env, job_id: str) -> Any:
    from celery_durable.store.records import Lease

    env.storage.create_job(_new(env, job_id))
    now = env.clock()
    env.storage.claim_job(job_id, "w", now, now.replace(second=30))
    return Lease(job_id, "w")
