"""OTelTracing with the SDK's in-memory exporter: job -> call parentage, replayed calls
not emitted, errors recorded, and one trace across a crash and its resumption."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from celery_durable import CallError, OTelTracing, call
from tests.unit.conftest import Crash, make_env


def test_spans_follow_the_job_across_a_crash_in_one_trace() -> None:
    env = make_env(call_retries=0, job_retries=0)
    provider, exporter = TracerProvider(), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    env.durable.use(OTelTracing(provider))
    crash = {"on": True}

    @env.app.task(name="u.step", shared=False)
    def step(name: str) -> str:
        if name == "b" and crash["on"]:
            raise Crash()
        if name == "bad":
            raise ValueError("nope")
        return name

    @env.durable.task(name="u.flow", shared=False)
    def flow() -> list[str]:
        return [call(step, "a"), call(step, "b")]

    with provider.get_tracer("test").start_as_current_span("checkout") as checkout:
        env.app.tasks["u.flow"].apply_async(task_id="j1")
    [message] = env.published()
    headers = {"durable_trace": message["durable_trace"]}
    with pytest.raises(Crash):
        env.deliver("u.flow", "j1", headers=headers)
    crash["on"] = False
    env.clock.advance(31)
    assert env.deliver("u.flow", "j1", headers=headers) == ["a", "b"]

    spans = exporter.get_finished_spans()
    jobs = [s for s in spans if s.name == "durable.job u.flow"]
    assert len(jobs) == 2
    trace_id = checkout.get_span_context().trace_id
    assert all(s.context.trace_id == trace_id for s in spans if s.name != "checkout")
    assert all(
        j.parent is not None and j.parent.span_id == checkout.get_span_context().span_id
        for j in jobs
    )
    assert [j.attributes["durable.outcome"] for j in jobs] == ["interrupted", "succeeded"]
    calls = [
        (s.name, s.attributes["durable.position"], s.parent.span_id)  # type: ignore[union-attr]
        for s in spans
        if s.name.startswith("durable.call")
    ]
    first, second = (j.context.span_id for j in jobs)
    # execution 1: a ran, b died with it; execution 2: a replayed (no span), b ran
    assert calls == [
        ("durable.call u.step", "1", first),
        ("durable.call u.step", "2", first),
        ("durable.call u.step", "2", second),
    ]
    assert jobs[0].attributes["messaging.message.id"] == "j1"

    @env.durable.task(name="u.failing", shared=False)
    def failing() -> None:
        call(step, "bad")

    exporter.clear()
    with pytest.raises(CallError):
        env.deliver("u.failing", "j2")
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    assert by_name["durable.call u.step"].status.status_code is StatusCode.ERROR
    assert by_name["durable.job u.failing"].status.status_code is StatusCode.ERROR
    assert by_name["durable.job u.failing"].events[0].name == "exception"


def test_a_dispatched_childs_job_span_nests_under_its_parents_job_span() -> None:
    import json

    from celery.exceptions import Ignore

    from celery_durable.engine.enqueue import DISPATCH_TASK

    env = make_env(call_retries=0, job_retries=0)
    provider, exporter = TracerProvider(), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    env.durable.use(OTelTracing(provider))

    @env.app.task(name="u.charge", shared=False)
    def charge() -> str:
        return "paid"

    @env.durable.task(name="u.parent", shared=False)
    def parent() -> str:
        return str(call(charge.s().set(queue="payments")))

    with pytest.raises(Ignore):
        env.deliver("u.parent", "p1")
    child = env.storage.get_job("p1.1")
    assert child is not None
    headers = json.loads(child.options)["headers"]
    env.deliver(DISPATCH_TASK, "p1.1", *json.loads(child.args), headers=headers)
    [parent_span] = [s for s in exporter.get_finished_spans() if s.name == "durable.job u.parent"]
    [child_span] = [
        s for s in exporter.get_finished_spans() if s.name == "durable.job u.charge"
    ]  # the task it runs
    assert child_span.parent is not None
    assert child_span.parent.span_id == parent_span.context.span_id
    assert child_span.context.trace_id == parent_span.context.trace_id
    assert dict(parent_span.attributes or {})["durable.outcome"] == "suspended"
