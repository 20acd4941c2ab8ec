"""PrometheusMetrics and the queue-depth collector on the in-memory store (one process;
the prefork exporter is in tests/integration/test_metrics.py)."""

from __future__ import annotations

from typing import Any

import pytest
from celery.exceptions import Retry
from prometheus_client import CollectorRegistry

from celery_durable import CallError, ConstantBackoff, PrometheusMetrics, call
from celery_durable.observability.prometheus import QueueDepthCollector
from tests.unit.conftest import make_env


def test_counters_histograms_and_gauges_follow_the_jobs() -> None:
    env = make_env(
        call_retries=1, call_backoff=ConstantBackoff(1), job_retries=0, on_exhausted="dead_letter"
    )
    registry = CollectorRegistry()
    env.durable.use(PrometheusMetrics(registry))
    state = {"fail": 0}

    @env.app.task(name="u.pay", shared=False)
    def pay() -> str:
        if state["fail"]:
            state["fail"] -= 1
            raise TimeoutError("slow")
        return "ok"

    @env.durable.task(name="u.order", shared=False)
    def order() -> str:
        return str(call(pay))

    queue = env.app.conf.task_default_queue
    for job_id in ("j1", "j2", "j3"):
        env.app.tasks["u.order"].apply_async(task_id=job_id)
    env.deliver("u.order", "j1")  # succeeds
    state["fail"] = 1
    with pytest.raises(Retry):
        env.deliver("u.order", "j2")  # call retry
    env.clock.advance(1)
    env.deliver("u.order", "j2")  # then succeeds
    state["fail"] = 2
    with pytest.raises(Retry):
        env.deliver("u.order", "j3")
    env.clock.advance(1)
    with pytest.raises(CallError):
        env.deliver("u.order", "j3")  # dead letter

    def value(name: str, **labels: Any) -> float | None:
        return registry.get_sample_value(f"durable_{name}", labels)

    job = {"task": "u.order", "queue": queue}
    assert value("jobs_enqueued_total", **job) == 3
    assert value("jobs_completed_total", **job) == 2
    assert value("jobs_retried_total", **job, layer="call") == 2
    assert value("jobs_failed_total", **job, exception="CallError") == 1
    assert value("jobs_dead_lettered_total", **job) == 1
    assert value("jobs_in_progress", **job) == 0
    assert value("jobs_duration_seconds_count", **job) == 3
    assert value("calls_total", task="u.order", call="u.pay", outcome="succeeded") == 2
    assert value("calls_total", task="u.order", call="u.pay", outcome="retrying") == 2
    assert value("calls_total", task="u.order", call="u.pay", outcome="failed") == 1


def test_queue_wait_runs_from_when_the_job_was_due_not_from_enqueue() -> None:
    env = make_env()
    registry = CollectorRegistry()
    env.durable.use(PrometheusMetrics(registry))

    @env.durable.task(name="u.t", shared=False)
    def t() -> None: ...

    env.durable.enqueue("u.t", task_id="now")
    env.durable.enqueue("u.t", task_id="later", delay=30)
    messages = {m["id"]: m for m in env.published()}
    env.clock.advance(4)
    env.deliver("u.t", "now", headers=messages["now"])  # waited 4 s in the queue
    env.clock.advance(27)  # the delayed one was due 1 s ago: its 30 s delay is not a wait
    env.deliver("u.t", "later", headers=messages["later"], eta=messages["later"]["eta"])

    def wait_count(le: str) -> float | None:
        return registry.get_sample_value(
            "durable_jobs_queue_wait_seconds_bucket",
            {"task": "u.t", "queue": env.app.conf.task_default_queue, "le": le},
        )

    assert (wait_count("0.5"), wait_count("1.0"), wait_count("5.0"), wait_count("10.0")) == (
        0,
        1,
        2,
        2,
    )


def test_queue_depth_comes_from_the_jobs_table() -> None:
    env = make_env()

    @env.durable.task(name="u.t", shared=False)
    def t() -> None: ...

    for _ in range(3):
        env.durable.enqueue("u.t", queue="reports")
    env.durable.enqueue("u.t", queue="emails")
    registry = CollectorRegistry()
    registry.register(QueueDepthCollector(env.durable))
    depth = {
        (s.labels["queue"], s.labels["state"]): s.value
        for m in registry.collect()
        for s in m.samples
    }
    assert depth == {("reports", "pending"): 3, ("emails", "pending"): 1}


@pytest.mark.parametrize("namespace", [None, ""])
def test_no_namespace_gives_the_names_of_the_original_design(namespace: str | None) -> None:
    env = make_env()
    registry = CollectorRegistry()
    env.durable.use(PrometheusMetrics(registry, namespace=namespace))
    registry.register(QueueDepthCollector(env.durable, namespace=namespace))

    @env.durable.task(name="u.quick", shared=False)
    def quick() -> int:
        return 1

    env.app.tasks["u.quick"].apply_async(task_id="j1")
    env.deliver("u.quick", "j1")
    names = {sample.name for family in registry.collect() for sample in family.samples}
    assert {
        "jobs_enqueued_total",
        "jobs_completed_total",
        "jobs_duration_seconds_sum",
        "jobs_in_progress",
    } <= names
    assert "jobs_failed_total" not in names  # no labels seen yet: declared, no sample
    families = {family.name for family in registry.collect()}
    assert {
        "jobs_enqueued",
        "jobs_completed",
        "jobs_failed",
        "jobs_duration_seconds",
        "jobs_in_progress",
        "jobs_queue_depth",
    } <= families
    assert not any(name.startswith("_") for name in names | families)
