"""OpenTelemetry under real workers: a job enqueued inside a span, its worker SIGKILLed
mid-job, resumed by another: both executions' spans are in the enqueuer's trace, and
every call span hangs under its execution's job span."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from opentelemetry.sdk.trace import TracerProvider

from celery_durable import OTelTracing
from tests.integration.conftest import Cluster, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.redis, pytest.mark.postgres]


def test_one_trace_across_a_crash_and_resume(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster("redis", "postgres", step_seconds=1.0)
    provider = TracerProvider()
    cluster.durable.use(OTelTracing(provider))  # the enqueuer puts its context on the job
    first = cluster.worker(DURABLE_TEST_OTEL="1")
    with provider.get_tracer("test").start_as_current_span("checkout") as checkout:
        job_id = cluster.app.tasks["proj.five_steps"].delay(0).id
    wait_for(lambda: cluster.committed_calls(job_id) >= 2, 60, "call 2", cluster.logs_tail)
    first.kill()
    cluster.worker(DURABLE_TEST_OTEL="1")
    cluster.wait_finished(job_id)
    spans_file = cluster.effects / "spans.jsonl"
    wait_for(
        lambda: spans_file.exists() and '"succeeded"' in spans_file.read_text(),
        30,
        "the second execution's job span",
    )
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    trace_id = f"{checkout.get_span_context().trace_id:032x}"
    assert {s["trace"] for s in spans} == {trace_id}
    jobs = [s for s in spans if s["name"] == "durable.job proj.five_steps"]
    # the killed execution never ended its span (it was SIGKILLed): only the resumed one
    assert [s["outcome"] for s in jobs] == ["succeeded"]
    assert jobs[0]["parent"] == f"{checkout.get_span_context().span_id:016x}"
    calls = [s for s in spans if s["name"] == "durable.call proj.step"]
    first_execution_calls = [c for c in calls if c["parent"] != jobs[0]["span"]]
    resumed_calls = [c for c in calls if c["parent"] == jobs[0]["span"]]
    # calls that ended before the kill have spans from the first execution; the resumed
    # one replays them (no span) and runs the rest: five call spans in all, none twice
    # (call 2's span is written just after its checkpoint, which is what the test waits
    # for before the kill, so it may not have been exported yet)
    assert len(first_execution_calls) in (1, 2, 3)
    assert len(first_execution_calls) + len(resumed_calls) == 5


def test_with_opentelemetry_instrumentation_celery_no_span_is_duplicated_or_orphaned(
    make_cluster: Callable[..., Cluster],
) -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    cluster = make_cluster("redis", "postgres")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cluster.durable.use(OTelTracing(provider))
    instrumentor = CeleryInstrumentor()
    instrumentor.instrument(tracer_provider=provider)  # the enqueuer's publish span
    try:
        cluster.worker(concurrency=2, DURABLE_TEST_OTEL="celery")
        with provider.get_tracer("test").start_as_current_span("checkout") as checkout:
            job_id = cluster.app.tasks["proj.five_steps"].delay(0).id
        assert cluster.wait_finished(job_id).state.finished, cluster.logs_tail()
    finally:
        instrumentor.uninstrument()
    spans_file = cluster.effects / "spans.jsonl"
    wait_for(
        lambda: spans_file.exists() and "run/proj.five_steps" in spans_file.read_text(),
        30,
        "the instrumentation's run span",
    )
    worker_spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    local = [
        {
            "name": s.name,
            "trace": f"{s.context.trace_id:032x}",
            "span": f"{s.context.span_id:016x}",
            "parent": f"{s.parent.span_id:016x}" if s.parent else None,
        }
        for s in exporter.get_finished_spans()
    ]
    spans = local + worker_spans
    by_name: dict[str, list[dict[str, str]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    trace_id = f"{checkout.get_span_context().trace_id:032x}"
    assert {s["trace"] for s in spans} == {trace_id}, "one trace"
    # one of each: the instrumentation's publish and run spans, our job span
    [publish] = by_name["apply_async/proj.five_steps"]
    [run] = by_name["run/proj.five_steps"]
    [job] = by_name["durable.job proj.five_steps"]
    assert len(by_name["durable.call proj.step"]) == 5
    assert publish["parent"] == local[-1]["span"] == by_name["checkout"][0]["span"]
    assert run["parent"] == publish["span"]
    assert job["parent"] == run["span"]
    assert {c["parent"] for c in by_name["durable.call proj.step"]} == {job["span"]}
    known = {s["span"] for s in spans}
    assert [s["name"] for s in spans if s["parent"] and s["parent"] not in known] == [], (
        "orphaned spans"
    )
