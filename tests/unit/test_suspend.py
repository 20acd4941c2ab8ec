"""Calls that suspend, on the in-memory store with a steppable clock: durable sleep,
dispatched calls (child jobs) and gather. Each ``deliver`` is one Celery delivery run
in this process; the same paths under real workers, two queues and SIGKILL are in
tests/integration/test_suspend.py.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

import pytest
from celery.exceptions import Ignore

from celery_durable import (
    CallError,
    OutsideDurableTaskError,
    call,
    gather,
    sleep,
    sleep_until,
)
from celery_durable.engine.enqueue import DISPATCH_TASK
from celery_durable.store.records import CallState, JobState
from tests.unit.conftest import Env, make_env


def _register(env: Env, failing: set[int] | None = None) -> None:
    failing = failing if failing is not None else set()

    @env.app.task(name="u.step", shared=False)
    def step(x: int) -> int:
        env.effects.append(f"step{x}")
        if x in failing:
            raise ValueError(f"declined {x}")
        return x * 10

    @env.durable.task(name="u.sleeper", shared=False)
    def sleeper(seconds: float) -> int:
        call(step, 1)
        sleep(seconds)
        return int(call(step, 2))

    @env.durable.task(name="u.parent", shared=False)
    def parent(x: int) -> Any:
        try:
            return call(step.s(x).set(queue="payments")) + 1
        except CallError as exc:
            call(step, 99)  # compensation
            return f"compensated {exc.error_type}: {exc.error_message}"

    @env.durable.task(name="u.fanout", shared=False)
    def fanout(n: int, return_exceptions: bool) -> Any:
        specs = [step.s(i).set(queue="payments") for i in range(n)] + [step.s(100)]
        try:
            results = gather(*specs, return_exceptions=return_exceptions)
        except CallError as exc:
            return f"raised {exc.error_message}"
        return [r if isinstance(r, int) else f"error {r.error_message}" for r in results]


def _deliver_child(env: Env, child_id: str) -> Any:
    """Run a dispatched child as the payments worker would, from its row."""
    import json

    job = env.storage.get_job(child_id)
    assert job is not None and job.task == DISPATCH_TASK
    options = json.loads(job.options)
    return env.deliver(DISPATCH_TASK, child_id, *json.loads(job.args), headers=options["headers"])


@pytest.fixture
def senv() -> Env:
    env = make_env(call_retries=0, job_retries=0)
    _register(env)
    return env


def test_sleep_suspends_and_resumes_after_the_delay(senv: Env) -> None:
    with pytest.raises(Ignore):
        senv.deliver("u.sleeper", "s1", 30)
    job = senv.storage.get_job("s1")
    assert job is not None and job.state is JobState.SUSPENDED and job.lease_owner is None
    assert job.not_before == senv.clock.now + timedelta(seconds=30)
    [message] = senv.published()  # a short sleep travels as an ETA message
    assert message["eta"] == job.not_before.isoformat()
    senv.clock.advance(10)
    with pytest.raises(Ignore):  # delivered early: sent again for the rest of the wait
        senv.deliver("u.sleeper", "s1", 30)
    senv.clock.advance(20)
    assert senv.deliver("u.sleeper", "s1", 30) == 20
    assert senv.effects == ["step1", "step2"]
    assert senv.storage.get_job("s1").state is JobState.SUCCEEDED  # type: ignore[union-attr]


def test_long_sleep_is_held_in_sql_and_published_by_the_sweeper(senv: Env) -> None:
    with pytest.raises(Ignore):
        senv.deliver("u.sleeper", "s2", 3600)
    assert senv.published() == []  # no message held anywhere while it waits
    senv.clock.advance(3599)
    assert senv.durable.sweeper.sweep_once() == []
    senv.clock.advance(2)
    assert senv.durable.sweeper.sweep_once() == ["s2"]
    [message] = senv.published()
    assert message["id"] == "s2"
    assert senv.deliver("u.sleeper", "s2", 3600) == 20


def test_sleep_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="seconds >= 0"):
        sleep(-1)
    with pytest.raises(ValueError, match="aware datetime"):
        from datetime import datetime

        sleep_until(datetime(2030, 1, 1))
    with pytest.raises(OutsideDurableTaskError):
        gather()


def test_dispatched_call_suspends_parent_until_child_finishes(senv: Env) -> None:
    with pytest.raises(Ignore):
        senv.deliver("u.parent", "p1", 7)
    parent = senv.storage.get_job("p1")
    assert parent is not None and parent.state is JobState.SUSPENDED and parent.awaiting == 1
    child = senv.storage.get_job("p1.1")
    assert child is not None and child.parent_id == "p1" and child.queue == "payments"
    [record] = senv.storage.load_history("p1")
    assert record.state is CallState.DISPATCHED
    assert senv.effects == []  # nothing ran in the parent's process
    with pytest.raises(Ignore):  # a duplicate of the parent's message waits too
        senv.deliver("u.parent", "p1", 7)
    assert _deliver_child(senv, "p1.1") == 70
    assert senv.storage.get_job("p1").state is JobState.PENDING  # type: ignore[union-attr]
    assert [m["id"] for m in senv.published()] == ["p1"]  # the child's worker woke it
    assert senv.deliver("u.parent", "p1", 7) == 71
    [record] = senv.storage.load_history("p1")
    assert record.state is CallState.SUCCEEDED and record.result == "70"
    assert senv.effects == ["step7"]


def test_failed_child_reaches_the_body_as_call_error() -> None:
    env = make_env(call_retries=0, job_retries=0)
    _register(env, failing={7})
    with pytest.raises(Ignore):
        env.deliver("u.parent", "p2", 7)
    with pytest.raises(CallError):
        _deliver_child(env, "p2.1")
    assert env.storage.get_job("p2.1").state is JobState.FAILED  # type: ignore[union-attr]
    assert env.deliver("u.parent", "p2", 7) == "compensated ValueError: declined 7"
    assert env.effects == ["step7", "step99"]


def test_call_retries_apply_inside_the_child() -> None:
    env = make_env(call_retries=1, job_retries=0, call_backoff=1)
    failures = {7}
    _register(env, failing=failures)
    with pytest.raises(Ignore):
        env.deliver("u.parent", "p3", 7)
    from celery.exceptions import Retry

    with pytest.raises(Retry):
        _deliver_child(env, "p3.1")
    failures.clear()
    env.clock.advance(1)
    assert _deliver_child(env, "p3.1") == 70
    assert env.deliver("u.parent", "p3", 7) == 71
    assert env.effects == ["step7", "step7"]


def test_gather_waits_for_every_child_and_keeps_order() -> None:
    env = make_env(call_retries=0, job_retries=0)
    _register(env, failing={2})
    with pytest.raises(Ignore):
        env.deliver("u.fanout", "g1", 4, True)
    assert env.storage.get_job("g1").awaiting == 4  # type: ignore[union-attr]
    for i in (3, 1, 0):  # out of order; the parent stays suspended
        _deliver_child(env, f"g1.{i + 1}")
        assert env.storage.get_job("g1").state is JobState.SUSPENDED  # type: ignore[union-attr]
    with pytest.raises(CallError):
        _deliver_child(env, "g1.3")
    assert env.storage.get_job("g1").state is JobState.PENDING  # type: ignore[union-attr]
    assert env.deliver("u.fanout", "g1", 4, True) == [0, 10, "error declined 2", 30, 1000]


def test_gather_raises_the_first_error_after_all_finished() -> None:
    env = make_env(call_retries=0, job_retries=0)
    _register(env, failing={1, 2})
    with pytest.raises(Ignore):
        env.deliver("u.fanout", "g2", 3, False)
    for i in range(3):
        with contextlib.suppress(CallError):
            _deliver_child(env, f"g2.{i + 1}")
    assert env.deliver("u.fanout", "g2", 3, False) == "raised declined 1"
    assert sorted(env.effects) == ["step0", "step1", "step100", "step2"]


def test_suspended_parent_whose_wake_message_is_lost_is_resumed_by_the_sweeper(senv: Env) -> None:
    with pytest.raises(Ignore):
        senv.deliver("u.parent", "p4", 3)
    _deliver_child(senv, "p4.1")
    senv.published()  # the wake-up message is lost
    senv.clock.advance(senv.durable.settings.lease_seconds + 1)
    assert senv.durable.sweeper.sweep_once() == ["p4"]
    assert senv.deliver("u.parent", "p4", 3) == 31


def test_cancelling_a_waiting_parent_cancels_the_children_it_waits_for(senv: Env) -> None:
    with pytest.raises(Ignore):
        senv.deliver("u.parent", "p5", 1)
    assert senv.durable.get_job("p5").waiting_for == ["p5.1"]
    assert senv.durable.cancel("p5").value == "cancelled"
    assert senv.storage.get_job("p5.1").state is JobState.CANCELLED  # type: ignore[union-attr]


def test_inspection_and_events_show_what_a_job_waits_for(senv: Env) -> None:
    with pytest.raises(Ignore):
        senv.deliver("u.sleeper", "s3", 3600)
    view = senv.durable.get_job("s3")
    assert view.state == "suspended"
    assert view.wake_at == senv.clock.now + timedelta(hours=1)
    assert "sleeping until" in view.timeline()
    with pytest.raises(Ignore):
        senv.deliver("u.parent", "p6", 1)
    view = senv.durable.get_job("p6")
    assert "waiting for child job(s): p6.1" in view.timeline()
    assert senv.durable.get_job("p6.1").parent_id == "p6"
    kinds = [(e.kind, e.job_id) for e in senv.durable.events(follow=False)]
    assert ("CallDispatched", "p6") in kinds


def test_metrics_label_a_child_job_with_the_task_it_runs(senv: Env) -> None:
    from prometheus_client import CollectorRegistry

    from celery_durable import PrometheusMetrics

    registry = CollectorRegistry()
    senv.durable.use(PrometheusMetrics(registry))
    with pytest.raises(Ignore):
        senv.deliver("u.parent", "p7", 2)
    _deliver_child(senv, "p7.1")
    assert (
        registry.get_sample_value(
            "durable_jobs_enqueued_total", {"task": "u.step", "queue": "payments"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "durable_jobs_completed_total",
            {"task": "u.step", "queue": senv.app.conf.task_default_queue},
        )
        == 1
    )


def test_a_job_retry_while_waiting_keeps_the_child_and_never_sends_a_second() -> None:
    env = make_env(call_retries=0, job_retries=1, job_backoff=1)
    _register(env)
    flaky = {"raise": False}

    @env.durable.task(name="u.parent_flaky", shared=False)
    def parent_flaky() -> Any:
        if flaky["raise"]:  # code outside call() fails on one replay
            flaky["raise"] = False
            raise ConnectionError("transient")
        return call(env.app.tasks["u.step"].s(5).set(queue="payments"))

    with pytest.raises(Ignore):
        env.deliver("u.parent_flaky", "r1")
    flaky["raise"] = True
    env.clock.advance(env.durable.settings.wait_check_interval + 1)
    assert "r1" in env.durable.sweeper.sweep_once()  # the safety-net replay
    from celery.exceptions import Retry

    with pytest.raises(Retry):
        env.deliver("u.parent_flaky", "r1")
    env.clock.advance(1)
    with pytest.raises(Ignore):  # waits for the same child again
        env.deliver("u.parent_flaky", "r1")
    assert [j.id for j in env.storage.get_jobs(["r1.1", "r1.1-2"])] == ["r1.1"]
    _deliver_child(env, "r1.1")
    assert env.deliver("u.parent_flaky", "r1") == 50
    assert env.effects == ["step5"]


def test_a_dispatch_whose_checkpoint_was_dropped_reuses_its_child_unless_it_failed() -> None:
    env = make_env(call_retries=0, job_retries=0)
    _register(env, failing={7})
    with pytest.raises(Ignore):
        env.deliver("u.parent", "d1", 3)
    _deliver_child(env, "d1.1")
    assert env.deliver("u.parent", "d1", 3) == 31
    # Dropped checkpoints (a requeue from scratch), same call again: the child is reused.
    env.storage.requeue_job("d1", [JobState.SUCCEEDED], None, env.clock.now, env.clock.now)
    with pytest.raises(Ignore):  # re-recorded as waiting for d1.1, already done: again
        env.deliver("u.parent", "d1", 3)
    assert env.storage.get_jobs(["d1.1-2"]) == []
    assert env.deliver("u.parent", "d1", 3) == 31
    assert env.effects == ["step3"]
    # A failed child is not reused: the position gets a fresh one.
    with pytest.raises(Ignore):
        env.deliver("u.parent", "d2", 7)
    with pytest.raises(CallError):
        _deliver_child(env, "d2.1")
    assert env.deliver("u.parent", "d2", 7) == "compensated ValueError: declined 7"
    env.storage.requeue_job("d2", [JobState.SUCCEEDED], None, env.clock.now, env.clock.now)
    with pytest.raises(Ignore):
        env.deliver("u.parent", "d2", 7)
    assert env.storage.get_job("d2.1-2") is not None


def test_a_cancelled_body_may_compensate_with_a_dispatched_call() -> None:
    env = make_env(call_retries=0, job_retries=0)
    _register(env)
    step = env.app.tasks["u.step"]

    @env.durable.task(name="u.cancellable", shared=False)
    def cancellable() -> Any:
        from celery_durable import Cancelled, current_job_id

        call(step, 1)
        env.durable.cancel(current_job_id() or "")
        env.durable.lease_keeper.check_cancels()
        try:
            call(step, 2)
        except Cancelled:
            return call(step.s(3).set(queue="payments"))  # a refund, elsewhere
        return None

    with pytest.raises(Ignore):  # suspended while compensating
        env.deliver("u.cancellable", "c1")
    assert env.storage.get_job("c1").state is JobState.SUSPENDED  # type: ignore[union-attr]
    _deliver_child(env, "c1.3")
    # resumed: Cancelled is raised again where it was, the compensation takes in the
    # child's result, and the job ends cancelled
    assert env.deliver("u.cancellable", "c1") == 30
    job = env.storage.get_job("c1")
    assert job is not None and job.state is JobState.CANCELLED
    assert env.effects == ["step1", "step3"]


def test_a_cancel_that_arrives_as_the_job_suspends_stops_it(senv: Env) -> None:
    step = senv.app.tasks["u.step"]

    @senv.durable.task(name="u.late_cancel", shared=False)
    def late_cancel() -> Any:
        from celery_durable import current_job_id

        senv.durable.cancel(current_job_id() or "")  # not seen by the keeper yet
        return call(step.s(1).set(queue="payments"))

    from celery_durable import Cancelled

    with pytest.raises(Cancelled):
        senv.deliver("u.late_cancel", "lc")
    assert senv.storage.get_job("lc").state is JobState.CANCELLED  # type: ignore[union-attr]
    assert senv.storage.get_jobs(["lc.1"]) == []  # no child was sent


def test_a_dispatched_call_refuses_options_it_cannot_honour(senv: Env) -> None:
    step = senv.app.tasks["u.step"]

    @senv.durable.task(name="u.bad_options", shared=False)
    def bad_options() -> Any:
        return call(step.s(1).set(queue="payments", countdown=5, link=step.s(2)))

    from celery_durable import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"cannot take the option\(s\) countdown, link"):
        senv.deliver("u.bad_options", "bo")
    assert senv.storage.get_jobs(["bo.1"]) == []
    assert senv.storage.load_history("bo") == []


def test_a_cancel_caught_deep_inside_then_a_sleep_still_ends_the_job_cancelled() -> None:
    env = make_env(call_retries=0, job_retries=0)
    _register(env)
    step = env.app.tasks["u.step"]

    @env.durable.task(name="u.inner_cancel", shared=False)
    def inner_cancel() -> str:
        from celery_durable import Cancelled, current_job_id

        env.durable.cancel(current_job_id() or "")
        env.durable.lease_keeper.check_cancels()
        try:
            call(step, 1)
        except Cancelled:
            return "undone"
        return "done"

    @env.durable.task(name="u.outer_cancel", shared=False)
    def outer_cancel() -> str:
        result = str(call(inner_cancel))  # in-process: its marker is inside it
        sleep(5)
        return result

    with pytest.raises(Ignore):
        env.deliver("u.outer_cancel", "oc")
    env.clock.advance(5)
    assert env.deliver("u.outer_cancel", "oc") == "undone"
    job = env.storage.get_job("oc")
    assert job is not None and job.state is JobState.CANCELLED
