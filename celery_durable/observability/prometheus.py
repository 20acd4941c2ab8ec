"""Prometheus metrics: ``durable.use(PrometheusMetrics())`` and, in workers, an exporter.

Labels are task and queue (and the exception class on failures, the retry layer on
retries); never a hostname or a job id, so cardinality stays bounded.

Prefork: each pool process counts in its own files when ``PROMETHEUS_MULTIPROC_DIR`` is
set in the worker's environment (before it starts), and the exporter in the worker's
main process adds them up. Set ``durable_metrics_port`` to serve ``/metrics`` from
every worker; or register ``QueueDepthCollector`` and the multiprocess collector in your
own web app's registry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from .hooks import CallInfo, JobInfo, Middleware, Outcome

if TYPE_CHECKING:
    from ..store.protocol import Storage


class HasStorage(Protocol):
    """The ``Durable`` facade, or anything else that holds a store."""

    @property
    def storage(self) -> Storage: ...


logger = logging.getLogger(__name__)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class PrometheusMetrics(Middleware):
    """``namespace`` prefixes every name (``durable_jobs_enqueued_total``); None or ""
    gives the bare names of the original design (``jobs_enqueued_total``,
    ``jobs_completed_total``, ``jobs_failed_total``, ``jobs_duration_seconds``,
    ``jobs_in_progress``; ``jobs_queue_depth`` from ``QueueDepthCollector``)."""

    def __init__(self, registry: Any = None, namespace: str | None = "durable") -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        reg = REGISTRY if registry is None else registry
        job, ns = ["task", "queue"], namespace or ""
        self.enqueued = Counter("jobs_enqueued", "Jobs enqueued.", job, namespace=ns, registry=reg)
        self.completed = Counter(
            "jobs_completed", "Jobs that succeeded.", job, namespace=ns, registry=reg
        )
        self.failed = Counter(
            "jobs_failed",
            "Jobs that failed for good.",
            [*job, "exception"],
            namespace=ns,
            registry=reg,
        )
        self.retried = Counter(
            "jobs_retried",
            "Retries scheduled (call or job).",
            [*job, "layer"],
            namespace=ns,
            registry=reg,
        )
        self.dead = Counter(
            "jobs_dead_lettered", "Jobs moved to the dead letters.", job, namespace=ns, registry=reg
        )
        self.duration = Histogram(
            "jobs_duration_seconds",
            "Duration of executions that ended the job.",
            job,
            buckets=BUCKETS,
            namespace=ns,
            registry=reg,
        )
        self.queue_wait = Histogram(
            "jobs_queue_wait_seconds",
            "From when a delivery's job was due to when it started (delays excluded).",
            job,
            buckets=BUCKETS,
            namespace=ns,
            registry=reg,
        )
        self.in_progress = Gauge(
            "jobs_in_progress",
            "Executions running now.",
            job,
            multiprocess_mode="livesum",
            namespace=ns,
            registry=reg,
        )
        self.calls = Counter(
            "calls",
            "Calls that ran (replays excluded).",
            ["task", "call", "outcome"],
            namespace=ns,
            registry=reg,
        )
        self.call_duration = Histogram(
            "call_duration_seconds",
            "Duration of calls that ran.",
            ["task", "call"],
            buckets=BUCKETS,
            namespace=ns,
            registry=reg,
        )

    def on_enqueue(self, task: str, queue: str | None) -> None:
        self.enqueued.labels(task, queue or "").inc()

    def before_job(self, job: JobInfo) -> None:
        self.in_progress.labels(job.task, job.queue or "").inc()
        if job.due_at is not None:
            wait = (job.started_at - job.due_at).total_seconds()
            self.queue_wait.labels(job.task, job.queue or "").observe(max(0.0, wait))

    def after_job(self, job: JobInfo, outcome: Outcome) -> None:
        labels = (job.task, job.queue or "")
        if not outcome.by_sweeper:  # the sweeper's report: no execution was counted
            self.in_progress.labels(*labels).dec()
        if outcome.state == "succeeded":
            self.completed.labels(*labels).inc()
        elif outcome.state in ("failed", "dead"):
            self.failed.labels(*labels, type(outcome.error).__name__).inc()
            if outcome.state == "dead":
                self.dead.labels(*labels).inc()
        elif outcome.state == "retrying":
            self.retried.labels(*labels, outcome.retry_of or "job").inc()
        if outcome.state in ("succeeded", "failed", "dead", "cancelled") and not outcome.by_sweeper:
            self.duration.labels(*labels).observe(outcome.duration)

    def after_call(self, job: JobInfo, call: CallInfo) -> None:
        self.calls.labels(job.task, call.name, "succeeded").inc()
        self.call_duration.labels(job.task, call.name).observe(call.duration or 0.0)

    def on_call_error(self, job: JobInfo, call: CallInfo, error: BaseException) -> None:
        self.calls.labels(job.task, call.name, "retrying" if call.retrying else "failed").inc()
        self.call_duration.labels(job.task, call.name).observe(call.duration or 0.0)


class QueueDepthCollector:
    """``durable_jobs_queue_depth{queue, state}`` from the jobs table at scrape time:
    right whatever the broker (pending, retrying and running jobs per queue)."""

    def __init__(self, source: HasStorage, namespace: str | None = "durable") -> None:
        self.source = source
        self.name = f"{namespace}_jobs_queue_depth" if namespace else "jobs_queue_depth"

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(
            self.name, "Active jobs per queue and state (from SQL).", labels=["queue", "state"]
        )
        try:
            for queue, state, count in self.source.storage.count_active():
                family.add_metric([queue or "", state], count)
        except Exception:
            logger.warning("durable: could not read the queue depth", exc_info=True)
        yield family


def start_exporter(source: HasStorage, port: int) -> None:
    """Serve /metrics from this (the worker's main) process."""
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    registry.register(QueueDepthCollector(source))
    start_http_server(port, registry=registry)
    logger.info("durable: Prometheus metrics on :%d/metrics", port)


def mark_process_dead(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
