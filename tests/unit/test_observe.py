"""Hooks and middleware on the in-memory store: what fires when, in which order, and
that a hook or middleware that raises never fails a job. Real workers:
tests/integration/test_observe.py."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from celery.exceptions import Retry

from celery_durable import (
    CallError,
    ConstantBackoff,
    JobInfo,
    LoggingMiddleware,
    Middleware,
    NoRetry,
    call,
)
from tests.unit.conftest import Crash, Env, make_env


class Recorder(Middleware):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def before_job(self, job: Any) -> None:
        self.log.append(f"{self.name}:before_job")

    def after_job(self, job: Any, outcome: Any) -> None:
        self.log.append(f"{self.name}:after_job:{outcome.state}")

    def before_call(self, job: Any, call: Any) -> None:
        self.log.append(f"{self.name}:before_call:{call.position}")

    def after_call(self, job: Any, call: Any) -> None:
        self.log.append(f"{self.name}:after_call:{call.position}")

    def on_call_error(self, job: Any, call: Any, error: BaseException) -> None:
        self.log.append(f"{self.name}:call_error:{call.position}:{call.retrying}")


def _env(**settings: Any) -> tuple[Env, dict[str, Any]]:
    env = make_env(**settings)
    state: dict[str, Any] = {"fail": 0, "crash": False}

    @env.app.task(name="u.step", shared=False)
    def step(name: str) -> str:
        if state["crash"] and name == "b":
            raise Crash()
        if name == "b" and state["fail"]:
            state["fail"] -= 1
            raise TimeoutError("slow")
        return name

    @env.durable.task(name="u.flow", shared=False)
    def flow() -> list[str]:
        return [call(step, "a"), call(step, "b")]

    return env, state


def test_middleware_order_and_what_they_see() -> None:
    env, _ = _env()
    log: list[str] = []
    env.durable.use(Recorder("outer", log))
    env.durable.use(Recorder("inner", log))
    assert env.deliver("u.flow", "j1") == ["a", "b"]
    assert log == [
        "outer:before_job",
        "inner:before_job",
        "outer:before_call:1",
        "inner:before_call:1",
        "inner:after_call:1",
        "outer:after_call:1",
        "outer:before_call:2",
        "inner:before_call:2",
        "inner:after_call:2",
        "outer:after_call:2",
        "inner:after_job:succeeded",
        "outer:after_job:succeeded",
    ]


def test_hooks_fire_for_completion_retries_failures_and_checkpoints() -> None:
    env, state = _env(call_retries=1, call_backoff=ConstantBackoff(1), job_retries=0)
    seen: list[Any] = []
    env.durable.on_job_start(lambda job: seen.append(("start", job.id, job.execution)))
    env.durable.on_job_complete(lambda job, duration: seen.append(("complete", job.id)))
    env.durable.on_job_fail(lambda job, error: seen.append(("fail", type(error).__name__)))
    env.durable.on_retry(
        lambda job, attempt, error: seen.append(("retry", attempt, type(error).__name__))
    )
    env.durable.on_checkpoint(lambda job, c: seen.append(("checkpoint", c.name, c.attempt)))
    state["fail"] = 1
    with pytest.raises(Retry):
        env.deliver("u.flow", "j1")
    env.clock.advance(1)
    assert env.deliver("u.flow", "j1") == ["a", "b"]
    assert seen == [
        ("start", "j1", 1),
        ("checkpoint", "u.step", 1),
        ("retry", 2, "TimeoutError"),
        ("start", "j1", 2),
        ("checkpoint", "u.step", 2),
        ("complete", "j1"),
    ]  # a replayed

    seen.clear()
    state["fail"] = 5
    with pytest.raises(Retry):
        env.deliver("u.flow", "j2")
    env.clock.advance(1)
    with pytest.raises(CallError):
        env.deliver("u.flow", "j2")
    assert seen[-1] == ("fail", "CallError")


def test_a_raising_hook_or_middleware_never_fails_the_job(caplog: pytest.LogCaptureFixture) -> None:
    env, _ = _env()

    class Broken(Middleware):
        def before_job(self, job: Any) -> None:
            raise RuntimeError("metrics backend down")

        def after_call(self, job: Any, call: Any) -> None:
            raise RuntimeError("boom")

    env.durable.use(Broken())
    env.durable.on_job_complete(lambda job, d: 1 / 0)
    with caplog.at_level(logging.ERROR):
        assert env.deliver("u.flow", "j1") == ["a", "b"]
    assert env.durable.get_job("j1").state == "succeeded"
    assert caplog.text.count("raised; ignored (it cannot fail the job)") == 4


def test_a_crashed_execution_reports_nothing_and_the_sweeper_reports_the_abandon() -> None:
    env, state = _env(max_recoveries=1, on_exhausted="dead_letter")
    env.app.send_task = lambda *a, **k: None  # type: ignore[method-assign]
    outcomes: list[tuple[str, str]] = []
    env.durable.on_job_fail(lambda job, error: outcomes.append((job.id, type(error).__name__)))
    log: list[str] = []
    env.durable.use(Recorder("r", log))
    state["crash"] = True
    for _ in range(2):
        with pytest.raises(Crash):
            env.deliver("u.flow", "j1")
        env.clock.advance(31)
        env.durable.recover()
    assert outcomes == [("j1", "WorkerLostError")]
    assert log.count("r:after_job:dead") == 1 and "r:after_job:succeeded" not in log


def test_logging_middleware_records_structured_events(caplog: pytest.LogCaptureFixture) -> None:
    env, _ = _env()
    env.durable.use(LoggingMiddleware())
    with caplog.at_level(logging.INFO, logger="celery_durable.jobs"):
        env.deliver("u.flow", "j1")
    events = [
        (r.durable_event, getattr(r, "seq", None))
        for r in caplog.records  # type: ignore[attr-defined]
        if hasattr(r, "durable_event")
    ]
    assert events == [
        ("job_started", None),
        ("call_succeeded", "1"),
        ("call_succeeded", "2"),
        ("job_succeeded", None),
    ]
    assert all(r.job_id == "j1" for r in caplog.records if hasattr(r, "job_id"))  # type: ignore[attr-defined]


def test_no_retry_is_reported_as_a_final_failure() -> None:
    env = make_env()

    @env.durable.task(name="u.invalid", shared=False)
    def invalid() -> None:
        raise NoRetry("bad")

    failed: list[str] = []
    env.durable.on_job_fail(lambda job, error: failed.append(str(error)))
    with pytest.raises(NoRetry):
        env.deliver("u.invalid", "j1")
    assert failed == ["bad"]


def test_an_object_with_some_hooks_is_a_middleware_and_one_with_none_is_refused() -> None:
    env = make_env()
    seen: list[str] = []

    class Partial:
        def before_job(self, job: JobInfo) -> None:
            seen.append(f"start {job.id}")

    partial = Partial()
    assert env.durable.use(partial) is partial  # use() gives back what it was given

    @env.durable.task(name="u.one", shared=False)
    def one() -> int:
        return 1

    env.deliver("u.one", "j1")
    Partial.after_job = lambda self, job, outcome: seen.append(  # type: ignore[attr-defined]
        f"end {job.id} {outcome.state}"
    )  # a hook added later is found when it runs
    env.deliver("u.one", "j2")
    assert seen == ["start j1", "start j2", "end j2 succeeded"]
    env.durable.observers.remove(partial)
    env.deliver("u.one", "j3")
    assert seen[-1] == "end j2 succeeded"
    with pytest.raises(TypeError, match="is not a middleware: it has none of the hooks"):
        env.durable.use(object())
